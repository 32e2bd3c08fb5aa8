"""A Worker's outcomes reach a real in-process dispatcher in batches, with today's guarantees.

The worker talks HTTP to the dispatcher of the ``client`` fixture (its own TCP server on
loopback); a counting subclass of the client counts the requests it makes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.jobs import finished_ids, method, start_markers
from tests.dispatcher.conftest import Client as TestClient
from tqueues.client import Client
from tqueues.client.stream import TakeStream
from tqueues.dispatcher.keys import store_key
from tqueues.errors import DispatcherUnavailable, TqueuesError
from tqueues.worker import Job, Worker


class CountedTakeStream(TakeStream):
    """A real take stream that tells its client of each take (``take``)."""

    client: CountingClient

    async def take(self, queues: Sequence[str], count: int = 1, **kwargs: Any) -> Any:
        docs = await super().take(queues, count, **kwargs)
        self.client.took(queues, count, docs)
        return docs


class CountingClient(Client):
    """A real client that counts its requests by their last path segment (or method), and
    the takes on its take stream as ``take``."""

    def __init__(self, *args: Any, fail_reports: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter[str] = collections.Counter()
        self.outcomes = 0
        self.taken_along = 0  #: jobs asked for along with outcomes
        self.got_along = 0  #: jobs that came along with outcomes
        self.along_asks = 0  #: reports that asked for jobs along
        self.full_takes = 0  #: takes that got every job they asked for
        self.fail_reports = fail_reports  #: the first reports fail as if the network did

    async def request(
        self, method: str, path: Sequence[str], body: Any = None, **kwargs: Any
    ) -> Any:
        self.calls[path[-1] if path[0] == "queues" and len(path) > 2 else method] += 1
        return await super().request(method, path, body, **kwargs)

    async def report(
        self, queue: str, outcomes: Sequence[Mapping[str, Any]], **kwargs: Any
    ) -> list[dict[str, Any] | TqueuesError]:
        self._reporting(outcomes)
        return await super().report(queue, outcomes, **kwargs)

    async def report_and_take(
        self, queue: str, outcomes: Sequence[Mapping[str, Any]], count: int, **kwargs: Any
    ) -> tuple[list[dict[str, Any] | TqueuesError], list[dict[str, Any]]]:
        self._reporting(outcomes)
        self.taken_along += count
        self.along_asks += count > 0
        results, jobs = await super().report_and_take(queue, outcomes, count, **kwargs)
        self.got_along += len(jobs)
        return results, jobs

    def take_stream(self) -> TakeStream:
        return CountedTakeStream(self)

    def took(self, queues: Sequence[str], count: int, docs: list[dict[str, Any]]) -> None:
        """A take on the take stream came back with ``docs``."""
        self.calls["take"] += 1
        self.full_takes += len(docs) >= count

    def _reporting(self, outcomes: Sequence[Mapping[str, Any]]) -> None:
        if self.fail_reports:
            self.fail_reports -= 1
            raise DispatcherUnavailable("a simulated network failure")
        self.outcomes += len(outcomes)


async def _enqueue(
    client: TestClient, n: int, name: str = "coro_add", args: list[Any] | None = None
) -> None:
    jobs = [{"method": method(name), "args": args or [i, 1]} for i in range(n)]
    response = await client.post("/queues/q/jobs", json={"jobs": jobs})
    assert response.status == 201


def _worker(client: TestClient, **options: Any) -> Worker:
    """A worker of queue ``q`` talking to the test dispatcher (``burst`` unless told)."""
    options.setdefault("burst", True)
    return Worker("unused", ["q"], client=Client(str(client.make_url("/"))), **options)


async def _job(client: TestClient, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = await (await client.get(f"/queues/q/jobs/{job_id}")).json()
    return job


async def _stats(client: TestClient) -> dict[str, Any]:
    response = await client.get("/queues/q/stats")
    stats: dict[str, Any] = await response.json()
    return stats


async def test_a_worker_reports_many_outcomes_per_request(client: TestClient) -> None:
    await _enqueue(client, 300)
    counting = CountingClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=10, burst=True, client=counting)
    counts = await worker.run()
    assert counts["finished"] == 300
    stats = await _stats(client)
    assert stats["jobs"]["finished"] == 300 and stats["total"] == 300
    # Every outcome went through the batched route, and fewer requests than outcomes.
    assert counting.outcomes == 300
    assert counting.calls["finish"] == 0
    assert counting.calls["outcomes"] == worker.reporter.requests
    assert counting.calls["outcomes"] < 300 * 0.6, counting.calls
    assert counting._session is None  # closed after the flush


async def test_failures_and_refusals_are_reported_in_batches(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.patch("/queues/q", json={"max_attempts": 1})
    assert response.status == 200
    await _enqueue(client, 20, "coro_raise")
    counting = CountingClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=5, burst=True, client=counting)
    assert (await worker.run())["failed"] == 20
    stats = await _stats(client)
    assert stats["jobs"]["buried"] + stats["jobs"]["failed"] == 20

    # A stale lease: the outcome is refused (logged), not retried, not raised.
    await _enqueue(client, 1)
    response = await client.post("/queues/q/take")
    doc = (await response.json())["jobs"][0]
    response = await client.post(f"/queues/q/jobs/{doc['id']}/release")
    assert response.status == 200
    worker = Worker("unused", ["q"], client=CountingClient(str(client.make_url("/"))))
    with caplog.at_level(logging.WARNING, logger="tqueues.worker"):
        async with worker._job(doc):
            pass
        await worker.close()
    assert any(getattr(r, "action", "") == "report_refused" for r in caplog.records)


async def test_a_result_the_dispatcher_would_refuse_fails_the_run_with_its_reason(
    client: TestClient,
) -> None:
    # Given a job whose method returns an integer past 2**53 (the dispatcher refuses it:
    # RethinkDB would keep it as a float)
    response = await client.patch("/queues/q", json={"max_attempts": 1})
    assert response.status == 200
    await _enqueue(client, 1, "coro_power", [2, 60])
    # When a worker runs it
    assert (await _worker(client).run())["failed"] == 1
    # Then the run failed, with the reason, and the job is not left started until its lease
    # expires (the outcome refused as a whole)
    response = await client.get("/queues/q/jobs")
    [job] = (await response.json())["jobs"]
    assert job["status"] == "buried", job
    assert "integer" in job["error"].lower(), job["error"]


async def test_a_transport_error_is_retried_until_delivered(client: TestClient) -> None:
    await _enqueue(client, 3)
    counting = CountingClient(str(client.make_url("/")), fail_reports=2)
    worker = Worker("unused", ["q"], concurrency=3, burst=True, client=counting)
    assert (await worker.run())["finished"] == 3
    assert (await _stats(client))["jobs"]["finished"] == 3
    assert counting.outcomes == 3


async def test_a_cancelled_job_is_given_back_through_the_reporter(
    client: TestClient, tmp_path: Path
) -> None:
    await _enqueue(client, 1, "marked_sleep", [str(tmp_path), 60.0])
    counting = CountingClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], client=counting, grace=0.1)
    runner = asyncio.create_task(worker.run())
    # Its method is running (its start marker is written), not merely claimed: a job
    # taken but not started yet is given back as never started, not counted here.
    async with asyncio.timeout(10):
        while not list(tmp_path.glob("start-*")):
            await asyncio.sleep(0.01)
    worker.stop()
    counts = await runner
    assert counts["given_back"] == 1
    stats = await _stats(client)
    assert stats["jobs"]["pending"] == 1 and stats["jobs"]["started"] == 0
    assert counting.calls["outcomes"] == 1 and counting.calls["release"] == 0


async def test_a_standalone_job_reports_on_its_own(client: TestClient) -> None:
    await _enqueue(client, 1)
    async with CountingClient(str(client.make_url("/"))) as counting:
        doc = (await counting.take_many("q", 1))[0]
        async with Job(counting, doc, allow=["tests.acceptance.jobs"]) as job:
            pass
        assert job.result == {"sum": 1, "thread": False}
        assert counting.calls["finish"] == 1 and counting.calls["outcomes"] == 0
    assert (await _stats(client))["jobs"]["finished"] == 1


class GatedClient(CountingClient):
    """Holds every report until ``gate`` opens, as a slow dispatcher would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def request(
        self, method: str, path: Sequence[str], body: Any = None, **kwargs: Any
    ) -> Any:
        if path[-1] == "outcomes":
            await self.gate.wait()
        return await super().request(method, path, body, **kwargs)


