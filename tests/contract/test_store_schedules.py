"""Periodic jobs on every store: schedules stored, listed, paused, resumed, deleted and
run by hand; each tick makes exactly one job however many processes fire it at once (on
RethinkDB: two stores on one database); missed ticks caught up as ``catch_up`` says.
The clock is a ``now`` passed in: nothing sleeps."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import StoreFactory
from tqueues.errors import QueueNotFound, ScheduleExists, ScheduleNotFound
from tqueues.jobs import JobStatus, QueueConfig
from tqueues.stores.base import Store
from tqueues.stores.schedules import ScheduleRecord, tick_id

T0 = 1_800_000_000.0
HOUR = 3600.0
JOB = {"method": "examples.tasks:add", "args": [1, 2], "priority": 7}


def hourly(name: str = "hourly", **fields: object) -> ScheduleRecord:
    """A schedule of queue q made at T0 that ticks every hour."""
    return ScheduleRecord.new("q", name, JOB, now=T0, every=HOUR, **fields)  # type: ignore[arg-type]


async def jobs_of(store: Store, queue: str = "q") -> int:
    return sum((await store.count_jobs(queue)).values())


@pytest.fixture
async def queue(store: Store) -> Store:
    await store.create_queue(QueueConfig("q"))
    return store


async def test_schedules_are_stored_listed_paused_and_deleted(queue: Store) -> None:
    store = queue
    made = await store.add_schedule(hourly("b"))
    await store.add_schedule(hourly("a", catch_up="all"))
    assert made.next_tick == T0 + HOUR
    assert [s.name for s in await store.list_schedules("q")] == ["a", "b"]
    assert await store.get_schedule("q", "b") == made
    # A second schedule of the same name is refused, as is one of a missing queue
    with pytest.raises(ScheduleExists):
        await store.add_schedule(hourly("b"))
    with pytest.raises(QueueNotFound):
        await store.add_schedule(ScheduleRecord.new("nope", "x", JOB, now=T0, every=60))
    # Pausing keeps it; resuming moves its next tick past now (no catch-up of the pause)
    paused = await store.pause_schedule("q", "b", paused=True, now=T0 + 10)
    assert paused.paused and (await store.get_schedule("q", "b")).paused
    assert await store.fire_schedules(T0 + 5 * HOUR) == T0 + 6 * HOUR  # "a" only
    resumed = await store.pause_schedule("q", "b", paused=False, now=T0 + 5.5 * HOUR)
    assert not resumed.paused and resumed.next_tick == T0 + 6 * HOUR
    # Deleting
    await store.remove_schedule("q", "b")
    assert [s.name for s in await store.list_schedules()] == ["a"]
    with pytest.raises(ScheduleNotFound):
        await store.remove_schedule("q", "b")
    with pytest.raises(ScheduleNotFound):
        await store.pause_schedule("q", "b", paused=True, now=T0)


async def test_a_tick_makes_one_job_under_its_tick_id(queue: Store) -> None:
    store = queue
    schedule = await store.add_schedule(hourly())
    # Before its tick nothing fires
    assert await store.fire_schedules(T0 + HOUR - 1) == T0 + HOUR
    assert await jobs_of(store) == 0
    # At its tick one job, however often fired
    for _ in range(3):
        assert await store.fire_schedules(T0 + HOUR + 0.5) == T0 + 2 * HOUR
    job = await store.get("q", tick_id(schedule.uid, T0 + HOUR))
    assert (job.method, job.args, job.priority, job.status) == (
        "examples.tasks:add", [1, 2], 7, JobStatus.PENDING)  # fmt: skip
    assert job.to_dict()["schedule"] == "hourly" and job.to_dict()["tick"] == T0 + HOUR
    assert await jobs_of(store) == 1
    stored = await store.get_schedule("q", "hourly")
    assert (stored.next_tick, stored.last_tick) == (T0 + 2 * HOUR, T0 + HOUR)


async def test_a_stale_read_fires_no_second_job(queue: Store) -> None:
    store = queue
    stale = await store.add_schedule(hourly())
    # Another process fired the tick from the same read, and moved the schedule on
    assert await store.fire_schedule(stale, T0 + HOUR) == T0 + 2 * HOUR
    # This one's insert is refused by the store, its compare-and-set finds it moved
    assert await store.fire_schedule(stale, T0 + HOUR) == T0 + 2 * HOUR
    assert await jobs_of(store) == 1
    assert (await store.get_schedule("q", "hourly")).rev == stale.rev + 1


@pytest.mark.parametrize(("catch_up", "ticks"), [
    ("latest", [3]), ("all", [1, 2, 3]), ("skip", []),
])  # fmt: skip
async def test_missed_ticks_follow_catch_up(queue: Store, catch_up: str, ticks: list[int]) -> None:
    store = queue
    schedule = await store.add_schedule(hourly(catch_up=catch_up))
    # Given every process down for three ticks: it looks two minutes after the third
    assert await store.fire_schedules(T0 + 3 * HOUR + 120) == T0 + 4 * HOUR
    expected = {tick_id(schedule.uid, T0 + k * HOUR) for k in ticks}
    page = await store.list_jobs("q", limit=10)
    assert {job.id for job in page.jobs} == expected
    # A tick late by less than a minute is not missed, even for "skip"
    assert await store.fire_schedules(T0 + 4 * HOUR + 30) == T0 + 5 * HOUR
    assert await jobs_of(store) == len(expected) + 1


async def test_run_now_makes_a_job_of_its_own(queue: Store) -> None:
    store = queue
    await store.add_schedule(hourly())
    job = await store.run_schedule("q", "hourly")
    again = await store.run_schedule("q", "hourly")
    assert job.id != again.id and job.to_dict()["tick"] is None
    assert (await store.get("q", job.id)).method == "examples.tasks:add"
    assert (await store.get_schedule("q", "hourly")).next_tick == T0 + HOUR  # untouched
    with pytest.raises(ScheduleNotFound):
        await store.run_schedule("q", "nope")


async def test_dropping_a_queue_drops_its_schedules(queue: Store) -> None:
    store = queue
    await store.create_queue(QueueConfig("r"))
    await store.add_schedule(hourly())
    await store.add_schedule(ScheduleRecord.new("r", "x", JOB, now=T0, every=60))
    await store.drop_queue("q")
    assert [s.key for s in await store.list_schedules()] == ["r/x"]


async def test_two_processes_firing_at_once_make_one_job_per_tick(
    make_store: StoreFactory,
) -> None:
    # On SQLite one store per directory: two firings at once within it
    first = make_store()
    async with first:
        await first.create_queue(QueueConfig("q"))
        await first.add_schedule(ScheduleRecord.new("q", "s", JOB, now=T0, every=1))
        shared = type(first).__name__ == "SQLiteStore"
        second = first if shared else make_store()
        if not shared:
            await second.open()
        try:
            # When both fire the same schedule at the same instants, for 20 ticks
            for k in range(1, 21):
                await asyncio.gather(
                    first.fire_schedules(T0 + k + 0.01), second.fire_schedules(T0 + k + 0.01)
                )
            # Then each tick made one job
            assert await jobs_of(first) == 20
            assert (await second.get_schedule("q", "s")).last_tick == T0 + 20
        finally:
            if not shared:
                await second.close()
