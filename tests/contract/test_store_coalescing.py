"""The store contract of concurrent writes to one queue, on every store: each request gets
its own answer, whatever it shares a commit with (the embedded store's group commit; the
RethinkDB store's per-queue group commit, whose queries are counted here: concurrent
requests share them, a lone one is sent at once in its own).
"""

from __future__ import annotations

import asyncio
import collections

from tests.contract.test_store import new
from tqueues import clock
from tqueues.errors import JobNotFound, LeaseMismatch, QueueNotFound
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.base import Store


def batches(store: Store) -> dict[str, int] | None:
    """The RethinkDB store's counts of what it coalesced (None on the embedded store)."""
    counts = getattr(store, "batches", None)
    return dict(counts) if isinstance(counts, dict) else None


async def test_concurrent_outcomes_of_one_queue_each_get_their_own_answer(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=60, max_attempts=3))
    # Given ten started jobs, one of which ran out of lease and went back to pending (the
    # reaper), though this process still holds it as it took it
    late = await store.put(new(args=["late"], ttr=1))
    for n in range(9):
        await store.put(new(args=[n]))
    taken = await store.take_many("q", 10, worker="w")
    assert len(taken) == 10
    assert await store.reap(clock.now() + 5) == 1
    by_id = {job.id: job for job in taken}
    on_time = [job for job in taken if job.id != late.id]
    before = batches(store)
    # When their outcomes all come at once: finishes, a fail, a release, the late finish,
    # and a finish of a job that does not exist
    finishes = [store.finish("q", job.id, lease=job.lease, result=job.args) for job in on_time[:7]]
    answers = await asyncio.gather(
        *finishes,
        store.fail("q", on_time[7].id, lease=on_time[7].lease, error="boom"),
        store.release("q", on_time[8].id, lease=on_time[8].lease),
        store.finish("q", late.id, lease=by_id[late.id].lease, result="late"),
        store.finish("q", "no-such-job", lease="L", result=None),
        return_exceptions=True,
    )
    # Then each got its own answer: the on-time ones stored, the late one refused (its
    # lease is no longer its), the unknown job not found
    for job, answer in zip(on_time[:7], answers[:7], strict=True):
        assert isinstance(answer, JobRecord), answer
        assert (answer.id, answer.status, answer.result) == (job.id, JobStatus.FINISHED, job.args)
    failed, released, late_answer, unknown = answers[7:]
    assert isinstance(failed, JobRecord) and failed.status is JobStatus.DELAYED
    assert failed.error == "boom"
    assert isinstance(released, JobRecord) and released.status is JobStatus.PENDING
    assert isinstance(late_answer, LeaseMismatch)
    assert isinstance(unknown, JobNotFound)
    # And the store holds exactly that
    for job in on_time[:7]:
        stored = await store.get("q", job.id)
        assert (stored.status, stored.result) == (JobStatus.FINISHED, job.args)
    assert (await store.get("q", late.id)).status is JobStatus.PENDING
    after = batches(store)
    if before is not None and after is not None:  # RethinkDB: they shared queries
        requests = after["write_requests"] - before["write_requests"]
        queries = after["write_queries"] - before["write_queries"]
        assert requests >= 10 and queries < requests / 2, (requests, queries)


