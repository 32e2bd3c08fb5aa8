"""The store contract of concurrent writes to one queue, on every store: each request gets
its own answer, whatever it shares a commit with (the embedded store's group commit; the
RethinkDB store's per-queue group commit, whose queries are counted here: concurrent
requests share them, a lone one is sent at once in its own).
"""

from __future__ import annotations

import asyncio

from tests.contract.test_store import new
from tqueues import clock
from tqueues.errors import JobNotFound, LeaseMismatch
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
