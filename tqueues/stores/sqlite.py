"""The embedded store: one SQLite file in WAL mode, the zero-setup default.

One connection for the whole process, owned by one thread. Operations queue up for that
thread, which runs whatever has queued as one transaction with a savepoint per operation
(group commit): each operation is atomic on its own (a claim reads the most urgent pending
job through a partial index and writes it started, with nothing in between), a failing one
is rolled back alone, and all of them are answered only after the one ``COMMIT`` that makes
them durable (``synchronous=FULL``: on disk before a ``put`` returns). Under load many
operations share one disk sync; alone, an operation costs one. A lock file keeps a second
dispatcher off the same data directory, since change notifications are in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqueues import codec, lifecycle
from tqueues.errors import (
    JobNotFound,
    QueueNotFound,
    StoreUnavailable,
    TqueuesError,
)
from tqueues.jobs import JobRecord, JobStatus, QueueConfig, new_leases, new_ordered_id
from tqueues.retry import RetryPolicy
from tqueues.stores import sqlite_side as side
from tqueues.stores.base import Mutation, Page, Store, key_taken
from tqueues.stores.census import Census
from tqueues.stores.groupcommit import GroupCommit
from tqueues.stores.history import Bucket, Counts
from tqueues.stores.schedules import ScheduleRecord
from tqueues.stores.sqlite_file import (
    QUICK_CHECK_SECONDS,
    check_database,
    check_file,
    create_database,
    damaged,
    is_damage,
)
from tqueues.stores.sqlite_rows import (
    INSERT,
    SCHEMA,
    SELECT_HOLDER,
    SELECT_JOBS,
    UPDATE,
    dumps,
    job_of,
    json_texts,
    to_row,
    upgrade,
)
from tqueues.stores.workers import Command, WorkerRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

REAP_BATCH = 1000
READ_BATCH = 500  #: ids one query reads (SQLite allows 32,766 parameters; old builds 999).
#: Started jobs kept as last written (beyond that many, the store forgets them all), and
#: the most JSON text (args, kwargs, extra, result) of one kept job: 160 MiB at most in all.
MAX_STARTED_KEPT = 20_000
MAX_KEPT_TEXT = 8192
ANY_PENDING = "SELECT 1 FROM jobs WHERE queue = ? AND status = 'pending' LIMIT 1"


def _any_pending(conn: sqlite3.Connection, queue: str) -> bool:
    """Whether ``queue`` has a pending job (one probe of the take index)."""
    return conn.execute(ANY_PENDING, (queue,)).fetchone() is not None


class SQLiteStore(Store):
    """Jobs in ``<directory>/tqueues.sqlite3``; one per directory and process.

    ``synchronous`` is the durability setting: FULL (default) syncs every commit to disk
    before answering, so an acknowledged job survives a crash of the machine, not only of
    the process; NORMAL survives any crash of the process and is faster; EXTRA is SQLite's
    own. With FULL the store syncs the write-ahead log itself (``fdatasync``, SQLite set to
    NORMAL), on a thread of its own, so the next transactions run while one is synced
    (see :class:`~tqueues.stores.groupcommit.GroupCommit`). ``max_size`` caps the database
    file (bytes); past it writes fail with StoreUnavailable, as on a full disk.
    """

    hands_off = True  # insert_and_claim is one operation of the group commit

    @staticmethod
    def new_id() -> str:
        """Time-ordered ids: the unique index on ``id`` grows at its end, so a transaction
        of many puts rewrites a few of its pages, not one (at a random place) per job."""
        return new_ordered_id()

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        max_size: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(retry=retry)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.directory = Path(directory)
        self.path = self.directory / "tqueues.sqlite3"
        self._synchronous = synchronous.upper()
        self._max_size = max_size
        self._thread: GroupCommit | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._log_fd: int | None = None  #: the write-ahead log, for the FULL syncs
        self._queues: dict[str, QueueConfig] = {}
        #: Jobs per queue and status: counted when opened, then moved by every change.
        self._census = Census()
        #: Every started job as this store last wrote it, by id: the outcome of a job taken
        #: a moment ago needs no read. Used and changed on the store's thread only; what
        #: is rolled back or deleted is dropped from it; a write that finds the row at
        #: another revision fails (see _write), so it can never write over newer data.
        self._started: dict[str, JobRecord] = {}

    # -- plumbing --------------------------------------------------------------------------

    async def _run(
        self,
        fn: Callable[..., T],
        *args: Any,
        batch: bool = True,
        committed: Callable[[T], None] | None = None,
        cheap: bool = False,
    ) -> T:
        """Run ``fn(*args)`` on the store's thread; inside a group-committed transaction
        unless ``batch`` is False (``committed``, ``cheap``: see GroupCommit.submit). Maps
        SQLite errors to StoreUnavailable."""
        if self._thread is None:
            raise StoreUnavailable("the SQLite store is not open")
        try:
            return await self._thread.submit(fn, args, batch, committed, cheap)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the SQLite store cannot write: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f"the SQLite store failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection, inside the running operation's savepoint (see GroupCommit)."""
        assert self._conn is not None
        yield self._conn

    def _connect(self) -> None:
        """Open the database (creating it if there is none), refusing a damaged one.

        Raises StoreUnavailable: the file is damaged or truncated (see :func:`check_file`
        and :func:`check_database`), or cannot be opened."""
        if not check_file(self.path):
            try:
                create_database(self.path)
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"cannot create {self.path}: {exc}") from exc
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._set_up(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if is_damage(exc):
                raise StoreUnavailable(damaged(self.path, f"SQLite says: {exc}")) from exc
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if self._max_size is not None:
            self._apply_max_size(self._max_size)

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """Configure the connection, check the database, bring its tables up to date and
        read the queues. Raises sqlite3.DatabaseError, StoreUnavailable (damaged)."""
        conn.row_factory = sqlite3.Row
        # This process alone uses the database (the directory's lock says so): with the
        # exclusive locking mode SQLite takes its file locks once, not around every
        # transaction, and keeps the write-ahead log's index in memory (no -shm file).
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: SQLite does not sync its commits, _sync_log does (pipelined).
        sqlite_sync = "NORMAL" if self._synchronous == "FULL" else self._synchronous
        conn.execute(f"PRAGMA synchronous = {sqlite_sync}")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB keeps deep queues in memory
        if not check_database(conn, self.path):  # before anything is written to it
            log.warning(
                "the check of %s was cut short after %g s (%d MiB): it found nothing wrong "
                "in what it read; damage in the rest would show as 503 answers when read",
                self.path,
                QUICK_CHECK_SECONDS,
                self.path.stat().st_size >> 20,
                extra={"action": "store_check"},
            )
        conn.executescript(SCHEMA)
        upgrade(conn)
        for row in conn.execute("SELECT name, config FROM queues"):
            self._queues[row["name"]] = QueueConfig(**codec.loads(row["config"]))
        # Before anything is served: every later change moves these counts (census.py).
        self._census.load(
            conn.execute("SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status")
        )

    def _apply_max_size(self, max_size: int) -> None:
        assert self._conn is not None
        page_size = self._conn.execute("PRAGMA page_size").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {max(1, max_size // page_size)}")

    async def set_max_size(self, max_size: int) -> None:
        """Cap the database file at about ``max_size`` bytes (rounded down to whole pages).

        Past the cap, writes raise StoreUnavailable ("database or disk is full") exactly as
        when the disk fills up; reads and everything already stored keep working.
        """
        self._max_size = max_size
        await self._run(self._apply_max_size, max_size, batch=False)

    async def open(self) -> None:
        """Create the directory (mode 0700) and database (0600) if needed, take the
        directory's lock, and check the database.

        Raises StoreUnavailable when the directory cannot be used, another process holds
        it, or the database is damaged or truncated (the message says what to do).
        """
        try:
            # Its owner's alone (jobs' arguments may be secrets); the files in it are 0600.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.directory / "tqueues.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use data directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreUnavailable(
                f"another dispatcher is using data directory {self.directory}"
            ) from exc
        self._lock_fd = fd
        sync = self._sync_log if self._synchronous == "FULL" else None
        self._thread = GroupCommit(lambda: self._conn, sync, self._started.clear)
        try:
            await self._run(self._connect, batch=False)
            # The delays stored before: their timers (see Store._delays).
            for queue, ready_at in await self._run(self._earliest_delays, batch=False):
                self._delays.arm(queue, ready_at)
        except BaseException:
            await self.close()
            raise

    def _earliest_delays(self) -> list[tuple[str, float]]:
        """The earliest due time of each queue's delayed jobs (on the store's thread)."""
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT queue, MIN(ready_at) FROM jobs WHERE status = 'delayed' GROUP BY queue"
        )
        return [(queue, ready_at) for queue, ready_at in rows]

    async def close(self) -> None:
        self.stop_timers()
        if self._thread is not None:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._thread.submit(conn.close, (), False)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.stop)
            self._thread = None
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _sync_log(self) -> None:
        """Make every commit so far durable: ``fdatasync`` the write-ahead log they were
        appended to (in WAL mode a commit writes nothing else; SQLite syncs the database
        file itself when it checkpoints). Raises OSError. Called on one thread at a time."""
        if self._log_fd is None:
            self._log_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(self._log_fd)

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, config: QueueConfig) -> bool:
        if config.name in self._queues:
            return False

        def create() -> bool:
            with self._transaction() as conn:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO queues (name, config) VALUES (?, ?)",
                    (config.name, dumps(config.to_dict())),
                )
                return cursor.rowcount == 1

        async def create_and_cache() -> bool:
            created = await self._run(create)
            self._queues.setdefault(config.name, config)
            return created

        # Shielded: a cancelled caller must not leave the cache behind the database.
        return await asyncio.shield(create_and_cache())

    async def get_queue(self, name: str) -> QueueConfig:
        try:
            return self._queues[name]
        except KeyError:
            raise QueueNotFound(f"queue {name!r} does not exist", queue=name) from None

    async def list_queues(self) -> list[QueueConfig]:
        return [self._queues[name] for name in sorted(self._queues)]

    async def update_queue(self, config: QueueConfig) -> None:
        await self.get_queue(config.name)

        def update() -> None:
            with self._transaction() as conn:
                conn.execute(
                    "UPDATE queues SET config = ? WHERE name = ?",
                    (dumps(config.to_dict()), config.name),
                )

        async def update_and_cache() -> None:
            await self._run(update)
            self._queues[config.name] = config

        await asyncio.shield(update_and_cache())

    async def set_pause(self, name: str, paused: bool, until: float | None) -> QueueConfig:
        config = dataclasses.replace(
            await self.get_queue(name), paused=paused, paused_until=until if paused else None
        )
        await self.update_queue(config)
        return config

    async def drop_queue(self, name: str) -> int:
        await self.get_queue(name)

        def drop() -> tuple[int, list[tuple[str, int]]]:
            with self._transaction() as conn:
                counts = self._counts_of(conn, name)
                removed = conn.execute("DELETE FROM jobs WHERE queue = ?", (name,)).rowcount
                self._started.clear()
                conn.execute("DELETE FROM queues WHERE name = ?", (name,))
                conn.execute("DELETE FROM history WHERE queue = ?", (name,))
                conn.execute("DELETE FROM schedules WHERE queue = ?", (name,))
                conn.execute(  # its jobs' edges (its jobs' dependents: see dependents.py)
                    "DELETE FROM edges WHERE prerequisite >= ? AND prerequisite < ?",
                    (f"{name}/", f"{name}0"),
                )
                return int(removed), counts

        async def drop_and_uncache() -> int:
            removed, _ = await self._run(drop, committed=lambda r: self._uncount(name, r[1]))
            self._queues.pop(name, None)
            return removed

        return await asyncio.shield(drop_and_uncache())

    async def truncate(self, queue: str) -> int:
        await self.get_queue(queue)

        def truncate() -> tuple[int, list[tuple[str, int]]]:
            with self._transaction() as conn:
                self._started.clear()
                counts = self._counts_of(conn, queue)
                removed = conn.execute("DELETE FROM jobs WHERE queue = ?", (queue,)).rowcount
                return int(removed), counts

        removed, _ = await self._run(truncate, committed=lambda r: self._uncount(queue, r[1]))
        return removed

    def _uncount(self, queue: str, counts: list[tuple[str, int]]) -> None:
        for status, count in counts:
            self._census.removed(queue, JobStatus(status), count)

    @staticmethod
    def _counts_of(conn: sqlite3.Connection, queue: str) -> list[tuple[str, int]]:
        """The queue's (status, count) pairs, read in the transaction that deletes them:
        the census is moved by what went, whatever else commits meanwhile."""
        rows = conn.execute(
            "SELECT status, COUNT(*) FROM jobs WHERE queue = ? GROUP BY status", (queue,)
        )
        return [(status, count) for status, count in rows]

    def work(self) -> dict[str, int]:
        """The group commit's counts (:class:`~tqueues.stores.groupcommit.GroupCommit`):
        ``operations`` submitted, ``commits`` (transactions: operations share them under
        load), ``syncs`` (with ``synchronous`` FULL, disk syncs, each making every commit
        before it durable) and ``inline_runs`` (operations run on the caller's thread
        while the store was idle). Zeros while closed."""
        thread = self._thread
        if thread is None:
            return dict.fromkeys(("operations", "commits", "syncs", "inline_runs"), 0)
        return {
            "operations": thread.operations,
            "commits": thread.commits,
            "syncs": thread.syncs,
            "inline_runs": thread.inline_runs,
        }

    async def count_jobs(self, queue: str) -> dict[JobStatus, int]:
        """From the census (:mod:`tqueues.stores.census`): no read of the jobs."""
        await self.get_queue(queue)
        return self._census.of(queue)

    # -- jobs --------------------------------------------------------------------------------

    async def insert(self, job: JobRecord) -> JobRecord:
        await self.get_queue(job.queue)

        def insert() -> None:
            with self._transaction() as conn:
                conn.execute(INSERT, to_row(job))

        await self._run(insert, cheap=True, committed=lambda _: self._census.added(job))
        return job

    async def insert_many(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        for queue in {job.queue for job in jobs}:
            await self.get_queue(queue)

        def insert_many() -> None:
            with self._transaction() as conn:
                conn.executemany(INSERT, [to_row(job) for job in jobs])

        def count(_: None) -> None:
            for job in jobs:
                self._census.added(job)

        await self._run(insert_many, committed=count)
        return list(jobs)

    async def insert_unique(self, jobs: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """One operation (one commit): each job inserted unless the unique index of live
        keys (:data:`~tqueues.stores.sqlite_rows.KEY_INDEX`) refuses it, and then the
        live job that holds the key read through that index."""
        for queue in {job.queue for job in jobs}:
            await self.get_queue(queue)

        def insert_unique() -> list[tuple[JobRecord, bool]]:
            results: list[tuple[JobRecord, bool]] = []
            with self._transaction() as conn:
                for job in jobs:
                    if job.key is None:
                        conn.execute(INSERT, to_row(job))
                        results.append((job, True))
                    elif conn.execute(f"{INSERT} ON CONFLICT DO NOTHING", to_row(job)).rowcount:
                        results.append((job, True))
                    else:
                        results.append((self._holder(conn, job.queue, job.key), False))
            return results

        def count(results: list[tuple[JobRecord, bool]]) -> None:
            for job, inserted in results:
                if inserted:
                    self._census.added(job)

        return await self._run(insert_unique, committed=count)

    def _holder(self, conn: sqlite3.Connection, queue: str, key: str) -> JobRecord:
        """The live job of ``queue`` that holds ``key``. Raises StoreUnavailable if none
        does (an insert refused for another reason: cannot happen with fresh ids)."""
        row = conn.execute(f"{SELECT_JOBS} {SELECT_HOLDER}", (queue, key)).fetchone()
        if row is None:
            raise StoreUnavailable(f"a job of queue {queue!r} was refused, and no job holds "
                                   f"its key {key!r}")  # fmt: skip
        return job_of(row)

    def _write(self, conn: sqlite3.Connection, before: JobRecord, after: JobRecord) -> JobRecord:
        """Write ``after`` over ``before``. Raises KeyTaken when it would make a job live
        again whose key another live job holds (nothing is written)."""
        after = after.succeeding(before)
        values = to_row(after)
        try:
            cursor = conn.execute(UPDATE, [*values[2:], before.id, before.rev])
        except sqlite3.IntegrityError as exc:
            if after.key is None or not after.holds_key():
                raise
            holder = self._holder(conn, after.queue, after.key)
            raise key_taken(after, holder) from exc
        if cursor.rowcount != 1:
            # Cannot happen (one thread writes, and keeps _started in step); were it to,
            # this operation is rolled back (and _started emptied) and fails as a whole.
            raise StoreUnavailable(f"job {before.id} changed under a write; try again")
        self._keep(after, values)
        return after

    def _keep(self, job: JobRecord, row: list[Any]) -> None:
        """Keep ``job`` (just written as ``row``) in _started if it is started and small,
        else forget any older revision of it there."""
        if job.status is JobStatus.STARTED and sum(map(len, json_texts(row))) <= MAX_KEPT_TEXT:
            if len(self._started) >= MAX_STARTED_KEPT:
                self._started.clear()
            self._started[job.id] = job
        else:
            self._started.pop(job.id, None)

    async def claim_many(
        self, queue: str, count: int, *, worker: str | None, now: float
    ) -> list[JobRecord]:
        return await self.claim_first((queue,), count, worker=worker, now=now)

    async def claim_first(
        self, queues: Sequence[str], count: int, *, worker: str | None, now: float
    ) -> list[JobRecord]:
        """One operation: the claim of each queue in turn until one has jobs."""
        for queue in queues:
            await self.get_queue(queue)
        leases = new_leases(count)

        def claim_first() -> list[JobRecord]:
            with self._transaction() as conn:
                for queue in queues:
                    claimed = self._claim(conn, queue, leases, worker, now)
                    if claimed:
                        return claimed
                return []

        return await self._run(claim_first, cheap=True, committed=self._census.claimed)

    async def insert_and_claim(
        self,
        job: JobRecord,
        count: int,
        *,
        worker: str | None,
        now: float,
        committed: Callable[[list[JobRecord]], None] | None = None,
    ) -> tuple[JobRecord, list[JobRecord]]:
        """One operation (so one commit): the insert, then the claim; ``committed`` gets
        the claimed jobs at the commit, before the disk sync.

        When nothing else is pending in the queue (the usual case: a taker waits only
        while its queue is empty), ``job`` is the most urgent and the only one to claim:
        it is inserted as claimed, one row written once, with no query for it and no
        update of it."""
        await self.get_queue(job.queue)
        leases = new_leases(count)

        def insert_and_claim() -> list[JobRecord]:
            with self._transaction() as conn:
                if job.status is JobStatus.PENDING and not _any_pending(conn, job.queue):
                    claimed = lifecycle.claim(job, lease=leases[0], worker=worker, now=now)
                    row = to_row(claimed)
                    conn.execute(INSERT, row)
                    self._keep(claimed, row)
                    return [claimed]
                conn.execute(INSERT, to_row(job))
                return self._claim(conn, job.queue, leases, worker, now)

        def counted(claimed: list[JobRecord]) -> None:
            self._census.added(job)  # (inserted as claimed: +1 pending, then claimed)
            self._census.claimed(claimed)
            if committed is not None:
                committed(claimed)

        return job, await self._run(insert_and_claim, committed=counted, cheap=True)

    def _claim(
        self,
        conn: sqlite3.Connection,
        queue: str,
        leases: list[str],
        worker: str | None,
        now: float,
    ) -> list[JobRecord]:
        """Claim up to ``len(leases)`` pending jobs of ``queue``, most urgent first."""
        rows = conn.execute(
            f"{SELECT_JOBS} WHERE queue = ? AND status = 'pending' "
            "ORDER BY priority, ready_at, seq LIMIT ?",
            (queue, len(leases)),
        ).fetchall()
        claimed = []
        for row, lease in zip(rows, leases, strict=False):
            before = job_of(row)
            after = lifecycle.claim(before, lease=lease, worker=worker, now=now)
            claimed.append(self._write(conn, before, after))
        return claimed

    def _kept(self, queue: str, job_id: str) -> JobRecord | None:
        """The started job ``job_id`` of ``queue`` as last written, if it is kept."""
        job = self._started.get(job_id)
        return job if job is not None and job.queue == queue else None

    def _read(self, conn: sqlite3.Connection, queue: str, job_id: str) -> JobRecord:
        row = conn.execute(f"{SELECT_JOBS} WHERE id = ? AND queue = ?", (job_id, queue)).fetchone()
        if row is None:
            raise JobNotFound.in_queue(queue, job_id)
        return job_of(row)

    def _read_many(
        self, conn: sqlite3.Connection, queue: str, job_ids: Collection[str]
    ) -> dict[str, JobRecord]:
        """The jobs of ``queue`` among ``job_ids``, by id (a query per READ_BATCH ids)."""
        ids = list(job_ids)
        found: dict[str, JobRecord] = {}
        for start in range(0, len(ids), READ_BATCH):
            chunk = ids[start : start + READ_BATCH]
            marks = ", ".join("?" * len(chunk))
            # "+queue": look the ids up in their index, never walk the queue's index
            # (the planner's choice for an IN list once the table holds jobs).
            rows = conn.execute(
                f"{SELECT_JOBS} WHERE +queue = ? AND id IN ({marks})", (queue, *chunk)
            )
            found.update((job.id, job) for job in map(job_of, rows))
        return found

    async def get(self, queue: str, job_id: str) -> JobRecord:
        await self.get_queue(queue)

        def get() -> JobRecord:
            assert self._conn is not None
            return self._read(self._conn, queue, job_id)

        return await self._run(get, cheap=True)

    async def mutate(
        self, queue: str, job_id: str, change: Mutation
    ) -> tuple[JobRecord, JobRecord]:
        await self.get_queue(queue)

        def mutate() -> tuple[JobRecord, JobRecord]:
            with self._transaction() as conn:
                before = self._kept(queue, job_id) or self._read(conn, queue, job_id)
                return before, self._write(conn, before, change(before))

        return await self._run(mutate, cheap=True, committed=lambda ba: self._census.moved(*ba))

    async def mutate_many(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
        """One operation (one commit): the jobs read in one query, then each change
        applied in order. A change is refused (its error handed back) before anything of
        it is written, so a refusal leaves the others applied and needs no rollback."""
        await self.get_queue(queue)

        def mutate_many() -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
            results: list[tuple[JobRecord, JobRecord] | TqueuesError] = []
            with self._transaction() as conn:
                ids = {job_id for job_id, _ in changes}
                current = {i: job for i in ids if (job := self._kept(queue, i)) is not None}
                if len(current) < len(ids):
                    current.update(self._read_many(conn, queue, ids - current.keys()))
                for job_id, change in changes:
                    before = current.get(job_id)
                    try:
                        if before is None:
                            raise JobNotFound.in_queue(queue, job_id)
                        # (a KeyTaken of _write wrote nothing: its statement was undone)
                        current[job_id] = after = self._write(conn, before, change(before))
                    except StoreUnavailable:
                        raise  # (the write as a whole fails: see _write)
                    except TqueuesError as exc:  # this item's refusal: handed back
                        results.append(exc)
                        continue
                    results.append((before, after))
            return results

        def count(results: list[tuple[JobRecord, JobRecord] | TqueuesError]) -> None:
            for result in results:
                if isinstance(result, tuple):
                    self._census.moved(*result)

        return await self._run(mutate_many, committed=count)

    async def list_jobs(
        self,
        queue: str,
        *,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> Page:
        await self.get_queue(queue)
        after = int(cursor) if cursor and cursor.isdigit() else 0
        where, params = "queue = ? AND seq > ?", [queue, after]
        if status is not None:
            where, params = "queue = ? AND status = ? AND seq > ?", [queue, status.value, after]

        def page() -> Page:
            assert self._conn is not None
            found = self._conn.execute(
                f"{SELECT_JOBS} WHERE {where} ORDER BY seq LIMIT ?", (*params, limit)
            )
            if max_bytes is None:
                rows = found.fetchall()
                next_cursor = str(rows[-1]["seq"]) if len(rows) == limit else None
                return Page([job_of(row) for row in rows], next_cursor)
            # Row by row, each job's size the length of its columns' text: no row past the
            # one that shows the page is full is read.
            jobs: list[JobRecord] = []
            size = last = 0
            with contextlib.closing(found):
                for row in found:
                    if size >= max_bytes:
                        return Page(jobs, str(last))
                    size += sum(len(value) if type(value) is str else 8 for value in row)
                    jobs.append(job_of(row))
                    last = row["seq"]
            return Page(jobs, str(last) if len(jobs) == limit else None)

        return await self._run(page)

    async def peek(self, queue: str, status: JobStatus) -> JobRecord | None:
        await self.get_queue(queue)
        order = {JobStatus.PENDING: "priority, ready_at, seq", JobStatus.DELAYED: "ready_at, seq"}

        def peek() -> JobRecord | None:
            assert self._conn is not None
            row = self._conn.execute(
                f"{SELECT_JOBS} WHERE queue = ? AND status = '{status.value}' "
                f"ORDER BY {order.get(status, 'seq')} LIMIT 1",
                (queue,),
            ).fetchone()
            return job_of(row) if row is not None else None

        return await self._run(peek)

    async def remove(self, queue: str, job_id: str) -> JobRecord:
        await self.get_queue(queue)

        def remove() -> JobRecord:
            with self._transaction() as conn:
                job = self._read(conn, queue, job_id)
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                self._started.pop(job_id, None)
                return job

        def count(job: JobRecord) -> None:
            self._census.removed(job.queue, job.status)

        return await self._run(remove, committed=count)

    async def count_ahead(self, job: JobRecord, limit: int) -> int:
        await self.get_queue(job.queue)

        def count() -> int:
            assert self._conn is not None
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE queue = ? AND status = 'pending' "
                "AND (priority, ready_at, seq) < (SELECT priority, ready_at, seq FROM jobs "
                "WHERE id = ?) LIMIT ?)",
                (job.queue, job.id, limit),
            ).fetchone()
            return int(n)

        return await self._run(count)

    async def insert_once(self, job: JobRecord) -> bool:
        await self.get_queue(job.queue)

        # (with a key: refused too while a live job holds it, by the unique index)
        conflict = (
            "ON CONFLICT DO NOTHING" if job.key is not None else "ON CONFLICT (id) DO NOTHING"
        )

        def insert() -> bool:
            with self._transaction() as conn:
                cursor = conn.execute(f"{INSERT} {conflict}", to_row(job))
                return cursor.rowcount == 1

        def count(inserted: bool) -> None:
            if inserted:
                self._census.added(job)

        return await self._run(insert, committed=count)

    # -- the side tables (sqlite_side.py) ---------------------------------------------------

    async def _on_conn(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` on the store's thread, as one operation."""

        def call() -> T:
            with self._transaction() as conn:
                return fn(conn, *args)

        return await self._run(call)

    async def add_history(self, counts: Counts) -> None:
        """One upsert per count, all in one transaction (so atomic as a whole here)."""
        await self._on_conn(side.add_history, counts)

    async def read_history(self, queue: str, since: int, until: int) -> list[Bucket]:
        return await self._on_conn(side.read_history, queue, since, until)

    async def purge_history(self, before: int) -> int:
        return await self._on_conn(side.purge_history, before)

    async def save_worker(self, record: WorkerRecord) -> WorkerRecord:
        return await self._on_conn(side.save_worker, record)

    async def list_workers(self) -> list[WorkerRecord]:
        return await self._on_conn(side.list_workers)

    async def command_worker(self, worker_id: str, command: Command) -> WorkerRecord:
        return await self._on_conn(side.command_worker, worker_id, command)

    async def forget_workers(self, *, before: float | None = None, id: str | None = None) -> int:
        return await self._on_conn(side.forget_workers, before, id)

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        await self._on_conn(side.create_schedule, schedule)

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleRecord]:
        return await self._on_conn(side.list_schedules, queue)

    async def swap_schedule(self, before: ScheduleRecord, after: ScheduleRecord) -> bool:
        return await self._on_conn(side.swap_schedule, before, after)

    async def delete_schedule(self, queue: str, name: str) -> bool:
        return await self._on_conn(side.delete_schedule, queue, name)

    async def add_edges(self, job: JobRecord) -> None:
        await self._on_conn(side.add_edges, job)

    async def dependents_of(self, queue: str, job_id: str) -> list[str]:
        return await self._on_conn(side.dependents_of, queue, job_id)

    async def drop_edges(self, queue: str, job_id: str) -> None:
        await self._on_conn(side.drop_edges, queue, job_id)

    # -- housekeeping --------------------------------------------------------------------------

    async def promote_due(self, queue: str, now: float) -> int:
        await self.get_queue(queue)

        def promote() -> list[tuple[JobRecord, JobRecord]]:
            with self._transaction() as conn:
                rows = conn.execute(
                    f"{SELECT_JOBS} WHERE status = 'delayed' AND ready_at <= ? AND queue = ? "
                    "ORDER BY ready_at LIMIT ?",
                    (now, queue, REAP_BATCH),
                ).fetchall()
                changes = []
                for row in rows:
                    before = job_of(row)
                    after = lifecycle.promote(before, now=now)
                    changes.append((before, self._write(conn, before, after)))
                return changes

        def count(changes: list[tuple[JobRecord, JobRecord]]) -> None:
            for before, after in changes:
                self._census.moved(before, after)

        changes = await self._run(promote, committed=count)
        for before, after in changes:
            self.record(after, before)
        return len(changes)

    async def reap(self, now: float) -> int:
        queues = dict(self._queues)

        def reap() -> tuple[list[tuple[JobRecord, JobRecord]], list[tuple[str, str]]]:
            changes: list[tuple[JobRecord, JobRecord]] = []
            deleted: list[tuple[str, str]] = []  #: (queue, status) of each job deleted
            with self._transaction() as conn:
                for sql, step in (
                    (
                        f"{SELECT_JOBS} WHERE status = 'started' AND "
                        "lease_expires <= ? ORDER BY lease_expires LIMIT ?",
                        lifecycle.expire,
                    ),
                    (
                        f"{SELECT_JOBS} WHERE status = 'delayed' AND "
                        "ready_at <= ? ORDER BY ready_at LIMIT ?",
                        lifecycle.promote,
                    ),
                    (
                        f"{SELECT_JOBS} WHERE expires_at <= ? AND expires_at IS NOT NULL "
                        "AND status IN ('pending', 'delayed') ORDER BY expires_at LIMIT ?",
                        lifecycle.outlive,
                    ),
                ):
                    for row in conn.execute(sql, (now, REAP_BATCH)).fetchall():
                        before = job_of(row)
                        config = queues.get(before.queue)
                        if step is lifecycle.outlive and config and config.ttl_action == "delete":
                            # (pending or delayed: never among the kept started jobs)
                            conn.execute("DELETE FROM jobs WHERE id = ?", (before.id,))
                            deleted.append((before.queue, before.status.value))
                            continue
                        changes.append((before, self._write(conn, before, step(before, now=now))))
                for name, config in queues.items():
                    deleted += conn.execute(
                        "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE queue = ? "
                        "AND status IN ('finished', 'failed', 'cancelled') "
                        "AND finished_at <= ? LIMIT ?) RETURNING queue, status",
                        (name, now - config.retention, REAP_BATCH),
                    ).fetchall()
            return changes, deleted

        def count(result: tuple[list[tuple[JobRecord, JobRecord]], list[tuple[str, str]]]) -> None:
            for before, after in result[0]:
                self._census.moved(before, after)
            for queue, status in result[1]:
                self._census.removed(queue, JobStatus(status))

        changes, deleted = await self._run(reap, committed=count)
        for before, after in changes:
            self.record(after, before)
        return len(changes) + len(deleted)
