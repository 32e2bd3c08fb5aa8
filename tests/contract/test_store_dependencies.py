"""Dependencies on every store (#25, part 4): a job put with ``after`` waits until the jobs
it names finished; chains and fan-in; a prerequisite that fails for good or goes buries
it; an unknown prerequisite is a 400 with nothing stored; across queues; and the races
(a prerequisite ending while the dependent is put, in one store and in two sharing a
RethinkDB database), and the sweep that repairs a put or an end cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import StoreFactory
from tests.contract.test_store import new
from tqueues import clock, lifecycle
from tqueues.errors import InvalidTransition, ValidationError
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.base import Store


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll ``check`` until it is true (a dependent is settled in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.005)


async def status_of(store: Store, job: JobRecord) -> JobStatus:
    return (await store.get(job.queue, job.id)).status


async def becomes(store: Store, job: JobRecord, status: JobStatus) -> JobRecord:
    async def reached() -> bool:
        return await status_of(store, job) is status

    await eventually(reached)
    return await store.get(job.queue, job.id)


async def run(store: Store, queue: str = "q") -> JobRecord:
    """Take the next job of ``queue`` and finish it."""
    job = await store.take(queue)
    assert job is not None
    return await store.finish(queue, job.id, lease=job.lease, result="ok")


async def test_a_chain_runs_in_order(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new(args=["a"]))
    b = await store.put(new(args=["b"], after=[a.id]))
    c = await store.put(new(args=["c"], after=[f"q/{b.id}"]))
    assert (b.status, c.status) == (JobStatus.WAITING, JobStatus.WAITING)
    assert b.after == [f"q/{a.id}"] and c.after == [f"q/{b.id}"]
    counts = await store.count_jobs("q")
    assert counts[JobStatus.WAITING] == 2 and counts[JobStatus.PENDING] == 1
    stats = await store.stats("q")
    assert stats.counts["waiting"] == 2
    assert (await run(store)).id == a.id
    await becomes(store, b, JobStatus.PENDING)
    assert await status_of(store, c) is JobStatus.WAITING
    assert (await run(store)).id == b.id
    await becomes(store, c, JobStatus.PENDING)
    assert (await run(store)).id == c.id


async def test_fan_in_becomes_pending_only_after_all(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    firsts = [await store.put(new()) for _ in range(3)]
    last = await store.put(new(after=[job.id for job in firsts]))
    for _ in range(2):
        await run(store)
    await asyncio.sleep(0.05)
    assert await status_of(store, last) is JobStatus.WAITING
    await run(store)
    pending = await becomes(store, last, JobStatus.PENDING)
    assert pending.event == "promoted"


async def test_a_prerequisite_failing_for_good_buries_the_chain_with_its_reason(
    store: Store,
) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=1))
    a = await store.put(new())
    b = await store.put(new(after=[a.id]))
    c = await store.put(new(after=[b.id]))
    other = await store.put(new())
    d = await store.put(new(after=[other.id, a.id]))
    taken = await store.take("q")
    assert taken is not None and taken.id == a.id
    await store.fail("q", a.id, lease=taken.lease, error="boom")  # out of attempts: buried
    buried = await becomes(store, b, JobStatus.BURIED)
    assert buried.error == f"prerequisite q/{a.id} is buried"
    assert (await becomes(store, c, JobStatus.BURIED)).error == f"prerequisite q/{b.id} is buried"
    assert (await becomes(store, d, JobStatus.BURIED)).error == f"prerequisite q/{a.id} is buried"
    # Put after it ended: buried at once; a permanent failure or a cancel does the same
    late = await store.put(new(after=[a.id]))
    assert (late.status, late.error) == (JobStatus.BURIED, f"prerequisite q/{a.id} is buried")
    e = await store.put(new())
    f = await store.put(new(after=[e.id]))
    await store.cancel("q", e.id)
    assert (
        await becomes(store, f, JobStatus.BURIED)
    ).error == f"prerequisite q/{e.id} is cancelled"


async def test_a_deleted_prerequisite_buries_its_dependents(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new())
    b = await store.put(new(after=[a.id]))
    await store.delete("q", a.id)
    assert (await becomes(store, b, JobStatus.BURIED)).error == f"prerequisite q/{a.id} was deleted"


async def test_an_unknown_prerequisite_is_refused_and_nothing_is_stored(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new())
    for after, named in (
        (["f" * 32], f"q/{'f' * 32}"),
        ([a.id, "other/" + a.id], f"other/{a.id}"),  # no such queue
    ):
        with pytest.raises(ValidationError) as caught:
            await store.put(new(after=after))
        assert named in caught.value.message and caught.value.details["field"] == "after"
    for bad in (["bad queue/x"], [""], [7], ["q/" + "x" * 200]):
        with pytest.raises(ValidationError):
            await store.put(new(after=bad))
    with pytest.raises(ValidationError):
        await store.put(new(after=[str(i) for i in range(101)]))
    with pytest.raises(ValidationError):
        await store.put_many([new(), new(after=[a.id])])
    assert await store.count_jobs("q") == {JobStatus.PENDING: 1}
    assert not (await store.get("q", a.id)).has_dependents


async def test_across_queues_and_with_a_delay_of_its_own(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.create_queue(QueueConfig("other"))
    a = await store.put(new("other"))
    b = await store.put(new("q", after=[f"other/{a.id}"], delay=0.2))
    assert b.status is JobStatus.WAITING and b.after == [f"other/{a.id}"]
    await run(store, "other")
    taken = await store.take("q", wait=2)  # its own delay still runs: not before its time
    assert taken is not None and taken.id == b.id
    assert taken.started_at is not None and taken.started_at >= b.ready_at


async def test_put_after_jobs_that_finished_is_pending_at_once(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    a = await run(store)
    b = await store.put(new(after=[a.id]))
    assert (b.status, b.event, b.rev) == (JobStatus.PENDING, "put", 0)
    assert not (await store.get("q", a.id)).has_dependents  # nothing to look up at its end


async def test_a_waiting_job_is_not_taken_and_can_be_cancelled(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new())
    b = await store.put(new(after=[a.id]))
    taken = await store.take_many("q", 10)
    assert [job.id for job in taken] == [a.id]
    cancelled = await store.cancel("q", b.id)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(InvalidTransition):
        await store.release("q", (await store.put(new(after=[a.id]))).id)
    await store.finish("q", a.id, lease=taken[0].lease)
    await asyncio.sleep(0.05)
    assert await status_of(store, b) is JobStatus.CANCELLED


async def _race(putter: Store, finisher: Store, rounds: int) -> None:
    """A prerequisite's finish and a put naming it at the same instant, ``rounds`` times:
    the dependent never stays waiting (no sweep runs)."""
    for _ in range(rounds):
        await putter.put(new())
        a = await finisher.take("q")
        assert a is not None
        dependent, _ = await asyncio.gather(
            putter.put(new(after=[a.id])), finisher.finish("q", a.id, lease=a.lease)
        )
        await becomes(putter, dependent, JobStatus.PENDING)
        taken = await putter.take("q")
        assert taken is not None and taken.id == dependent.id
        await putter.finish("q", taken.id, lease=taken.lease)


async def test_a_prerequisite_finishing_while_the_dependent_is_put(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await _race(store, store, 20)


async def test_two_stores_sharing_a_database_race_put_and_finish(make_store: StoreFactory) -> None:
    first = make_store()
    if type(first).__name__ == "SQLiteStore":
        pytest.skip("one SQLiteStore per directory and process: nothing is shared")
    async with first, make_store() as second:
        await first.create_queue(QueueConfig("q"))
        await second.get_queue("q")
        await _race(first, second, 10)


async def test_the_sweep_settles_what_a_killed_process_left_waiting(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a, b = await store.put(new()), await store.put(new())
    config = await store.get_queue("q")
    # Two puts killed before their edges and flags: waiting jobs nobody looks after
    after_a = lifecycle.create(new(after=[a.id]), config, now=clock.now(), id=store.new_id())
    after_b = lifecycle.create(new(after=[b.id]), config, now=clock.now(), id=store.new_id())
    for job in (after_a, after_b):
        await store.insert(job)
    await store.delete("q", a.id)
    assert await status_of(store, after_a) is JobStatus.WAITING
    assert await store.dependents.sweep(force=True) == 1
    assert (await store.get("q", after_a.id)).error == f"prerequisite q/{a.id} was deleted"
    # b is outstanding: the sweep flagged it, so its end now settles its dependent at once
    assert (await store.get("q", b.id)).has_dependents
    await run(store)
    await becomes(store, after_b, JobStatus.PENDING)


async def test_a_waiting_job_holds_its_key(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new())
    waiting, duplicate = await store.enqueue(new(key="k", after=[a.id]))
    assert not duplicate and waiting.status is JobStatus.WAITING and waiting.key == "k"
    # A put of the key, waiting or not, answers the waiting job and stores nothing: no job,
    # no edge
    again, duplicate = await store.enqueue(new(key="k", after=[a.id]))
    assert duplicate and again.id == waiting.id
    plain, duplicate = await store.enqueue(new(key="k"))
    assert duplicate and plain.id == waiting.id
    assert await store.dependents_of("q", a.id) == [f"q/{waiting.id}"]
    assert sum((await store.count_jobs("q")).values()) == 2
    # Its prerequisite finished, it is pending and still holds the key; once it
    # finished, the key is free
    assert (await run(store)).id == a.id
    await becomes(store, waiting, JobStatus.PENDING)
    assert (await store.enqueue(new(key="k"))).duplicate
    assert (await run(store)).id == waiting.id
    assert not (await store.enqueue(new(key="k"))).duplicate


async def test_a_waiting_job_buried_for_its_prerequisite_frees_its_key(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    a = await store.put(new())
    waiting = await store.put(new(key="k", after=[a.id]))
    await store.delete("q", a.id)
    await becomes(store, waiting, JobStatus.BURIED)
    fresh, duplicate = await store.enqueue(new(key="k"))
    assert not duplicate and fresh.id != waiting.id and fresh.status is JobStatus.PENDING
