"""The full job lifecycle on every store: priorities, queue defaults, ttl, retention,
touch, requeue, kick (of failed jobs too), peek, listing by status, truncate, drop, delete
and statistics."""

from __future__ import annotations

import asyncio

import pytest

from tests.contract.test_store import new
from tqueues import clock
from tqueues.errors import InvalidTransition, JobNotFound, QueueNotFound, ValidationError
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores import base
from tqueues.stores.base import Page, Store


async def test_urgent_jobs_go_ahead_of_every_priority(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    top = await store.put(new(priority=0))
    urgent = await store.put(new(urgent=True))
    assert urgent.priority == -1
    assert [j.id for j in await store.take_many("q", 5)] == [urgent.id, top.id]


async def test_queue_defaults_apply_and_can_change(store: Store) -> None:
    await store.create_queue(QueueConfig("q").changed({"priority": 7, "delay": 30, "ttl": 60}))
    job = await store.put(new())
    assert (job.priority, job.status) == (7, JobStatus.DELAYED)
    assert job.expires_at == pytest.approx(job.created_at + 60)
    own = await store.put(new(priority=1, delay=0, ttl=5))
    assert (own.priority, own.status, own.expires_at) == (1, JobStatus.PENDING, own.created_at + 5)
    # When the defaults change, new jobs follow them and old ones keep theirs
    await store.update_queue((await store.get_queue("q")).changed({"delay": 0, "ttr": 9}))
    config = await store.get_queue("q")
    assert (config.delay, config.ttr, config.priority) == (0, 9, 7)
    assert (await store.put(new())).status is JobStatus.PENDING
    assert (await store.get("q", job.id)).status is JobStatus.DELAYED
    with pytest.raises(QueueNotFound):
        await store.update_queue(QueueConfig("nope"))


async def test_ttl_buries_or_deletes_waiting_jobs_by_queue_setting(store: Store) -> None:
    await store.create_queue(QueueConfig("bury", ttl=1))
    await store.create_queue(QueueConfig("drop", ttl=1, ttl_action="delete"))
    buried = await store.put(new("bury"))
    dropped = await store.put(new("drop"))
    running = await store.put(new("bury"))
    await store.take("bury")  # the older job: started jobs are not cut short by their ttl
    assert (await store.get("bury", buried.id)).status is JobStatus.STARTED
    await store.reap(clock.now() + 2)
    assert (await store.get("bury", running.id)).status is JobStatus.BURIED
    assert "ttl" in ((await store.get("bury", running.id)).error or "")
    with pytest.raises(JobNotFound):
        await store.get("drop", dropped.id)


async def test_finished_jobs_are_purged_after_retention(store: Store) -> None:
    await store.create_queue(QueueConfig("q", retention=60))
    kept = await store.put(new())
    done = await store.put(new())
    await store.finish("q", done.id, result=1)
    await store.reap(clock.now() + 30)
    assert (await store.get("q", done.id)).result == 1
    await store.reap(clock.now() + 61)
    with pytest.raises(JobNotFound):
        await store.get("q", done.id)
    assert (await store.get("q", kept.id)).status is JobStatus.PENDING


async def test_touch_extends_the_lease(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=5))
    await store.put(new())
    job = await store.take("q")
    assert job is not None and job.lease is not None
    touched = await store.touch("q", job.id, lease=job.lease, ttr=100)
    assert touched.lease_expires is not None and touched.lease_expires > clock.now() + 90
    assert touched.event == "touched"


