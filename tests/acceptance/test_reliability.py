"""Faults on purpose, with real processes: the dispatcher killed under load, poison jobs
that crash or hang their worker, and duplicate, late or bogus acknowledgements.

docs/reliability.rst maps each fault to the test here that proves what happens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.acceptance.conftest import Api, Cluster, Proc, wait_for
from tests.acceptance.jobs import finished_ids, method, read_runs, start_markers

FINAL = ("finished", "failed", "buried")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ws_url(http_url: str, queue: str) -> str:
    return http_url.replace("http://", "ws://", 1) + f"ws?queue={queue}"


async def snapshot(session: aiohttp.ClientSession, url: str, queue: str) -> list[dict[str, Any]]:
    """Every job the queue holds, as the WebSocket's initial messages list them."""
    jobs = []
    async with session.ws_connect(ws_url(url, queue)) as ws:
        while True:
            message = await ws.receive(timeout=15)
            assert message.type is aiohttp.WSMsgType.TEXT, message
            data = message.json()
            if data["type"] == "synced":
                return jobs
            assert data["type"] == "initial", data
            jobs.append(data["job"])


async def count_finished_events(
    session: aiohttp.ClientSession, url: str, queue: str, finished: collections.Counter[str]
) -> None:
    """Count the ``finished`` changes of each job on /ws, reconnecting whenever it drops.

    Runs until cancelled. Changes made while no connection is open are not seen (the
    snapshot shows their result), so this can only catch a second finish, never prove
    there was none; the final state and the run records do the rest.
    """
    while True:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError, TimeoutError):
            async with session.ws_connect(ws_url(url, queue), heartbeat=5) as ws:
                async for message in ws:
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        break
                    data = message.json()
                    if data["type"] == "change" and data["kind"] == "finished":
                        finished[data["job"]["id"]] += 1
        await asyncio.sleep(0.05)  # reconnect pace while the dispatcher is down


# -- a. the dispatcher killed with SIGKILL under load --------------------------------------

JOBS = 2_000
PRODUCERS = 8
KILL_AFTER = 800  # acknowledgements
WORKER_CONCURRENCY = 8


