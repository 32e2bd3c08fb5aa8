"""Cancellation on every store (#25, part 5): what a cancel does in each state, how the run
of a started job asked to stop ends, retention, the heartbeat's look-up, and the races: a
cancel against a finish, a take or another cancel at the same instant (one wins, by
compare-and-set: never both), in one store and in two sharing a RethinkDB database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import StoreFactory
from tests.contract.test_store import expire_all, new
from tqueues import clock
from tqueues.errors import InvalidTransition, JobNotFound, LeaseMismatch, QueueNotFound
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.base import Store


async def test_a_waiting_job_is_cancelled_at_once_and_never_taken(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    pending, delayed = await store.put(new()), await store.put(new(delay=0.01))
    buried = await store.put(new())
    await store.bury("q", buried.id, reason="poison")
    for job in (pending, delayed, buried):
        cancelled = await store.cancel("q", job.id)
        assert (cancelled.status, cancelled.event) == (JobStatus.CANCELLED, "cancelled")
        assert cancelled.finished_at is not None and cancelled.lease is None
    await store.reap(clock.now() + 60)  # the delayed one's time came: it stays cancelled
    assert await store.take("q") is None
    assert (await store.count_jobs("q"))[JobStatus.CANCELLED] == 3
    assert store.counters["q"]["cancelled"] == 3


async def test_a_job_that_ended_cannot_be_cancelled(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    finished = await store.finish("q", (await store.take("q") or pytest.fail()).id, result=1)
    failed = await store.put(new())
    await store.take("q")
    await store.fail("q", failed.id, error="x", permanent=True)
    cancelled = await store.cancel("q", (await store.put(new())).id)
    for job in (finished, failed, cancelled):
        with pytest.raises(InvalidTransition):
            await store.cancel("q", job.id)
    with pytest.raises(InvalidTransition):
        await store.kick_job("q", cancelled.id)  # final: no way back
    with pytest.raises(JobNotFound):
        await store.cancel("q", "f" * 32)
    with pytest.raises(QueueNotFound):
        await store.cancel("nope", cancelled.id)


async def test_a_started_job_is_flagged_and_ends_cancelled_however_its_run_ends(
    store: Store,
) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=5))
    jobs = [await store.put(new()) for _ in range(5)]
    taken = await store.take_many("q", 5)
    assert [job.id for job in taken] == [job.id for job in jobs]
    flagged = [await store.cancel("q", job.id) for job in taken]
    for job in flagged:
        assert (job.status, job.cancel_requested, job.event) == (
            JobStatus.STARTED, True, "cancel_requested",
        )  # fmt: skip
    # The heartbeat's look-up finds them (and leaves out what is gone)
    running = [("q", job.id) for job in taken] + [("q", "f" * 32), ("nope", "x")]
    assert await store.cancel_requests(running) == [job.id for job in taken]
    # Its worker still holds it (a touch works) until the run ends; then, whatever the
    # outcome but a finish, the job ends cancelled with attempts left: never retried
    a, b, c, d, e = taken
    await store.touch("q", a.id, lease=a.lease or "")
    with pytest.raises(LeaseMismatch):
        await store.cancel("q", a.id, lease="stale")
    ended = [
        await store.fail("q", a.id, lease=a.lease, error="boom"),
        await store.release("q", b.id, lease=b.lease),
        await store.bury("q", c.id, lease=c.lease),
        await store.cancel("q", d.id, lease=d.lease),  # its worker reports it stopped it
    ]
    assert [job.status for job in ended] == [JobStatus.CANCELLED] * 4
    assert ended[0].error is None and ended[0].attempts == 1
    # a finish that comes first wins: the run had ended
    finished = await store.finish("q", e.id, lease=e.lease, result=7)
    assert (finished.status, finished.result) == (JobStatus.FINISHED, 7)
    assert await store.take("q") is None


async def test_a_flagged_job_whose_lease_runs_out_ends_cancelled(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=5))
    job = await store.put(new())
    await store.take("q")
    await store.cancel("q", job.id)
    await expire_all(store)
    assert (await store.get("q", job.id)).status is JobStatus.CANCELLED
    assert await store.take("q") is None


async def test_cancelled_jobs_are_purged_after_retention(store: Store) -> None:
    await store.create_queue(QueueConfig("q", retention=60))
    job = await store.cancel("q", (await store.put(new())).id)
    await store.reap(clock.now() + 30)
    assert (await store.get("q", job.id)).status is JobStatus.CANCELLED
    await store.reap(clock.now() + 61)
    with pytest.raises(JobNotFound):
        await store.get("q", job.id)


async def _race(store: Store, other: Store, jobs: list[JobRecord]) -> list[JobRecord]:
    """Cancel (in ``store``) and finish (in ``other``) each job at the same instant; the
    jobs after."""
    await asyncio.gather(
        *(
            call
            for job in jobs
            for call in (
                store.cancel("q", job.id),
                other.finish("q", job.id, lease=job.lease, result="done"),
            )
        ),
        return_exceptions=True,
    )
    return [await store.get("q", job.id) for job in jobs]


async def _check_race(store: Store, other: Store) -> None:
    for _ in range(20):
        await store.put(new())
    taken = await store.take_many("q", 20)
    after = await _race(store, other, taken)
    # Either the finish came first (finished, with its result) or the cancel did (flagged,
    # then finished: the run had ended); never both, and never cancelled with a result.
    for before, job in zip(taken, after, strict=True):
        assert job.status is JobStatus.FINISHED and job.result == "done"
        assert job.rev - before.rev in (1, 2)
        assert job.cancel_requested is (job.rev - before.rev == 2)
    # Pending jobs: a cancel against a take; each job is either taken (then flagged) or
    # cancelled before, never both cancelled and handed out.
    jobs = [await store.put(new()) for _ in range(20)]
    results = await asyncio.gather(
        other.take_many("q", 20), *(store.cancel("q", job.id) for job in jobs)
    )
    handed = {job.id for job in results[0]}
    for job in jobs:
        now = await store.get("q", job.id)
        if job.id in handed:
            assert now.status is JobStatus.STARTED and now.cancel_requested
        else:
            assert now.status is JobStatus.CANCELLED
    # And two cancels of a pending job at once: one ends it, the other is refused (409)
    # or, if it read the job first, loses its compare-and-set and is refused on re-read.
    job = await store.put(new())
    outcomes = await asyncio.gather(
        store.cancel("q", job.id), other.cancel("q", job.id), return_exceptions=True
    )
    assert sum(isinstance(o, InvalidTransition) for o in outcomes) == 1, outcomes
    assert (await store.get("q", job.id)).rev == job.rev + 1


async def test_cancel_and_finish_at_the_same_instant_one_wins(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await _check_race(store, store)


async def test_two_stores_sharing_a_database_race_one_wins(make_store: StoreFactory) -> None:
    first = make_store()
    if type(first).__name__ == "SQLiteStore":
        pytest.skip("one SQLiteStore per directory and process: nothing is shared")
    async with first, make_store() as second:
        await first.create_queue(QueueConfig("q"))
        await second.get_queue("q")
        await _check_race(first, second)


def _old_state(row: Any) -> Any:
    """The ``state`` index function of the versions before cancellation."""
    from tqueues.stores.rethinkdb.documents import r

    status = row["status"]
    final = (status == "finished") | (status == "failed")
    return r.branch(
        status == "pending",
        ["pending", row["priority"], row["ready_at"]],
        r.branch(
            status == "started",
            ["started", row["lease_expires"]],
            r.branch(
                status == "delayed",
                ["delayed", row["ready_at"]],
                r.branch(final & row["finished_at"].ne(None), [status, row["finished_at"]], None),
            ),
        ),
    )


async def test_an_earlier_state_index_is_rebuilt_so_cancelled_jobs_are_purged(
    make_store: StoreFactory,
) -> None:
    first = make_store()
    if type(first).__name__ == "SQLiteStore":
        pytest.skip("the embedded store's index is dropped and made by its schema")
    async with first:
        # Given a queue whose table has the state index of an earlier version
        await first.create_queue(QueueConfig("q", retention=60))
        table = first._table("q")  # type: ignore[attr-defined]
        await first._run(table.index_drop("state"))  # type: ignore[attr-defined]
        await first._run(table.index_create("state", _old_state))  # type: ignore[attr-defined]
        await first._run(table.index_wait("state"))  # type: ignore[attr-defined]
        job = await first.cancel("q", (await first.put(new())).id)
    # When a dispatcher of this version opens the database
    async with make_store() as second:
        (status,) = await second._run(table.index_status("state"))  # type: ignore[attr-defined]
        assert "cancelled" in status["query"]
        assert "state_next" not in await second._run(table.index_list())  # type: ignore[attr-defined]
        # Then the index counts cancelled jobs as ended: retention purges them
        await second.reap(clock.now() + 61)
        with pytest.raises(JobNotFound):
            await second.get("q", job.id)
        assert await second.take("q") is None
