"""The store contract of exact delays (issue #25, 1), on every store: a delayed job, a
retry's backoff and a release with a delay become takeable at their time, woken by the
store's timer on the earliest due time, not by the reaper's sweep (which no test here
runs: every promotion below is the timer's).

Timings are deadline-based and asserted loosely (a behaviour, not a benchmark): a job is
never handed out before its time, and comes well within LATE seconds of it.
"""

from __future__ import annotations

import asyncio
import uuid

from tests.conftest import StoreFactory, rethinkdb_settings
from tests.contract.test_store import new
from tqueues import clock
from tqueues.jobs import JobStatus, QueueConfig
from tqueues.retry import RetryPolicy
from tqueues.stores.base import Store

LATE = 0.2  #: seconds past its time a delayed job may come on a loaded test machine


async def test_a_delayed_job_is_taken_at_its_time_by_a_waiting_taker(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given a job put with a delay of 0.5 s
    put = await store.put(new(delay=0.5))
    assert put.status is JobStatus.DELAYED
    # When a taker waits up to 2 s for it
    job = await store.take("q", wait=2, poll=30)
    taken_at = clock.now()
    # Then it gets it at its time: not before, and not a sweep's half second later
    assert job is not None and job.id == put.id
    assert put.ready_at <= taken_at < put.ready_at + LATE


async def test_a_take_waiting_exactly_the_delay_gets_the_job(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given a job put with a delay of 0.4 s
    put = await store.put(new(delay=0.4))
    # When a taker waits 0.4 s, its time up as the job's comes
    job = await store.take("q", wait=0.4, poll=30)
    # Then it still gets the job (the take waits for the promotion under way)
    assert job is not None and job.id == put.id


async def test_a_take_without_wait_after_the_due_time_gets_the_job(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given a job delayed 0.2 s, and its time come
    put = await store.put(new(delay=0.2))
    await asyncio.sleep(put.ready_at - clock.now())  # the time itself is the subject here
    # When a take that does not wait asks for a job
    job = await store.take("q")
    # Then it gets it
    assert job is not None and job.id == put.id


async def test_a_retry_after_its_backoff_is_taken_at_its_time(store: Store) -> None:
    store.retry = RetryPolicy(base=0.4, jitter=0.0)
    await store.create_queue(QueueConfig("q", max_attempts=3))
    # Given a taken job that fails with attempts left: retried after 0.4 s
    await store.put(new())
    first = await store.take("q")
    assert first is not None
    failed = await store.fail("q", first.id, lease=first.lease, error="boom")
    assert failed.status is JobStatus.DELAYED
    # When a taker waits for it
    again = await store.take("q", wait=2, poll=30)
    # Then it gets the retry at its time
    assert again is not None and again.id == first.id and again.attempts == 2
    assert failed.ready_at <= clock.now() < failed.ready_at + LATE


async def test_a_release_with_a_delay_is_taken_at_its_time(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given a taken job released with a delay of 0.3 s
    await store.put(new())
    first = await store.take("q")
    assert first is not None
    released = await store.release("q", first.id, lease=first.lease, delay=0.3)
    assert released.status is JobStatus.DELAYED
    # When a taker waits for it
    again = await store.take("q", wait=2, poll=30)
    # Then it gets it at its time
    assert again is not None and again.id == first.id
    assert released.ready_at <= clock.now() < released.ready_at + LATE


async def test_delayed_jobs_come_in_the_order_of_their_times(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given jobs put with delays in another order than their times
    late = await store.put(new(delay=0.6))
    soon = await store.put(new(delay=0.2))
    middle = await store.put(new(delay=0.4))
    # When a taker takes three times, waiting for each
    got = [await store.take("q", wait=2, poll=30) for _ in range(3)]
    # Then each came at its own time (the timer re-armed on the next due time)
    assert [job.id if job else None for job in got] == [soon.id, middle.id, late.id]
    # And the statistics count them as they are
    counts = (await store.stats("q")).counts
    assert (counts["delayed"], counts["pending"], counts["started"]) == (0, 0, 3)


async def test_delays_known_before_the_process_are_timed_too(make_store: StoreFactory) -> None:
    # Given a job delayed by an earlier store process, closed since
    async with make_store() as earlier:
        await earlier.create_queue(QueueConfig("q"))
        put = await earlier.put(new(delay=0.5))
    # When a new process's taker waits for it (no sweep runs)
    async with make_store() as store:
        job = await store.take("q", wait=2, poll=30)
    # Then it comes at its time: its first take read the earliest due time
    assert job is not None and job.id == put.id
    assert clock.now() < put.ready_at + LATE


async def test_another_dispatchers_delayed_put_is_taken_at_its_time() -> None:
    # Given two dispatchers' stores on one RethinkDB database (each its own timers)
    from tqueues.stores.rethinkdb import RethinkDBStore

    settings = rethinkdb_settings(f"tqueues_test_{uuid.uuid4().hex[:12]}")
    try:
        async with RethinkDBStore(settings) as a, RethinkDBStore(settings) as b:
            await a.create_queue(QueueConfig("q"))
            await b.watch("q")
            # When a taker waits on B and a delayed job is put through A
            taking = asyncio.create_task(b.take("q", wait=3, poll=30))
            await asyncio.sleep(0)
            put = await a.put(new(delay=0.5))
            job = await taking
            # Then B's taker gets it at its time
            assert job is not None and job.id == put.id
            assert put.ready_at <= clock.now() < put.ready_at + LATE
    finally:
        async with RethinkDBStore(settings) as cleaner:
            await cleaner.drop_database()