async def test_a_prefetched_job_runs_while_the_outcome_is_delivered(
    client: TestClient,
) -> None:
    await _enqueue(client, 4)
    gated = GatedClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=1, prefetch=1, burst=True, client=gated)
    worker.ran(0.001)  # as if a short job had run: the worker takes one ahead
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while worker.counts["taken"] < 2:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    # The first outcome is held: the prefetched job ran all the same, but no more than
    # `concurrency` outcomes wait for delivery, so nothing else is taken or run.
    assert gated.calls["take"] == 1 and worker.counts["taken"] == 2
    stats = await _stats(client)
    assert stats["jobs"]["started"] == 2 and stats["jobs"]["finished"] == 0
    gated.gate.set()
    assert (await runner)["finished"] == 4
    assert (await _stats(client))["jobs"]["finished"] == 4


# -- taking the next jobs: along with the outcomes, and ahead of the free slots -----------------


async def test_a_busy_worker_takes_its_next_jobs_along_with_its_outcomes(
    client: TestClient,
) -> None:
    await _enqueue(client, 300)
    counting = CountingClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=10, burst=True, client=counting)
    counts = await worker.run()
    assert counts["finished"] == 300 and counts["taken"] == 300
    stats = await _stats(client)
    assert stats["jobs"]["finished"] == 300 and stats["total"] == 300
    # Most jobs came in the answers to outcome reports, not in requests of their own.
    assert counting.taken_along >= 150, counting.taken_along
    assert counting.calls["take"] < counting.calls["outcomes"], counting.calls


