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
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import clock, lifecycle
from tqueues.errors import (
    InvalidTransition,
    JobNotFound,
    LeaseMismatch,
    QueueNotFound,
    StoreUnavailable,
)
from tqueues.ids import storable
from tqueues.jobs import Job, JobStatus, QueueConfig
from tqueues.retry import RetryPolicy
from tqueues.settings import RethinkDBSettings
from tqueues.stores.base import Mutation, Page, Store
from tqueues.stores.rethinkdb import queries
from tqueues.stores.rethinkdb.documents import batch_ids, doc_to_job, format_cursor, r
from tqueues.stores.rethinkdb.feeds import Feeds
from tqueues.stores.rethinkdb.pool import Backoff, KeyRefused, Missing, Pool, first_error
from tqueues.stores.rethinkdb.queues import ADMIN_TIMEOUT, Catalog

log = logging.getLogger("tqueues.stores.rethinkdb")

CLAIM_CANDIDATES = 8  #: pending jobs read per claim round.
CLAIM_ROUNDS = 64  #: claim rounds lost to other takers before giving up (returning None).
MUTATE_ATTEMPTS = 64  #: compare-and-set conflicts a mutation retries before giving up.
REAP_BATCH = 256  #: jobs the reaper reads per queue, index and status in one round.
PURGE_BATCHES = 4  #: retention deletes of REAP_BATCH jobs per queue and status per round.
#: documents the first read of a listing page cut by bytes asks for; each further read of
#: the page asks for LIST_READ_GROWTH times more.
LIST_FIRST_READ, LIST_READ_GROWTH = 32, 8
Step = Callable[..., Job]


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
        self._db = r.db(settings.db)
        self._pool: Pool | None = None
        self._catalog: Catalog | None = None
        self._feeds: Feeds | None = None
        self._undoing: set[asyncio.Task[None]] = set()  #: claims that got no answer

    # -- plumbing ----------------------------------------------------------------------------

    def _table(self, queue: str) -> Any:
        return self._db.table(queue)

    def _parts(self) -> tuple[Pool, Catalog, Feeds]:
        if self._pool is None or self._catalog is None or self._feeds is None:
            raise StoreUnavailable("the RethinkDB store is not open")
        return self._pool, self._catalog, self._feeds

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
            raise _job_not_found(queue, job_id)
        try:
            return await self._run_on_queue(queue, query)
        except KeyRefused as exc:
            raise _job_not_found(queue, job_id) from exc

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
        self._feeds = Feeds(
            pool=pool,
            hub=self.hub,
            table=self._table,
            run_on_queue=self._run_on_queue,
            timeout=self.settings.timeout,
        )
        try:
            for _ in range(self.settings.pool_size):
                await pool.get()
            await self._catalog.open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop the changefeeds and close every connection; idempotent."""
        feeds, self._feeds, self._catalog = self._feeds, None, None
        for undo in tuple(self._undoing):
            undo.cancel()  # the lease expires as usual
        if feeds is not None:
            await feeds.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def drop_database(self) -> None:
        """Delete the whole database ``settings.db`` (tests clean up with this); idempotent."""
        _, catalog, feeds = self._parts()
        await feeds.close()
        self._feeds = Feeds(
            pool=feeds.pool,
            hub=self.hub,
            table=self._table,
            run_on_queue=self._run_on_queue,
            timeout=self.settings.timeout,
        )
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

    async def drop_queue(self, name: str) -> int:
        """Drop the queue's table and its settings; the jobs it held (counted just before).

        Retrying after a failure half-way is safe: a table already gone counts 0.
        Raises QueueNotFound.
        """
        _, catalog, feeds = self._parts()
        await catalog.get(name)
        feeds.stop(name)
        try:
            count = int(await self._run(self._table(name).count()))
        except Missing:
            count = 0
        with contextlib.suppress(Missing):
            await catalog.admin(self._db.table_drop(name))
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
        return int(result.get("deleted", 0))

    async def count_jobs(self, queue: str) -> dict[JobStatus, int]:
        """Jobs per status present, by a ``group`` on the ``status`` index.

        Raises QueueNotFound.
        """
        await self.get_queue(queue)
        counts = await self._run_on_queue(queue, queries.count_by_status(self._table(queue)))
        return {JobStatus(status): int(n) for status, n in dict(counts or {}).items()}

    # -- jobs --------------------------------------------------------------------------------

    async def insert(self, job: Job) -> Job:
        """Insert the job with ``settings.durability``. Raises QueueNotFound."""
        return (await self._insert(job.queue, [job]))[0]

    async def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Insert each queue's jobs with one write; the jobs get ids in batch order (see
        :func:`batch_ids`). Not atomic: a failure may leave some stored. Raises
        QueueNotFound."""
        renamed = batch_ids(jobs)
        by_queue: dict[str, list[Job]] = {}
        for job in renamed:
            by_queue.setdefault(job.queue, []).append(job)
        for queue in by_queue:
            await self.get_queue(queue)
        for queue, batch in by_queue.items():
            await self._insert(queue, batch)
        return renamed

    async def _insert(self, queue: str, jobs: list[Job]) -> list[Job]:
        await self.get_queue(queue)
        query = queries.insert(self._table(queue), jobs, **self._write_options())
        result = await self._run_on_queue(queue, query)
        if result.get("inserted") != len(jobs):
            raise StoreUnavailable(
                f"RethinkDB did not store {len(jobs)} job(s): {first_error(result)}"
            )
        return jobs

    async def _compare_and_set(
        self, queue: str, before: Job, after: Job, *, status: JobStatus | None = None
    ) -> bool:
        """Write ``after`` if the job is still at ``before.rev`` (and ``status``); False if
        it changed or vanished in between."""
        query = queries.compare_and_set(
            self._table(queue), before, after, status=status, **self._write_options()
        )
        result = await self._run_on_queue(queue, query)
        if result.get("errors"):
            raise StoreUnavailable(
                f"RethinkDB did not write job {before.id}: {first_error(result)}"
            )
        return bool(result.get("replaced") == 1)

    async def claim_many(
        self, queue: str, count: int, *, worker: str | None, now: float
    ) -> list[Job]:
        """Take up to ``count`` of the most urgent pending jobs, each by compare-and-set.

        Reads ``count`` + 7 candidates through the ``pending`` index (priority, then
        ready_at) and tries the first ``count`` of them at once; when other takers won some,
        tries the next candidates, and after losing every candidate of a read, reads again
        (in a shuffled order, to spread contention). Fewer jobs (or none) when fewer are
        pending.

        The compare-and-sets of one round run at once (on the pool's connections); when
        some of them fail (a connection lost, a timeout) the jobs the others won are
        returned, not dropped, since they are started under leases only this call knows.
        Raises QueueNotFound, or StoreUnavailable, only when nothing was claimed.
        """
        await self.get_queue(queue)
        claimed: list[Job] = []
        for attempt in range(CLAIM_ROUNDS):
            need = count - len(claimed)
            candidates = queries.claim_candidates(self._table(queue), need + CLAIM_CANDIDATES - 1)
            docs = await self._run_on_queue(queue, candidates)
            pending = [job for job in map(doc_to_job, docs) if job.status is JobStatus.PENDING]
            if not pending:
                return claimed
            if attempt:
                random.shuffle(pending)
            while pending and len(claimed) < count:
                tries = pending[: count - len(claimed)]
                del pending[: len(tries)]
                outcomes = await asyncio.gather(
                    *(self._claim_one(queue, job, worker, now) for job in tries),
                    return_exceptions=True,
                )
                claimed += [job for job in outcomes if isinstance(job, Job)]
                failed = [exc for exc in outcomes if isinstance(exc, BaseException)]
                if failed:
                    if not claimed:
                        raise failed[0]
                    log.warning("claim on queue %r stopped short: %s", queue, failed[0])
                    return claimed
            if len(claimed) == count:
                return claimed
        log.warning("claim on queue %r lost %d rounds to other takers", queue, CLAIM_ROUNDS)
        return claimed

    async def _claim_one(
        self, queue: str, before: Job, worker: str | None, now: float
    ) -> Job | None:
        """``before`` claimed by compare-and-set, or None when another taker won it.

        A claim whose answer never came (the server died mid-query, a timeout) may still
        have been applied: the job would then sit started under a lease nobody holds until
        it expires (``ttr``, a minute by default). So it is undone in the background as
        soon as the server answers (:meth:`_undo_claim`). Raises StoreUnavailable.
        """
        after = lifecycle.claim(before, lease=self.new_lease(), worker=worker, now=now).succeeding(
            before
        )
        try:
            won = await self._compare_and_set(queue, before, after, status=JobStatus.PENDING)
        except StoreUnavailable:
            self._undo_claim(after)
            raise
        return after if won else None

    def _undo_claim(self, claimed: Job) -> None:
        """Release ``claimed`` (a claim nobody received) in the background, retrying with
        backoff while the server is unavailable, until its lease would have expired anyway.

        The release is conditional on the claim's own lease, which only this process
        knows: if the claim was not applied, or the job moved on, it changes nothing
        (LeaseMismatch, InvalidTransition or JobNotFound end the undo quietly).
        """
        task = asyncio.ensure_future(self._undo_claim_until_answered(claimed))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    async def _undo_claim_until_answered(self, claimed: Job) -> None:
        loop = asyncio.get_running_loop()
        expires = claimed.lease_expires if claimed.lease_expires is not None else clock.now()
        give_up = loop.time() + max(0.0, expires - clock.now())
        backoff = Backoff(base=0.1, cap=2.0)
        while True:
            try:
                await self.release(claimed.queue, claimed.id, lease=claimed.lease)
            except (LeaseMismatch, InvalidTransition, JobNotFound, QueueNotFound):
                return  # the claim was not applied, or the job is someone else's now
            except StoreUnavailable as exc:
                delay = backoff.next()
                if loop.time() + delay > give_up:
                    log.warning(
                        "job %s of queue %r may be claimed by a take that got no answer; "
                        "its lease expires: %s",
                        claimed.id,
                        claimed.queue,
                        exc.message,
                    )
                    return
                await asyncio.sleep(delay)
                continue
            log.info(
                "job %s of queue %r: a claim that got no answer was applied; released it",
                claimed.id,
                claimed.queue,
            )
            return

    async def get(self, queue: str, job_id: str) -> Job:
        """The job. Raises QueueNotFound, JobNotFound (also for an id no job can have,
        which the server would refuse as a key: see :func:`tqueues.ids.storable`)."""
        await self.get_queue(queue)
        doc = await self._run_on_job(queue, job_id, self._table(queue).get(job_id))
        if doc is None:
            raise _job_not_found(queue, job_id)
        return doc_to_job(doc)

    async def mutate(self, queue: str, job_id: str, change: Mutation) -> tuple[Job, Job]:
        """Read the job, apply ``change``, write it if ``rev`` did not move; retry if it did.

        Raises QueueNotFound, JobNotFound, whatever ``change`` raises, or StoreUnavailable
        after 64 conflicts in a row.
        """
        for _ in range(MUTATE_ATTEMPTS):
            before = await self.get(queue, job_id)
            after = change(before).succeeding(before)
            if await self._compare_and_set(queue, before, after):
                return before, after
        raise StoreUnavailable(f"job {job_id} kept changing under {MUTATE_ATTEMPTS} writes")

    async def list_jobs(
        self,
        queue: str,
        *,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> Page:
        """The queue's jobs (all, through ``created``; one status, through
        ``status_created``) in creation order. The cursor is ``CREATED_AT:ID`` of the last
        job of the previous page; an unreadable one starts over. ``max_bytes`` is counted
        in characters of the documents' JSON, on the server (:meth:`_list_within`).
        Raises QueueNotFound."""
        await self.get_queue(queue)
        if max_bytes is not None:
            return await self._list_within(queue, status, cursor, limit, max_bytes)
        docs = await self._run_on_queue(queue, self._list_query(queue, cursor, limit, status))
        jobs = [doc_to_job(doc) for doc in docs]
        next_cursor = format_cursor(jobs[-1]) if jobs and len(jobs) == limit else None
        return Page(jobs, next_cursor)

    async def _list_within(
        self, queue: str, status: JobStatus | None, cursor: str | None, limit: int, max_bytes: int
    ) -> Page:
        """A page of at most ``limit`` jobs cut once they reach ``max_bytes``, read
        LIST_FIRST_READ documents first, then LIST_READ_GROWTH times more at each read, each
        read cut on the server (:func:`queries.within_bytes`): only the page comes back, and
        the server reads past it no more documents than the read that cut it asked for
        (a single read of ``limit`` documents would read all of them for a page of five
        large jobs). Raises QueueNotFound."""
        jobs: list[Job] = []
        used, read = 0, LIST_FIRST_READ
        while True:
            # Once the page is full, one more document tells whether more follow.
            want = 1 if used >= max_bytes else min(read, limit - len(jobs))
            query = queries.page(self._table(queue), cursor, want, status, max_bytes, used)
            *docs, used = await self._run_on_queue(queue, query)
            found = [doc_to_job(doc) for doc in docs if doc is not None]
            jobs += found
            if found:
                cursor = format_cursor(found[-1])
            if len(found) < len(docs):  # cut by bytes, and more follow
                return Page(jobs, cursor)
            if len(docs) < want:  # the end of the queue
                return Page(jobs, None)
            if len(jobs) == limit:
                return Page(jobs, cursor)
            read *= LIST_READ_GROWTH

    def _list_query(
        self, queue: str, cursor: str | None, limit: int, status: JobStatus | None = None
    ) -> Any:
        """The query for one page of :meth:`list_jobs` (no I/O)."""
        return queries.page(self._table(queue), cursor, limit, status)

    async def peek(self, queue: str, status: JobStatus) -> Job | None:
        """The next job of ``status`` (see :func:`queries.peek`), or None.

        Raises QueueNotFound.
        """
        await self.get_queue(queue)
        docs = await self._run_on_queue(queue, queries.peek(self._table(queue), status))
        return doc_to_job(docs[0]) if docs else None

    async def remove(self, queue: str, job_id: str) -> Job:
        """Delete the job (one atomic single-document delete); the job as it was.

        Raises QueueNotFound, JobNotFound (also for an id no job can have).
        """
        await self.get_queue(queue)
        query = queries.remove(self._table(queue), job_id, **self._write_options())
        result = await self._run_on_job(queue, job_id, query)
        changes = result.get("changes") or []
        if not result.get("deleted") or not changes or not changes[0].get("old_val"):
            raise _job_not_found(queue, job_id)
        return doc_to_job(changes[0]["old_val"])

    # -- housekeeping ------------------------------------------------------------------------

    async def reap(self, now: float) -> int:
        """The housekeeping of every queue as of ``now``; how many jobs changed or went.

        Per queue: expire run-out leases (``leases``), promote due delayed jobs
        (``delayed``), act on waiting jobs whose ttl ran out (``ttl``: buried by
        :func:`~tqueues.lifecycle.outlive`, or deleted if still at the revision read, by
        the queue's ``ttl_action``), and delete finished and failed jobs older than the
        queue's retention (``finished``). Reads are index ranges, never scans; each
        change is a compare-and-set, so dispatchers may reap concurrently and each change
        happens once. Changes are recorded; deletions are not.
        """
        count = 0
        for config in await self.list_queues():
            try:
                count += await self._reap_queue(config, now)
            except QueueNotFound:
                continue
        return count

    async def _reap_queue(self, config: QueueConfig, now: float) -> int:
        queue, table = config.name, self._table(config.name)
        count = 0
        steps: tuple[tuple[str, JobStatus, Step], ...] = (
            ("leases", JobStatus.STARTED, lifecycle.expire),
            ("delayed", JobStatus.DELAYED, lifecycle.promote),
            ("ttl", JobStatus.PENDING, lifecycle.outlive),
            ("ttl", JobStatus.DELAYED, lifecycle.outlive),
        )
        for index, status, step in steps:
            query = queries.due(table, index, status, now, REAP_BATCH).coerce_to("array")
            docs = await self._run_on_queue(queue, query)
            delete = step is lifecycle.outlive and config.ttl_action == "delete"
            results = await asyncio.gather(
                *(self._reap_one(queue, doc, step, now, delete=delete) for doc in docs)
            )
            count += sum(results)
        cutoff = now - config.retention
        for status in (JobStatus.FINISHED, JobStatus.FAILED):
            for _ in range(PURGE_BATCHES):
                purge = queries.due(table, "finished", status, cutoff, REAP_BATCH).delete(
                    **self._write_options()
                )
                result = await self._run_on_queue(queue, purge)
                count += int(result.get("deleted", 0))
                if int(result.get("deleted", 0)) + int(result.get("skipped", 0)) < REAP_BATCH:
                    break
        return count

    async def _reap_one(
        self, queue: str, doc: Mapping[str, Any], step: Step, now: float, *, delete: bool
    ) -> int:
        """Apply one reaper step to a job read through an index: 1 if this call changed
        (or deleted) it, 0 if it no longer qualifies or another writer got there first."""
        before = doc_to_job(doc)
        try:
            after = step(before, now=now).succeeding(before)
        except InvalidTransition:
            return 0
        if delete:
            query = queries.delete_if_unchanged(self._table(queue), before, **self._write_options())
            result = await self._run_on_queue(queue, query)
            return int(result.get("deleted", 0) == 1)
        if not await self._compare_and_set(queue, before, after):
            return 0
        self.record(after, before)
        return 1

    # -- changes -----------------------------------------------------------------------------

    def publish(self, job: Job, before: Job | None = None) -> None:
        """Do nothing: every change, this process's own too, reaches the hub from the feeds."""

    async def watch(self, queue: str) -> None:
        """Make sure the queue's changefeed runs; return once it is open.

        Raises QueueNotFound, or StoreUnavailable when the feed cannot be opened (it keeps
        retrying in the background, with backoff).
        """
        await self.get_queue(queue)
        await self._parts()[2].watch(queue)


def _job_not_found(queue: str, job_id: str) -> JobNotFound:
    return JobNotFound(f"job {job_id!r} does not exist in queue {queue!r}", id=job_id)


__all__ = ["RethinkDBStore"]