async def test_a_lone_request_goes_at_once_in_a_query_of_its_own(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    put = await store.put(new())
    before = batches(store)
    # When one take, then one finish, each alone
    (job,) = await store.take_many("q", 1, worker="w")
    finished = await store.finish("q", job.id, lease=job.lease)
    # Then each is answered, from its own query: the take's one read and one write, the
    # finish's one write (nothing waited for company)
    assert job.id == put.id and finished.status is JobStatus.FINISHED
    after = batches(store)
    if before is not None and after is not None:
        assert {key: after[key] - before[key] for key in after} == {
            "claim_groups": 1,
            "claim_requests": 1,
            "write_queries": 2,
            "write_requests": 2,
            "candidate_reads": 1,  # no feed runs here, so no pending head answers
            "head_answers": 0,
            "claims_lost": 0,
        }


async def test_concurrent_takes_of_one_queue_share_reads_and_get_distinct_jobs(
    store: Store,
) -> None:
    await store.create_queue(QueueConfig("q"))
    put = [await store.put(new(args=[n])) for n in range(30)]
    before = batches(store)
    # When twelve takers of up to three jobs each ask at once
    got = await asyncio.gather(
        *(store.take_many("q", 3, worker=f"w{n}") for n in range(12)), return_exceptions=True
    )
    # Then the thirty jobs went out once each, in take order, each under its taker's name
    assert all(isinstance(jobs, list) for jobs in got), got
    lists = [jobs for jobs in got if isinstance(jobs, list)]
    ids = [job.id for jobs in lists for job in jobs]
    assert sorted(ids) == sorted(job.id for job in put) and len(set(ids)) == 30
    for n, jobs in enumerate(lists):
        assert {job.worker for job in jobs} <= {f"w{n}"}
    after = batches(store)
    if before is not None and after is not None:  # RethinkDB: fewer reads than takers
        assert after["claim_requests"] - before["claim_requests"] == 12
        assert after["claim_groups"] - before["claim_groups"] < 12


async def test_a_heartbeats_look_up_reads_each_queue_once(store: Store) -> None:
    for name in ("qa", "qb"):
        await store.create_queue(QueueConfig(name))
        for n in range(6):
            await store.put(new(name, args=[n]))
    running = [
        (job.queue, job.id)
        for name in ("qa", "qb")
        for job in await store.take_many(name, 6, worker="w")
    ]
    asked = [running[1], running[4], running[9]]
    for queue, job_id in asked:
        await store.cancel(queue, job_id)
    queries: list[str] = []
    run_on_queue = getattr(store, "_run_on_queue", None)
    if run_on_queue is not None:  # RethinkDB: count the queries on queue tables

        async def counted(queue: str, query: object, **options: object) -> object:
            queries.append(queue)
            return await run_on_queue(queue, query, **options)

        store._run_on_queue = counted  # type: ignore[attr-defined]
    # When a heartbeat lists twelve running jobs of two queues (and one of a queue gone,
    # and an id no job can have)
    listed = [*running, ("nope", "x"), ("qa", "bad\x00id")]
    flagged = await store.cancel_requests(listed)
    # Then it hears of the three asked to stop, in the order listed
    assert flagged == [job_id for _, job_id in asked]
    if run_on_queue is not None:  # from one read per queue
        assert sorted(queries) == ["qa", "qb"]


async def test_outcomes_and_the_next_take_go_in_one_write(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    for n in range(8):
        await store.put(new(args=[n], priority=n))
    a, b, c = await store.take_many("q", 3, worker="w1")
    before = batches(store)
    # When a worker reports two finishes, one with a stale lease and one of a job that
    # does not exist, and asks for the next three jobs in the same call
    answers, taken = await store.apply_and_take(
        "q",
        [
            (a.id, store.finish_change(lease=a.lease, result="a")),
            (b.id, store.finish_change(lease="stale")),
            ("no-such-job", store.finish_change(lease="L")),
            (c.id, store.finish_change(lease=c.lease, result="c")),
        ],
        3,
        worker="w2",
    )
    # Then each outcome has its own answer, and the next three jobs in take order are
    # started for w2, each under a lease of its own
    assert [type(answer).__name__ for answer in answers] == [
        "JobRecord",
        "LeaseMismatch",
        "JobNotFound",
        "JobRecord",
    ]
    assert [job.args for job in taken] == [[3], [4], [5]]
    assert all(job.status is JobStatus.STARTED and job.worker == "w2" for job in taken)
    assert len({job.lease for job in taken} | {a.lease, b.lease, c.lease}) == 6
    # And the store holds exactly that
    assert (await store.get("q", a.id)).result == "a"
    assert (await store.get("q", b.id)).status is JobStatus.STARTED
    for job in taken:
        stored = await store.get("q", job.id)
        assert (stored.status, stored.lease, stored.attempts) == (JobStatus.STARTED, job.lease, 1)
    after = batches(store)
    if before is not None and after is not None:  # RethinkDB: claims and finishes, one query
        assert after["write_queries"] - before["write_queries"] == 1
        assert after["write_requests"] - before["write_requests"] == 2


async def test_outcomes_are_stored_when_nothing_is_taken_along(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    await store.put(new())
    (job,) = await store.take_many("q", 1)
    # When the only job is finished with a take of five along: nothing is left to take
    (answer,), taken = await store.apply_and_take(
        "q", [(job.id, store.finish_change(lease=job.lease))], 5
    )
    assert isinstance(answer, JobRecord) and answer.status is JobStatus.FINISHED
    assert taken == []
    assert (await store.get("q", job.id)).status is JobStatus.FINISHED
    # When the queue is paused: the outcome is stored, nothing is taken
    for _ in range(2):
        await store.put(new())
    first, _ = await store.take_many("q", 2)
    await store.pause("q")
    (answer,), taken = await store.apply_and_take(
        "q", [(first.id, store.finish_change(lease=first.lease))], 5
    )
    assert isinstance(answer, JobRecord) and taken == []
    assert await store.count_jobs("q") == {JobStatus.FINISHED: 2, JobStatus.STARTED: 1}
    # And of a missing queue, every outcome is QueueNotFound and nothing is taken
    (missing,), taken = await store.apply_and_take("nope", [(job.id, store.kick_change())], 5)
    assert isinstance(missing, QueueNotFound) and taken == []


async def test_workers_reporting_and_taking_along_run_each_job_once(store: Store) -> None:
    await store.create_queue(QueueConfig("q"))
    jobs = await store.put_many([new(args=[n]) for n in range(90)])
    runs: collections.Counter[str] = collections.Counter()

    async def worker(name: str) -> None:
        # Each round "runs" what it holds, then reports it and takes the next four along.
        held = await store.take_many("q", 4, worker=name)
        while held:
            runs.update(job.id for job in held)
            changes = [(job.id, store.finish_change(lease=job.lease)) for job in held]
            answers, held = await store.apply_and_take("q", changes, 4, worker=name)
            assert all(isinstance(answer, JobRecord) for answer in answers), answers

    # When six workers drain the queue at once, reporting and taking in one call each
    await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    # Then every job ran exactly once and is finished
    assert runs == collections.Counter(job.id for job in jobs)
    assert await store.count_jobs("q") == {JobStatus.FINISHED: 90}
