"""The store contract of taking from several queues at once (``Store.take_any``), on every
store: the first queue in the given order that has jobs gives them, a wait covers every
queue, and a taker of several queues gets one put's job at most.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.test_store import hold_insert_and_claim, new, until
from tqueues.errors import QueueNotFound
from tqueues.jobs import JobStatus, QueueConfig
from tqueues.stores.base import Store

QUEUES = ("qa", "qb", "qc")


async def _queues(store: Store) -> None:
    for name in QUEUES:
        await store.create_queue(QueueConfig(name))


async def test_take_any_takes_from_the_first_queue_in_order_that_has_jobs(store: Store) -> None:
    await _queues(store)
    # Given jobs in the second and the third queue
    in_b = [await store.put(new("qb", args=[i])) for i in range(2)]
    (in_c,) = [await store.put(new("qc"))]
    # When a take of up to five asks the queues in the order a, b, c
    taken = await store.take_any(["qa", "qb", "qc"], 5, worker="w")
    # Then it gets b's jobs only (one queue per take), oldest first, under their leases
    assert [job.id for job in taken] == [job.id for job in in_b]
    assert {(job.queue, job.status, job.worker) for job in taken} == {
        ("qb", JobStatus.STARTED, "w")
    }
    # And in another order the first queue with a job is another one
    (from_c,) = await store.take_any(["qc", "qb", "qa"], 5)
    assert from_c.id == in_c.id
    # And with every queue empty, nothing (at once, without a wait)
    assert await store.take_any(list(QUEUES), 5) == []
    assert all(store.counters[name]["take_empty"] == 1 for name in QUEUES)


async def test_take_any_of_a_missing_queue_claims_nothing(store: Store) -> None:
    await _queues(store)
    put = await store.put(new("qa"))
    with pytest.raises(QueueNotFound) as raised:
        await store.take_any(["qa", "nope"], 1)
    assert raised.value.details["queue"] == "nope"
    assert (await store.get("qa", put.id)).status is JobStatus.PENDING


async def test_a_waiting_take_any_wakes_for_a_job_in_any_of_its_queues(store: Store) -> None:
    await _queues(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Given a taker of a, b and c waiting with every queue empty
    taking = asyncio.create_task(store.take_any(list(QUEUES), 3, worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["qc"]))
    # When a job is put in the last of them
    put = await store.put(new("qc"))
    # Then the taker gets it, woken by the put (not by the 20 s poll), and waits no more
    (job,) = await asyncio.wait_for(taking, 20)
    assert (job.id, job.status, job.worker) == (put.id, JobStatus.STARTED, "w")
    assert loop.time() - started < 10
    assert not any(store._waiters[name] for name in QUEUES)


async def test_a_taker_of_several_queues_is_handed_one_put_at_most(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await _queues(store)
    # Given a taker of a and b, and a put to a that has chosen it and is still claiming
    claiming, go_on = hold_insert_and_claim(store, monkeypatch)
    taking = asyncio.create_task(store.take_any(["qa", "qb"], 5, worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["qb"]))
    putting = asyncio.create_task(store.put(new("qa")))
    await asyncio.wait_for(claiming.wait(), 20)
    # When a job is put to b meanwhile (the taker still stands in b's line)
    other = await store.put(new("qb"))
    go_on.set()
    put = await putting
    # Then the taker gets a's job, b's stays pending (not claimed for it and given back)
    (job,) = await asyncio.wait_for(taking, 20)
    assert (job.id, job.worker) == (put.id, "w")
    assert (await store.get("qb", other.id)).status is JobStatus.PENDING
    await until(lambda: not store._background)
    assert store.counters["qb"]["released"] == 0 and store.counters["qb"]["taken"] == 0