@pytest.mark.parametrize(
    ("prefetch", "short_jobs_seen", "held"), [(3, True, 5), (0, True, 2), (3, False, 2)]
)
async def test_a_worker_holds_its_concurrency_plus_prefetch_jobs(
    client: TestClient, tmp_path: Path, prefetch: int, short_jobs_seen: bool, held: int
) -> None:
    await _enqueue(client, 8, "marked_sleep", [str(tmp_path), 0.5])
    worker = _worker(client, concurrency=2, prefetch=prefetch)
    if short_jobs_seen:
        worker.ran(0.001)
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(20):
        while not list(tmp_path.glob("start-*")):
            await asyncio.sleep(0.01)
    # The first take asked for concurrency + prefetch jobs once jobs are known to be short
    # (and for no more than the slots before any job has ended: however long the jobs
    # run, none waits in this worker while another worker could start it).
    assert (await _stats(client))["jobs"]["started"] == held
    async with asyncio.timeout(20):
        while not runner.done():
            running = len(list(tmp_path.glob("start-*"))) - len(finished_ids(tmp_path))
            assert running <= 2  # the prefetched ones wait for a free slot
            await asyncio.sleep(0.02)
    assert (await runner)["finished"] == 8
    assert (await _stats(client))["jobs"]["finished"] == 8


async def _enqueue_sleepers(
    client: TestClient, marker_dir: Path, *sleeps: float, ttr: float
) -> list[str]:
    jobs = [
        {"method": method("marked_sleep"), "args": [str(marker_dir), s], "ttr": ttr, "priority": i}
        for i, s in enumerate(sleeps)
    ]
    response = await client.post("/queues/q/jobs", json={"jobs": jobs})
    assert response.status == 201
    return [job["id"] for job in (await response.json())["jobs"]]


@pytest.mark.parametrize(
    ("first", "then", "ttr", "attempts", "dropped"),
    [
        # The second job waits 2.5 s of its 3 s lease behind the first: its lease is
        # extended before it starts (started as it was, it would lose the lease while it
        # runs: its first heartbeat comes 1 s after its start).
        (2.5, 1.0, 3.0, 1, False),
        # Its 0.5 s lease expires while it waits: the job is someone else's now (here:
        # pending again), so it is not run under the dead lease but taken anew.
        (1.5, 0.0, 0.5, 2, True),
    ],
)
async def test_a_prefetched_job_runs_only_under_a_live_lease(
    client: TestClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    first: float,
    then: float,
    ttr: float,
    attempts: int,
    dropped: bool,
) -> None:
    _, second = await _enqueue_sleepers(client, tmp_path, first, then, ttr=ttr)
    worker = _worker(client, concurrency=1, prefetch=1)
    worker.ran(0.001)  # as if a short job had run: the second job is taken ahead
    with caplog.at_level(logging.WARNING, logger="tqueues"):
        assert (await worker.run())["finished"] >= 2
    actions = [getattr(r, "action", "") for r in caplog.records]
    assert "report_refused" not in actions, caplog.text
    waited_out = [r for r in caplog.records if "waited past its lease" in r.getMessage()]
    assert bool(waited_out) == dropped and actions.count("lease_lost") == dropped, caplog.text
    assert len(start_markers(tmp_path, second)) == 1  # one run, under a live lease
    job = await _job(client, second)
    assert job["status"] == "finished" and job["attempts"] == attempts


