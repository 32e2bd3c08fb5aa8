"""The group commit's pipelined disk sync: nothing is answered before the sync that makes
it durable, and transactions go on while a sync runs.

Real SQLite connections on a real file; the sync is the real ``fdatasync`` of the
write-ahead log, with a gate in front of it so a test can hold a sync while it looks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tqueues.errors import StoreUnavailable
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.groupcommit import GroupCommit
from tqueues.stores.sqlite import SQLiteStore

DEADLINE = 10.0  # seconds any wait here may take


class GatedSync:
    """``fdatasync`` of the log, each call held until the test lets it go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = threading.Semaphore(0)  #: released as each sync begins
        self.gate = threading.Event()
        self.failure: OSError | None = None

    def __call__(self) -> None:
        self.started.release()
        if not self.gate.wait(DEADLINE):
            raise OSError(errno.ETIMEDOUT, "the test never opened the gate")
        if self.failure is not None:
            raise self.failure
        fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)


@pytest.fixture
async def committer(tmp_path: Path) -> AsyncIterator[tuple[GroupCommit, GatedSync, Callable]]:
    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    sync = GatedSync(path)
    group = GroupCommit(lambda: conn, sync)

    def insert(x: int, committed: Callable[[Any], None] | None = None) -> asyncio.Future[Any]:
        statement = ("INSERT INTO t VALUES (?)", (x,))
        return asyncio.ensure_future(group.submit(conn.execute, statement, True, committed))

    yield group, sync, insert
    sync.gate.set()
    await asyncio.get_running_loop().run_in_executor(None, group.stop)
    conn.close()


async def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _sync_started(sync: GatedSync) -> None:
    acquired = await asyncio.get_running_loop().run_in_executor(
        None, sync.started.acquire, True, DEADLINE
    )
    assert acquired, "no sync began"


async def test_nothing_is_answered_before_its_sync_and_commits_go_on_meanwhile(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, insert = committer
    first = insert(1)
    await _sync_started(sync)  # committed; its sync is held
    assert group.commits == 1 and not first.done()

    second = insert(2)  # runs and commits while the first sync is still running
    await _until(lambda: group.commits == 2)
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()

    sync.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), DEADLINE)
    assert group.syncs == 2  # the second commit waited for a sync that began after it


