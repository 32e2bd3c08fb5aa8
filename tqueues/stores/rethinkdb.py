"""The RethinkDB store: one table per queue, claims by compare-and-set, one changefeed per queue.

Layout, in database ``settings.db`` (created when missing):

* ``tqueues_queues``: one document per queue, ``{"name", "ttr", "max_attempts", "ready"}``
  (``name`` is the primary key). The document doubles as the lock that serialises the
  creation of the queue's table across dispatchers, since RethinkDB's ``table_create`` is
  not serialisable across a cluster (rethinkdb/rethinkdb#5900, #4898).
* one table per queue, named after it, holding the jobs: the fields of
  :class:`~tqueues.jobs.Job` (``id`` is the primary key, ``status`` its string value,
  ``extra`` a nested object, ``rev`` an integer bumped by every write), with secondary
  indexes ``pending`` (``[priority, ready_at]`` of pending jobs only: the index function
  returns null for the others, and RethinkDB does not store null index values),
  ``leases`` (``[status, lease_expires]``), ``delayed`` (``[status, ready_at]``) and
  ``created`` (``[created_at, id]``, the listing order).

RethinkDB has no multi-document transactions, so every write is one conditional replace of
one document: the new document is computed in Python by :mod:`tqueues.lifecycle` (so "now"
and lease tokens are literals and no write needs ``non_atomic``) and written only if the
stored ``rev`` is still the one read. A claim reads a few candidates through the ``pending``
index and moves on to the next when another taker won; the reaper does the same through the
``leases`` and ``delayed`` indexes, so any number of dispatchers can run without a leader.

Changes reach :attr:`Store.hub` only through one changefeed per queue per process (which
also reports this process's own writes), so :meth:`RethinkDBStore.publish` does nothing.
Every query runs on a small pool of multiplexed connections under a timeout; a backend
that cannot be reached raises :class:`~tqueues.errors.StoreUnavailable` quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
from collections.abc import Callable, Mapping
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.ast import RqlQuery
from rethinkdb.errors import ReqlCursorEmpty, ReqlDriverError, ReqlError

from tqueues import lifecycle
from tqueues.errors import InvalidTransition, JobNotFound, QueueNotFound, StoreUnavailable
from tqueues.jobs import ChangeEvent, Job, JobStatus, QueueConfig
from tqueues.retry import RetryPolicy
from tqueues.settings import RethinkDBSettings
from tqueues.stores.base import Mutation, Page, Store

log = logging.getLogger(__name__)

r = RethinkDB()
r.set_loop_type("asyncio")

QUEUES_TABLE = "tqueues_queues"
#: Every field of a job document, in the order of :class:`Job`.
FIELDS = tuple(field.name for field in dataclasses.fields(Job))
FLOAT_FIELDS = frozenset({"ttr", "ready_at", "created_at"})
OPTIONAL_FLOAT_FIELDS = frozenset({"lease_expires", "started_at", "finished_at"})
INT_FIELDS = frozenset({"priority", "max_attempts", "attempts", "rev"})
INDEXES = ("pending", "leases", "delayed", "created")
CLAIM_CANDIDATES = 8  #: pending jobs read per claim round.
CLAIM_ROUNDS = 64  #: claim rounds lost to other takers before giving up (returning None).
MUTATE_ATTEMPTS = 64  #: compare-and-set conflicts a mutation retries before giving up.
REAP_BATCH = 256  #: jobs the reaper changes per queue, index and sweep.
ADMIN_TIMEOUT = 60.0  #: seconds for table and index creation (slow on a cluster).
FEED_HEARTBEAT = 10.0  #: seconds of feed silence after which the connection is pinged.
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


# -- pure helpers (unit-tested without a server) ----------------------------------------------


class Backoff:
    """Exponential backoff with jitter between reconnection attempts.

    The n-th consecutive failure waits ``min(cap, base * 2 ** (n - 1))`` seconds scaled by
    a random factor in ``[1 - jitter, 1]``; :meth:`reset` after a success starts over.
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.base, self.cap, self.jitter = base, cap, jitter
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        self.failures += 1
        wait = min(self.cap, self.base * 2 ** min(self.failures - 1, 32))
        return wait * (1.0 - self.jitter * self._rng.random())

    def reset(self) -> None:
        """Forget the failures (the connection works again)."""
        self.failures = 0


