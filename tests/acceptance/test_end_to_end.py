"""The whole job cycle with real processes: a dispatcher, two workers, 200 jobs over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from tests.acceptance.conftest import Api, Cluster

QUEUE = "e2e"
JOBS = 200
KINDS = ("coro_add", "plain_mul", "coro_update", "plain_update", "coro_raise", "plain_raise")


def expected(kind: str, i: int) -> dict[str, Any]:
    """What job ``i`` of ``kind`` must end as: its status, result, error and update fields."""
    if kind == "coro_add":
        return {"status": "finished", "result": {"sum": i + 1000, "thread": False}}
    if kind == "plain_mul":
        return {"status": "finished", "result": {"product": i * 3, "thread": True}}
    if kind == "coro_update":
        return {
            "status": "finished",
            "result": ["coro", i, i, "coro"],
            "progress": i,
            "by": "coro",
        }
    if kind == "plain_update":
        return {
            "status": "finished",
            "result": ["plain", i, i, "plain", True],
            "progress": i,
            "by": "plain",
            "tag": f"plain-{i}",
        }
    if kind == "coro_raise":
        return {"status": "buried", "result": None, "error": f"ValueError: coro boom {i}"}
    return {"status": "buried", "result": None, "error": f"RuntimeError: plain boom {i}"}


def job_args(kind: str, i: int) -> list[Any]:
    if kind == "coro_add":
        return [i, 1000]
    if kind == "plain_mul":
        return [i, 3]
    return [i]


async def test_200_jobs_through_two_workers(
    cluster: Cluster, session: aiohttp.ClientSession, store_args: list[str]
) -> None:
    # Given a dispatcher (on each store) and two workers running four jobs each
    dispatcher = await cluster.dispatcher(None, *store_args)
    api = Api(session, dispatcher.url)
    await api.create_queue(QUEUE)
    for _ in range(2):
        await cluster.worker(dispatcher.url, QUEUE, concurrency=4)

    # When 200 jobs of six kinds are enqueued over HTTP (the failing ones with one attempt)
    plan = [(KINDS[i % len(KINDS)], i) for i in range(JOBS)]
    started = time.perf_counter()
    puts = await asyncio.gather(
        *(
            api.put(
                QUEUE,
                kind,
                *job_args(kind, i),
                **({"max_attempts": 1} if kind.endswith("_raise") else {}),
            )
            for kind, i in plan
        )
    )
    ids = [job["id"] for job in puts]
    assert len(set(ids)) == JOBS
    assert all(job["status"] == "pending" for job in puts)

    # Then every job reaches a final state
    final = await api.wait_final(QUEUE, ids, timeout=60)
    elapsed = time.perf_counter() - started
    print(f"\nend to end: {JOBS} jobs in {elapsed:.2f}s = {JOBS / elapsed:.1f} jobs/s")

    # And each one ended exactly as its function says
    wrong = []
    for (kind, i), job_id in zip(plan, ids, strict=True):
        job = final[job_id]
        want = expected(kind, i)
        got = {key: job.get(key) for key in want}
        if got != want:
            wrong.append((kind, i, got, want))
            continue
        assert job["attempts"] == 1, job
        assert job["method"] == f"tests.acceptance.jobs:{kind}"
        assert "lease" not in job
        if want["status"] == "finished":
            assert job["error"] is None and job["traceback"] is None, job
        else:
            traceback = job["traceback"]
            assert traceback.startswith("Traceback (most recent call last):"), traceback
            assert f"in {kind}" in traceback and "jobs.py" in traceback, traceback
            assert traceback.rstrip().endswith(want["error"]), traceback
        if kind in ("coro_add", "plain_mul", "coro_raise", "plain_raise"):
            assert "progress" not in job and "by" not in job, job
    assert not wrong, f"{len(wrong)} job(s) ended wrong, e.g. {wrong[:3]}"

    # And the work was shared by both workers
    workers = {job["worker"] for job in final.values()}
    assert len(workers) == 2, workers
