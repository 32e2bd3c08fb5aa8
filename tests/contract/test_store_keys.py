"""Unique jobs on every store (#25, part 3): a put with a key a live job of the queue
holds (pending, delayed or started) answers that job, untouched, and adds nothing; the
key is free once the job ends, however it ends; a kick that would make a job live again
while another holds its key is refused; concurrent puts of one key (in one store, and in
two sharing a RethinkDB database) make one job; on RethinkDB, a key left claimed by a
process that died is taken over."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import StoreFactory
from tests.contract.test_store import expire_all, new
from tqueues import clock
from tqueues.errors import KeyTaken
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.base import Store


async def put(store: Store, key: str = "k", **options: Any) -> tuple[JobRecord, bool]:
    job, duplicate = await store.enqueue(new(key=key, **options))
    return job, duplicate


async def total(store: Store, queue: str = "q") -> int:
    return sum((await store.count_jobs(queue)).values())


async def test_a_put_of_a_held_key_answers_the_live_job_untouched(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.create_queue(QueueConfig("other"))
    first, duplicate = await put(store, args=[1])
    assert not duplicate and first.key == "k" and first.to_dict()["key"] == "k"
    # pending, then started: the same job answers, as stored, and nothing is added
    again, duplicate = await put(store, args=[2], priority=1, delay=5)
    assert duplicate and again == first
    taken = await store.take("q") or pytest.fail("no job")
    again, duplicate = await put(store)
    assert duplicate and again.id == first.id and again.status is JobStatus.STARTED
    assert await total(store) == 1 and store.counters["q"]["duplicate"] == 2
    # delayed (a put with a delay, a release with one) holds it too
    delayed, _ = await put(store, "d", delay=60)
    assert (await put(store, "d"))[0].id == delayed.id
    await store.release("q", taken.id, lease=taken.lease, delay=60)
    assert (await put(store))[0].id == first.id
    # another queue, another key, no key: new jobs
    assert not (await store.enqueue(new("other", key="k"))).duplicate
    assert not (await put(store, "k2"))[1]
    plain = [await store.put(new()) for _ in range(2)]
    assert plain[0].key is None and plain[0].id != plain[1].id


async def test_the_key_is_free_once_its_job_ends_however_it_ends(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=1, ttl=30))

    async def check_free(ended: JobRecord, key: str) -> None:
        fresh, duplicate = await put(store, key)
        assert not duplicate and fresh.id != ended.id

    job, _ = await put(store, "finish")
    taken = await store.take("q") or pytest.fail("no job")
    await check_free(await store.finish("q", taken.id, lease=taken.lease, result=1), "finish")
    job, _ = await put(store, "delete")
    await check_free(await store.delete("q", job.id), "delete")
    with pytest.raises(Exception, match="does not exist"):
        await store.get("q", job.id)
    job, _ = await put(store, "cancel")
    await check_free(await store.cancel("q", job.id), "cancel")
    job, _ = await put(store, "bury")
    await check_free(await store.bury("q", job.id, reason="poison"), "bury")
    job, _ = await put(store, "fail")
    await check_free(await store.fail("q", job.id, error="x", permanent=True), "fail")
    # a worker's batch of outcomes (one write of many jobs)
    await store.truncate("q")
    await put(store, "outcomes")
    taken = await store.take("q") or pytest.fail("no job")
    (ended,) = await store.apply_many("q", [(taken.id, store.finish_change(lease=taken.lease))])
    assert not isinstance(ended, Exception)
    await check_free(ended, "outcomes")
    # the reaper's ends: a lease run out on the last attempt (buried), a ttl run out
    await store.truncate("q")
    held, _ = await put(store, "lease")
    waiting, _ = await put(store, "ttl", delay=3600)
    await store.take("q")
    await expire_all(store)
    for job, key in ((held, "lease"), (waiting, "ttl")):
        assert (await store.get("q", job.id)).status is JobStatus.BURIED
        await check_free(job, key)
    # a truncation frees every key of the queue
    await store.truncate("q")
    assert not (await put(store, "lease"))[1]


async def test_a_batch_puts_each_key_once(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    held, _ = await put(store, "a")
    stored = await store.enqueue_many(
        [new(key="a"), new(key="b"), new(), new(key="b"), new(key="c")]
    )
    assert [duplicate for _, duplicate in stored] == [True, False, False, True, False]
    a, b, plain, b2, c = (job for job, _ in stored)
    assert a == held and b2.id == b.id and len({held.id, b.id, plain.id, c.id}) == 4
    assert await total(store) == 4
    # (the put order is the take order, as for any batch)
    taken = await store.take_many("q", 4)
    assert [job.id for job in taken] == [held.id, b.id, plain.id, c.id]


async def test_a_kick_back_to_life_claims_the_key_or_is_refused(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    buried, _ = await put(store)
    await store.bury("q", buried.id)
    holder, _ = await put(store)  # the key was free: a new job holds it
    # Then the buried job cannot come back while that one lives: 409 naming the key
    with pytest.raises(KeyTaken) as refused:
        await store.kick_job("q", buried.id)
    assert refused.value.status == 409
    assert refused.value.details == {"key": "k", "holder": holder.id}
    assert (await store.get("q", buried.id)).status is JobStatus.BURIED
    assert await store.kick("q", 10, JobStatus.BURIED) == 0  # skipped, not an error
    # Once the holder ended, the kick makes it live, holding the key again
    await store.cancel("q", holder.id)
    kicked = await store.kick_job("q", buried.id)
    assert kicked.status is JobStatus.PENDING
    assert (await put(store))[0].id == buried.id
    # (a release of a buried job is another way back: the same rule)
    await store.bury("q", buried.id)
    other, _ = await put(store)
    with pytest.raises(KeyTaken):
        await store.release("q", buried.id)
    await store.delete("q", other.id)
    assert (await store.release("q", buried.id)).status is JobStatus.PENDING


async def test_concurrent_puts_of_one_key_make_one_job(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    for round_ in range(3):
        key = f"race{round_}"
        answers = await asyncio.gather(*(put(store, key) for _ in range(20)))
        assert sum(not duplicate for _, duplicate in answers) == 1
        assert len({job.id for job, _ in answers}) == 1
    assert await total(store) == 3


async def test_two_stores_sharing_a_database_put_one_key_once(make_store: StoreFactory) -> None:
    first = make_store()
    if not hasattr(first, "settings"):
        pytest.skip("one SQLiteStore per directory and process: nothing is shared")
    async with first, make_store() as second:
        await first.create_queue(QueueConfig("q"))
        await second.get_queue("q")
        for round_ in range(3):
            key = f"race{round_}"
            answers = await asyncio.gather(
                *(put(store, key) for _ in range(10) for store in (first, second))
            )
            assert sum(not duplicate for _, duplicate in answers) == 1
            assert len({job.id for job, _ in answers}) == 1
            # ended through one store, the key is free through the other
            job = answers[0][0]
            await second.finish("q", job.id)
            assert not (await put(first, key))[1]
        assert await total(first) == 6


# -- RethinkDB: the key table's claims (keys.py) -------------------------------------------


def keys_of(store: Store) -> Any:
    if not hasattr(store, "settings"):
        pytest.skip("the embedded store's unique index has no claims to leave behind")
    from tqueues.stores.rethinkdb import keys

    return keys, store._side.keys()  # type: ignore[attr-defined]


async def test_a_claim_left_by_a_process_that_died_is_taken_over(store: Store) -> None:
    keys, table = keys_of(store)
    await store.create_queue(QueueConfig("q"))
    run = store._run  # type: ignore[attr-defined]

    async def leave(job_id: str, age: float, rev: int = 0) -> None:
        doc = {"id": keys.key_id("q", "k"), "queue": "q", "key": "k", "job": job_id,
               "rev": rev, "at": clock.now() - age, "token": "t"}  # fmt: skip
        await run(table.insert(doc, conflict="replace"))

    # A claim whose job was never stored (its put died between its two writes), older
    # than GRACE: the next put takes it over at once
    await leave("f" * 32, keys.GRACE + 1)
    job, duplicate = await put(store)
    assert not duplicate and (await run(table.get(keys.key_id("q", "k"))))["job"] == job.id
    # A claim whose job ended without releasing it (a crash after the end): taken over
    ended = await store.finish("q", job.id)
    await leave(ended.id, 0.0)
    assert not (await put(store))[1]
    # A claim under way (fresh, its job not stored yet) is waited for: its job, once
    # stored, is the answer
    await store.truncate("q")
    coming = new(key="k")
    from tqueues import lifecycle

    job = lifecycle.create(coming, await store.get_queue("q"), now=clock.now(),
                           id=store.new_id())  # fmt: skip
    await leave(job.id, 0.0)
    waiting = asyncio.ensure_future(store.enqueue(new(key="k")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await store.insert(job)
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.duplicate and answer.job.id == job.id


async def test_the_key_documents_follow_the_jobs(store: Store) -> None:
    keys, table = keys_of(store)
    await store.create_queue(QueueConfig("q"))
    run = store._run  # type: ignore[attr-defined]

    async def held() -> list[str]:
        docs = await run(keys.of_queue(table, "q").coerce_to("array"))
        return sorted(doc["key"] for doc in docs)

    await store.put(new())  # no key: no document
    jobs = [(await put(store, key))[0] for key in ("a", "b", "c")]
    assert await held() == ["a", "b", "c"]
    await store.finish("q", jobs[0].id)
    await store.delete("q", jobs[1].id)
    assert await held() == ["c"]
    await store.truncate("q")
    assert await held() == []
    await put(store, "d")
    await store.drop_queue("q")
    assert await held() == []


async def test_a_schedule_whose_job_has_a_key_skips_ticks_while_it_lives(store: Store) -> None:
    from tqueues.stores.schedules import ScheduleRecord

    await store.create_queue(QueueConfig("q"))
    t0 = 1_800_000_000.0
    job = {"method": "examples.tasks:add", "key": "nightly"}
    await store.add_schedule(ScheduleRecord.new("q", "s", job, now=t0, every=60))
    # The first tick makes its job; the next ones, while it lives, make none
    await store.fire_schedules(t0 + 60)
    (first,) = (await store.list_jobs("q")).jobs
    assert first.key == "nightly" and first.extra["tick"] == t0 + 60
    await store.fire_schedules(t0 + 120)
    assert (await store.run_schedule("q", "s")).id == first.id  # run now: that job too
    assert await total(store) == 1
    # Once it ended, the next tick makes one
    await store.finish("q", first.id)
    await store.fire_schedules(t0 + 180)
    ticks = sorted(job.extra["tick"] for job in (await store.list_jobs("q")).jobs)
    assert ticks == [t0 + 60, t0 + 180]
