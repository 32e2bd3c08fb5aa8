"""Cancellation with real processes (#25, part 5), on each store: a dispatcher and a
worker; a running coroutine job gets CancelledError and ends cancelled within about two
seconds, a plain function sees ``tq_parent_job.cancelled``, a pending job is cancelled at
once and never taken; a finished job answers 409, an unknown id 404 (the CLI too)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cluster, child_env, wait_for
from tests.acceptance.jobs import method, start_markers
from tqueues.client import Client
from tqueues.errors import InvalidTransition, JobNotFound

ADMIN = str(Path(sys.executable).parent / "tqueues")
DEADLINE = 20.0  #: seconds for a process or a job to start
STOPPED_WITHIN = 2.5  #: seconds from a cancel to the job ending cancelled ("a second or two")


async def ends_cancelled(client: Client, queue: str, job_id: str) -> float:
    """Seconds until the job is cancelled (failing past STOPPED_WITHIN * 4)."""
    start = time.monotonic()

    async def cancelled() -> bool:
        return (await client.get(queue, job_id))["status"] == "cancelled"

    await wait_for(cancelled, timeout=STOPPED_WITHIN * 4, what=f"job {job_id} to be cancelled")
    return time.monotonic() - start


async def test_cancel_running_pending_and_ended_jobs(
    cluster: Cluster, store_args: list[str], markers: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    async with Client(dispatcher.url) as client:
        await client.create_queue("c")
        worker = await cluster.worker(dispatcher.url, "c", concurrency=2)
        # Given a long coroutine job and a long plain function, both running
        coro = await client.put("c", method("cancellable_sleep"), [str(markers), 60.0])
        plain = await client.put("c", method("plain_until_cancelled"), [str(markers), 60.0])
        for job in (coro, plain):
            await wait_for(lambda job=job: start_markers(markers, job["id"]), timeout=DEADLINE,
                           what="the job to start")  # fmt: skip
        # When each is cancelled, the answer says it is asked to stop
        for job in (coro, plain):
            flagged = await client.cancel("c", job["id"])
            assert (flagged["status"], flagged["cancel_requested"]) == ("started", True)
            # Then it ends cancelled within a second or two, never retried
            assert await ends_cancelled(client, "c", job["id"]) < STOPPED_WITHIN
        assert (markers / f"cancelled-{coro['id']}").read_text() == "CancelledError"
        assert (markers / f"cancelled-{plain['id']}").read_text() == "cancelled"
        for job in (coro, plain):
            ended = await client.get("c", job["id"])
            assert ended["attempts"] == 1 and len(start_markers(markers, job["id"])) == 1

        # A job waiting behind a busy worker is cancelled at once, and never taken
        blockers = [
            await client.put("c", method("cancellable_sleep"), [str(markers), 60.0])
            for _ in range(2)
        ]
        for job in blockers:
            await wait_for(lambda job=job: start_markers(markers, job["id"]), timeout=DEADLINE,
                           what="the blocker to start")  # fmt: skip
        waiting = await client.put("c", method("coro_add"), [1, 2])
        assert (await client.cancel("c", waiting["id"]))["status"] == "cancelled"
        for job in blockers:  # (the CLI, as an operator would)
            out = await asyncio.to_thread(
                subprocess.run, [ADMIN, "--url", dispatcher.url, "cancel", "c", job["id"]],
                capture_output=True, text=True, env=child_env(), timeout=30,
            )  # fmt: skip
            assert out.returncode == 0 and json.loads(out.stdout)["cancel_requested"] is True, out
        for job in blockers:
            await ends_cancelled(client, "c", job["id"])
        # (the worker is free again: a new job runs, the cancelled one never did)
        done = await client.put("c", method("coro_add"), [2, 3])

        async def finished() -> bool:
            return (await client.get("c", done["id"]))["status"] == "finished"

        await wait_for(finished, timeout=DEADLINE, what="the next job to finish")
        assert (await client.get("c", waiting["id"]))["attempts"] == 0

        # A job that ended: 409; an unknown id: 404 (and the CLI says which, exit 2)
        with pytest.raises(InvalidTransition, match="already finished"):
            await client.cancel("c", done["id"])
        with pytest.raises(JobNotFound):
            await client.cancel("c", "f" * 32)
        out = await asyncio.to_thread(
            subprocess.run, [ADMIN, "--url", dispatcher.url, "cancel", "c", done["id"]],
            capture_output=True, text=True, env=child_env(), timeout=30,
        )  # fmt: skip
        assert out.returncode == 2 and "finished" in out.stderr, out
        stats = await client.stats("c")
        assert stats["jobs"]["cancelled"] == 5 and worker.running()
