"""The worker registry on every store: heartbeats stored and listed, operators' commands
kept across heartbeats, silent workers forgotten; on RethinkDB shared by every process."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import StoreFactory
from tqueues.errors import WorkerNotFound
from tqueues.stores.base import Store
from tqueues.stores.workers import LOST_AFTER, WorkerRecord

T0 = 1_800_000_000.0


def beat(worker_id: str = "host-a:101", *, at: float = T0, **fields: object) -> WorkerRecord:
    """A heartbeat of ``worker_id`` seen at ``at``."""
    record = WorkerRecord(
        id=worker_id,
        host="host-a",
        pid=101,
        version="1.0",
        queues=["q", "r"],
        concurrency=4,
        running=[{"queue": "q", "id": "job-1", "started_at": T0 - 2}],
        started_at=T0 - 60,
        last_seen=at,
        finished=7,
        failed=1,
    )
    return dataclasses.replace(record, **fields)  # type: ignore[arg-type]


async def test_heartbeats_are_stored_and_listed(store: Store) -> None:
    # Given two workers' heartbeats, one of them twice
    first = await store.save_worker(beat("b:2"))
    await store.save_worker(beat("a:1"))
    again = await store.save_worker(beat("b:2", at=T0 + 5, finished=9, running=[]))
    # Then each is stored as its last heartbeat said, listed by id
    assert first == beat("b:2")
    assert again == beat("b:2", at=T0 + 5, finished=9, running=[])
    assert [w.id for w in await store.list_workers()] == ["a:1", "b:2"]
    assert (await store.list_workers())[1] == again


async def test_a_command_is_kept_across_heartbeats_and_stop_wins(store: Store) -> None:
    await store.save_worker(beat())
    # When an operator asks the worker to be quiet
    quiet = await store.command_worker("host-a:101", "quiet")
    assert quiet.command == "quiet" and quiet.finished == 7
    # Then its next heartbeats are answered with it (it stays until the worker is gone)
    assert (await store.save_worker(beat(at=T0 + 5, activity="quiet"))).command == "quiet"
    # And a stop replaces it, which a later quiet does not undo
    assert (await store.command_worker("host-a:101", "stop")).command == "stop"
    assert (await store.command_worker("host-a:101", "quiet")).command == "stop"
    assert (await store.save_worker(beat(at=T0 + 10))).command == "stop"


async def test_unknown_workers_are_not_found(store: Store) -> None:
    for name in ("nobody", "x" * 300, "nul\x00"):
        with pytest.raises(WorkerNotFound):
            await store.command_worker(name, "stop")
        assert await store.forget_workers(id=name) == 0


async def test_silent_workers_are_forgotten(store: Store) -> None:
    await store.save_worker(beat("old:1", at=T0))
    await store.save_worker(beat("new:2", at=T0 + 100))
    await store.save_worker(beat("gone:3", at=T0 + 100))
    # When the workers last seen before T0 + 50 are forgotten, and one by its id
    assert await store.forget_workers(before=T0 + 50) == 1
    assert await store.forget_workers(id="gone:3") == 1
    # Then only the other is left
    assert [w.id for w in await store.list_workers()] == ["new:2"]


def test_a_worker_not_seen_for_a_while_is_lost() -> None:
    record = beat(at=T0)
    assert record.state(T0 + LOST_AFTER - 0.1) == "running"
    assert record.state(T0 + LOST_AFTER + 0.1) == "lost"
    assert beat(activity="quiet").state(T0) == "quiet"
    doc = record.to_dict(T0 + 1.25)
    assert (doc["state"], doc["seen_ago"], doc["command"]) == ("running", 1.25, None)


async def test_every_process_of_a_database_sees_every_worker(make_store: StoreFactory) -> None:
    first = make_store()
    if type(first).__name__ == "SQLiteStore":
        pytest.skip("one SQLiteStore per directory and process: nothing is shared")
    async with first, make_store() as second:
        await first.save_worker(beat("a:1"))
        await second.save_worker(beat("b:2"))
        await second.command_worker("a:1", "quiet")
        assert [(w.id, w.command) for w in await first.list_workers()] == [
            ("a:1", "quiet"),
            ("b:2", None),
        ]


async def test_count_ahead_counts_the_take_order_before_a_job(store: Store) -> None:
    from tqueues.jobs import NewJob, QueueConfig

    await store.create_queue(QueueConfig("q"))
    # Given jobs of priorities 5, 1, 5, 9 put in that order, and one taken
    jobs = [await store.put(NewJob(queue="q", method="m:f", priority=p)) for p in (5, 1, 5, 9, 0)]
    taken = await store.take("q")
    assert taken is not None and taken.id == jobs[4].id
    # Then each pending job has the jobs a take gets first ahead of it (the taken one no more)
    assert [await store.count_ahead(job, 100) for job in jobs[:4]] == [1, 0, 2, 3]
    # And the count stops at the limit
    assert await store.count_ahead(jobs[3], 2) == 2