async def test_after_a_failed_sync_nothing_is_answered_as_durable(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, insert = committer
    sync.failure = OSError(errno.EIO, "Input/output error")
    sync.gate.set()
    with pytest.raises(StoreUnavailable, match="cannot sync to disk"):
        await asyncio.wait_for(insert(1), DEADLINE)
    # Linux may report the next fsync as done though the data of the failed one is gone:
    # the store does not trust the disk again until it is reopened.
    sync.failure = None
    with pytest.raises(StoreUnavailable, match="restart the dispatcher"):
        await asyncio.wait_for(insert(2), DEADLINE)
    assert group.syncs == 0


async def test_the_embedded_store_syncs_its_log_before_it_answers(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        assert store._thread is not None and store._conn is not None
        # SQLite does not sync its commits: the store does, so its thread can go on.
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        await store.create_queue(QueueConfig("q"))
        syncs = store._thread.syncs
        await store.put(NewJob(queue="q", method="m:f"))
        assert store._thread.syncs == syncs + 1
    async with SQLiteStore(tmp_path, synchronous="NORMAL") as store:
        assert store._thread is not None and store._conn is not None
        await store.put(NewJob(queue="q", method="m:f"))
        assert store._thread.syncs == 0
        assert len((await store.list_jobs("q", limit=10)).jobs) == 2


async def test_whoever_asks_is_told_of_the_commit_before_the_sync(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    _, sync, insert = committer
    told = asyncio.Event()
    first = insert(1, lambda result: told.set())
    await asyncio.wait_for(told.wait(), DEADLINE)  # committed, and its sync is held
    assert not first.done()
    sync.gate.set()
    await asyncio.wait_for(first, DEADLINE)


async def test_an_operation_that_fails_is_not_told_of_a_commit(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, insert = committer
    sync.gate.set()
    told: list[Any] = []

    def fails() -> None:
        raise ValueError("refused")

    failing = group.submit(fails, (), True, told.append)
    with pytest.raises(ValueError):
        await asyncio.wait_for(failing, DEADLINE)
    await asyncio.wait_for(insert(2, told.append), DEADLINE)
    await _until(lambda: len(told) == 1)  # the second one only
    assert len(told) == 1


async def test_a_waiting_taker_gets_a_put_job_before_its_disk_sync(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        await store.create_queue(QueueConfig("q"))
        assert store._thread is not None and store._thread._syncer is not None
        # Given a taker waiting, and from then on the disk sync held
        taking = asyncio.create_task(store.take("q", worker="w", wait=20, poll=20))
        await _until(lambda: bool(store._waiters["q"]))
        gate = threading.Event()
        real_sync = store._thread._syncer._sync

        def held_sync() -> None:
            gate.wait(DEADLINE)
            real_sync()

        store._thread._syncer._sync = held_sync
        # When a job is put
        putting = asyncio.create_task(store.put(NewJob(queue="q", method="m:f")))
        # Then the taker has it once it is committed, and the put is answered only once
        # it is on disk
        job = await asyncio.wait_for(taking, DEADLINE)
        assert job is not None and job.status.value == "started"
        assert not putting.done()
        gate.set()
        put = await asyncio.wait_for(putting, DEADLINE)
        assert put.id == job.id


async def test_a_caller_whose_event_loop_closed_does_not_stop_the_others(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, insert = committer

    def submit_and_go_away() -> None:
        loop = asyncio.new_event_loop()

        async def submit() -> None:
            group.submit(lambda: None, (), True)

        loop.run_until_complete(submit())
        loop.close()  # before its answer can come: the sync is held

    await asyncio.to_thread(submit_and_go_away)
    sync.gate.set()
    await asyncio.wait_for(insert(1), DEADLINE)
    await asyncio.wait_for(insert(2), DEADLINE)


# -- cheap operations run by their caller while the store is idle ----------------------------


async def test_a_cheap_operation_runs_on_its_callers_thread_while_the_store_is_idle(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, _ = committer
    here = threading.get_ident()
    # A cheap one runs here, and is still answered only once its sync is done
    cheap = asyncio.ensure_future(group.submit(threading.get_ident, (), True, cheap=True))
    assert group.inline_runs == 1 and group.commits == 1
    await _sync_started(sync)
    await asyncio.sleep(0.05)
    assert not cheap.done()
    sync.gate.set()
    assert await asyncio.wait_for(cheap, DEADLINE) == here
    # Others run on the store's thread, idle or not
    other = await asyncio.wait_for(group.submit(threading.get_ident, (), True), DEADLINE)
    assert other != here and group.inline_runs == 1
    # Of two in one turn of the loop (concurrent requests), the second goes to the thread,
    # to share its transactions with whatever else comes
    first = group.submit(threading.get_ident, (), True, cheap=True)
    second = group.submit(threading.get_ident, (), True, cheap=True)
    assert await asyncio.wait_for(first, DEADLINE) == here
    assert await asyncio.wait_for(second, DEADLINE) != here
    assert group.inline_runs == 2


async def test_a_cheap_operation_never_overtakes_one_queued_before_it(
    committer: tuple[GroupCommit, GatedSync, Callable],
) -> None:
    group, sync, _ = committer
    sync.gate.set()
    order: list[str] = []
    release = threading.Event()

    def slow() -> None:
        release.wait(DEADLINE)
        order.append("slow")

    def queued() -> None:
        order.append("queued")

    first = asyncio.ensure_future(group.submit(slow, (), True))
    second = asyncio.ensure_future(group.submit(queued, (), True))  # behind the slow one
    # While those are queued or running, a cheap one waits its turn on the thread
    third = asyncio.ensure_future(group.submit(order.append, ("cheap",), True, cheap=True))
    assert group.inline_runs == 0
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second, third), DEADLINE)
    assert order == ["slow", "queued", "cheap"]
    # And once all is done, the next cheap one runs here again
    await asyncio.wait_for(group.submit(order.append, ("again",), True, cheap=True), DEADLINE)
    assert group.inline_runs == 1 and order[-1] == "again"


async def test_without_a_sync_thread_a_cheap_operation_is_answered_at_its_commit(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER)")
    group = GroupCommit(lambda: conn)
    try:
        told: list[Any] = []
        statement = ("INSERT INTO t VALUES (?)", (1,))
        done = group.submit(conn.execute, statement, True, told.append, cheap=True)
        assert isinstance(done, asyncio.Future) and done.done()  # no thread, no sync to wait
        assert len(told) == 1  # told of the commit before the answer, as from the thread
        await done
        await asyncio.sleep(0)  # the next turn of the loop: its first cheap operation is inline
        with pytest.raises(sqlite3.OperationalError):  # a failure is the operation's alone
            await group.submit(conn.execute, ("INSERT INTO nope VALUES (1)",), True, cheap=True)
        assert group.inline_runs == 2 and conn.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        await asyncio.get_running_loop().run_in_executor(None, group.stop)
        conn.close()


async def test_a_lone_operation_that_fails_after_writing_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # Alone in its transaction (on the caller's loop or on the thread), an operation has
    # no savepoint of its own: its failure rolls the transaction back.
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (x INTEGER)")
    rolled_back: list[bool] = []
    group = GroupCommit(lambda: conn, rolled_back=lambda: rolled_back.append(True))

    def write_then_fail(x: int) -> None:
        conn.execute("INSERT INTO t VALUES (?)", (x,))
        raise ValueError(f"failed after writing {x}")

    try:
        for x, cheap in ((1, True), (2, False)):
            with pytest.raises(ValueError, match=f"writing {x}"):
                await group.submit(write_then_fail, (x,), True, cheap=cheap)
        await group.submit(conn.execute, ("INSERT INTO t VALUES (3)",), True)
        assert conn.execute("SELECT x FROM t").fetchall() == [(3,)]
        assert rolled_back == [True, True] and group.inline_runs == 1
    finally:
        await asyncio.get_running_loop().run_in_executor(None, group.stop)
        conn.close()
