"""What only the embedded store has: its data directory lock, a full disk, its
time-ordered ids and its exclusive hold on the database file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.errors import StoreUnavailable
from tqueues.jobs import JobRecord, NewJob, QueueConfig
from tqueues.settings import DispatcherSettings
from tqueues.stores.primitives import Primitives
from tqueues.stores.sqlite import SQLiteStore

JOB = NewJob(queue="q", method="m:f", args=["x" * 2000])


async def test_a_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path):
        with pytest.raises(StoreUnavailable, match="another dispatcher"):
            await SQLiteStore(tmp_path).open()
    async with SQLiteStore(tmp_path):  # the lock goes with the store
        pass


async def test_an_unusable_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="cannot use data directory"):
        await SQLiteStore(tmp_path / "file" / "data").open()


async def test_full_store_refuses_writes_then_recovers(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put(JOB)
        await store.set_max_size(1)  # as if the disk were full now
        accepted = 1
        with pytest.raises(StoreUnavailable, match="full"):
            for _ in range(100):
                await store.put(JOB)
                accepted += 1
        # Reads still work, and exactly the acknowledged jobs are stored: none half-written.
        assert len((await store.list_jobs("q")).jobs) == accepted
        await store.set_max_size(1 << 30)  # space again
        assert (await store.put(JOB)).args == JOB.args


async def test_dispatcher_answers_503_while_full_and_recovers(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "data")
    client = await aiohttp_client(create_app(DispatcherSettings(), store=store))
    assert (await client.put("/?queue=q")).status == 200
    await store.set_max_size(1)
    body = {"queue": "q", "method": "m:f", "args": ["x" * 2000]}
    statuses = set()
    for _ in range(100):
        response = await client.post("/", json=body)
        statuses.add(response.status)
        if response.status == 503:
            error = await response.json()
            assert error["error"] == "store_unavailable" and "full" in error["message"]
            break
    assert 503 in statuses
    assert (await client.get("/health")).status == 200  # the dispatcher stays up
    await store.set_max_size(1 << 30)
    assert (await client.post("/", json=body)).status == 200


async def test_concurrent_operations_share_commits_and_fail_alone(tmp_path: Path) -> None:
    from tqueues.errors import JobNotFound

    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        assert store._thread is not None
        commits_before = store._thread.commits
        # Given 300 puts racing with finishes of jobs that do not exist
        results = await asyncio.gather(
            *(store.put(JOB) for _ in range(300)),
            *(store.finish("q", f"missing{i}") for i in range(20)),
            return_exceptions=True,
        )
        put = [r for r in results[:300] if not isinstance(r, BaseException)]
        refused = [r for r in results[300:] if isinstance(r, JobNotFound)]
        # Then each failed alone, every put was acknowledged, and they shared disk syncs
        assert (len(put), len(refused)) == (300, 20)
        assert store._thread.commits - commits_before < 320
    async with SQLiteStore(tmp_path) as reopened:
        stored = {job.id for job in (await reopened.list_jobs("q", limit=1000)).jobs}
        assert stored == {job.id for job in put}


async def test_a_batched_take_is_one_write(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put_many([NewJob(queue="q", method="m:f", args=[i]) for i in range(12)])
        assert store._thread is not None
        commits_before = store._thread.commits
        # When ten jobs are taken in one call
        jobs = await store.take_many("q", 10)
        # Then they are the ten oldest, each under its own lease, claimed in one commit
        assert [job.args for job in jobs] == [[i] for i in range(10)]
        assert len({job.lease for job in jobs}) == 10
        assert store._thread.commits - commits_before == 1
        # And asking for more than is pending gets what is left
        assert [job.args for job in await store.take_many("q", 10)] == [[10], [11]]


async def test_a_take_from_several_queues_is_one_write(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        for name in ("qa", "qb", "qc"):
            await store.create_queue(QueueConfig(name))
        await store.put_many([NewJob(queue="qc", method="m:f", args=[i]) for i in range(3)])
        assert store._thread is not None
        commits_before = store._thread.commits
        # When a take looks at two empty queues before the one with jobs
        jobs = await store.take_any(["qa", "qb", "qc"], 2)
        # Then it got the jobs of the third in the one operation (one commit) it made
        assert [job.args for job in jobs] == [[0], [1]]
        assert store._thread.commits - commits_before == 1


async def test_a_job_put_for_a_waiting_taker_costs_one_commit(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        assert store._thread is not None
        taking = asyncio.create_task(store.take("q", wait=20, poll=20))
        while not store._waiters["q"]:
            await asyncio.sleep(0.001)
        commits_before = store._thread.commits
        put = await store.put(JOB)
        job = await asyncio.wait_for(taking, 20)
        assert job is not None and job.id == put.id
        assert store._thread.commits - commits_before == 1


async def test_a_batch_of_outcomes_is_one_commit(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put_many([JOB] * 5)
        jobs = await store.take_many("q", 5)
        assert store._thread is not None
        commits_before = store._thread.commits
        answers = await store.apply_many(
            "q", [(job.id, store.finish_change(lease=job.lease)) for job in jobs]
        )
        assert [answer.status.value for answer in answers] == ["finished"] * 5  # type: ignore[union-attr]
        assert store._thread.commits - commits_before == 1


async def test_a_cancelled_queue_change_still_keeps_the_cache_and_the_file_in_step(
    tmp_path: Path,
) -> None:
    loop = asyncio.get_running_loop()
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("b"))
        # When callers go away while their queue changes are being written
        creating = asyncio.ensure_future(store.create_queue(QueueConfig("a")))
        dropping = asyncio.ensure_future(store.drop_queue("b"))
        await asyncio.sleep(0)  # both writes are queued for the store's thread
        creating.cancel()
        dropping.cancel()
        # Then what the store answers from memory becomes what the file holds
        deadline = loop.time() + 10
        while {q.name for q in await store.list_queues()} != {"a"}:
            assert loop.time() < deadline, await store.list_queues()
            await asyncio.sleep(0.01)
    async with SQLiteStore(tmp_path) as reopened:
        assert {q.name for q in await reopened.list_queues()} == {"a"}


async def test_the_hot_path_reads_jobs_through_an_index_never_a_scan(tmp_path: Path) -> None:
    # Every statement that a put, a batched take, a batch of outcomes and a reap run is
    # planned again here on a table holding jobs: each finds its rows through an index,
    # and the reads by id use the id index (an IN list once led the planner to walk the
    # queue's index instead: one outcome batch cost milliseconds per job).
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        for start in range(0, 3000, 1000):
            await store.put_many(
                [NewJob(queue="q", method="m:f", args=[start + i]) for i in range(1000)]
            )
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        jobs = await store.take_many("q", 10)
        store._conn.set_trace_callback(None)
    # Reopened (as after a restart), the store reads the jobs an outcome batch is about.
    async with SQLiteStore(tmp_path) as store:
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        await store.apply_many(
            "q", [(job.id, store.finish_change(lease=job.lease)) for job in jobs]
        )
        await store.put(NewJob(queue="q", method="m:f"))
        await store.reap(time.time())
        store._conn.set_trace_callback(None)

        def plan(sql: str) -> list[str]:
            return [row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {sql}")]  # type: ignore[union-attr]

        planned = {s for s in statements if s.split(None, 1)[0] in ("SELECT", "UPDATE", "DELETE")}
        assert any(" IN (" in s for s in planned), planned  # the outcome batch's read
        for sql in planned:
            steps = plan(sql)
            assert not [step for step in steps if step.startswith("SCAN")], (sql, steps)
            if " id IN (" in sql or "WHERE id = " in sql:
                assert "(id=?)" in steps[0], (sql, steps)


async def test_the_outcomes_of_jobs_just_taken_need_no_read(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put_many([JOB] * 5)
        jobs = await store.take_many("q", 5)
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        answers = await store.apply_many(
            "q", [(job.id, store.finish_change(lease=job.lease)) for job in jobs]
        )
        store._conn.set_trace_callback(None)
        assert [answer.status.value for answer in answers] == ["finished"] * 5  # type: ignore[union-attr]
        assert not [sql for sql in statements if sql.startswith("SELECT")], statements
        for job in jobs:
            assert (await store.get("q", job.id)).status.value == "finished"
        # A large job is not kept in memory: its outcome reads it.
        await store.put(NewJob(queue="q", method="m:f", args=["x" * 10_000]))
        [large] = await store.take_many("q", 1)
        store._conn.set_trace_callback(statements.append)
        await store.apply_many("q", [(large.id, store.finish_change(lease=large.lease))])
        store._conn.set_trace_callback(None)
        assert [sql for sql in statements if sql.startswith("SELECT")]


async def _one_taken(store: SQLiteStore) -> JobRecord:
    """Queue ``q`` with one job, taken."""
    await store.create_queue(QueueConfig("q"))
    await store.put(JOB)
    [job] = await store.take_many("q", 1)
    return job


async def test_a_rolled_back_write_leaves_no_stale_job_behind(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        job = await _one_taken(store)

        def touch_then_fail() -> None:
            # A write that its operation then rolls back (any error does).
            assert store._conn is not None
            store._write(store._conn, job, job.revise(extra={"touched": True}))
            raise RuntimeError("the operation fails after its write")

        with pytest.raises(RuntimeError):
            await store._run(touch_then_fail)
        # The job is as it was before that operation: its outcome applies to that.
        [answer] = await store.apply_many("q", [(job.id, store.finish_change(lease=job.lease))])
        assert not isinstance(answer, Exception), answer
        stored = await store.get("q", job.id)
        assert stored.status.value == "finished" and stored.extra == {}
        assert stored.rev == job.rev + 1


async def test_a_row_changed_behind_the_stores_back_is_never_written_over(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path) as store:
        job = await _one_taken(store)

        def change_behind() -> None:
            assert store._conn is not None
            store._conn.execute(
                "UPDATE jobs SET rev = rev + 1, extra = '{\"mark\": 1}' WHERE id = ?", (job.id,)
            )

        await store._run(change_behind)
        finish = [(job.id, store.finish_change(lease=job.lease))]
        # The revision check refuses the write from the job as kept...
        [refused] = await store.apply_many("q", finish)
        assert isinstance(refused, StoreUnavailable), refused
        assert "changed under a write" in refused.message
        # ...and once that is rolled back, the job is read again and the change applies.
        [answer] = await store.apply_many("q", finish)
        assert not isinstance(answer, Exception), answer
        stored = await store.get("q", job.id)
        assert stored.status.value == "finished" and stored.extra == {"mark": 1}


async def test_job_ids_are_time_ordered_uuid7_and_default_random_elsewhere(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        one = [await store.put(NewJob(queue="q", method="m:f")) for _ in range(50)]
        many = await store.put_many([NewJob(queue="q", method="m:f") for _ in range(500)])
    ids = [job.id for job in one + many]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # put after put, and in a batch (the same millisecond)
    for value in (ids[0], ids[-1]):
        parsed = uuid.UUID(value)
        assert parsed.hex == value and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert abs(int(value[:12], 16) / 1000 - time.time()) < 60  # milliseconds since 1970
    # A store that shards by primary key (RethinkDB) keeps the default: random ids.
    assert uuid.UUID(Primitives.new_id()).version == 4


def _wal_frames(directory: Path) -> int:
    return max(0, (directory / "tqueues.sqlite3-wal").stat().st_size - 32) // (4096 + 24)


async def test_a_batch_of_puts_rewrites_few_pages_of_the_id_index(tmp_path: Path) -> None:
    # The pages one batch of 1000 puts writes into a table of 20,000 jobs: with ids in
    # time order they are those of the new rows and the index ends; random ids land on
    # nearly every page of the id index.
    class RandomIds(SQLiteStore):
        new_id = staticmethod(Primitives.new_id)

    frames = {}
    for kind in (SQLiteStore, RandomIds):
        directory = tmp_path / kind.__name__
        async with kind(directory) as store:
            await store.create_queue(QueueConfig("q"))
            for _ in range(20):
                await store.put_many([NewJob(queue="q", method="m:f") for _ in range(1000)])
            assert store._conn is not None
            await store._run(store._conn.execute, "PRAGMA wal_checkpoint(TRUNCATE)", batch=False)
            assert _wal_frames(directory) == 0
            await store.put_many([NewJob(queue="q", method="m:f") for _ in range(1000)])
            frames[kind] = _wal_frames(directory)
    assert 0 < frames[SQLiteStore] < 0.6 * frames[RandomIds], frames


async def test_the_database_is_locked_to_the_store_and_has_no_shared_memory_file(
    tmp_path: Path,
) -> None:
    # The exclusive locking mode: SQLite's file locks are taken once (not around every
    # transaction) and the log's index lives in the process (no -shm file).
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put(NewJob(queue="q", method="m:f"))
        assert not (tmp_path / "tqueues.sqlite3-shm").exists()
        other = sqlite3.connect(tmp_path / "tqueues.sqlite3", timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("SELECT count(*) FROM jobs").fetchall()
        finally:
            other.close()
    # Once closed, the file is an ordinary database with everything in it.
    with contextlib.closing(sqlite3.connect(tmp_path / "tqueues.sqlite3")) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (1,)


Counts = dict[tuple[str, str], int]


async def walked(store: SQLiteStore) -> Counts:
    """The jobs by queue and status, counted by a walk of the table (on the store's own
    connection: the file is the store's alone while it is open)."""

    def walk() -> Counts:
        assert store._conn is not None
        rows = store._conn.execute(
            "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status"
        )
        return {(q, s): n for q, s, n in rows}

    return await store._run(walk)


async def kept(store: SQLiteStore) -> Counts:
    """The jobs by queue and status as count_jobs answers (the census)."""
    return {
        (config.name, status.value): n
        for config in await store.list_queues()
        for status, n in (await store.count_jobs(config.name)).items()
    }


async def test_the_count_of_jobs_follows_every_change_without_reading_them(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q", max_attempts=1, retention=0.05))
        await store.create_queue(QueueConfig("r", ttl=0.05, ttl_action="delete"))
        await store.create_queue(QueueConfig("s"))
        await store.put_many([NewJob(queue="q", method="m:f")] * 6)
        await store.put_many([NewJob(queue="r", method="m:f")] * 2)
        await store.put(NewJob(queue="s", method="m:f", delay=60))
        first, second, third = await store.take_many("q", 3)
        await store.finish("q", first.id, lease=first.lease)
        await store.fail("q", second.id, lease=second.lease, error="boom")  # buried
        await store.release("q", third.id, lease=third.lease)
        await store.delete("q", (await store.take("q")).id)  # type: ignore[union-attr]
        assert await store.count_jobs("q") == {"pending": 3, "finished": 1, "buried": 1}
        assert await kept(store) == await walked(store)
        # The reaper deletes without recording: finished jobs past retention, a ttl's jobs
        await asyncio.sleep(0.1)
        assert await store.reap(time.time()) == 3
        assert await store.count_jobs("q") == {"pending": 3, "buried": 1}
        assert await store.count_jobs("r") == {}
        await store.truncate("s")
        await store.drop_queue("r")
        assert await kept(store) == await walked(store) == {("q", "pending"): 3, ("q", "buried"): 1}


async def test_the_count_of_jobs_is_taken_when_the_store_opens(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        await store.put_many([NewJob(queue="q", method="m:f")] * 4)
        await store.take("q")
    async with SQLiteStore(tmp_path) as store:
        assert await store.count_jobs("q") == {"pending": 3, "started": 1}
        await store.put(NewJob(queue="q", method="m:f"))
        assert await store.count_jobs("q") == {"pending": 4, "started": 1}
        assert await kept(store) == await walked(store)


async def test_a_file_of_an_earlier_version_is_upgraded_for_cancellation(tmp_path: Path) -> None:
    # Given a store file as versions before cancellation made it: no cancel_requested
    # column, and the retention index jobs_done of finished and failed jobs only
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q", retention=60))
        old = await store.put(NewJob(queue="q", method="m:f"))
    conn = sqlite3.connect(tmp_path / "tqueues.sqlite3")
    conn.executescript(
        "DROP INDEX jobs_ended; ALTER TABLE jobs DROP COLUMN cancel_requested; "
        "CREATE INDEX jobs_done ON jobs(queue, finished_at) "
        "WHERE status IN ('finished', 'failed');"
    )
    conn.close()
    # When this version opens it, its jobs can be cancelled, and retention purges them
    async with SQLiteStore(tmp_path) as store:
        assert (await store.get("q", old.id)).cancel_requested is False
        await store.take("q")
        assert (await store.cancel("q", old.id)).cancel_requested is True
        await store.fail("q", old.id, error="x")
        await store.reap(time.time() + 61)
        assert await store.count_jobs("q") == {}
    conn = sqlite3.connect(tmp_path / "tqueues.sqlite3")
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    conn.close()
    assert "jobs_ended" in indexes and "jobs_done" not in indexes


async def test_a_file_of_an_earlier_version_is_upgraded_for_unique_jobs(tmp_path: Path) -> None:
    # Given a store file as versions before unique jobs made it: no key column, no index;
    # and one whose index of live keys covers other statuses than this version's
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        old = await store.put(NewJob(queue="q", method="m:f"))
    conn = sqlite3.connect(tmp_path / "tqueues.sqlite3")
    conn.executescript("DROP INDEX jobs_key; ALTER TABLE jobs DROP COLUMN key;")
    conn.close()
    # When this version opens it, its jobs have no key, and keys are unique
    async with SQLiteStore(tmp_path) as store:
        assert (await store.get("q", old.id)).key is None
        first = await store.enqueue(NewJob(queue="q", method="m:f", key="k"))
        assert (await store.enqueue(NewJob(queue="q", method="m:f", key="k"))).job == first.job
    conn = sqlite3.connect(tmp_path / "tqueues.sqlite3")
    conn.executescript(
        "DROP INDEX jobs_key; CREATE UNIQUE INDEX jobs_key ON jobs(queue, key) "
        "WHERE key IS NOT NULL AND status IN ('pending');"
    )
    conn.close()
    async with SQLiteStore(tmp_path) as store:
        await store.take("q")
        await store.take("q")  # the keyed job is started: it holds its key still
        assert (await store.enqueue(NewJob(queue="q", method="m:f", key="k"))).duplicate
    conn = sqlite3.connect(tmp_path / "tqueues.sqlite3")
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs_key'").fetchone()
    conn.close()
    assert "'started'" in sql