async def test_requeue_goes_to_the_end_and_release_keeps_the_place(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    first, second = await store.put(new()), await store.put(new())
    job = await store.take("q")
    assert job is not None and job.id == first.id
    await store.release("q", job.id, lease=job.lease)
    again = await store.take("q")
    assert again is not None and again.id == first.id  # kept its place
    await store.release("q", again.id, lease=again.lease, to_end=True)
    assert [j.id for j in await store.take_many("q", 2)] == [second.id, first.id]


async def test_kick_takes_buried_first_then_delayed_up_to_the_bound(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    buried = [await store.put(new()) for _ in range(3)]
    for job in buried:
        await store.bury("q", job.id)
    delayed = await store.put(new(delay=3600))
    assert await store.kick("q", 2) == 2
    assert await store.kick("q", 5) == 1  # the last buried one; delayed ones wait their turn
    assert (await store.get("q", delayed.id)).status is JobStatus.DELAYED
    assert await store.kick("q", 5) == 1
    assert (await store.get("q", delayed.id)).status is JobStatus.PENDING
    assert await store.kick("q", 5) == 0


async def test_kick_reads_pages_bounded_in_bytes(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_queue(QueueConfig("q"))
    # Given seven buried jobs of about 2 kB each, and a kick that reads pages of 3 kB
    monkeypatch.setattr(base, "KICK_PAGE_BYTES", 3_000)
    buried = [await store.put(new(args=["x" * 2_000, i])) for i in range(7)]
    for job in buried:
        await store.bury("q", job.id)
    pages: list[int] = []
    list_jobs = store.list_jobs

    async def listing(*args: object, **kwargs: object) -> Page:
        page = await list_jobs(*args, **kwargs)  # type: ignore[arg-type]
        pages.append(len(page.jobs))
        return page

    monkeypatch.setattr(store, "list_jobs", listing)
    # Then a kick of five kicks the five oldest, page after page (none above 3 kB and one
    # more job), and the next the rest
    assert await store.kick("q", 5) == 5
    assert len(pages) >= 3 and max(pages) <= 2, pages
    statuses = [(await store.get("q", job.id)).status for job in buried]
    assert statuses == [JobStatus.PENDING] * 5 + [JobStatus.BURIED] * 2
    assert await store.kick("q", 10_000) == 2
    assert await store.kick("q", 10_000) == 0


async def failed_jobs(store: Store, count: int, queue: str = "q") -> list[JobRecord]:
    """``count`` jobs of ``queue`` failed for good (a permanent failure on their first run)."""
    await store.put_many([new(queue, args=[i]) for i in range(count)])
    taken = await store.take_many(queue, count)
    assert len(taken) == count
    return [
        await store.fail(queue, job.id, lease=job.lease, error="E: gone", permanent=True)
        for job in taken
    ]


async def test_a_kicked_failed_job_is_pending_with_fresh_attempts(store: Store) -> None:
    # Given a job that failed for good on its first run, and a queue that keeps failed
    # jobs for a minute
    await store.create_queue(QueueConfig("q", max_attempts=3, retention=60))
    (failed,) = await failed_jobs(store, 1)
    assert (failed.status, failed.attempts, failed.finished_at is not None) == (
        JobStatus.FAILED, 1, True,
    )  # fmt: skip
    # When an operator kicks it
    kicked = await store.kick_job("q", failed.id)
    # Then it is pending at the end of the queue, with its attempts renewed (as a kicked
    # buried job), no longer final, and keeps its last error for whoever looks
    assert (kicked.status, kicked.attempts, kicked.event) == (JobStatus.PENDING, 0, "kicked")
    assert (kicked.finished_at, kicked.lease, kicked.error) == (None, None, "E: gone")
    assert kicked.rev == failed.rev + 1 and kicked.ready_at >= failed.finished_at
    stats = await store.stats("q")
    assert (stats.counts["failed"], stats.counts["pending"]) == (0, 1)
    # And the retention of failed jobs no longer applies to it
    await store.reap(clock.now() + 120)
    assert (await store.get("q", failed.id)).status is JobStatus.PENDING
    # And it runs again, its whole max_attempts
    again = await store.take("q")
    assert again is not None and (again.id, again.attempts) == (failed.id, 1)
    # And only buried, delayed and failed jobs can be kicked: not pending, started or
    # finished ones
    with pytest.raises(InvalidTransition):
        await store.kick_job("q", failed.id)
    done = await store.finish("q", failed.id, lease=again.lease)
    with pytest.raises(InvalidTransition):
        await store.kick_job("q", done.id)


async def test_kick_by_status_and_failed_jobs_only_when_named(store: Store) -> None:
    # Given failed, buried and delayed jobs
    await store.create_queue(QueueConfig("q"))
    failed = await failed_jobs(store, 3)
    buried = await store.put(new())
    await store.bury("q", buried.id)
    delayed = await store.put(new(delay=3600))
    # When the queue is kicked without a status: buried jobs, else delayed ones, never
    # failed ones (as beanstalkd's kick, which knows no failed jobs)
    assert await store.kick("q", 10) == 1
    assert await store.kick("q", 10) == 1
    assert (await store.get("q", delayed.id)).status is JobStatus.PENDING
    assert await store.kick("q", 10) == 0
    # When failed jobs are kicked by name, up to the bound, oldest first
    assert await store.kick("q", 2, status=JobStatus.FAILED) == 2
    statuses = [(await store.get("q", job.id)).status for job in failed]
    assert statuses == [JobStatus.PENDING, JobStatus.PENDING, JobStatus.FAILED]
    assert await store.kick("q", 10, status=JobStatus.FAILED) == 1
    assert await store.kick("q", 10, status=JobStatus.FAILED) == 0
    # And a status can be named for the others too
    await store.bury("q", buried.id)
    assert await store.kick("q", 10, status=JobStatus.DELAYED) == 0
    assert await store.kick("q", 10, status=JobStatus.BURIED) == 1
    # And a status no job can be kicked from is refused
    for status in (JobStatus.PENDING, JobStatus.STARTED, JobStatus.FINISHED):
        with pytest.raises(ValidationError):
            await store.kick("q", 1, status=status)


async def test_concurrent_kicks_kick_each_failed_job_once(store: Store) -> None:
    # Given twenty failed jobs
    await store.create_queue(QueueConfig("q"))
    failed = await failed_jobs(store, 20)
    # When two operators kick them all at once, and others kick single jobs meanwhile
    outcomes = await asyncio.gather(
        store.kick("q", 20, status=JobStatus.FAILED),
        store.kick("q", 20, status=JobStatus.FAILED),
        *(store.kick_job("q", job.id) for job in failed[:5]),
        return_exceptions=True,
    )
    # Then each job was kicked exactly once (a compare-and-set each; the losers of a race
    # are not counted, or are refused as no longer failed)
    counts = [n for n in outcomes[:2] if isinstance(n, int)]
    singles = [o for o in outcomes[2:] if not isinstance(o, InvalidTransition)]
    assert len(counts) == 2 and sum(counts) + len(singles) == 20, outcomes
    after = [await store.get("q", job.id) for job in failed]
    assert all(job.status is JobStatus.PENDING for job in after)
    assert [a.rev - b.rev for a, b in zip(after, failed, strict=True)] == [1] * 20
    assert store.counters["q"]["kicked"] == 20


async def test_peek_shows_the_next_job_of_each_status(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    assert await store.peek("q", JobStatus.PENDING) is None
    later = await store.put(new(priority=9))
    sooner = await store.put(new(priority=1))
    late = await store.put(new(delay=600))
    soon = await store.put(new(delay=60))
    await store.bury("q", later.id)
    peeked = {s: await store.peek("q", s) for s in (JobStatus.PENDING, JobStatus.DELAYED,
                                                      JobStatus.BURIED)}  # fmt: skip
    assert {s: j.id if j else None for s, j in peeked.items()} == {
        JobStatus.PENDING: sooner.id,
        JobStatus.DELAYED: soon.id,
        JobStatus.BURIED: later.id,
    }
    assert late.status is JobStatus.DELAYED
    assert (await store.take("q")) is not None  # peeking took nothing


async def test_list_jobs_by_status_with_pages(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    jobs = [await store.put(new(args=[i])) for i in range(7)]
    for job in jobs[::2]:
        await store.bury("q", job.id)
    seen, cursor = [], None
    while True:
        page = await store.list_jobs("q", status=JobStatus.BURIED, cursor=cursor, limit=2)
        seen += [job.id for job in page.jobs]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [job.id for job in jobs[::2]]
    pending = await store.list_jobs("q", status=JobStatus.PENDING)
    assert [job.id for job in pending.jobs] == [job.id for job in jobs[1::2]]


async def test_truncate_drop_and_delete(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.create_queue(QueueConfig("other"))
    kept = await store.put(new("other"))
    jobs = [await store.put(new()) for _ in range(4)]
    deleted = await store.delete("q", jobs[0].id)
    assert deleted.id == jobs[0].id
    with pytest.raises(JobNotFound):
        await store.get("q", jobs[0].id)
    assert await store.truncate("q") == 3
    assert (await store.list_jobs("q")).jobs == []
    assert await store.drop_queue("other") == 1
    with pytest.raises(QueueNotFound):
        await store.get("other", kept.id)
    assert [c.name for c in await store.list_queues()] == ["q"]
    with pytest.raises(QueueNotFound):
        await store.drop_queue("other")


async def test_stats_count_jobs_by_status_and_events(store: Store) -> None:
    await store.create_queue(QueueConfig("q", max_attempts=1))
    for _ in range(3):
        await store.put(new())
    job = await store.take("q")
    assert job is not None
    await store.fail("q", job.id, lease=job.lease, error="E")  # buried
    await store.take("q", wait=0.01)
    stats = await store.stats("q")
    assert stats.counts == {"pending": 1, "waiting": 0, "delayed": 0, "started": 1,
                            "finished": 0, "buried": 1, "failed": 0, "cancelled": 0}  # fmt: skip
    assert stats.counters["put"] == 3 and stats.counters["taken"] == 2
    assert stats.counters["buried"] == 1
    assert stats.to_dict()["total"] == 3
