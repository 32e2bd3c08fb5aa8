"""The store contract: what the dispatcher relies on, written once and run on every store.

Given/When/Then comments state the behaviour; the ``store`` fixture runs each test on
SQLite and, when TQUEUES_TEST_RETHINKDB is set, on RethinkDB.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest

from tests.conftest import StoreFactory
from tqueues import clock, lifecycle
from tqueues.errors import (
    InvalidTransition,
    JobNotFound,
    LeaseMismatch,
    QueueNotFound,
    ValidationError,
)
from tqueues.jobs import DEFAULT_PRIORITY, JobStatus, NewJob, QueueConfig
from tqueues.stores.base import Store


def new(queue: str = "q", method: str = "m:f", **options: object) -> NewJob:
    return NewJob.from_request({"queue": queue, "method": method, **options})


async def expire_all(store: Store) -> int:
    """Run the reaper as if every lease had run out."""
    return await store.reap(clock.now() + 10_000)


# -- queues ----------------------------------------------------------------------------------


async def test_create_queue_is_idempotent_and_keeps_settings(store: Store) -> None:
    # Given a queue created with its own defaults
    assert await store.create_queue(QueueConfig("q", ttr=5, max_attempts=2)) is True
    # When it is created again with others
    assert await store.create_queue(QueueConfig("q", ttr=9, max_attempts=9)) is False
    # Then the first settings stay
    config = await store.get_queue("q")
    assert (config.ttr, config.max_attempts) == (5, 2)
    assert [q.name for q in await store.list_queues()] == ["q"]


async def test_missing_queue_raises_queue_not_found(store: Store) -> None:
    with pytest.raises(QueueNotFound):
        await store.get_queue("nope")
    with pytest.raises(QueueNotFound):
        await store.put(new("nope"))
    with pytest.raises(QueueNotFound):
        await store.take("nope")
    with pytest.raises(QueueNotFound):
        await store.get("nope", "x")


# -- put and take ----------------------------------------------------------------------------


async def test_put_applies_queue_defaults_and_job_overrides(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=7, max_attempts=4))
    plain = await store.put(new(args=[1, "a"], kwargs={"k": [True, None]}))
    custom = await store.put(new(ttr=2.5, max_attempts=1, priority=5))
    assert plain.status is JobStatus.PENDING
    assert (plain.ttr, plain.max_attempts, plain.priority) == (7, 4, DEFAULT_PRIORITY)
    assert (custom.ttr, custom.max_attempts, custom.priority) == (2.5, 1, 5)
    stored = await store.get("q", plain.id)
    assert (stored.args, stored.kwargs, stored.attempts) == ([1, "a"], {"k": [True, None]}, 0)


async def test_take_orders_by_priority_then_fifo(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    low = [await store.put(new(priority=10, args=[i])) for i in range(3)]
    urgent = await store.put(new(priority=0))
    taken = [await store.take("q") for _ in range(4)]
    assert [job.id for job in taken if job] == [urgent.id, *(j.id for j in low)]
    assert await store.take("q") is None


async def test_take_starts_the_job_under_a_lease(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=30))
    put = await store.put(new())
    before = clock.now()
    job = await store.take("q", worker="w1")
    assert job is not None and job.id == put.id
    assert job.status is JobStatus.STARTED and job.attempts == 1 and job.worker == "w1"
    assert job.lease and job.lease_expires is not None
    assert before + 29 < job.lease_expires < clock.now() + 31
    assert (await store.get("q", job.id)).lease == job.lease


async def test_fifty_concurrent_takers_get_each_job_exactly_once(store: Store) -> None:
    # Given 200 jobs
    await store.create_queue(QueueConfig("q"))
    ids = {(await store.put(new(args=[i]))).id for i in range(200)}

    # When 50 takers race for them
    async def taker() -> list[str]:
        got = []
        while (job := await store.take("q")) is not None:
            got.append(job.id)
        return got

    results = await asyncio.gather(*(taker() for _ in range(50)))
    # Then every job went to exactly one taker
    counts = collections.Counter(job_id for got in results for job_id in got)
    assert set(counts) == ids
    assert max(counts.values()) == 1


async def test_long_poll_wakes_when_a_job_is_put(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiter = asyncio.create_task(store.take("q", wait=20, poll=20))
    await asyncio.sleep(0)  # let the waiter find the queue empty
    put = await store.put(new())
    job = await asyncio.wait_for(waiter, 20)
    assert job is not None and job.id == put.id
    assert loop.time() - started < 10  # woken by the change, not by the 20 s poll


async def until(condition: Callable[[], bool], seconds: float = 20.0, step: float = 0.001) -> None:
    """Yield to the loop until ``condition()`` holds (fails after ``seconds``), checking
    every ``step`` seconds (0: at every turn of the loop)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(step)


