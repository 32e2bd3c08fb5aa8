"""Waiting takers are woken one per job that becomes pending, on every store (issue #21,
finding 2): a batch of n jobs wakes n takers however many wait, and jobs nobody was told
of are still found by the safety net.

Given/When/Then as in ``test_store.py``; the ``store`` fixture runs each test on SQLite
and, when TQUEUES_TEST_RETHINKDB is set, on RethinkDB (whose takers are woken by its
changefeed).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from tqueues import clock, lifecycle
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig
from tqueues.stores.base import Store

DEADLINE = 20.0  # seconds any wait here may take
TAKERS = 50


async def until(condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
    """Yield to the loop until ``condition()`` holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def new(n: int) -> NewJob:
    return NewJob(queue="q", method="m:f", args=[n])


async def park(store: Store, n: int, poll: float) -> list[asyncio.Task[JobRecord | None]]:
    """``n`` takers waiting in line on the empty queue ``q``."""
    takers = [
        asyncio.create_task(store.take("q", worker=f"w{i}", wait=DEADLINE * 3, poll=poll))
        for i in range(n)
    ]
    await until(lambda: len(store._waiters["q"]) == n)
    return takers


async def stop(takers: list[asyncio.Task[JobRecord | None]]) -> None:
    for taker in takers:
        taker.cancel()
    await asyncio.gather(*takers, return_exceptions=True)


async def test_a_batch_of_jobs_wakes_as_many_of_the_waiting_takers(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given fifty takers waiting (their safety-net poll too far off to matter)
    takers = await park(store, TAKERS, poll=DEADLINE * 3)
    try:
        # When five jobs are put in one write (not handed over: each becomes pending)
        put = await store.put_many([new(i) for i in range(5)])
        # Then five takers get them, one each
        await until(lambda: sum(taker.done() for taker in takers) == 5)
        got = [taker.result() for taker in takers if taker.done()]
        assert sorted(job.id for job in got if job) == sorted(job.id for job in put)
        # And no more than five were woken: the others never left the line
        counters = store.counters["q"]
        assert counters["woken"] <= 5, dict(counters)
        assert (counters["taken"], counters["released"]) == (5, 0)
        assert len(store._waiters["q"]) == TAKERS - 5
    finally:
        await stop(takers)


async def test_jobs_nobody_was_told_of_are_found_by_the_safety_net(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given five takers waiting, with a short safety-net poll
    takers = await park(store, 5, poll=0.2)
    try:
        # When three jobs become pending below the store's boundary (no wake-up, on a
        # store whose takers are not told by a changefeed)
        config = await store.get_queue("q")
        jobs = [
            lifecycle.create(new(i), config, now=clock.now(), id=store.new_id()) for i in range(3)
        ]
        for job in jobs:
            await store.insert(job)
        # Then the takers find all three, one each, and the other two wait on
        await until(lambda: sum(taker.done() for taker in takers) == 3)
        got = collections.Counter(taker.result().id for taker in takers if taker.done())  # type: ignore[union-attr]
        assert got == collections.Counter(job.id for job in jobs)
        assert (await store.count_jobs("q")) == {JobStatus.STARTED: 3}
        await until(lambda: len(store._waiters["q"]) == 2)
    finally:
        await stop(takers)
