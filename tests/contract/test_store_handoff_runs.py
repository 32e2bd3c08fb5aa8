"""A put handed to a waiting taker is run once: counted claims and releases, on every store
and, for the embedded one, under each ``synchronous`` setting.

``--sync NORMAL`` used to hand each job twice: the second hand found the taker served and
gave back the job it was running, which was then taken again (issue #21, finding 1).
Runs are counted as claims (``taken`` events) and give-backs (``released``), not only by
the jobs' final states.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import rethinkdb_settings
from tqueues.jobs import JobStatus, NewJob, QueueConfig
from tqueues.stores.base import Store
from tqueues.stores.groupcommit import GroupCommit
from tqueues.stores.sqlite import SQLiteStore

ROUNDS = 20
DEADLINE = 20.0  # seconds any wait here may take


@pytest.fixture(params=["sqlite-FULL", "sqlite-NORMAL", "sqlite-EXTRA", "rethinkdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store: the embedded one under each sync setting, and RethinkDB when a test
    server is named (TQUEUES_TEST_RETHINKDB)."""
    kind = str(request.param)
    if kind.startswith("sqlite-"):
        async with SQLiteStore(tmp_path / "data", synchronous=kind.split("-")[1]) as sqlite:
            yield sqlite
        return
    settings = rethinkdb_settings(f"tqueues_test_{uuid.uuid4().hex[:12]}")
    from tqueues.stores.rethinkdb import RethinkDBStore

    async with RethinkDBStore(settings) as rethinkdb:
        yield rethinkdb
    async with RethinkDBStore(settings) as cleaner:
        await cleaner.drop_database()


async def until(condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
    """Yield to the loop until ``condition()`` holds; fail after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def settled(store: Store) -> None:
    """Return once everything the store started in the background (give-backs) is done,
    after every callback already scheduled has run."""
    barrier = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(barrier.set_result, None)
    await barrier
    await until(lambda: not store._background)


async def test_each_job_put_for_a_waiting_taker_is_claimed_once(store: Store) -> None:
    await store.create_queue(QueueConfig("q", ttr=60))
    got = []
    for i in range(ROUNDS):
        # Given a taker waiting on the empty queue
        taking = asyncio.create_task(store.take("q", worker="w", wait=DEADLINE, poll=DEADLINE))
        await until(lambda t=taking: bool(store._waiters["q"]) or t.done())
        assert not taking.done(), "the taker found a job in a queue that should be empty"
        # When one job is put
        put = await store.put(NewJob(queue="q", method="m:f", args=[i]))
        job = await asyncio.wait_for(taking, DEADLINE)
        # Then the taker has it, started once
        assert job is not None and (job.id, job.attempts) == (put.id, 1)
        got.append(job)
        await settled(store)
    # And every job is still the taker's, as it got it: never given back, never taken again
    for job in got:
        stored = await store.get("q", job.id)
        assert (stored.status, stored.lease, stored.attempts) == (
            JobStatus.STARTED,
            job.lease,
            1,
        )
    counters = store.counters["q"]
    assert (counters["put"], counters["taken"], counters["released"]) == (ROUNDS, ROUNDS, 0)
    if store.hands_off:  # the put claimed for the taker in its write: the path under test
        assert counters["handed"] == ROUNDS
    assert (await store.count_jobs("q")) == {JobStatus.STARTED: ROUNDS}


@pytest.mark.parametrize("synced", [False, True], ids=["no-sync-thread", "sync-thread"])
async def test_committed_runs_before_the_caller_resumes(tmp_path: Path, synced: bool) -> None:
    # Given a group commit whose thread is idle (so a cheap operation runs inline)
    conn = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x INTEGER)")
    group = GroupCommit(lambda: conn, (lambda: None) if synced else None)
    try:
        for x in range(5):
            told: list[Any] = []

            def insert(value: int) -> int:
                conn.execute("INSERT INTO t VALUES (?)", (value,))
                return value

            # When an operation with a committed callback is awaited
            answer = await group.submit(insert, (x,), True, told.append, cheap=True)
            # Then the callback has run, once, by the time the caller has the answer
            assert (answer, told) == (x, [x])
        assert group.inline_runs >= 1  # the inline path, where it went wrong, was taken
    finally:
        await asyncio.get_running_loop().run_in_executor(None, group.stop)
        conn.close()
