"""RethinkDBStore: the store boundary on RethinkDB (one table per queue, claims and every
other change by compare-and-set on ``rev``, changes from one changefeed per queue).

RethinkDB has no multi-document transactions, so every change of a job is one conditional
write of one document: the new document is computed in Python by :mod:`tqueues.lifecycle`
(so "now" and lease tokens are literals and no write needs ``non_atomic``) and written only
if the stored ``rev`` is still the one read. Any number of dispatchers may share a
database without a leader: a claim, a mutation or a reaper step that loses a race re-reads
(or skips the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import lifecycle
from tqueues.errors import (
    JobNotFound,
    QueueNotFound,
    StoreUnavailable,
    TqueuesError,
)
from tqueues.ids import storable
from tqueues.jobs import JobRecord, JobStatus, QueueConfig, new_ordered_id
from tqueues.retry import RetryPolicy
from tqueues.settings import RethinkDBSettings
from tqueues.stores.base import Mutation, Page, Store
from tqueues.stores.history import Bucket, Counts
from tqueues.stores.primitives import MutatedAndClaimed
from tqueues.stores.rethinkdb import keys, listing, queries
from tqueues.stores.rethinkdb.claims import Claims
from tqueues.stores.rethinkdb.documents import (
    batch_ids,
    doc_to_job,
    r,
)
from tqueues.stores.rethinkdb.feeds import Feeds
from tqueues.stores.rethinkdb.head import Heads
from tqueues.stores.rethinkdb.mutations import Mutations
from tqueues.stores.rethinkdb.pool import KeyRefused, Missing, Pool, first_error
from tqueues.stores.rethinkdb.queues import ADMIN_TIMEOUT, Catalog
from tqueues.stores.rethinkdb.reaper import Reaper
from tqueues.stores.rethinkdb.side_tables import SideTables
from tqueues.stores.rethinkdb.started import StartedJobs
from tqueues.stores.rethinkdb.undo import ClaimUndo
from tqueues.stores.rethinkdb.writes import QueueWrites
from tqueues.stores.schedules import ScheduleRecord
from tqueues.stores.workers import Command, WorkerRecord

log = logging.getLogger("tqueues.stores.rethinkdb")

#: An insert of more jobs than INSERT_SPLIT goes to the server as INSERT_PARTS queries of
#: equal size at once: a second query in flight lets the server use a second core, and
#: the inserts of a batch are not one atomic write anyway (measured on RethinkDB 2.4.4,
#: 2 cores, a queue table with its indexes and a feed: 1,000 jobs as one query 4,950
#: jobs/s, as two at once 6,020).
INSERT_SPLIT, INSERT_PARTS = 400, 2


class RethinkDBStore(Store):
    """Queues and jobs in a RethinkDB database; several dispatchers may share it.

    Raises StoreUnavailable from any method when the server cannot be reached, does not
    answer within ``settings.timeout`` seconds or cannot write (table unavailable).
    """

    #: A put for a waiting taker inserts its job already claimed, in one query.
    hands_off = True

    @staticmethod
    def new_id() -> str:
        """Time-ordered ids (:func:`~tqueues.jobs.new_ordered_id`): the primary key lists
        the jobs in creation order, so the table needs no index for it (each index costs
        every write). A queue's table has one shard, so inserts at the end of the key
        range crowd no shard that another would relieve."""
        return new_ordered_id()

    def __init__(self, settings: RethinkDBSettings, *, retry: RetryPolicy | None = None) -> None:
        super().__init__(retry=retry)
        if settings.durability not in ("hard", "soft"):
            raise ValueError(f"durability must be hard or soft, not {settings.durability!r}")
        self.settings = settings
        self.address = f"{settings.host}:{settings.port}"
        self._db = r.db(settings.db)
        self._pool: Pool | None = None
        self._catalog: Catalog | None = None
        self._feeds: Feeds | None = None
        #: the conditional writes and the claims of each queue, group-committed (see
        #: :mod:`~tqueues.stores.rethinkdb.coalesce`: per queue, one claim group and up to
        #: two write queries in flight)
        self._writes: QueueWrites | None = None
        self._claims: Claims | None = None
        #: releases of claims that got no answer (undo.py)
        self._undo_claim = ClaimUndo(
            lambda queue, job_id, lease: self.release(queue, job_id, lease=lease)
        )
        self._following: asyncio.Task[None] | None = None  #: the catalog's feed
        #: the started jobs this process claimed (or last changed), as it wrote them: a
        #: hint for each one's next compare-and-set, never trusted beyond it (started.py)
        self._started = StartedJobs()
        #: the history, the worker registry, the schedules, the edges and the keys' table
        self._side = SideTables(
            self._db, lambda: self._parts()[1].configs, self._run, settings.durability
        )
        #: unique jobs: the claims and releases of keys (see keys.py)
        self._keys = keys.Keys(self._side.keys, self._run, self._read_job,
                               durability=settings.durability)  # fmt: skip
        #: the most urgent pending jobs of each watched queue, from its changefeed: the
        #: candidates of claims, read from the index only when these cannot tell (head.py)
        self.heads = Heads()
        #: the conditional writes of jobs (mutations.py)
        self._mutations = Mutations(
            table=self._table,
            run_on_queue=self._run_on_queue,
            get_queue=self.get_queue,
            get=self.get,
            coalescers=self._coalescers,
            started=self._started,
            keys=self._keys,
            durability=settings.durability,
        )
        self._reaper: Reaper | None = None  #: the housekeeping (see reaper.py)

    # -- plumbing ----------------------------------------------------------------------------

    def _table(self, queue: str) -> Any:
        return self._db.table(queue)

    def _parts(self) -> tuple[Pool, Catalog, Feeds]:
        if self._pool is None or self._catalog is None or self._feeds is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        return self._pool, self._catalog, self._feeds

    def work(self) -> dict[str, int]:
        """:attr:`batches`: what this process's group commit and claims did."""
        return self.batches

    @property
    def batches(self) -> dict[str, int]:
        """How much this process coalesced since it opened: ``write_queries`` (the
        conditional writes of jobs sent) for ``write_requests`` (the requests they carried:
        claims, outcomes, the reaper's steps), ``claim_groups`` (candidate look-ups and their
        writes) for ``claim_requests`` (the claims asked); of the look-ups,
        ``candidate_reads`` read the index and ``head_answers`` were answered from memory
        (see head.py); ``claims_lost``: candidates another taker claimed first. Zeros
        while closed (the counts of the heads: since this store was made)."""
        writes, claims = self._writes, self._claims
        return {
            "write_queries": writes.queries if writes else 0,
            "write_requests": writes.requests if writes else 0,
            "claim_groups": claims.coalescer.batches if claims else 0,
            "claim_requests": claims.coalescer.requests if claims else 0,
            "candidate_reads": claims.index_reads if claims else 0,
            "head_answers": self.heads.counts["answered"],
            "claims_lost": self.heads.counts["lost"],
        }

    def _reaping(self) -> Reaper:
        if self._reaper is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        return self._reaper

    def _coalescers(self) -> tuple[QueueWrites, Claims]:
        if self._writes is None or self._claims is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        return self._writes, self._claims

    async def _run(self, query: RqlQuery, *, timeout: float | None = None, conn: Any = None) -> Any:
        """:meth:`Pool.run` on the open pool. Raises StoreUnavailable (see there)."""
        pool, _, _ = self._parts()
        return await pool.run(query, timeout=timeout, conn=conn)

    async def _run_on_queue(self, queue: str, query: RqlQuery, **options: Any) -> Any:
        """:meth:`_run` for a query on a queue's table; a missing table is QueueNotFound."""
        try:
            return await self._run(query, **options)
        except Missing as exc:
            if self._catalog is not None:
                self._catalog.forget(queue)
            raise QueueNotFound(f"queue {queue!r} does not exist", queue=queue) from exc

    async def _run_on_job(self, queue: str, job_id: str, query: RqlQuery) -> Any:
        """:meth:`_run_on_queue` for a query on one job by its primary key. An id no job
        can have (:func:`tqueues.ids.storable`: a NUL in it, over 127 bytes) is
        JobNotFound without a query, as on the embedded store, and so is a key the server
        refuses (:class:`KeyRefused`): never StoreUnavailable, which reads as an outage."""
        if not storable(job_id):
            raise JobNotFound.in_queue(queue, job_id)
        try:
            return await self._run_on_queue(queue, query)
        except KeyRefused as exc:
            raise JobNotFound.in_queue(queue, job_id) from exc

    def _new_feeds(self, pool: Pool) -> Feeds:
        """The changefeeds of this store's queues, on ``pool``."""
        feeds = Feeds(
            pool=pool,
            hub=self.hub,
            table=self._table,
            run_on_queue=self._run_on_queue,
            timeout=self.settings.timeout,
            heads=self.heads,
        )
        feeds.on_open = self.look_for_delays
        return feeds

    def _write_options(self) -> dict[str, str]:
        return {"durability": self.settings.durability}

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect the pool, create the database and the queues table if missing, and add
        the indexes this version needs to tables an older one created.

        Raises StoreUnavailable("cannot reach RethinkDB at HOST:PORT: ...") when the server
        cannot be reached within ``settings.timeout`` seconds.
        """
        if self._pool is not None:
            return
        pool = self._pool = Pool(self.settings)
        self._catalog = Catalog(pool, self.settings)
        self._catalog.on_pause = self.pause_changed
        self._feeds = self._new_feeds(pool)
        self._writes = QueueWrites(self._table, self._run_on_queue, self.settings.durability)
        self._reaper = Reaper(
            heads=self.heads,
            table=self._table,
            run=self._run_on_queue,
            durability=self.settings.durability,
            change=self._mutations.change,
            release_key=self._keys.release,
            record=self.record,
        )
        self._claims = Claims(
            heads=self.heads,
            table=self._table,
            run=self._run_on_queue,
            write_many=self._mutations.write_many,
            remember=self._started.remember,
            undo_claim=self._undo_claim,
            new_lease=self.new_lease,
        )
        try:
            for _ in range(self.settings.pool_size):
                await pool.get()
            await self._catalog.open()
            self._following = asyncio.create_task(self._catalog.follow(), name="catalog feed")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the changefeeds and close every connection; idempotent."""
        self.stop_timers()
        if self._following is not None:
            self._following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._following
            self._following = None
        feeds, self._feeds, self._catalog = self._feeds, None, None
        writes, claims, self._writes, self._claims = self._writes, self._claims, None, None
        if claims is not None:
            await claims.close()
        if writes is not None:
            await writes.close()
        self._undo_claim.cancel()  # (their leases expire as usual)
        if feeds is not None:
            await feeds.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def drop_database(self) -> None:
        """Delete the whole database ``settings.db`` (tests clean up with this); idempotent."""
        _, catalog, feeds = self._parts()
        await feeds.close()
        self._feeds = self._new_feeds(feeds.pool)
        catalog.configs.clear()
        with contextlib.suppress(Missing):
            await catalog.admin(r.db_drop(self.settings.db))

    # -- queues ------------------------------------------------------------------------------

    async def create_queue(self, config: QueueConfig) -> bool:
        """Create the queue (table, indexes, settings) unless it exists; True if created
        here. Race-safe across dispatchers (see :meth:`Catalog.create`)."""
        return await self._parts()[1].create(config)

    async def get_queue(self, name: str) -> QueueConfig:
        """The queue's settings (cached; a miss reads the server). Raises QueueNotFound."""
        return await self._parts()[1].get(name)

    async def list_queues(self) -> list[QueueConfig]:
        """Every ready queue, by name (read from the server, refreshing the cache)."""
        return await self._parts()[1].list()

    async def update_queue(self, config: QueueConfig) -> None:
        """Replace the queue's settings; jobs already put keep theirs. Raises QueueNotFound."""
        await self._parts()[1].update(config)

    async def set_pause(self, name: str, paused: bool, until: float | None) -> QueueConfig:
        """Write the queue's pause state alone (see :meth:`Catalog.set_pause`)."""
        return await self._parts()[1].set_pause(name, paused, until)

    async def drop_queue(self, name: str) -> int:
        """Drop the queue's table and its settings; the jobs it held (counted just before).

        Retrying after a failure half-way is safe: a table already gone counts 0.
        Raises QueueNotFound.
        """
        _, catalog, feeds = self._parts()
        await catalog.get(name)
        feeds.stop(name)
        self._reaping().forget(name)
        try:
            count = int(await self._run(self._table(name).count()))
        except Missing:
            count = 0
        with contextlib.suppress(Missing):
            await catalog.admin(self._db.table_drop(name))
        await self._side.purge_history([name], None)
        # (each of these is off when a queue has its table's name: see side_tables.py)
        with contextlib.suppress(StoreUnavailable):
            await self._keys.forget_queue(name)
        with contextlib.suppress(StoreUnavailable):
            await self._side.delete_schedules_of(name)
        await catalog.remove(name)
        return count

    async def truncate(self, queue: str) -> int:
        """Delete every job of the queue (one table-wide delete); how many went.

        Raises QueueNotFound.
        """
        await self.get_queue(queue)
        result = await self._run_on_queue(
            queue,
            self._table(queue).delete(**self._write_options()),
            timeout=max(ADMIN_TIMEOUT, self.settings.timeout),
        )
        self.heads.reset(queue)
        with contextlib.suppress(StoreUnavailable):  # (left, each would be taken over)
            await self._keys.forget_queue(queue)
        return int(result.get("deleted", 0))

    async def count_jobs(self, queue: str) -> dict[JobStatus, int]:
        """Jobs per status present, counted through ``status_id`` in one query.

        Raises QueueNotFound.
        """
        await self.get_queue(queue)
        counts = await self._run_on_queue(queue, queries.count_by_status(self._table(queue)))
        return {JobStatus(status): int(n) for status, n in dict(counts or {}).items() if n}

    # -- jobs --------------------------------------------------------------------------------

    async def insert(self, job: JobRecord) -> JobRecord:
        """Insert the job with ``settings.durability``. Raises QueueNotFound."""
        return (await self._insert(job.queue, [job]))[0]

    async def insert_many(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Insert each queue's jobs with one write; the jobs get ids in batch order (see
        :func:`batch_ids`). Not atomic: a failure may leave some stored. Raises
        QueueNotFound."""
        renamed = batch_ids(jobs)
        by_queue: dict[str, list[JobRecord]] = {}
        for job in renamed:
            by_queue.setdefault(job.queue, []).append(job)
        for queue in by_queue:
            await self.get_queue(queue)
        for queue, batch in by_queue.items():
            await self._insert(queue, batch)
        return renamed

    async def _insert(self, queue: str, jobs: list[JobRecord]) -> list[JobRecord]:
        """Insert ``jobs`` of ``queue`` (more than INSERT_SPLIT: in INSERT_PARTS queries at
        once). Raises QueueNotFound, StoreUnavailable (some may be stored)."""
        await self.get_queue(queue)
        parts = INSERT_PARTS if len(jobs) > INSERT_SPLIT else 1
        size = -(-len(jobs) // parts)
        table, options = self._table(queue), self._write_options()
        inserts = [
            queries.insert(table, jobs[start : start + size], **options)
            for start in range(0, len(jobs), size)
        ]
        gathered = await asyncio.gather(
            *(self._run_on_queue(queue, query) for query in inserts), return_exceptions=True
        )
        answers: list[dict[str, Any]] = []
        for answer in gathered:
            if isinstance(answer, BaseException):
                raise answer
            answers.append(answer)
        inserted = sum(int(answer.get("inserted") or 0) for answer in answers)
        if inserted != len(jobs):
            errors = "; ".join(first_error(answer) for answer in answers if answer.get("errors"))
            raise StoreUnavailable(f"RethinkDB did not store {len(jobs)} job(s): {errors}")
        for job in jobs:  # a take may follow before the feed brings them
            self.heads.apply(queue, None, job)
        return jobs

    async def insert_and_claim(
        self,
        job: JobRecord,
        count: int,
        *,
        worker: str | None,
        now: float,
        committed: Callable[[list[JobRecord]], None] | None = None,
    ) -> tuple[JobRecord, list[JobRecord]]:
        """Store a new job for a waiting taker; the job as put, and the jobs claimed.

        When no job of the queue is pending (the usual case: a taker waits only while its
        queue is empty), ``job`` is inserted already claimed, one document written once in
        one query: a plain insert when the queue's pending head knows it is empty, else
        :func:`queries.insert_claimed_unless_pending`, which reads the index to tell.
        Otherwise it is inserted pending and up to ``count`` of the most urgent pending
        jobs are claimed (:meth:`claim_many`); should that claim fail, the put still
        stands and the taker gets nothing (it looks for itself). ``committed`` is called
        with the claimed jobs before this returns (RethinkDB answers once the write is
        durable).

        Raises QueueNotFound, or StoreUnavailable when the insert got no answer: the job
        may then be stored, and if it was stored claimed it is released in the background
        (as an unanswered claim is, :meth:`_undo_claim`), so it is not left to its ttr.
        """
        queue = job.queue
        await self.get_queue(queue)
        if job.status is not JobStatus.PENDING:
            await self._insert(queue, [job])
            return job, []
        claimed = lifecycle.claim(job, lease=self.new_lease(), worker=worker, now=now)
        claimed = claimed.succeeding(job)
        pending = self.heads.any_pending(queue)
        if pending is False:  # the queue's head knows no job is pending: no index read
            query = queries.insert(self._table(queue), [claimed], **self._write_options())
            query = query.merge({"handed": True})
        elif pending:  # jobs are pending, which go first: insert, then claim
            query = queries.insert(self._table(queue), [job], **self._write_options())
            query = query.merge({"handed": False})
        else:
            query = queries.insert_claimed_unless_pending(
                self._table(queue), job, claimed, **self._write_options()
            )
        try:
            result = await self._run_on_queue(queue, query)
        except StoreUnavailable:
            self._undo_claim(claimed)
            raise
        if result.get("inserted") != 1:
            raise StoreUnavailable(f"RethinkDB did not store job {job.id}: {first_error(result)}")
        taken = [claimed]
        if result.get("handed"):
            self._started.remember(claimed)
        else:
            self.heads.apply(queue, None, job)
            try:
                taken = await self.claim_many(queue, count, worker=worker, now=now)
            except (QueueNotFound, StoreUnavailable) as exc:
                log.warning("a put to queue %r claimed nothing for its taker: %s", queue, exc)
                taken = []
        if committed is not None:
            committed(taken)
        return job, taken

    async def claim_many(
        self, queue: str, count: int, *, worker: str | None, now: float
    ) -> list[JobRecord]:
        """Take up to ``count`` of the most urgent pending jobs of ``queue`` for ``worker``
        as of ``now``: concurrent claims of a queue go together, their candidates from the
        queue's pending head or one index read, each job won by compare-and-set (see
        :mod:`~tqueues.stores.rethinkdb.claims`). Fewer jobs (or none) when fewer are
        pending. Raises QueueNotFound, or StoreUnavailable only when nothing was claimed.
        """
        await self.get_queue(queue)
        if count <= 0:
            return []
        _, claims = self._coalescers()
        return await claims.claim(queue, count, worker, now)

    async def get(self, queue: str, job_id: str) -> JobRecord:
        """The job. Raises QueueNotFound, JobNotFound (also for an id no job can have,
        which the server would refuse as a key: see :func:`tqueues.ids.storable`)."""
        await self.get_queue(queue)
        doc = await self._run_on_job(queue, job_id, self._table(queue).get(job_id))
        if doc is None:
            raise JobNotFound.in_queue(queue, job_id)
        return doc_to_job(doc)

    async def cancel_requests(self, running: Sequence[tuple[str, str]]) -> list[str]:
        """Of the jobs ``(queue, id)`` a worker says it runs, the ids of those asked to stop
        (flagged ``cancel_requested``, or already cancelled): one ``get_all`` per queue
        (a heartbeat lists every job its worker runs, every second while it is busy).
        Jobs or queues that are gone, and ids no job can have, are left out. Raises
        StoreUnavailable."""
        by_queue: dict[str, list[str]] = {}
        for queue, job_id in running:
            ids = by_queue.setdefault(queue, [])
            if storable(job_id) and job_id not in ids:
                ids.append(job_id)

        async def asked(queue: str, ids: list[str]) -> set[str]:
            if not ids:
                return set()
            try:
                await self.get_queue(queue)
                docs = await self._run_on_queue(queue, queries.get_many(self._table(queue), ids))
            except (QueueNotFound, KeyRefused):
                return set()
            jobs = map(doc_to_job, docs)
            return {
                job.id for job in jobs if job.cancel_requested or job.status is JobStatus.CANCELLED
            }

        queues = list(by_queue)
        found = await asyncio.gather(*(asked(queue, by_queue[queue]) for queue in queues))
        flagged = {
            (queue, job_id) for queue, ids in zip(queues, found, strict=True) for job_id in ids
        }
        return [job_id for queue, job_id in running if (queue, job_id) in flagged]

    async def mutate(
        self, queue: str, job_id: str, change: Mutation
    ) -> tuple[JobRecord, JobRecord]:
        """:meth:`Mutations.mutate`: one conditional write, after a read unless this
        process keeps the job as it last wrote it; retried when the job moved on.

        Raises QueueNotFound, JobNotFound, whatever ``change`` raises, or StoreUnavailable
        after :data:`~tqueues.stores.rethinkdb.mutations.MUTATE_ATTEMPTS` conflicts in a row."""
        return await self._mutations.mutate(queue, job_id, change)

    async def mutate_many(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
        """:meth:`Mutations.mutate_many`: the jobs not kept read in one ``get_all``, every
        change written in one conditional write. Per item (before, after) or its
        TqueuesError. Raises QueueNotFound, StoreUnavailable."""
        return await self._mutations.mutate_many(queue, changes)

    async def mutate_and_claim(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        count: int,
        *,
        worker: str | None,
        now: float,
    ) -> MutatedAndClaimed:
        """:meth:`Mutations.mutate_and_claim`: the changes' writes go in the claims'
        query."""
        return await self._mutations.mutate_and_claim(queue, changes, count, worker=worker, now=now)

    async def list_jobs(
        self,
        queue: str,
        *,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> Page:
        """The queue's jobs (all, through the primary key; one status, through
        ``status_id``) in creation order (of their time-ordered ids). The cursor is the
        id of the last job of the previous page; an unreadable one starts over.
        ``max_bytes`` is counted in characters of the documents' JSON, on the server
        (:func:`~tqueues.stores.rethinkdb.listing.page_within`).
        Raises QueueNotFound."""
        await self.get_queue(queue)
        run = functools.partial(self._run_on_queue, queue)
        if max_bytes is not None:
            return await listing.page_within(
                run, self._table(queue), status, cursor, limit, max_bytes
            )
        return await listing.page(run, self._table(queue), status, cursor, limit)

    async def peek(self, queue: str, status: JobStatus) -> JobRecord | None:
        """The next job of ``status`` (see :func:`queries.peek`), or None.

        Raises QueueNotFound.
        """
        await self.get_queue(queue)
        docs = await self._run_on_queue(queue, queries.peek(self._table(queue), status))
        return doc_to_job(docs[0]) if docs else None

    async def remove(self, queue: str, job_id: str) -> JobRecord:
        """Delete the job (one atomic single-document delete); the job as it was.

        Raises QueueNotFound, JobNotFound (also for an id no job can have).
        """
        await self.get_queue(queue)
        query = queries.remove(self._table(queue), job_id, **self._write_options())
        result = await self._run_on_job(queue, job_id, query)
        changes = result.get("changes") or []
        if not result.get("deleted") or not changes or not changes[0].get("old_val"):
            raise JobNotFound.in_queue(queue, job_id)
        job = doc_to_job(changes[0]["old_val"])
        await self._keys.release(job, job.rev + 1)
        return job

    # -- the side tables (side_tables.py) -----------------------------------------------------

    async def add_history(self, counts: Counts) -> None:
        await self._side.add_history(counts)

    async def read_history(self, queue: str, since: int, until: int) -> list[Bucket]:
        return await self._side.read_history(queue, since, until)

    async def purge_history(self, before: int) -> int:
        """One range delete per queue (the history of a dropped queue went with it)."""
        queues = [config.name for config in await self.list_queues()]
        return await self._side.purge_history(queues, before)

    async def save_worker(self, record: WorkerRecord) -> WorkerRecord:
        return await self._side.save_worker(record)

    async def list_workers(self) -> list[WorkerRecord]:
        return await self._side.list_workers()

    async def command_worker(self, worker_id: str, command: Command) -> WorkerRecord:
        return await self._side.command_worker(worker_id, command)

    async def forget_workers(self, *, before: float | None = None, id: str | None = None) -> int:
        return await self._side.forget_workers(before=before, id=id)

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        await self._side.create_schedule(schedule)

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleRecord]:
        return await self._side.list_schedules(queue)

    async def swap_schedule(self, before: ScheduleRecord, after: ScheduleRecord) -> bool:
        return await self._side.swap_schedule(before, after)

    async def delete_schedule(self, queue: str, name: str) -> bool:
        return await self._side.delete_schedule(queue, name)

    async def add_edges(self, job: JobRecord) -> None:
        await self._side.add_edges(job)

    async def dependents_of(self, queue: str, job_id: str) -> list[str]:
        return await self._side.dependents_of(queue, job_id)

    async def drop_edges(self, queue: str, job_id: str) -> None:
        await self._side.drop_edges(queue, job_id)

    async def count_ahead(self, job: JobRecord, limit: int) -> int:
        await self.get_queue(job.queue)
        query = queries.count_ahead(self._table(job.queue), job, limit)
        return int(await self._run_on_queue(job.queue, query))

    # -- unique jobs (see keys.py) ---------------------------------------------------------

    async def _read_job(self, queue: str, job_id: str) -> JobRecord | None:
        """The job, or None if it (or its queue) is gone."""
        try:
            return await self.get(queue, job_id)
        except (JobNotFound, QueueNotFound):
            return None

    async def insert_unique(self, jobs: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """The jobs without a key inserted as :meth:`insert_many` does (one write per
        queue), then each job with a key in turn: its key claimed (keys.py), then the job
        inserted, or the job that holds the key answered. Not atomic as a whole: a
        failure may leave some stored (a key claimed for a job not stored is stale after
        keys.GRACE). Raises QueueNotFound."""
        renamed = batch_ids(jobs) if len(jobs) > 1 else list(jobs)
        for queue in {job.queue for job in renamed}:
            await self.get_queue(queue)
        by_queue: dict[str, list[JobRecord]] = {}
        for job in renamed:
            if job.key is None:
                by_queue.setdefault(job.queue, []).append(job)
        for queue, batch in by_queue.items():
            await self._insert(queue, batch)
        results: list[tuple[JobRecord, bool]] = []
        for job in renamed:
            if job.key is None:
                results.append((job, True))
                continue
            token, holder = await self._keys.claim(job)
            if holder is not None:
                results.append((holder, False))
                continue
            query = queries.insert(self._table(job.queue), [job], **self._write_options())
            try:
                # (no answer: the job may be stored; the claim stays, stale after GRACE
                # if it was not)
                result = await self._run_on_queue(job.queue, query)
            except QueueNotFound:
                await self._keys.drop(job, token)
                raise
            if result.get("inserted") != 1:
                await self._keys.drop(job, token)
                raise StoreUnavailable(f"RethinkDB did not store job {job.id}: "
                                       f"{first_error(result)}")  # fmt: skip
            results.append((job, True))
        return results

    async def insert_once(self, job: JobRecord) -> bool:
        """Insert the job unless its id is taken (RethinkDB's primary key refuses a second
        insert of an id, whoever makes it at whatever instant). A job with a key claims it
        first (keys.py), and is not inserted while a live job holds it; processes that
        insert one id at once find each other's claim of it, as theirs. Raises
        QueueNotFound."""
        await self.get_queue(job.queue)
        token = None
        if job.key is not None:
            token, holder = await self._keys.claim(job)
            if holder is not None:
                return False
        query = queries.insert(self._table(job.queue), [job], **self._write_options())
        result = await self._run_on_queue(job.queue, query)
        if result.get("inserted") == 1:
            return True
        if "Duplicate primary key" in str(result.get("first_error", "")):
            # (the claim names this id, which a job has: kept, it is right while that
            # job lives, and stale, so taken over, once it ended)
            return False
        await self._keys.drop(job, token)
        raise StoreUnavailable(f"RethinkDB did not store job {job.id}: {first_error(result)}")

    async def reap(self, now: float) -> int:
        """The housekeeping of every queue as of ``now``; how many jobs changed or went.

        Per queue: expire run-out leases (``leases``), promote due delayed jobs
        (``delayed``), act on waiting jobs whose ttl ran out (``ttl``: buried by
        :func:`~tqueues.lifecycle.outlive`, or deleted if still at the revision read, by
        the queue's ``ttl_action``), and delete finished and failed jobs older than the
        queue's retention (``finished``). Reads are index ranges, never scans; each
        change is a compare-and-set, so dispatchers may reap concurrently and each change
        happens once. Changes are recorded; deletions are not. Every queue reaped is
        followed (its changefeed), which tells when anything there comes due
        (:mod:`~tqueues.stores.rethinkdb.reaper`).
        """
        _, catalog, feeds = self._parts()
        # no read of the catalog while its feed is up
        return await self._reaping().reap(await catalog.listed(), now, follow=feeds.follow)

    async def promote_due(self, queue: str, now: float) -> int:
        """Promote the delayed jobs of ``queue`` due by ``now`` (a batch), as the reaper
        does; how many this call promoted."""
        await self.get_queue(queue)
        return await self._reaping().promote_due(queue, now)

    # -- changes -----------------------------------------------------------------------------

    def publish(self, job: JobRecord, before: JobRecord | None = None) -> None:
        """Do nothing: every change, this process's own too, reaches the hub from the feeds."""

    async def watch(self, queue: str) -> None:
        """Make sure the queue's changefeed runs; return once it is open.

        Raises QueueNotFound, or StoreUnavailable when the feed cannot be opened (it keeps
        retrying in the background, with backoff).
        """
        await self.get_queue(queue)
        await self._parts()[2].watch(queue)


__all__ = ["RethinkDBStore"]