async def test_a_job_running_past_its_ttr_keeps_its_lease(
    client: TestClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Heartbeats every ttr/3 (the first from a timer) keep a 0.6 s lease through 1.5 s.
    (job_id,) = await _enqueue_sleepers(client, tmp_path, 1.5, ttr=0.6)
    worker = _worker(client)
    with caplog.at_level(logging.WARNING, logger="tqueues"):
        assert (await worker.run())["finished"] == 1
    assert not [r for r in caplog.records if getattr(r, "action", "") == "lease_lost"]
    job = await _job(client, job_id)
    assert job["status"] == "finished" and job["attempts"] == 1
    assert len(start_markers(tmp_path, job_id)) == 1


async def test_a_worker_stops_prefetching_jobs_that_outlast_a_round_trip(
    client: TestClient, tmp_path: Path
) -> None:
    # As if short jobs had run, the worker takes 1 + 3 jobs. Once it has seen a job run
    # 0.4 s and a take come back in milliseconds, it holds none ready: the last jobs stay
    # in the queue for another worker until this one has room for them.
    await _enqueue(client, 6, "marked_sleep", [str(tmp_path), 0.4])
    worker = _worker(client, concurrency=1, prefetch=3)
    worker.ran(0.001)
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(20):
        while (stats := await _stats(client))["jobs"]["finished"] < 2:
            await asyncio.sleep(0.01)
    assert stats["jobs"]["pending"] >= 1, stats
    assert worker.prefetch_target() == 0
    assert (await runner)["finished"] == 6


async def test_an_idle_worker_long_polls_instead_of_taking_along_its_reports(
    client: TestClient,
) -> None:
    # One job at a time: the queue is empty whenever an outcome is reported, so every
    # job goes to the waiting long-poll (a take that came back short stops the reports
    # asking for jobs along; one that got all it asked for may let the next ask once:
    # how many it asked for depends on whether the job before had left its slot yet).
    counting = CountingClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=2, client=counting, wait=10)
    runner = asyncio.create_task(worker.run())
    for n in range(1, 4):
        await _enqueue(client, 1)
        async with asyncio.timeout(10):
            while (await _stats(client))["jobs"]["finished"] < n:
                await asyncio.sleep(0.01)
    worker.stop()
    assert (await runner)["finished"] == 3
    assert counting.outcomes == 3 and counting.got_along == 0
    assert counting.calls["take"] >= 3, counting.calls
    assert counting.along_asks <= counting.full_takes, (counting.along_asks, counting.calls)


async def test_a_stopping_worker_gives_back_the_jobs_it_took_ahead(
    client: TestClient, tmp_path: Path
) -> None:
    await _enqueue(client, 6, "marked_sleep", [str(tmp_path), 60.0])
    worker = _worker(client, concurrency=1, prefetch=3, grace=0.1, burst=False)
    worker.ran(0.001)  # as if a short job had run: three are taken ahead
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not list(tmp_path.glob("start-*")):
            await asyncio.sleep(0.01)
    assert (await _stats(client))["jobs"]["started"] == 4  # one running, three ahead
    worker.stop()
    counts = await runner
    assert counts["given_back"] == 1
    stats = await _stats(client)
    assert stats["jobs"]["pending"] == 6 and stats["jobs"]["started"] == 0
    listing = await (await client.get("/queues/q/jobs?status=pending")).json()
    assert all(job["attempts"] == 0 for job in listing["jobs"])  # releases: no attempt lost


async def test_stop_ends_a_waiting_long_poll_at_once(client: TestClient) -> None:
    worker = Worker("unused", ["q"], client=Client(str(client.make_url("/"))), wait=30)
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):  # the worker waits in a long-poll take
        while not client.app[store_key]._waiters["q"]:
            await asyncio.sleep(0.01)
    worker.stop()
    async with asyncio.timeout(5):  # not after the 30 s wait
        counts = await runner
    assert counts["taken"] == 0


async def test_cancelling_a_waiting_worker_is_not_taken_for_a_stop(client: TestClient) -> None:
    worker = Worker("unused", ["q"], client=Client(str(client.make_url("/"))), wait=30)
    runner = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not client.app[store_key]._waiters["q"]:
            await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await runner


