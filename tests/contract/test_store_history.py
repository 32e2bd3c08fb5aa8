"""The throughput history on every store: counts added per queue, minute and event, summed
across flushes and processes, read back by range, purged by age, dropped with the queue."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import StoreFactory
from tqueues import clock
from tqueues.errors import QueueNotFound
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.base import Store
from tqueues.stores.history import BUCKET, Bucket, bucket_of

T0 = 1_800_000_000  # a minute's start (epoch seconds)


def new(queue: str = "q") -> NewJob:
    return NewJob(queue=queue, method="m:f")


async def test_additions_to_one_bucket_sum(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given counts added twice to the same minute, and once to the next
    await store.add_history({("q", T0, "put"): 3, ("q", T0, "finished"): 1})
    await store.add_history({("q", T0, "put"): 2, ("q", T0 + BUCKET, "failed"): 4})
    # Then each minute holds the sums, earliest first
    assert await store.history("q", since=T0, until=T0 + BUCKET) == [
        Bucket(T0, {"put": 5, "finished": 1}),
        Bucket(T0 + BUCKET, {"failed": 4}),
    ]
    # And a range names the buckets that start in it (the one holding `since` included)
    assert await store.history("q", since=T0 + 30, until=T0 + 59) == [
        Bucket(T0, {"put": 5, "finished": 1})
    ]
    assert await store.history("q", since=T0 + BUCKET, until=T0 + 10 * BUCKET) == [
        Bucket(T0 + BUCKET, {"failed": 4})
    ]
    assert await store.history("q", since=T0 - 10 * BUCKET, until=T0 - 1) == []


async def test_queues_have_their_own_history(store: Store) -> None:
    for name in ("q", "q_2", "r"):
        await store.create_queue(QueueConfig(name))
    await store.add_history({("q", T0, "put"): 1, ("q_2", T0, "put"): 2, ("r", T0, "put"): 3})
    assert await store.history("q", since=T0, until=T0) == [Bucket(T0, {"put": 1})]
    assert await store.history("q_2", since=T0, until=T0) == [Bucket(T0, {"put": 2})]
    with pytest.raises(QueueNotFound):
        await store.history("nope", since=T0, until=T0)


async def test_purge_deletes_old_minutes_and_drop_deletes_the_queues(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.create_queue(QueueConfig("r"))
    await store.add_history(
        {("q", T0, "put"): 1, ("q", T0 + BUCKET, "put"): 2, ("r", T0, "taken"): 3}
    )
    # When minutes before T0 + 60 are purged
    assert await store.purge_history(T0 + BUCKET) == 2
    # Then only the later one is left
    assert await store.history("q", since=T0, until=T0 + BUCKET) == [
        Bucket(T0 + BUCKET, {"put": 2})
    ]
    assert await store.history("r", since=T0, until=T0 + BUCKET) == []
    # And a queue dropped and made again starts without history
    await store.drop_queue("q")
    await store.create_queue(QueueConfig("q"))
    assert await store.history("q", since=T0, until=T0 + BUCKET) == []


async def test_a_flush_adds_what_this_process_changed(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given jobs put, taken, finished and failed for good
    for _ in range(3):
        await store.put(new())
    for _ in range(2):
        taken = await store.take("q")
        assert taken is not None
        await store.finish("q", taken.id, lease=taken.lease)
    taken = await store.take("q")
    assert taken is not None
    await store.fail("q", taken.id, lease=taken.lease, error="boom", permanent=True)
    # When the counts are flushed (twice: the second adds nothing)
    now = clock.now()
    assert await store.flush_history(now) > 0
    assert await store.flush_history(now) == 0
    # Then the history of this minute has them
    (bucket,) = await store.history("q", since=now - 120, until=now)
    assert bucket.at == bucket_of(now)
    assert {k: bucket.counts.get(k) for k in ("put", "taken", "finished", "failed")} == {
        "put": 3,
        "taken": 3,
        "finished": 2,
        "failed": 1,
    }


async def test_a_flush_cancelled_after_its_write_adds_nothing_twice(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    # Given a flush whose write is applied but whose answer has not come yet
    written, answered, write = asyncio.Event(), asyncio.Event(), store.add_history

    async def applied_then_held(counts: dict[tuple[str, int, str], int]) -> None:
        await write(counts)
        written.set()
        await answered.wait()

    monkeypatch.setattr(store, "add_history", applied_then_held)
    flushing = asyncio.create_task(store.flush_history(clock.now()))
    await asyncio.wait_for(written.wait(), 20)
    # When its caller is cancelled (a dispatcher stopping) and the last flush follows
    flushing.cancel()
    last = asyncio.create_task(store.flush_history(clock.now()))
    answered.set()
    await asyncio.wait_for(last, 20)
    with pytest.raises(asyncio.CancelledError):
        await flushing
    # Then the put is counted once
    now = clock.now()
    (bucket,) = await store.history("q", since=now - 120, until=now)
    assert bucket.counts.get("put") == 1


async def test_stores_sharing_a_database_sum_their_counts(make_store: StoreFactory) -> None:
    first = make_store()
    if type(first).__name__ == "SQLiteStore":
        pytest.skip("one SQLiteStore per directory and process: nothing is shared")
    async with first, make_store() as second:
        await first.create_queue(QueueConfig("q"))
        # When two processes add to one bucket at the same instant, many times
        await asyncio.gather(
            *(
                store.add_history({("q", T0, "put"): 1, ("q", T0, "taken"): 2})
                for _ in range(20)
                for store in (first, second)
            )
        )
        # Then every addition counted
        assert await second.history("q", since=T0, until=T0) == [
            Bucket(T0, {"put": 40, "taken": 80})
        ]