@pytest.mark.timeout(90)
async def test_dispatcher_sigkill_under_load_loses_no_acknowledged_job(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given a dispatcher on a fixed port, a queue with a short ttr and two workers
    listen = ("--listen", f"127.0.0.1:{free_port()}")
    data = tmp_path / "load-data"
    dispatcher = await cluster.dispatcher(data, *listen)
    url = dispatcher.url
    api = Api(session, url)
    await api.create_queue("load", ttr=2.0, max_attempts=10)
    for _ in range(2):
        await cluster.worker(url, "load", concurrency=WORKER_CONCURRENCY)
    runs_file = tmp_path / "runs.txt"
    finished_events: collections.Counter[str] = collections.Counter()
    watcher = asyncio.create_task(count_finished_events(session, url, "load", finished_events))

    # ... and producers enqueueing 2,000 jobs over HTTP, concurrently
    acked: dict[str, int] = {}  # job id -> n, for every POST answered 200
    maybe_stored: list[int] = []  # n of POSTs that got no answer (sent; stored or not)
    refused = 0  # POSTs whose connection was refused (never sent; not stored)
    timeout = aiohttp.ClientTimeout(total=10)

    async def produce(ns: range) -> None:
        nonlocal refused
        async with aiohttp.ClientSession(timeout=timeout) as own:
            for n in ns:
                body = {"queue": "load", "method": method("record_run"),
                        "args": [str(runs_file), n], "kwargs": {}}  # fmt: skip
                while True:  # until acknowledged: retried only while unacknowledged
                    try:
                        async with own.post(url, json=body) as response:
                            status, job = response.status, await response.json()
                    except aiohttp.ClientConnectorError:
                        refused += 1
                    except (aiohttp.ClientError, TimeoutError):
                        maybe_stored.append(n)
                    else:
                        assert status == 200, job
                        acked[job["id"]] = n
                        break
                    await asyncio.sleep(0.05)  # retry pace while the dispatcher is down

    # When the dispatcher is killed with SIGKILL mid-way and restarted on the same data
    producers = [asyncio.create_task(produce(range(p, JOBS, PRODUCERS))) for p in range(PRODUCERS)]
    try:
        await wait_for(lambda: len(acked) >= KILL_AFTER, timeout=30, what="800 acks")
        assert dispatcher.proc.kill() == -signal.SIGKILL
        acked_at_kill = len(acked)
        ran_at_kill = len(read_runs(runs_file))
        restarted = await cluster.dispatcher(data, *listen)
        assert restarted.url == url
        await asyncio.wait_for(asyncio.gather(*producers), 60)
    finally:
        for task in producers:
            task.cancel()
        await asyncio.gather(*producers, return_exceptions=True)
    assert KILL_AFTER <= acked_at_kill < JOBS, "the kill did not land mid-way"
    assert ran_at_kill > 0, "the workers were not draining when the dispatcher died"
    assert len(acked) == JOBS and sorted(acked.values()) == list(range(JOBS))

    # Then every acknowledged job runs and ends finished
    await wait_for(
        lambda: set(read_runs(runs_file)) >= set(acked),
        timeout=40,
        interval=0.2,
        what="every acknowledged job to run",
    )
    final = await api.wait_final("load", list(acked), timeout=30)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    runs = read_runs(runs_file)
    assert [j for j in final.values() if j["status"] != "finished"] == []

    # And each is finished exactly once in the final state. The function may have run more
    # than once (at least once): a run whose outcome report was lost in the kill (or sent
    # after the lease expired while the dispatcher was down) runs again after its lease
    # expires, and the late report of the first run is refused with 409. The stored result
    # is the token of one real run, and the change streams never saw a second finish.
    for job_id, job in final.items():
        assert len(runs[job_id]) >= 1
        assert job["result"] in runs[job_id], job
    assert [i for i, count in finished_events.items() if count > 1] == []
    repeated = {i: len(r) for i, r in runs.items() if len(r) > 1}
    # Only runs in flight at the kill can repeat: at most each worker's concurrency.
    assert len(repeated) <= 2 * WORKER_CONCURRENCY, repeated

    # And the store holds exactly the acknowledged jobs plus, possibly, some of the
    # unanswered POSTs (stored before the kill, answer lost), which ran as well.
    stored = {job["id"]: job for job in await snapshot(session, url, "load")}
    assert set(stored) >= set(acked)
    extra = [job for i, job in stored.items() if i not in acked]
    assert len(extra) <= len(maybe_stored)
    assert all(job["args"][1] in maybe_stored for job in extra), extra
    # ...which run too: one claimed at the kill (a put's job is handed to a waiting worker
    # at its commit, before the answer) may wait for its lease to expire first.
    everything = await api.wait_final("load", list(stored), timeout=30)
    assert [j for j in everything.values() if j["status"] != "finished"] == []
    print(
        f"acked {len(acked)} (at the kill: {acked_at_kill}); unanswered {len(maybe_stored)}, "
        f"of which stored {len(extra)}; refused {refused}; repeated runs {len(repeated)}; "
        f"finished changes seen {sum(finished_events.values())}"
    )


async def test_outcome_lost_in_a_dispatcher_outage_runs_again_and_finishes_once(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path, markers: Path
) -> None:
    # Given a worker running a job (ttr 1 s) on a dispatcher on a fixed port
    listen = ("--listen", f"127.0.0.1:{free_port()}")
    data = tmp_path / "outage-data"
    dispatcher = await cluster.dispatcher(data, *listen)
    api = Api(session, dispatcher.url)
    await api.create_queue("outage", ttr=1.0)
    worker = await cluster.worker(dispatcher.url, "outage", concurrency=1)
    job = await api.put("outage", "marked_sleep", str(markers), 0.5, 0.0)
    await wait_for(lambda: start_markers(markers, job["id"]), timeout=10, what="the first run")

    # When the dispatcher dies with SIGKILL before the run ends, and stays down until the
    # worker has given up reporting the outcome (it retries until the lease would expire)
    dispatcher.proc.kill()
    await wait_for(
        lambda: "outcome not delivered" in worker.log(), timeout=15, what="the report to be lost"
    )
    assert finished_ids(markers) == [job["id"]]  # the run did complete
    await cluster.dispatcher(data, *listen)

    # Then the job runs again once its lease has expired, and is finished once
    done = (await api.wait_final("outage", [job["id"]], timeout=20))[job["id"]]
    assert (done["status"], done["attempts"]) == ("finished", 2), done
    assert done["result"] == "slept after 1 earlier start(s)"
    assert finished_ids(markers) == [job["id"], job["id"]]  # at least once: here twice
    assert worker.running()


# -- b, c. poison jobs ----------------------------------------------------------------------


async def supervise(cluster: Cluster, workers: list[Proc], argv: list[str], exits: list[int]):
    """Restart any worker process that died, as systemd would (Restart=always); until cancelled."""
    while True:
        for i, proc in enumerate(workers):
            if not proc.running():
                exits.append(proc.popen.wait())
                workers[i] = cluster.spawn("worker", argv)
        await asyncio.sleep(0.1)


async def test_poison_job_that_crashes_its_worker_is_buried_and_the_queue_flows(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given two supervised workers, and a job that kills its worker process, among others
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("crash", ttr=1.0, max_attempts=5)
    argv = cluster.worker_argv(dispatcher.url, "crash", concurrency=2)
    workers = [await cluster.worker(dispatcher.url, "crash", concurrency=2) for _ in range(2)]
    exits: list[int] = []
    supervisor = asyncio.create_task(supervise(cluster, workers, argv, exits))
    try:
        before = [await api.put("crash", "coro_add", i, 1) for i in range(5)]
        poison = await api.put("crash", "crash_worker", str(markers), max_attempts=2)
        after = [await api.put("crash", "coro_add", i, 2) for i in range(15)]

        # When the workers run them, dying on every attempt of the poison job
        normal = [job["id"] for job in before + after]
        final = await api.wait_final("crash", [poison["id"], *normal], timeout=30)
    finally:
        supervisor.cancel()
        await asyncio.gather(supervisor, return_exceptions=True)

    # Then the poison job is buried after its 2 attempts, each of which killed a worker
    buried = final[poison["id"]]
    assert (buried["status"], buried["attempts"]) == ("buried", 2), buried
    assert buried["error"].startswith("lease expired"), buried["error"]
    starts = start_markers(markers, poison["id"])
    assert len(starts) == 2 and starts[0]["pid"] != starts[1]["pid"], starts
    assert exits == [1, 1]
    # And every other job finished: the queue was not blocked
    assert [final[i]["status"] for i in normal] == ["finished"] * len(normal)


async def test_poison_job_that_hangs_its_worker_is_buried_and_the_queue_flows(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given three workers, and a job that blocks its worker's event loop for 10 minutes
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("hang", ttr=1.0, max_attempts=5)
    workers = [await cluster.worker(dispatcher.url, "hang", concurrency=1) for _ in range(3)]
    try:
        poison = await api.put("hang", "hang_worker", str(markers), max_attempts=2)
        await wait_for(lambda: start_markers(markers), timeout=10, what="the first attempt")

        # When normal jobs are put after it
        normal = [(await api.put("hang", "coro_add", i, 3))["id"] for i in range(20)]

        # Then the poison job, whose heartbeat stopped, is buried after its 2 attempts
        final = await api.wait_final("hang", [poison["id"], *normal], timeout=30)
        buried = final[poison["id"]]
        assert (buried["status"], buried["attempts"]) == ("buried", 2), buried
        assert buried["error"].startswith("lease expired"), buried["error"]
        hung = {marker["pid"] for marker in start_markers(markers, poison["id"])}
        assert len(hung) == 2
        # And the worker that is not hung ran every normal job
        assert [final[i]["status"] for i in normal] == ["finished"] * len(normal)
        assert hung <= {w.pid for w in workers}
        assert all(w.running() for w in workers)  # hung, not dead
    finally:
        # A hung loop never handles SIGTERM: kill those workers rather than wait for them.
        for proc in workers:
            if proc.pid in {m["pid"] for m in start_markers(markers)}:
                proc.kill()


# -- d. duplicate, late and bogus acknowledgements ------------------------------------------


async def raw_job(session: aiohttp.ClientSession, url: str, queue: str, job_id: str) -> bytes:
    """The job exactly as GET ?id= answers it, bytes and all."""
    async with session.get(url, params={"queue": queue, "id": job_id}) as response:
        assert response.status == 200, await response.text()
        return await response.read()


END_BODIES: list[Any] = [
    None,
    {"result": "late"},
    {"error": "ValueError: late", "traceback": "Traceback ..."},
    {"error": "MethodNotAllowed: late", "permanent": True},
    {"release": True},
    {"release": True, "delay": 5},
    {"bury": True, "reason": "late"},
]


async def test_duplicate_late_and_unknown_acknowledgements_change_nothing(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    dispatcher = await cluster.dispatcher()
    url = dispatcher.url
    api = Api(session, url)
    await api.create_queue("acks", ttr=1.0, max_attempts=5)
    await api.create_queue("other")

    async def refused(
        method_: str, job_id: str, body: Any, lease: str | None, statuses: tuple[int, ...]
    ) -> dict[str, Any]:
        """Send it; it must be refused with one of ``statuses`` (JSON) and change nothing."""
        before = await raw_job(session, url, "acks", job_id)
        params = {"queue": "acks", "id": job_id}
        if lease is not None:
            params["lease"] = lease
        async with session.request(method_, url, params=params, json=body) as response:
            answer = await response.json()
            assert response.status in statuses, (method_, body, lease, response.status, answer)
        assert await raw_job(session, url, "acks", job_id) == before, (method_, body, lease)
        return answer

    # A finished job: every second acknowledgement, with its lease or without, is refused
    put = await api.put("acks", "coro_add", 1, 1)
    status, taken = await api.take("acks")
    assert status == 200 and taken["id"] == put["id"]
    status, done = await api.delete("acks", put["id"], {"result": "first"}, lease=taken["lease"])
    assert (status, done["status"]) == (200, "finished")
    for body in END_BODIES:
        for lease in (taken["lease"], None):
            answer = await refused("DELETE", put["id"], body, lease, (409,))
            assert answer["error"] in ("invalid_transition", "lease_mismatch"), answer
    await refused("PATCH", put["id"], {"progress": 1}, taken["lease"], (409,))
    assert (await api.get("acks", put["id"]))["result"] == "first"

    # A job whose lease expired and which another taker holds now: the old lease is stale
    put = await api.put("acks", "coro_add", 2, 2)
    status, first = await api.take("acks")
    assert status == 200 and first["id"] == put["id"]

    async def pending_again() -> bool:
        return (await api.get("acks", put["id"]))["status"] == "pending"

    await wait_for(pending_again, timeout=10, what="the first lease to expire")
    # (while it waits, pending, a report with the expired lease neither ends nor takes it)
    for body in END_BODIES:
        answer = await refused("DELETE", put["id"], body, first["lease"], (409,))
        assert answer["error"] == "lease_mismatch", answer
    status, second = await api.take("acks")
    assert status == 200 and second["id"] == put["id"] and second["attempts"] == 2

    async def touch() -> None:
        """Keep the current lease (ttr 1 s) from expiring during the next comparison."""
        status, _ = await api.call(
            "PATCH", {"queue": "acks", "id": put["id"], "lease": second["lease"]}, {}
        )
        assert status == 200

    stale_or_bogus = [first["lease"], "", "0" * 32, "not-a-lease", "é\u202e%00", "x" * 4000]
    for lease in stale_or_bogus:
        for body in END_BODIES:
            await touch()
            answer = await refused("DELETE", put["id"], body, lease, (404, 409))
            assert answer["error"] in ("lease_mismatch", "job_not_found"), answer
        await touch()
        await refused("PATCH", put["id"], {"progress": 1}, lease, (404, 409))
    held = await api.get("acks", put["id"])
    assert (held["status"], held["attempts"], held["result"]) == ("started", 2, None)
    assert "progress" not in held
    # ... and the current holder still ends it
    status, done = await api.delete("acks", put["id"], {"result": "mine"}, lease=second["lease"])
    assert (status, done["status"], done["result"]) == (200, "finished", "mine")

    # Unknown ids, ids of another queue's job, malformed ids: 404 (or 400), nothing created
    put = await api.put("acks", "coro_add", 3, 3)
    before = await raw_job(session, url, "acks", put["id"])
    unknown = ["0" * 32, "f" * 32, "nothing", "../" + put["id"], put["id"].upper(), "x" * 127]
    for job_id in unknown:
        for body in END_BODIES:
            status, answer = await api.delete("acks", job_id, body, lease="0" * 32)
            assert (status, answer["error"]) == (404, "job_not_found"), (job_id, answer)
        status, answer = await api.call("PATCH", {"queue": "acks", "id": job_id}, {"a": 1})
        assert (status, answer["error"]) == (404, "job_not_found"), (job_id, answer)
        status, _ = await api.call("GET", {"queue": "acks", "id": job_id})
        assert status == 404
    status, answer = await api.delete("other", put["id"], {"result": "wrong queue"})
    assert (status, answer["error"]) == (404, "job_not_found"), answer
    for malformed in ("x" * 128, "é" * 64, "\x00", put["id"] + "\x00"):  # no job's id
        status, answer = await api.delete("acks", malformed, None)
        assert (status, answer["field"]) == (400, "id"), answer
    assert await raw_job(session, url, "acks", put["id"]) == before

    # And through all this, no job changed but the ones the real holders ended
    jobs = {job["id"]: job for job in await snapshot(session, url, "acks")}
    assert len(jobs) == 3
    assert sorted(job["status"] for job in jobs.values()) == ["finished", "finished", "pending"]


REST_ACTIONS: list[tuple[str, Any]] = [
    ("finish", {"result": "late"}),
    ("fail", {"error": "ValueError: late", "traceback": "Traceback ..."}),
    ("fail", {"error": "MethodNotAllowed: late", "permanent": True}),
    ("release", {}),
    ("requeue", {}),
    ("touch", {}),
    ("bury", {"reason": "late"}),
]


async def test_rest_late_and_bogus_acknowledgements_change_nothing(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # The same through the REST API, which the worker uses: /queues/Q/jobs/ID/ACTION?lease=
    dispatcher = await cluster.dispatcher()
    url = dispatcher.url
    api = Api(session, url)
    await api.create_queue("rest", ttr=1.0, max_attempts=5)

    async def refused(
        method_: str, job_id: str, path: str, body: Any, lease: str, statuses: tuple[int, ...]
    ) -> dict[str, Any]:
        before = await raw_job(session, url, "rest", job_id)
        async with session.request(
            method_, f"{url}queues/rest/jobs/{job_id}{path}", params={"lease": lease}, json=body
        ) as response:
            answer = await response.json()
            assert response.status in statuses, (path, body, lease, response.status, answer)
        assert await raw_job(session, url, "rest", job_id) == before, (path, body, lease)
        return answer

    # Given a job whose first lease expired, taken again under a second lease
    put = await api.put("rest", "coro_add", 1, 1)
    status, first = await api.take("rest")
    assert status == 200 and first["id"] == put["id"]

    async def pending_again() -> bool:
        return (await api.get("rest", put["id"]))["status"] == "pending"

    await wait_for(pending_again, timeout=10, what="the first lease to expire")
    status, second = await api.take("rest")
    assert status == 200 and second["id"] == put["id"]

    # When stale or bogus leases are presented, every action and update is refused
    for lease in [first["lease"], "", "0" * 32, "not-a-lease", "é\u202e%00"]:
        for action, body in REST_ACTIONS:
            status, _ = await api.call(
                "PATCH", {"queue": "rest", "id": put["id"], "lease": second["lease"]}, {}
            )
            assert status == 200  # (keeps the current lease, ttr 1 s, alive meanwhile)
            answer = await refused("POST", put["id"], f"/{action}", body, lease, (409,))
            assert answer["error"] == "lease_mismatch", answer
        await refused("PATCH", put["id"], "", {"progress": 1}, lease, (409,))

    # And once the holder has finished it, its own lease cannot end it again
    async with session.post(
        f"{url}queues/rest/jobs/{put['id']}/finish",
        params={"lease": second["lease"]},
        json={"result": "mine"},
    ) as response:
        assert response.status == 200, await response.text()
    for action, body in REST_ACTIONS:
        await refused("POST", put["id"], f"/{action}", body, second["lease"], (409,))
    done = await api.get("rest", put["id"])
    assert (done["status"], done["result"], done["attempts"]) == ("finished", "mine", 2)

    # Unknown ids: 404, nothing created
    for job_id in ["0" * 32, "nothing"]:
        for action, body in REST_ACTIONS:
            async with session.post(
                f"{url}queues/rest/jobs/{job_id}/{action}", params={"lease": "0" * 32}, json=body
            ) as response:
                assert response.status == 404, (action, await response.text())
