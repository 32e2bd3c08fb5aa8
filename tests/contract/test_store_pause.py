"""The store contract of pausing a queue (issue #25, 6), on every store: while a queue is
paused, takes (waiting ones too, and takes of several queues) hand out none of its jobs
and puts are still accepted; a resume, or the end of a pause for a given time, hands
them out at once; the pause is kept by the store, shown in the statistics, and seen by
every dispatcher on a shared RethinkDB database.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import StoreFactory, rethinkdb_settings
from tests.contract.test_store import new, until
from tqueues import clock
from tqueues.errors import QueueNotFound
from tqueues.jobs import JobStatus, QueueConfig
from tqueues.stores.base import Store

LATE = 0.2  #: seconds past its end a pause may hold a waiting taker on a loaded machine


async def test_a_paused_queue_hands_out_nothing_and_accepts_puts(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    # When the queue is paused until resumed
    paused = await store.pause("q")
    assert (paused.paused, paused.paused_until) == (True, None)
    # Then takes get nothing, and puts are still stored
    assert await store.take("q") is None
    assert await store.take_many("q", 5, wait=0.2) == []
    put = await store.put(new())
    assert put.status is JobStatus.PENDING
    # And the statistics and the settings say so
    stats = await store.stats("q")
    assert (stats.paused, stats.paused_until, stats.counts["pending"]) == (True, None, 2)
    assert stats.to_dict()["paused"] is True
    assert (await store.get_queue("q")).paused
    # When it is resumed, takes get its jobs again
    resumed = await store.resume("q")
    assert (resumed.paused, resumed.paused_until) == (False, None)
    assert len(await store.take_many("q", 5)) == 2
    assert not (await store.stats("q")).paused


async def test_a_waiting_taker_gets_a_job_as_soon_as_the_queue_is_resumed(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.pause("q")
    put = await store.put(new())
    # Given a taker waiting on the paused queue, a job pending in it
    taking = asyncio.create_task(store.take("q", wait=10, poll=30))
    await until(lambda: bool(store._waiters["q"]))
    await asyncio.sleep(0.1)  # a while paused: it must still wait
    assert not taking.done()
    # When the queue is resumed
    resumed_at = clock.now()
    await store.resume("q")
    # Then the taker gets the job at once
    job = await taking
    assert job is not None and job.id == put.id
    assert clock.now() - resumed_at < LATE


async def test_a_pause_for_a_time_ends_by_itself(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    put = await store.put(new())
    # When the queue is paused for 0.4 s
    paused = await store.pause("q", seconds=0.4)
    assert paused.paused and paused.paused_until is not None
    assert (await store.stats("q")).paused_until == paused.paused_until
    assert await store.take("q") is None
    # Then a taker waiting on it gets the job when the pause ends, not before
    job = await store.take("q", wait=3, poll=30)
    assert job is not None and job.id == put.id
    assert paused.paused_until <= clock.now() < paused.paused_until + LATE
    # And the statistics say it is no longer paused
    stats = await store.stats("q")
    assert (stats.paused, stats.paused_until) == (False, None)


async def test_a_new_pause_replaces_the_one_under_way(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    # Given a queue paused for an hour, then for 0.2 s
    await store.pause("q", seconds=3600)
    shorter = await store.pause("q", seconds=0.2)
    assert shorter.paused_until is not None and shorter.paused_until < clock.now() + 1
    # Then the shorter pause is the one that holds
    assert await store.take("q", wait=3, poll=30) is not None


async def test_a_take_of_several_queues_skips_the_paused_ones(store: Store) -> None:
    for name in ("qa", "qb"):
        await store.create_queue(QueueConfig(name))
    await store.put(new("qa"))
    in_b = await store.put(new("qb"))
    # When the first queue is paused
    await store.pause("qa")
    # Then a take of both gets the second queue's job
    (job,) = await store.take_any(["qa", "qb"], 5)
    assert job.id == in_b.id
    assert await store.take_any(["qa", "qb"], 5) == []


async def test_a_put_to_a_paused_queue_is_not_handed_to_a_waiting_taker(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.pause("q")
    # Given a taker waiting on the paused queue
    taking = asyncio.create_task(store.take("q", wait=0.5, poll=30))
    await until(lambda: bool(store._waiters["q"]))
    # When a job is put
    await store.put(new())
    # Then the taker gets nothing, and the job stays pending
    assert await taking is None
    assert (await store.stats("q")).counts["pending"] == 1


async def test_pause_of_a_missing_queue_raises(store: Store) -> None:
    with pytest.raises(QueueNotFound):
        await store.pause("nope")
    with pytest.raises(QueueNotFound):
        await store.resume("nope")


async def test_a_pause_is_kept_by_the_store(make_store: StoreFactory) -> None:
    async with make_store() as earlier:
        await earlier.create_queue(QueueConfig("q"))
        await earlier.pause("q")
        await earlier.put(new())
    async with make_store() as store:
        assert (await store.get_queue("q")).paused
        assert await store.take("q") is None


async def test_changing_settings_keeps_the_pause(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.pause("q")
    config = await store.get_queue("q")
    await store.update_queue(config.changed({"ttr": 5}))
    assert (await store.get_queue("q")).paused


async def test_another_dispatchers_pause_and_resume_are_seen() -> None:
    # Given two dispatchers' stores on one RethinkDB database
    from tqueues.stores.rethinkdb import RethinkDBStore

    settings = rethinkdb_settings(f"tqueues_test_{uuid.uuid4().hex[:12]}")
    try:
        async with RethinkDBStore(settings) as a, RethinkDBStore(settings) as b:
            await a.create_queue(QueueConfig("q"))
            await b.get_queue("q")
            # When A pauses the queue
            await a.pause("q")
            # Then B's takes soon hand out nothing
            put = await b.put(new())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not (await b.get_queue("q")).paused:
                assert loop.time() < deadline, "B never learnt of the pause"
                await asyncio.sleep(0.01)
            assert await b.take("q") is None
            # When B's taker waits and A resumes the queue
            taking = asyncio.create_task(b.take("q", wait=5, poll=30))
            await until(lambda: bool(b._waiters["q"]))
            await a.resume("q")
            # Then B's taker gets the job
            job = await taking
            assert job is not None and job.id == put.id
            # And B's settings change keeps A's pause of the queue
            await a.pause("q")
            config = await b.get_queue("q")
            await b.update_queue(config.changed({"ttr": 7}))
            stored = await a.list_queues()
            assert stored[0].paused and stored[0].ttr == 7
    finally:
        async with RethinkDBStore(settings) as cleaner:
            await cleaner.drop_database()