class TakeRecordingClient(CountingClient):
    """A counting client that also records the queue each take from several queues got."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.takes: list[tuple[tuple[str, ...], int, str | None]] = []

    def took(self, queues: Sequence[str], count: int, docs: list[dict[str, Any]]) -> None:
        super().took(queues, count, docs)
        self.takes.append((tuple(queues), count, docs[0]["queue"] if docs else None))


async def _two_queues(client: TestClient, n: int) -> TakeRecordingClient:
    """Queues q and q2 with ``n`` quick jobs each; a recording client of the dispatcher."""
    assert (await client.put("/queues/q2")).status == 201
    for queue in ("q", "q2"):
        jobs = [{"method": method("coro_add"), "args": [i, 1]} for i in range(n)]
        assert (await client.post(f"/queues/{queue}/jobs", json={"jobs": jobs})).status == 201
    return TakeRecordingClient(str(client.make_url("/")))


async def test_a_worker_of_several_queues_takes_batches_from_each_in_turn(
    client: TestClient,
) -> None:
    recording = await _two_queues(client, 150)
    worker = Worker("unused", ["q", "q2"], concurrency=10, burst=True, client=recording)
    counts = await worker.run()
    assert counts["finished"] == 300
    for queue in ("q", "q2"):
        stats: dict[str, Any] = await (await client.get(f"/queues/{queue}/stats")).json()
        assert stats["jobs"]["finished"] == 150, (queue, stats)
    # One take at a time, each asking for what keeps the worker busy (not one job)
    takes = recording.takes
    assert recording.calls["take"] == len(takes) < 300 / 5, recording.calls
    # The first take fills the slots (no job has ended yet), the next ones ask for the
    # default prefetch too once the jobs are seen to be short
    assert takes[0] == (("q", "q2"), 10, "q")
    assert max(count for _, count, _ in takes) > 10, takes
    # Each take starts at the next queue: while both have jobs, they take turns
    assert [got for _, _, got in takes[:4]] == ["q", "q2", "q", "q2"], takes
    assert [order[0] for order, _, _ in takes[:4]] == ["q", "q2", "q", "q2"]


async def test_a_worker_of_several_queues_in_strict_order_drains_the_first_first(
    client: TestClient,
) -> None:
    recording = await _two_queues(client, 100)
    worker = Worker(
        "unused", ["q", "q2"], concurrency=10, burst=True, client=recording, strict_order=True
    )
    assert (await worker.run())["finished"] == 200
    # Every take starts at the first queue: the second gets turns only once it is empty
    takes = recording.takes
    assert {order for order, _, _ in takes} == {("q", "q2")}, takes
    got = [queue for _, _, queue in takes if queue is not None]
    assert got == sorted(got) and got[0] == "q" and got[-1] == "q2", takes


@pytest.mark.parametrize("name", ["cancellable_sleep", "swallows_cancel"])
async def test_a_job_asked_to_stop_ends_cancelled_whatever_its_method_does(
    client: TestClient, tmp_path: Path, name: str
) -> None:
    # Given a running job asked to stop (by its heartbeat's answer, here called directly)
    await _enqueue(client, 1, name, [str(tmp_path), 60.0])
    async with CountingClient(str(client.make_url("/"))) as counting:
        doc = (await counting.take_many("q", 1))[0]
        await counting.cancel("q", doc["id"])
        job = Job(counting, doc, allow=["tests.acceptance.jobs"])

        async def stop_once_started() -> None:
            while not start_markers(tmp_path, doc["id"]):
                await asyncio.sleep(0.01)
            job.request_cancel()

        stopping = asyncio.create_task(stop_once_started())
        async with asyncio.timeout(10):
            async with job:
                pass
        await stopping
        # Then it stopped (even a method that swallowed the CancelledError), the task
        # carries no cancellation left over, and the job ended cancelled
        assert job.cancelled and type(job.exception).__name__ == "JobCancelled"
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        assert (await counting.get("q", doc["id"]))["status"] == "cancelled"


async def test_a_cancel_heard_after_the_method_returned_changes_nothing(
    client: TestClient,
) -> None:
    await _enqueue(client, 1)
    async with CountingClient(str(client.make_url("/"))) as counting:
        doc = (await counting.take_many("q", 1))[0]
        async with Job(counting, doc, allow=["tests.acceptance.jobs"]) as job:
            job.request_cancel()  # its method returned: a finish is on its way, and wins
        assert not job.cancelled and job.exception is None
        assert (await counting.get("q", doc["id"]))["status"] == "finished"