def hold_insert_and_claim(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the store's puts stop before their insert-and-claim: the first event is set
    when one gets there, and it goes on once the second is set."""
    claiming, go_on = asyncio.Event(), asyncio.Event()
    insert_and_claim = store.insert_and_claim

    async def held(*args: object, **kwargs: object) -> object:
        claiming.set()
        await go_on.wait()
        return await insert_and_claim(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "insert_and_claim", held)
    return claiming, go_on


async def test_a_put_hands_its_job_to_a_waiting_taker(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given a taker waiting for up to three jobs
    taking = asyncio.create_task(store.take_many("q", 3, worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["q"]))
    # When a job is put
    put = await store.put(new(args=[1]))
    # Then the put answers it as enqueued, and the taker got it, started under its lease
    assert put.status is JobStatus.PENDING
    (job,) = await asyncio.wait_for(taking, 20)
    assert (job.id, job.status, job.worker, job.attempts) == (put.id, JobStatus.STARTED, "w", 1)
    assert (await store.get("q", job.id)).lease == job.lease
    await store.finish("q", job.id, lease=job.lease)


async def test_a_handed_job_is_stored_as_the_taker_got_it(store: Store) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await store.create_queue(QueueConfig("q", ttr=30))
    # Given a taker waiting on an empty queue
    taking = asyncio.create_task(store.take("q", worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["q"]))
    # When a job is put (so it is inserted already claimed)
    put = await store.put(new(args=[1]))
    job = await asyncio.wait_for(taking, 20)
    # Then what is stored is exactly the job the taker holds, one revision on from the put
    assert job is not None and job.id == put.id
    assert await store.get("q", job.id) == job
    assert (job.rev, job.event, job.attempts) == (put.rev + 1, "taken", 1)
    assert job.lease_expires == pytest.approx(job.started_at + 30)  # type: ignore[operator]
    assert (await store.count_jobs("q")).get(JobStatus.PENDING, 0) == 0
    # And its lease works as any other: it runs out, the job comes back, and is finished
    assert await expire_all(store) == 1
    again = await store.take("q")
    assert again is not None and (again.id, again.attempts) == (put.id, 2)
    with pytest.raises(LeaseMismatch):
        await store.finish("q", job.id, lease=job.lease)
    await store.finish("q", again.id, lease=again.lease)


async def test_a_handed_job_is_published_as_put_then_taken(store: Store) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await store.create_queue(QueueConfig("q"))
    await store.watch("q")
    with store.hub.subscribe("q") as subscription:
        # Given a taker waiting on an empty queue
        taking = asyncio.create_task(store.take("q", worker="w", wait=20, poll=20))
        await until(lambda: bool(store._waiters["q"]))
        # When a job is put (so it is stored already claimed)
        put = await store.put(new(args=[1]))
        job = await asyncio.wait_for(taking, 20)
        assert job is not None and job.id == put.id
        events = [await asyncio.wait_for(anext(subscription), 10) for _ in range(2)]
    # Then a watcher sees the same two changes as for any job: its put, pending, as the
    # producer was answered, then its take, as the taker got it
    assert [(e.kind, e.job.status, e.old_status) for e in events] == [
        ("put", JobStatus.PENDING, None),
        ("taken", JobStatus.STARTED, JobStatus.PENDING),
    ]
    assert events[0].job == put
    assert events[1].job == job


async def test_a_put_for_a_waiting_taker_hands_over_the_most_urgent_jobs_first(
    store: Store,
) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await store.create_queue(QueueConfig("q"))
    await store.watch("q")
    # Given a taker waiting for two jobs, and an urgent job that became pending without a
    # put (written below the store's boundary, so nobody was woken: a store whose change
    # feed reports its own writes learns of it too, so that wake-up is held back until the
    # feed has delivered it)
    taking = asyncio.create_task(store.take_many("q", 2, worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["q"]))
    urgent = lifecycle.create(new(urgent=True), await store.get_queue("q"), now=clock.now())
    wake, held = store.hub.on_pending, []
    store.hub.on_pending = lambda queue, jobs: held.append(queue)
    try:
        await store.insert(urgent)
        if type(store).publish is not Store.publish:  # its changes come from a feed
            await until(lambda: bool(held))
    finally:
        store.hub.on_pending = wake
    # When a job is put
    put = await store.put(new(args=[1]))
    # Then the taker gets both, the urgent one first
    jobs = await asyncio.wait_for(taking, 20)
    assert [job.id for job in jobs] == [urgent.id, put.id]
    assert all(job.status is JobStatus.STARTED for job in jobs)


async def test_a_job_handed_to_a_taker_that_went_away_is_given_back(store: Store) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await store.create_queue(QueueConfig("q"))
    # Given a waiting taker, and a put that has already chosen it
    taking = asyncio.create_task(store.take("q", wait=20, poll=20))
    await until(lambda: bool(store._waiters["q"]))
    putting = asyncio.create_task(store.put(new()))
    # (at every turn of the loop: the write takes at least a disk sync or a round trip)
    await until(lambda: not store._waiters["q"], step=0)
    # When the taker goes away before the put's write is done
    taking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await taking
    put = await putting
    # Then the job comes back to pending, the attempt not counted, and can be taken
    await until(lambda: store.counters["q"]["released"] == 1)
    job = await store.get("q", put.id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
    assert (await store.take("q")).id == put.id  # type: ignore[union-attr]


async def test_a_wake_up_does_not_make_a_taker_give_up_a_put_claiming_for_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not store.hands_off:
        pytest.skip(f"{type(store).__name__} does not hand jobs to waiting takers")
    await store.create_queue(QueueConfig("q"))
    # Given a waiting taker, and a put that has chosen it and is still claiming for it
    claiming, go_on = hold_insert_and_claim(store, monkeypatch)
    taking = asyncio.create_task(store.take("q", worker="w", wait=20, poll=20))
    await until(lambda: bool(store._waiters["q"]))
    putting = asyncio.create_task(store.put(new(args=[1])))
    await asyncio.wait_for(claiming.wait(), 20)
    # When another job becomes pending meanwhile (which wakes the queue's takers)
    other = await store.put(new(args=[0]))
    go_on.set()
    put = await putting
    # Then the taker still gets what the put claimed for it (the oldest job), the other
    # job stays pending, and nothing was claimed for nobody and given back
    job = await asyncio.wait_for(taking, 20)
    assert job is not None and (job.id, job.worker) == (put.id, "w")
    assert (await store.get("q", other.id)).status is JobStatus.PENDING
    await until(lambda: not store._background)
    assert (store.counters["q"]["taken"], store.counters["q"]["released"]) == (1, 0)


async def test_apply_many_answers_each_change_on_its_own(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    for _ in range(3):
        await store.put(new())
    first, second, third = await store.take_many("q", 3)
    # When a batch finishes one job, fails another with a wrong lease, touches a missing
    # job and fails the third
    answers = await store.apply_many(
        "q",
        [
            (first.id, store.finish_change(lease=first.lease, result=1)),
            (second.id, store.finish_change(lease="not-the-lease")),
            ("missing", store.touch_change(lease="x")),
            (third.id, store.fail_change(lease=third.lease, error="boom")),
        ],
    )
    # Then each item has its own answer, and the refused ones changed nothing
    assert [type(a).__name__ for a in answers] == [
        "JobRecord",
        "LeaseMismatch",
        "JobNotFound",
        "JobRecord",
    ]
    assert (await store.get("q", first.id)).result == 1
    assert (await store.get("q", second.id)).status is JobStatus.STARTED
    assert (await store.get("q", third.id)).error == "boom"
    # And of a missing queue, every item is QueueNotFound
    (missing,) = await store.apply_many("nope", [(first.id, store.kick_change())])
    assert isinstance(missing, QueueNotFound)


async def test_a_give_back_that_fails_is_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    taken = await store.take("q")
    assert taken is not None
    await store.finish("q", taken.id, lease=taken.lease)
    # When a job that meanwhile ended is given back
    store.give_back([taken])
    await until(lambda: not store._background)
    # Then the refusal is logged (not left as an unretrieved task exception)
    assert any("could not give back" in r.getMessage() for r in caplog.records)
    assert (await store.get("q", taken.id)).status is JobStatus.FINISHED


async def test_long_poll_returns_none_when_time_is_up(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    assert await store.take("q", wait=0.2) is None


# -- leases ----------------------------------------------------------------------------------


async def test_expired_lease_returns_job_to_pending_and_counts_the_attempt(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=3))
    await store.put(new())
    first = await store.take("q")
    assert first is not None
    assert await store.reap(clock.now()) == 0  # not yet expired
    assert await expire_all(store) == 1
    again = await store.get("q", first.id)
    assert again.status is JobStatus.PENDING and again.lease is None and again.attempts == 1
    second = await store.take("q")
    assert second is not None and second.id == first.id
    assert second.attempts == 2 and second.lease != first.lease


async def test_expired_lease_on_last_attempt_buries_the_job(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=1))
    await store.put(new())
    job = await store.take("q")
    assert job is not None
    await expire_all(store)
    buried = await store.get("q", job.id)
    assert (buried.status, buried.event) == (JobStatus.BURIED, "expired")
    assert buried.error and "lease expired" in buried.error


async def test_update_with_lease_touches_it(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=60))
    await store.put(new())
    job = await store.take("q")
    assert job is not None and job.lease_expires is not None
    await asyncio.sleep(0.01)
    touched = await store.update("q", job.id, {}, lease=job.lease)
    assert touched.lease_expires is not None and touched.lease_expires > job.lease_expires


async def test_late_finish_after_lease_loss_is_refused(store: Store) -> None:
    # Given a job whose first lease expired and which a second worker took
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    first = await store.take("q")
    assert first is not None
    await expire_all(store)
    second = await store.take("q")
    assert second is not None
    # When the first worker reports late
    with pytest.raises(LeaseMismatch):
        await store.finish("q", first.id, lease=first.lease, result="late")
    with pytest.raises(LeaseMismatch):
        await store.update("q", first.id, {"x": 1}, lease=first.lease)
    # Then the second run is untouched and can finish
    assert (await store.get("q", first.id)).status is JobStatus.STARTED
    done = await store.finish("q", second.id, lease=second.lease, result="ok")
    assert done.status is JobStatus.FINISHED and done.result == "ok"


# -- finish, fail, release, update --------------------------------------------------------------


async def test_finish_keeps_the_result_and_is_final(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    job = await store.take("q")
    assert job is not None
    done = await store.finish("q", job.id, lease=job.lease, result={"sum": 3})
    assert done.status is JobStatus.FINISHED and done.result == {"sum": 3}
    assert done.finished_at is not None and done.lease is None
    with pytest.raises(InvalidTransition):
        await store.finish("q", job.id, lease=job.lease, result=None)
    with pytest.raises(InvalidTransition):
        await store.finish("q", job.id)


async def test_finish_without_lease_is_accepted_as_original_clients_send_it(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    pending = await store.put(new())
    assert (await store.finish("q", pending.id)).status is JobStatus.FINISHED
    await store.put(new())
    started = await store.take("q")
    assert started is not None
    assert (await store.finish("q", started.id, result=1)).status is JobStatus.FINISHED


async def test_fail_retries_with_backoff_then_buries(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=2))
    await store.put(new())
    job = await store.take("q")
    assert job is not None
    retried = await store.fail("q", job.id, lease=job.lease, error="E: boom", traceback="tb")
    assert retried.status is JobStatus.DELAYED and retried.ready_at > clock.now()
    assert await store.take("q") is None  # not before its time
    await store.reap(retried.ready_at + 0.001)
    again = await store.take("q")
    assert again is not None and again.attempts == 2
    buried = await store.fail("q", job.id, lease=again.lease, error="E: boom 2", traceback="tb2")
    assert buried.status is JobStatus.BURIED
    assert (buried.error, buried.traceback) == ("E: boom 2", "tb2")
    assert await store.take("q") is None  # buried jobs are not handed out
    # An operator kicks it back with its attempts renewed
    kicked = await store.kick_job("q", job.id)
    assert (kicked.status, kicked.attempts, kicked.event) == (JobStatus.PENDING, 0, "kicked")
    assert (await store.take("q")) is not None


async def test_permanent_failure_fails_at_once(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=5))
    await store.put(new())
    job = await store.take("q")
    assert job is not None
    failed = await store.fail("q", job.id, lease=job.lease, error="E", permanent=True)
    assert failed.status is JobStatus.FAILED and failed.finished_at is not None
    assert await store.take("q") is None  # failed jobs are not handed out
    # Final: no worker's call moves it (only an operator's kick, see the lifecycle tests)
    with pytest.raises(InvalidTransition):
        await store.finish("q", job.id)
    with pytest.raises(InvalidTransition):
        await store.bury("q", job.id)


async def test_bury_and_kick(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    pending = await store.put(new())
    buried = await store.bury("q", pending.id, reason="suspicious")
    assert (buried.status, buried.error) == (JobStatus.BURIED, "suspicious")
    with pytest.raises(InvalidTransition):
        await store.bury("q", pending.id)
    delayed = await store.put(new(delay=3600))
    assert (await store.kick_job("q", delayed.id)).status is JobStatus.PENDING
    with pytest.raises(InvalidTransition):
        await store.kick_job("q", delayed.id)  # pending now: nothing to kick
    assert (await store.kick_job("q", pending.id)).status is JobStatus.PENDING


async def test_release_gives_the_job_back_without_counting_the_attempt(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    job = await store.take("q")
    assert job is not None
    released = await store.release("q", job.id, lease=job.lease)
    assert released.status is JobStatus.PENDING and released.attempts == 0
    assert (await store.take("q")) is not None


async def test_update_merges_fields_and_refuses_owned_ones(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    job = await store.put(new())
    await store.update("q", job.id, {"progress": 1, "note": "a"})
    merged = await store.update("q", job.id, {"progress": 2})
    assert merged.extra == {"progress": 2, "note": "a"}
    assert merged.to_dict()["progress"] == 2
    with pytest.raises(ValidationError):
        await store.update("q", job.id, {"status": "finished"})
    assert (await store.get("q", job.id)).status is JobStatus.PENDING


async def test_unknown_job_raises_job_not_found(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    with pytest.raises(JobNotFound):
        await store.get("q", "0" * 32)
    with pytest.raises(JobNotFound):
        await store.finish("q", "0" * 32)
    with pytest.raises(JobNotFound):
        await store.update("q", "0" * 32, {})


#: Ids no job can have: RethinkDB refuses a NUL in a key and keys of more than 127 bytes.
UNSTORABLE_IDS = ["\x00", "a\x00b", "x" * 128, "é" * 64, "\U0001f389" * 32]


@pytest.mark.parametrize("job_id", UNSTORABLE_IDS, ids=["nul", "inner-nul", "128", "é", "emoji"])
async def test_an_id_no_job_can_have_names_no_job(store: Store, job_id: str) -> None:
    # Given a queue with a job
    await store.create_queue(QueueConfig("q"))
    job = await store.put(new())
    # When a job is named by an id that no store can hold (not an outage of the store)
    # Then every operation on it is JobNotFound, on every store
    with pytest.raises(JobNotFound):
        await store.get("q", job_id)
    with pytest.raises(JobNotFound):
        await store.delete("q", job_id)
    with pytest.raises(JobNotFound):
        await store.kick_job("q", job_id)
    with pytest.raises(JobNotFound):
        await store.update("q", job_id, {"progress": 1})
    # And in a batch, that item alone is JobNotFound
    answers = await store.apply_many(
        "q", [(job_id, store.finish_change()), (job.id, store.finish_change(result=1))]
    )
    assert [type(a).__name__ for a in answers] == ["JobNotFound", "JobRecord"]
    # And the ids at the limit (127 bytes) are well-formed ids of no job
    for fits in ("x" * 127, "é" * 63 + "x"):
        with pytest.raises(JobNotFound):
            await store.get("q", fits)


# -- changes, listing, durability ---------------------------------------------------------------


async def test_changes_are_published_in_order(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.watch("q")
    with store.hub.subscribe("q") as subscription:
        job = await store.put(new())
        taken = await store.take("q")
        assert taken is not None
        await store.finish("q", job.id, lease=taken.lease, result=1)
        events = [await asyncio.wait_for(anext(subscription), 10) for _ in range(3)]
    assert all(e.kind == e.job.event for e in events)
    assert [(e.kind, e.job.status) for e in events] == [
        ("put", JobStatus.PENDING),
        ("taken", JobStatus.STARTED),
        ("finished", JobStatus.FINISHED),
    ]
    assert {e.job.id for e in events} == {job.id}


async def test_list_jobs_pages_through_the_queue(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    ids = [(await store.put(new(args=[i]))).id for i in range(7)]
    seen, cursor = [], None
    while True:
        page = await store.list_jobs("q", cursor=cursor, limit=3)
        seen += [job.id for job in page.jobs]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ids


async def test_jobs_survive_reopening_the_store(make_store: StoreFactory) -> None:
    async with make_store() as store:
        await store.create_queue(QueueConfig("q", ttr=11))
        pending = await store.put(new(args=["keep"]))
        await store.put(new())
        started = await store.take("q")
        assert started is not None
    async with make_store() as reopened:
        assert (await reopened.get_queue("q")).ttr == 11
        assert (await reopened.get("q", pending.id)).args == ["keep"]
        again = await reopened.get("q", started.id)
        assert again.status is JobStatus.STARTED and again.lease == started.lease


async def test_put_many_stores_all_in_order(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    jobs = await store.put_many([new(args=[i]) for i in range(5)])
    assert [job.args for job in jobs] == [[i] for i in range(5)]
    taken = [await store.take("q") for _ in range(5)]
    assert [job.id for job in taken if job] == [job.id for job in jobs]
    with pytest.raises(QueueNotFound):
        await store.put_many([new("nope")])


async def test_a_large_put_many_stores_every_job_once_in_order(store: Store) -> None:
    # (RethinkDB sends a batch this large as several inserts at once: INSERT_SPLIT)
    await store.create_queue(QueueConfig("q"))
    jobs = await store.put_many([new(args=[i]) for i in range(1001)])
    assert [job.args for job in jobs] == [[i] for i in range(1001)]
    assert await store.count_jobs("q") == {JobStatus.PENDING: 1001}
    taken = await store.take_many("q", 100)
    assert [job.id for job in taken] == [job.id for job in jobs[:100]]
    listed = (await store.list_jobs("q", status=JobStatus.PENDING, limit=1000)).jobs
    assert [job.id for job in listed] == [job.id for job in jobs[100:]][: len(listed)]
    assert len(listed) == 901


#: JSON that RethinkDB would not keep as sent: objects it would read as its own types (a
#: time, binary data, a geometry), keys it would cut at a NUL (and clash), and keys that
#: look like such keys escaped.
PSEUDO_TYPES = {
    "time": {"$reql_type$": "TIME", "epoch_time": 1, "timezone": "+00:00"},
    "binary": [{"$reql_type$": "BINARY", "data": "aGk="}],
    "broken": {"$reql_type$": "TIME"},
    "nul": {"": 1, "\x00": 2, "a\x00b": 3, "a": 4, "%00": 5, "a%00b\x00%25": 6},
    "escaped": {"\\$reql_type$": 1, "\\\\$reql_type$": [2], "x$reql_type$": 3, "\\": 4,
                "\\%00": 5, "\\\x00%": 6},
    "nested": {"a": {"b": [{"$reql_type$": "GEOMETRY", "\x00": None}]}},
    "value": "a\x00b",
}  # fmt: skip


async def test_json_a_database_would_not_keep_is_kept_as_sent(store: Store) -> None:
    # Given jobs whose args, kwargs, result and fields hold objects keyed "$reql_type$",
    # keys with NUL characters, and keys that look escaped
    await store.create_queue(QueueConfig("q"))
    await store.watch("q")
    with store.hub.subscribe("q") as subscription:
        job = await store.put(new(args=[PSEUDO_TYPES], kwargs=PSEUDO_TYPES))
        put_event = await asyncio.wait_for(anext(subscription), 10)
    batch = await store.put_many([new(args=[PSEUDO_TYPES["time"]]), new(kwargs=PSEUDO_TYPES)])
    # Then every read gives them back exactly as they were sent, on every store
    for read in (job, put_event.job, await store.get("q", job.id)):
        assert (read.args, read.kwargs) == ([PSEUDO_TYPES], PSEUDO_TYPES)
    assert [j.args for j in batch] == [[PSEUDO_TYPES["time"]], []]
    assert (await store.get("q", batch[1].id)).kwargs == PSEUDO_TYPES
    fields = {"$reql_type$": "TIME", "\x00": 1, "\\": 2, "more": PSEUDO_TYPES}
    updated = await store.update("q", job.id, fields)
    assert updated.extra == fields
    taken = await store.take("q")
    assert taken is not None and taken.id == job.id and taken.kwargs == PSEUDO_TYPES
    assert taken.extra == updated.extra
    done = await store.finish("q", job.id, lease=taken.lease, result=PSEUDO_TYPES)
    assert done.result == PSEUDO_TYPES
    listed = {j.id: j for j in (await store.list_jobs("q")).jobs}
    assert listed[job.id].result == PSEUDO_TYPES and listed[job.id].extra == updated.extra
    assert listed[batch[1].id].kwargs == PSEUDO_TYPES
