"""Faults with real processes: killed workers, late reports, a killed dispatcher, contention."""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.conftest import Api, Cluster, long_poll, wait_for
from tests.acceptance.jobs import finished_ids, start_markers

TTR = 1.5


async def test_job_of_a_killed_worker_runs_again_and_finishes_once(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given a queue with a short ttr and a worker running a long job
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("faults", ttr=TTR)
    first = await cluster.worker(dispatcher.url, "faults", concurrency=1)
    job = await api.put("faults", "marked_sleep", str(markers), 60.0, 0.2)
    assert job["ttr"] == TTR
    await wait_for(lambda: start_markers(markers, job["id"]), timeout=10, what="the first run")

    # When that worker is killed with SIGKILL mid-job and another worker starts
    first.kill()
    killed_at = time.time()
    held = await api.get("faults", job["id"])
    assert held["status"] == "started" and held["attempts"] == 1, held
    await cluster.worker(dispatcher.url, "faults", concurrency=1)

    # Then the job runs again once its lease has expired, and finishes exactly once
    final = await api.wait_final("faults", [job["id"]], timeout=20)
    done = final[job["id"]]
    assert done["status"] == "finished", done
    assert done["result"] == "slept after 1 earlier start(s)"
    assert done["attempts"] == 2
    runs = start_markers(markers, job["id"])
    assert len(runs) == 2, runs
    assert runs[0]["pid"] == first.pid and runs[1]["pid"] != first.pid, runs
    assert done["started_at"] >= held["lease_expires"], "taken again before the lease expired"
    assert runs[1]["time"] >= killed_at
    assert finished_ids(markers) == [job["id"]]


async def test_late_delete_with_an_expired_lease_answers_409(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a job taken, whose lease expired, then taken again (no worker: raw HTTP)
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("late", ttr=1.0, max_attempts=5)
    job = await api.put("late", "coro_add", 1, 2)
    status, first = await api.take("late")
    assert status == 200 and first["id"] == job["id"] and first["lease"]

    async def pending_again() -> bool:
        return (await api.get("late", job["id"]))["status"] == "pending"

    await wait_for(pending_again, timeout=10, what="the lease to expire")
    status, second = await api.take("late")
    assert status == 200 and second["id"] == job["id"]
    assert second["lease"] != first["lease"]
    before = await api.get("late", job["id"])

    # When the first holder reports late, with its old lease
    status, body = await api.delete("late", job["id"], {"result": "late"}, lease=first["lease"])

    # Then it is refused with 409 and a JSON error, and the job is untouched
    assert status == 409, body
    assert body["error"] == "lease_mismatch" and job["id"] in body["message"]
    assert await api.get("late", job["id"]) == before
    assert before["status"] == "started" and before["result"] is None

    # And the current holder can still finish it
    status, body = await api.delete("late", job["id"], {"result": "mine"}, lease=second["lease"])
    assert status == 200, body
    assert (body["status"], body["result"], body["attempts"]) == ("finished", "mine", 2)


async def test_acknowledged_jobs_survive_kill_9_of_the_dispatcher(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given jobs the dispatcher acknowledged with 200
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("durable")
    acked = await asyncio.gather(*(api.put("durable", "plain_mul", i, 7) for i in range(60)))

    # When the dispatcher is killed with SIGKILL and restarted on the same data
    assert dispatcher.proc.kill() == -signal.SIGKILL
    restarted = await cluster.dispatcher(dispatcher.data)
    api = Api(session, restarted.url)

    # Then every acknowledged job is there, as it was put
    for job in acked:
        assert await api.get("durable", job["id"]) == job

    # And a worker processes them all
    await cluster.worker(restarted.url, "durable", concurrency=4)
    final = await api.wait_final("durable", [job["id"] for job in acked], timeout=30)
    for i, job in enumerate(acked):
        done = final[job["id"]]
        assert done["status"] == "finished", done
        assert done["result"] == {"product": i * 7, "thread": True}


async def test_long_poll_is_answered_as_soon_as_a_job_arrives(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a worker-less queue and a take that waits up to 20 s
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("poll")
    asked_at = time.time()
    async with long_poll(dispatcher.url, "poll", wait=20) as poll:
        # (the queue is still empty: the long-poll has nothing to take yet)
        assert (await api.take("poll"))[0] == 404

        # When a job is enqueued while it waits
        put_at = time.monotonic()
        job = await api.put("poll", "coro_add", 1, 1)

        # Then the waiting take gets it at once, far sooner than the wait or the store's
        # 5 s safety re-check
        status, taken = await asyncio.wait_for(poll, 20)
        delivered_in = time.monotonic() - put_at
    assert status == 200 and taken["id"] == job["id"], taken
    assert job["created_at"] >= asked_at - 0.01, "the job existed before the take was sent"
    assert delivered_in < 2.0, f"delivered {delivered_in:.2f}s after the put"


@pytest.mark.timeout(90)
async def test_50_concurrent_takers_each_job_taken_exactly_once(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given 300 jobs and no worker
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("claim", ttr=600)
    put = await asyncio.gather(*(api.put("claim", "coro_add", i, 0) for i in range(300)))
    ids = {job["id"] for job in put}
    assert len(ids) == 300

    # When 50 takers take in loops, concurrently, until the queue is empty
    taken: collections.Counter[str] = collections.Counter()
    leases: dict[str, set[str]] = collections.defaultdict(set)
    per_taker: collections.Counter[int] = collections.Counter()
    start = asyncio.Event()

    async def taker(n: int) -> None:
        async with aiohttp.ClientSession() as own:
            me = Api(own, dispatcher.url)
            await start.wait()
            while True:
                status, job = await me.take("claim")
                if status == 404:
                    return
                assert status == 200, job
                taken[job["id"]] += 1
                leases[job["id"]].add(job["lease"])
                per_taker[n] += 1

    takers = [asyncio.create_task(taker(n)) for n in range(50)]
    start.set()
    await asyncio.wait_for(asyncio.gather(*takers), 60)

    # Then every job was handed out exactly once
    assert set(taken) == ids
    assert [i for i, count in taken.items() if count != 1] == []
    assert all(len(lease) == 1 for lease in leases.values())
    assert sum(per_taker.values()) == 300 and len(per_taker) > 1
    for job_id in list(ids)[:20]:
        job = await api.get("claim", job_id)
        assert (job["status"], job["attempts"]) == ("started", 1)


async def test_worker_waits_for_a_dispatcher_and_survives_its_restart(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given a data directory that holds the queue (created by a dispatcher since stopped:
    # a worker that reaches a dispatcher without its queue stops, so the queue must exist
    # the moment the dispatcher answers)
    data = tmp_path / "restart-data"
    setup = await cluster.dispatcher(data)
    await Api(session, setup.url).create_queue("later")
    setup.proc.stop()
    # ... and a worker started before any dispatcher listens on its port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    worker = cluster.spawn("worker", cluster.worker_argv(url, "later"))
    await wait_for(lambda: "cannot take" in worker.log(), timeout=15, what="a failed take")
    assert worker.running()

    # When the dispatcher comes up on that port
    listen = ("--listen", f"127.0.0.1:{port}")
    dispatcher = await cluster.dispatcher(data, *listen)
    api = Api(session, dispatcher.url)
    first = await api.put("later", "coro_add", 1, 2)
    # Then the worker reconnects by itself and runs the job
    assert (await api.wait_final("later", [first["id"]], timeout=20))[first["id"]]["result"]

    # And when the dispatcher is killed and restarted, the worker carries on
    dispatcher.proc.kill()
    await dispatcher.proc.wait_exit(timeout=10)
    dispatcher = await cluster.dispatcher(data, *listen)
    second = await api.put("later", "coro_add", 3, 4)
    final = await api.wait_final("later", [second["id"]], timeout=30)
    assert final[second["id"]]["status"] == "finished"
    assert worker.running()


async def test_worker_waits_for_its_queue_to_be_created(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a worker on a queue nobody has created yet
    dispatcher = await cluster.dispatcher()
    worker = cluster.spawn("worker", cluster.worker_argv(dispatcher.url, "not_yet"))
    await wait_for(lambda: "does not exist" in worker.log(), timeout=15, what="a refused take")
    assert worker.running()
    # When the queue is created and a job put
    api = Api(session, dispatcher.url)
    await api.create_queue("not_yet")
    job = await api.put("not_yet", "coro_add", 2, 2)
    # Then the worker runs it
    final = await api.wait_final("not_yet", [job["id"]], timeout=20)
    assert final[job["id"]]["status"] == "finished"