def job_to_doc(job: Job) -> dict[str, Any]:
    """The job as its RethinkDB document (status as its string value, ``extra`` nested)."""
    doc = {name: getattr(job, name) for name in FIELDS}
    doc["status"] = job.status.value
    return doc


def doc_to_job(doc: Mapping[str, Any]) -> Job:
    """The :class:`Job` a RethinkDB document holds.

    Numbers are normalised (RethinkDB returns integral doubles as JSON integers). Raises
    KeyError or ValueError for a document that is not a job.
    """
    fields: dict[str, Any] = {name: doc[name] for name in FIELDS if name in doc}
    for name in FLOAT_FIELDS:
        fields[name] = float(fields[name])
    for name in OPTIONAL_FLOAT_FIELDS:
        if fields.get(name) is not None:
            fields[name] = float(fields[name])
    for name in INT_FIELDS:
        if name in fields:
            fields[name] = int(fields[name])
    fields["status"] = JobStatus(fields["status"])
    fields["extra"] = dict(fields.get("extra") or {})
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    return Job(**fields)


def change_kind(old: Job | None, new: Job | None) -> str:
    """The kind of change that turned ``old`` into ``new`` (None: absent): the new revision's
    ``event`` (set by the transitions of :mod:`tqueues.lifecycle`), or "deleted"."""
    return "deleted" if new is None else new.event


def reql_literal(value: Any) -> RqlQuery:
    """``value`` (JSON data) as a ReQL literal, built bottom-up.

    Unlike ``r.expr`` this has no nesting limit (the driver refuses data nested more than 20
    levels), so any job the dispatcher accepts can be stored.
    """
    if isinstance(value, Mapping):
        return r.ast.MakeObj({str(key): reql_literal(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return r.ast.MakeArray(*(reql_literal(item) for item in value))
    return r.expr(value)


def _message(exc: BaseException) -> str:
    """A one-line description of a driver error (without the query printout)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


class _Missing(StoreUnavailable):
    """The table or database a query names does not exist."""


class _Exists(StoreUnavailable):
    """The table, database or index a query creates exists already."""


# -- connections ----------------------------------------------------------------------------


class _Pool:
    """A few asyncio connections, used round-robin (each multiplexes many queries).

    A dead connection is replaced on its next use; after a failed connect, further connects
    are refused at once (StoreUnavailable) until a backoff delay has passed, so requests
    fail fast while the server is down.
    """

    def __init__(self, settings: RethinkDBSettings) -> None:
        self.settings = settings
        self.address = f"{settings.host}:{settings.port}"
        self._slots: list[Any] = [None] * settings.pool_size
        self._locks = [asyncio.Lock() for _ in range(settings.pool_size)]
        self._next = 0
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._last_error = ""
        self._closers: set[asyncio.Task[None]] = set()
        self.closed = False

    async def _connect(self) -> Any:
        settings = self.settings
        return await r.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            timeout=max(1, round(settings.timeout)),
        )

    async def get(self) -> Any:
        """An open connection. Raises StoreUnavailable when none can be had."""
        if self.closed:
            raise StoreUnavailable("the RethinkDB store is closed")
        index = self._next
        self._next = (index + 1) % len(self._slots)
        conn = self._slots[index]
        if conn is not None and conn.is_open():
            return conn
        async with self._locks[index]:
            conn = self._slots[index]
            if conn is not None and conn.is_open():
                return conn
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise StoreUnavailable(
                    f"cannot reach RethinkDB at {self.address}: {self._last_error} (reconnecting)"
                )
            try:
                conn = await asyncio.wait_for(self._connect(), self.settings.timeout)
            except (ReqlError, OSError, TimeoutError) as exc:
                self._last_error = (
                    _message(exc)
                    if not isinstance(exc, TimeoutError)
                    else (f"no answer within {self.settings.timeout:g}s")
                )
                self._retry_at = loop.time() + self._backoff.next()
                raise StoreUnavailable(
                    f"cannot reach RethinkDB at {self.address}: {self._last_error}"
                ) from exc
            if self.closed:  # closed while connecting
                self._close_later(conn)
                raise StoreUnavailable("the RethinkDB store is closed")
            self._backoff.reset()
            self._retry_at = 0.0
            old, self._slots[index] = self._slots[index], conn
            if old is not None:
                self._close_later(old)
            return conn

    def discard(self, conn: Any) -> None:
        """Close ``conn`` (it stopped answering) so the next use of its slot reconnects.

        Queries and feeds still running on it fail at once.
        """
        for index, slot in enumerate(self._slots):
            if slot is conn:
                self._slots[index] = None
        self._close_later(conn)

    def _close_later(self, conn: Any) -> None:
        task = asyncio.ensure_future(self._close(conn))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close(self, conn: Any) -> None:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(conn.close(noreply_wait=False), 2.0)

    async def close(self) -> None:
        """Close every connection."""
        self.closed = True
        for index, conn in enumerate(self._slots):
            self._slots[index] = None
            if conn is not None:
                self._close_later(conn)
        if self._closers:
            await asyncio.gather(*tuple(self._closers), return_exceptions=True)


class _Feed:
    """The changefeed of one queue: its task and whether it is open."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()  #: set while the feed is open.
        self.tried = asyncio.Event()  #: set once the first attempt to open it has ended.
        self.error = ""  #: why it is down.


def _consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a background query's outcome so an abandoned failure is not logged."""
    if not task.cancelled():
        task.exception()


# -- the store ---------------------------------------------------------------------------------


class RethinkDBStore(Store):
    """Queues and jobs in a RethinkDB database; several dispatchers may share it.

    Raises StoreUnavailable from any method when the server cannot be reached, does not
    answer within ``settings.timeout`` seconds or cannot write (table unavailable).
    """

    def __init__(self, settings: RethinkDBSettings, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(retry=retry)
        if settings.durability not in ("hard", "soft"):
            raise ValueError(f"durability must be hard or soft, not {settings.durability!r}")
        self.settings = settings
        self.address = f"{settings.host}:{settings.port}"
        self._pool: _Pool | None = None
        self._queues: dict[str, QueueConfig] = {}
        self._feeds: dict[str, _Feed] = {}
        self._unbuilt: set[str] = set()  #: queues recorded here whose table is not built yet.
        self._closed = False
        self._db = r.db(settings.db)

    # -- plumbing ----------------------------------------------------------------------------

    def _table(self, queue: str) -> Any:
        return self._db.table(queue)

    async def _run(self, query: RqlQuery, *, timeout: float | None = None, conn: Any = None) -> Any:
        """Run ``query``; its result (``coerce_to("array")`` reads as lists, feeds as cursors).

        Raises StoreUnavailable for a lost connection, an unavailable table, a refused query
        or no answer within ``timeout`` (default ``settings.timeout``) seconds; its
        subclasses :class:`_Missing` ("does not exist") and :class:`_Exists` ("already
        exists") let callers tell those apart.
        """
        if self._pool is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        timeout = self.settings.timeout if timeout is None else timeout
        if conn is None:
            conn = await self._pool.get()
        try:
            task = asyncio.ensure_future(query.run(conn))
        except ReqlDriverError as exc:  # the connection closed under us
            self._pool.discard(conn)
            raise StoreUnavailable(f"lost RethinkDB at {self.address}: {_message(exc)}") from exc
        task.add_done_callback(_consume)
        # asyncio.wait, not wait_for: the query task is never cancelled (cancelling the
        # driver's wait for an answer makes it close the whole connection when the answer
        # comes), and a cancellation of the caller is never swallowed.
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self._pool.discard(conn)
            raise StoreUnavailable(
                f"RethinkDB at {self.address} did not answer within {timeout:g}s"
            )
        try:
            return task.result()
        except ReqlDriverError as exc:  # the connection broke (ReqlTimeoutError too)
            self._pool.discard(conn)
            raise StoreUnavailable(f"lost RethinkDB at {self.address}: {_message(exc)}") from exc
        except OSError as exc:
            self._pool.discard(conn)
            raise StoreUnavailable(f"lost RethinkDB at {self.address}: {_message(exc)}") from exc
        except ReqlError as exc:
            message = _message(exc)
            if "does not exist" in message:
                raise _Missing(message) from exc
            if "already exists" in message:
                raise _Exists(message) from exc
            log.error("RethinkDB refused a query: %s", exc)
            raise StoreUnavailable(f"RethinkDB cannot serve the request: {message}") from exc

    async def _run_on_queue(self, queue: str, query: RqlQuery, **options: Any) -> Any:
        """:meth:`_run` for a query on a queue's table; a missing table is QueueNotFound."""
        try:
            return await self._run(query, **options)
        except _Missing as exc:
            self._queues.pop(queue, None)
            raise QueueNotFound(f"queue {queue!r} does not exist", queue=queue) from exc

    async def _admin(self, query: RqlQuery) -> Any:
        """Run a schema query, with a longer timeout; "already exists" is success (None)."""
        try:
            return await self._run(query, timeout=max(ADMIN_TIMEOUT, self.settings.timeout))
        except _Exists:
            return None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool and create the database and the queues table if missing.

        Raises StoreUnavailable("cannot reach RethinkDB at HOST:PORT: ...") when the server
        cannot be reached within ``settings.timeout`` seconds.
        """
        if self._pool is not None:
            return
        self._closed = False
        self._pool = _Pool(self.settings)
        try:
            for _ in range(self.settings.pool_size):
                await self._pool.get()
            await self._create_schema()
        except BaseException:
            await self.close()
            raise

    async def _create_schema(self) -> None:
        db = self.settings.db
        if db not in await self._run(r.db_list()):
            await self._admin(r.db_create(db))
        if QUEUES_TABLE not in await self._run(self._db.table_list()):
            await self._admin(self._db.table_create(QUEUES_TABLE, primary_key="name"))
        await self._admin(self._db.table(QUEUES_TABLE).wait(wait_for="ready_for_writes"))
        for config in await self.list_queues():
            self._queues[config.name] = config

    async def close(self) -> None:
        """Stop the changefeeds and close every connection; idempotent."""
        self._closed = True
        feeds, self._feeds = self._feeds, {}
        tasks = [feed.task for feed in feeds.values() if feed.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def drop_database(self) -> None:
        """Delete the whole database ``settings.db`` (tests clean up with this); idempotent."""
        feeds, self._feeds = self._feeds, {}
        for feed in feeds.values():
            if feed.task is not None:
                feed.task.cancel()
        self._queues.clear()
        with contextlib.suppress(_Missing):
            await self._admin(r.db_drop(self.settings.db))

    # -- queues ------------------------------------------------------------------------------

    @staticmethod
    def _config(doc: Mapping[str, Any]) -> QueueConfig:
        return QueueConfig(
            name=doc["name"], ttr=float(doc["ttr"]), max_attempts=int(doc["max_attempts"])
        )

    async def create_queue(self, config: QueueConfig) -> bool:
        """Create the queue's table and indexes unless the queue exists; True if created here.

        Race-safe across dispatchers: the queue's document in ``tqueues_queues`` is inserted
        first (one insert wins); the winner creates the table and indexes and marks the
        queue ready, the others wait (up to 60 s) for that, then build it themselves (the
        winner may have died). Raises StoreUnavailable.
        """
        if config.name in self._queues:
            return False
        queues = self._db.table(QUEUES_TABLE)
        doc = {
            "name": config.name,
            "ttr": config.ttr,
            "max_attempts": config.max_attempts,
            "ready": False,
        }
        result = await self._run(
            queues.insert(doc, conflict="error", durability=self.settings.durability)
        )
        created = result.get("inserted") == 1
        if created:
            self._unbuilt.add(config.name)
        elif config.name not in self._unbuilt:
            if await self._run(queues.get(config.name)) is None:
                raise StoreUnavailable(
                    f"could not record queue {config.name!r}: {_first_error(result)}"
                )
            stored = await self._wait_ready(config.name)
            if stored is not None:
                self._queues[config.name] = stored
                return False
        await self._build_queue_table(config.name)
        await self._run(
            queues.get(config.name).update({"ready": True}, durability=self.settings.durability)
        )
        self._unbuilt.discard(config.name)
        stored_doc = await self._run(queues.get(config.name))
        self._queues[config.name] = self._config(stored_doc) if stored_doc else config
        return created

    async def _wait_ready(self, name: str) -> QueueConfig | None:
        """The queue's settings once another dispatcher has built it; None after 60 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(ADMIN_TIMEOUT, self.settings.timeout)
        delay = 0.05
        while True:
            doc = await self._run(self._db.table(QUEUES_TABLE).get(name))
            if doc is not None and doc.get("ready"):
                return self._config(doc)
            if loop.time() >= deadline:
                log.warning("queue %r was not built by its creator; building it here", name)
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _build_queue_table(self, name: str) -> None:
        """Create the queue's table and its secondary indexes and wait until they are ready."""
        await self._admin(self._db.table_create(name))
        table = self._table(name)
        await self._admin(table.wait(wait_for="ready_for_writes"))
        existing = set(await self._run(table.index_list()))
        definitions: dict[str, Callable[[Any], Any]] = {
            "pending": lambda row: r.branch(
                row["status"] == JobStatus.PENDING.value,
                [row["priority"], row["ready_at"]],
                None,
            ),
            "leases": lambda row: [row["status"], row["lease_expires"]],
            "delayed": lambda row: [row["status"], row["ready_at"]],
            "created": lambda row: [row["created_at"], row["id"]],
        }
        for index in INDEXES:
            if index not in existing:
                await self._admin(table.index_create(index, definitions[index]))
        await self._admin(table.index_wait(*INDEXES))

    async def get_queue(self, name: str) -> QueueConfig:
        """The queue's settings, from memory or else from the server (queues made elsewhere).

        Raises QueueNotFound (also while another dispatcher is still creating it).
        """
        config = self._queues.get(name)
        if config is not None:
            return config
        doc = await self._run(self._db.table(QUEUES_TABLE).get(name))
        if doc is None or not doc.get("ready"):
            raise QueueNotFound(f"queue {name!r} does not exist", queue=name)
        config = self._queues[name] = self._config(doc)
        return config

    async def list_queues(self) -> list[QueueConfig]:
        """Every ready queue, by name (read from the server)."""
        docs = await self._run(
            self._db.table(QUEUES_TABLE).order_by(index="name").coerce_to("array")
        )
        configs = [self._config(doc) for doc in docs if doc.get("ready")]
        for config in configs:
            self._queues.setdefault(config.name, config)
        return configs

    # -- jobs --------------------------------------------------------------------------------

    async def insert(self, job: Job) -> Job:
        """Insert the job with ``settings.durability``. Raises QueueNotFound."""
        await self.get_queue(job.queue)
        result = await self._run_on_queue(
            job.queue,
            self._table(job.queue).insert(
                reql_literal(job_to_doc(job)),
                conflict="error",
                durability=self.settings.durability,
            ),
        )
        if result.get("inserted") != 1:
            raise StoreUnavailable(f"RethinkDB did not store job {job.id}: {_first_error(result)}")
        return job

    async def _compare_and_set(
        self, queue: str, before: Job, after: Job, *, status: JobStatus | None = None
    ) -> bool:
        """Replace the job by ``after`` if it is still at ``before.rev`` (and ``status``).

        One atomic, deterministic single-document write. True if written, False if the job
        changed (or vanished) in between.
        """
        expected = (
            (lambda row: row["rev"] == before.rev)
            if status is None
            else (lambda row: (row["rev"] == before.rev) & (row["status"] == status.value))
        )
        new_doc = reql_literal(job_to_doc(after))
        query = (
            self._table(queue)
            .get(before.id)
            .replace(
                lambda row: r.branch(row.eq(None), None, r.branch(expected(row), new_doc, row)),
                durability=self.settings.durability,
            )
        )
        result = await self._run_on_queue(queue, query)
        if result.get("errors"):
            raise StoreUnavailable(
                f"RethinkDB did not write job {before.id}: {_first_error(result)}"
            )
        return bool(result.get("replaced") == 1)

    async def claim(self, queue: str, *, worker: str | None, now: float) -> Job | None:
        """Take the most urgent pending job by compare-and-set; None when none is pending.

        Reads up to 8 candidates through the ``pending`` index (priority, then ready_at) and
        tries them in turn; after losing every one to other takers, reads again (in a
        shuffled order, to spread contention). Raises QueueNotFound.
        """
        await self.get_queue(queue)
        table = self._table(queue)
        candidates = (
            table.between([r.minval, r.minval], [r.maxval, r.maxval], index="pending")
            .order_by(index="pending")
            .limit(CLAIM_CANDIDATES)
            .coerce_to("array")
        )
        for attempt in range(CLAIM_ROUNDS):
            docs = await self._run_on_queue(queue, candidates)
            if not docs:
                return None
            if attempt:
                random.shuffle(docs)
            for doc in docs:
                before = doc_to_job(doc)
                if before.status is not JobStatus.PENDING:
                    continue
                after = lifecycle.claim(
                    before, lease=self.new_lease(), worker=worker, now=now
                ).evolve(rev=before.rev + 1)
                if await self._compare_and_set(queue, before, after, status=JobStatus.PENDING):
                    return after
        log.warning("claim on queue %r lost %d rounds to other takers", queue, CLAIM_ROUNDS)
        return None

    async def get(self, queue: str, job_id: str) -> Job:
        """The job. Raises QueueNotFound, JobNotFound."""
        await self.get_queue(queue)
        doc = await self._run_on_queue(queue, self._table(queue).get(job_id))
        if doc is None:
            raise JobNotFound(f"job {job_id!r} does not exist in queue {queue!r}", id=job_id)
        return doc_to_job(doc)

    async def mutate(self, queue: str, job_id: str, change: Mutation) -> tuple[Job, Job]:
        """Read the job, apply ``change``, write it if ``rev`` did not move; retry if it did.

        Raises QueueNotFound, JobNotFound, whatever ``change`` raises, or StoreUnavailable
        after 64 conflicts in a row.
        """
        for _ in range(MUTATE_ATTEMPTS):
            before = await self.get(queue, job_id)
            after = change(before).evolve(rev=before.rev + 1)
            if await self._compare_and_set(queue, before, after):
                return before, after
        raise StoreUnavailable(f"job {job_id} kept changing under {MUTATE_ATTEMPTS} writes")

    async def list_jobs(self, queue: str, *, cursor: str | None = None, limit: int = 500) -> Page:
        """The queue's jobs in creation order through the ``created`` index.

        The cursor is ``CREATED_AT:ID`` of the last job of the previous page; an unreadable
        cursor starts from the beginning. Raises QueueNotFound.
        """
        await self.get_queue(queue)
        query = self._list_query(queue, cursor, limit)
        docs = await self._run_on_queue(queue, query)
        jobs = [doc_to_job(doc) for doc in docs]
        next_cursor = None
        if len(jobs) == limit and jobs:
            next_cursor = f"{jobs[-1].created_at!r}:{jobs[-1].id}"
        return Page(jobs, next_cursor)

    def _list_query(self, queue: str, cursor: str | None, limit: int) -> Any:
        """The query for one page of :meth:`list_jobs` (no I/O)."""
        table = self._table(queue)
        after = parse_cursor(cursor)
        if after is None:
            selection = table
        else:
            selection = table.between(
                list(after), [r.maxval, r.maxval], index="created", left_bound="open"
            )
        return selection.order_by(index="created").limit(limit).coerce_to("array")

    async def reap(self, now: float) -> int:
        """Expire run-out leases and promote due delayed jobs of every queue; the count.

        Reads through the ``leases`` and ``delayed`` indexes (``between``, never a scan) and
        writes each job by compare-and-set, so dispatchers may reap concurrently: a job
        another one changed first is skipped. Changes reach the hub through the feeds.
        """
        count = 0
        for config in await self.list_queues():
            try:
                count += await self._reap_queue(config.name, now)
            except QueueNotFound:
                continue
        return count

    async def _reap_queue(self, queue: str, now: float) -> int:
        count = 0
        table = self._table(queue)
        steps: tuple[tuple[str, JobStatus, Callable[..., Job]], ...] = (
            ("leases", JobStatus.STARTED, lifecycle.expire),
            ("delayed", JobStatus.DELAYED, lifecycle.promote),
        )
        for index, status, step in steps:
            query = (
                table.between(
                    [status.value, r.minval], [status.value, now], index=index, right_bound="closed"
                )
                .order_by(index=index)
                .limit(REAP_BATCH)
                .coerce_to("array")
            )
            docs = await self._run_on_queue(queue, query)

            async def one(doc: Mapping[str, Any], step: Callable[..., Job] = step) -> int:
                before = doc_to_job(doc)
                try:
                    after = step(before, now=now).evolve(rev=before.rev + 1)
                except InvalidTransition:
                    return 0
                return int(await self._compare_and_set(queue, before, after))

            count += sum(await asyncio.gather(*(one(doc) for doc in docs)))
        return count

    # -- changes -----------------------------------------------------------------------------

    def publish(self, job: Job, before: Job | None = None) -> None:
        """Do nothing: every change, this process's own too, reaches the hub from the feeds."""

    async def watch(self, queue: str) -> None:
        """Make sure the queue's changefeed runs; return once it is open.

        Raises QueueNotFound, or StoreUnavailable when the feed cannot be opened (it keeps
        retrying in the background, with backoff).
        """
        await self.get_queue(queue)
        if self._closed or self._pool is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        feed = self._feeds.get(queue)
        if feed is None or feed.task is None or feed.task.done():
            feed = self._feeds[queue] = _Feed()
            feed.task = asyncio.create_task(self._follow(queue, feed), name=f"feed:{queue}")
        if feed.up.is_set():
            return
        if not feed.tried.is_set():
            tried = asyncio.ensure_future(feed.tried.wait())
            try:
                await asyncio.wait({tried}, timeout=self.settings.timeout)
            finally:
                tried.cancel()
        if not feed.up.is_set():
            raise StoreUnavailable(
                f"the change feed of queue {queue!r} is down: {feed.error or 'opening'}"
            )

    async def _follow(self, queue: str, feed: _Feed) -> None:
        """Run the queue's changefeed until cancelled, reopening it with backoff when it breaks."""
        backoff = Backoff()
        while not self._closed:
            try:
                await self._follow_once(queue, feed, backoff)
            except asyncio.CancelledError:
                raise
            except (ReqlError, StoreUnavailable, QueueNotFound, OSError, TimeoutError) as exc:
                feed.error = (
                    exc.message
                    if isinstance(exc, StoreUnavailable | QueueNotFound)
                    else (_message(exc))
                )
                if feed.up.is_set():
                    log.warning("change feed of queue %r broke: %s", queue, feed.error)
            finally:
                feed.up.clear()
                feed.tried.set()
            await asyncio.sleep(backoff.next())

    async def _follow_once(self, queue: str, feed: _Feed, backoff: Backoff) -> None:
        """Open the feed, announce it, and deliver its changes until it breaks."""
        assert self._pool is not None
        conn = await self._pool.get()
        cursor = await self._run_on_queue(
            queue, self._table(queue).changes(include_types=True), conn=conn
        )
        try:
            feed.error = ""
            feed.up.set()
            feed.tried.set()
            backoff.reset()
            # Whatever changed while the feed was down is found by the index reads of claims.
            self.hub.notify_ready(queue)
            pending: asyncio.Future[Any] | None = None
            try:
                while not self._closed:
                    if pending is None:
                        pending = asyncio.ensure_future(cursor.next())
                    done, _ = await asyncio.wait({pending}, timeout=FEED_HEARTBEAT)
                    if not done:  # quiet: is the connection still there?
                        await self._run(r.expr(1), conn=conn)
                        continue
                    change, pending = pending.result(), None
                    self._deliver(queue, change)
            finally:
                if pending is not None:
                    pending.cancel()
                    pending.add_done_callback(_consume)
        except ReqlCursorEmpty:
            return
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(cursor.close(), 2.0)

    def _deliver(self, queue: str, change: Mapping[str, Any]) -> None:
        """Turn one changefeed message into a ChangeEvent on the hub."""
        if change.get("type") not in (None, "add", "change", "remove"):
            return  # "state", "initial", "uninitial": not changes
        try:
            old = doc_to_job(change["old_val"]) if change.get("old_val") else None
            new = doc_to_job(change["new_val"]) if change.get("new_val") else None
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("queue %r holds a document that is not a job: %s", queue, exc)
            return
        job = new or old
        if job is None:
            return
        kind = change_kind(old, new)
        self.hub.publish(ChangeEvent(kind, queue, job, old.status if old else None))


def parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    """``CREATED_AT:ID`` as a pair, or None for no (or an unreadable) cursor."""
    if not cursor:
        return None
    created_at, sep, job_id = cursor.rpartition(":")
    if not sep or not _JOB_ID_RE.match(job_id):
        return None
    try:
        value = float(created_at)
    except ValueError:
        return None
    return value, job_id


def _first_error(result: Mapping[str, Any]) -> str:
    return " ".join(str(result.get("first_error") or result).split())


__all__ = [
    "Backoff",
    "RethinkDBStore",
    "change_kind",
    "doc_to_job",
    "job_to_doc",
    "parse_cursor",
    "reql_literal",
]
