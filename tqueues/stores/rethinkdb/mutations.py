"""Changes of jobs on RethinkDB: each one conditional write of one document, many to a
query.

RethinkDB has no multi-document transactions, so every change of a job is a
compare-and-set: the new document is computed in Python by :mod:`tqueues.lifecycle` (so
"now" and lease tokens are literals and no write needs ``non_atomic``), and written only
if the stored ``rev`` is still the one read. A change that loses a race re-reads the job
and tries again. Concurrent changes of one queue share their queries
(:class:`~tqueues.stores.rethinkdb.writes.QueueWrites`); a started job this process wrote
last is changed as it was written, without a read
(:class:`~tqueues.stores.rethinkdb.started.StartedJobs`); the keys of unique jobs are
kept in step (:mod:`~tqueues.stores.rethinkdb.keys`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tqueues.errors import JobNotFound, QueueNotFound, StoreUnavailable, TqueuesError
from tqueues.ids import storable
from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.base import Mutation, key_taken
from tqueues.stores.primitives import MutatedAndClaimed
from tqueues.stores.rethinkdb import keys, queries
from tqueues.stores.rethinkdb.claims import Claims
from tqueues.stores.rethinkdb.documents import doc_to_job, escape_key
from tqueues.stores.rethinkdb.pool import first_error
from tqueues.stores.rethinkdb.started import StartedJobs
from tqueues.stores.rethinkdb.writes import QueueWrites, Written

log = logging.getLogger("tqueues.stores.rethinkdb")

MUTATE_ATTEMPTS = 64  #: compare-and-set conflicts a mutation retries before giving up.


class Mutations:
    """The changes of one store's jobs.

    ``table(queue)`` is a queue's table, ``run_on_queue(queue, query)`` runs a query on it
    (raises QueueNotFound, StoreUnavailable), ``get_queue(queue)`` raises QueueNotFound
    unless the queue exists, ``get(queue, job_id)`` reads a job (raises QueueNotFound,
    JobNotFound), ``coalescers()`` are the store's group commits (raises
    StoreUnavailable while it is closed); ``started`` the jobs it keeps, ``keys`` the
    unique jobs' keys; each write with ``durability``.
    """

    def __init__(
        self,
        *,
        table: Callable[[str], Any],
        run_on_queue: Callable[..., Awaitable[Any]],
        get_queue: Callable[[str], Awaitable[object]],
        get: Callable[[str, str], Awaitable[JobRecord]],
        coalescers: Callable[[], tuple[QueueWrites, Claims]],
        started: StartedJobs,
        keys: keys.Keys,
        durability: str,
    ) -> None:
        self._table, self._run_on_queue = table, run_on_queue
        self._get_queue, self._get = get_queue, get
        self._coalescers, self._started, self._keys = coalescers, started, keys
        self._options = {"durability": durability}

    async def change(self, queue: str, before: JobRecord, after: JobRecord) -> bool:
        """:meth:`compare_and_set` with the job's key kept in step (unique jobs): a change
        that makes the job live again claims its key first (raises KeyTaken, nothing
        written, when another live job holds it), one that ends it releases its key once
        written. Jobs without a key (and changes that keep a job live, or ended) are the
        one conditional write."""
        if after.key is None or before.holds_key() == after.holds_key():
            return await self.compare_and_set(queue, before, after)
        if not after.holds_key():
            if not await self.compare_and_set(queue, before, after):
                return False
            await self._keys.release(after, after.rev)
            return True
        token, holder = await self._keys.claim(before)
        if holder is not None:
            raise key_taken(after, holder)
        # (a write that got no answer may have been applied: its claim stays; if it was
        # not, the claim is stale after keys.GRACE)
        written = await self.compare_and_set(queue, before, after)
        if not written:
            await self._keys.drop(before, token)
        return written

    async def compare_and_set(
        self, queue: str, before: JobRecord, after: JobRecord, *, status: JobStatus | None = None
    ) -> bool:
        """Write ``after`` if the job is still at ``before.rev`` (and ``status``); False if
        it changed or vanished in between. The write goes in the queue's next query, with
        the other requests' writes (:class:`QueueWrites`). Raises StoreUnavailable (also
        when the server refused to write the document), QueueNotFound."""
        writes, _ = self._coalescers()
        if escape_key(before.id) is not None:  # a key no batch's plan can hold: alone
            query = queries.compare_and_set(
                self._table(queue), before, after, status=status, **self._options
            )
            result = await self._run_on_queue(queue, query)
            if result.get("errors"):
                raise StoreUnavailable(f"RethinkDB did not write job {before.id}: "
                                       f"{first_error(result)}")  # fmt: skip
            return bool(result.get("replaced") == 1)
        written = await writes.write(queue, [(before, after, status)])
        if before.id in written.ids:
            return True
        if written.errors and written.shared:
            # The server refused some document of the query: this one, or another
            # request's? Alone, the answer is this write's own.
            written = await writes.write(queue, [(before, after, status)], alone=True)
            if before.id in written.ids:
                return True
        if written.errors:
            raise StoreUnavailable(
                f"RethinkDB did not write job {before.id}: {written.first_error}"
            )
        return False

    async def write_many(
        self,
        queue: str,
        pairs: Sequence[tuple[JobRecord, JobRecord]],
        *,
        status: JobStatus | None = None,
        patch: tuple[str, ...] = (),
    ) -> Written:
        """Write each ``after`` where its job is still at ``before.rev`` (and ``status``),
        in the queue's next query (:class:`QueueWrites`; with ``patch``, only those fields
        of ``after``, and the documents written are answered); what was written. A
        document the server refused to write (``errors``) is logged and counts as not
        written. Raises StoreUnavailable (the write as a whole failed: any part of it may
        have been applied), QueueNotFound."""
        if not pairs:
            return Written(frozenset())
        writes, _ = self._coalescers()
        written: Written = await writes.write(
            queue, [(before, after, status) for before, after in pairs], patch=patch
        )
        if written.errors and len(written.ids) < len(pairs):
            log.warning(
                "RethinkDB did not write %d job(s) of queue %r: %s",
                written.errors,
                queue,
                written.first_error,
            )
        return written

    async def _plan_many(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        results: list[tuple[JobRecord, JobRecord] | TqueuesError | None],
    ) -> tuple[dict[int, tuple[JobRecord, JobRecord]], list[int]]:
        """The batch of :meth:`mutate_many`: (before, after) by position, from the jobs
        this process keeps or else from one ``get_all`` of the others; and the positions
        left to :meth:`mutate` on its own. Sets the errors of ``results`` the read already
        answers (JobNotFound, what a change raised). Raises QueueNotFound,
        StoreUnavailable."""
        planned: dict[int, tuple[JobRecord, JobRecord]] = {}
        unread: list[int] = []
        alone: list[int] = []
        seen: set[str] = set()
        for index, (job_id, change) in enumerate(changes):
            if job_id in seen or not storable(job_id) or escape_key(job_id) is not None:
                alone.append(index)
                continue
            seen.add(job_id)
            hinted = self._started.changed(queue, job_id, change)
            if hinted is None:
                unread.append(index)
            else:
                planned[index] = hinted
        if not unread:
            return planned, alone
        ids = [changes[index][0] for index in unread]
        docs = await self._run_on_queue(queue, queries.get_many(self._table(queue), ids))
        found = {doc["id"]: doc_to_job(doc) for doc in docs}
        for index in unread:
            job_id, change = changes[index]
            before = found.get(job_id)
            if before is None:
                results[index] = JobNotFound.in_queue(queue, job_id)
                continue
            try:
                planned[index] = (before, change(before).succeeding(before))
            except TqueuesError as exc:
                results[index] = exc
        return planned, alone

    async def mutate(
        self, queue: str, job_id: str, change: Mutation
    ) -> tuple[JobRecord, JobRecord]:
        """Apply ``change`` to the job and write it if ``rev`` did not move; retry if it did.

        A started job this process wrote last (it claimed it, say) is changed as it was
        written, without a read: one conditional write. Otherwise, or when that write finds
        the job moved on (or ``change`` refuses the kept job), the job is read, the change
        applied to it and written by compare-and-set.

        Raises QueueNotFound, JobNotFound, whatever ``change`` raises, or StoreUnavailable
        after 64 conflicts in a row.
        """
        if storable(job_id):
            hinted = self._started.changed(queue, job_id, change)
            if hinted is not None:
                before, after = hinted
                self._started.forget(queue, job_id)
                if await self.change(queue, before, after):
                    self._started.remember(after)
                    return before, after
        for _ in range(MUTATE_ATTEMPTS):
            before = await self._get(queue, job_id)
            after = change(before).succeeding(before)
            if await self.change(queue, before, after):
                self._started.remember(after)
                return before, after
        raise StoreUnavailable(f"job {job_id} kept changing under {MUTATE_ATTEMPTS} writes")

    async def mutate_many(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
        """Apply each ``(job id, change)`` as :meth:`mutate` does, batched: the jobs this
        process does not keep (see :meth:`mutate`) are read in one ``get_all``, and every
        change is written in one conditional write (:func:`queries.conditional_writes`);
        only a change whose job moved on in between goes through :meth:`mutate` on its own
        (as do ids no batch can name, and a second change of one job in the batch, after
        the first). Per item (before, after) or the TqueuesError it alone got.

        Raises QueueNotFound, or StoreUnavailable when the read or the write as a whole
        failed (the write may then have been applied in part).
        """
        await self._get_queue(queue)
        return await self._mutate_many(queue, changes, lambda pairs: self.write_many(queue, pairs))

    async def mutate_and_claim(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        count: int,
        *,
        worker: str | None,
        now: float,
    ) -> MutatedAndClaimed:
        """:meth:`mutate_many` and :meth:`claim_many` in one write query: the changes'
        conditional writes go in the claims' query
        (:meth:`~tqueues.stores.rethinkdb.claims.Claims.claim_along`). A change whose job
        moved on in between is retried on its own, as in :meth:`mutate_many`. When the
        changes' read fails, nothing is claimed."""
        _, claims = self._coalescers()
        claimed: list[JobRecord] | TqueuesError = []

        async def write(pairs: Sequence[tuple[JobRecord, JobRecord]]) -> Written:
            nonlocal claimed
            claimed, written = await claims.claim_along(queue, count, worker, now, pairs)
            if isinstance(written, BaseException):
                raise written
            return written

        try:
            await self._get_queue(queue)
            return await self._mutate_many(queue, changes, write), claimed
        except (QueueNotFound, StoreUnavailable) as exc:
            return exc, claimed

    async def _mutate_many(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        write: Callable[[Sequence[tuple[JobRecord, JobRecord]]], Awaitable[Written]],
    ) -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
        """:meth:`mutate_many`, its one conditional write made by ``write`` (called once,
        with no pairs when every change failed or goes on its own)."""
        results: list[tuple[JobRecord, JobRecord] | TqueuesError | None] = [None] * len(changes)
        planned, alone = await self._plan_many(queue, changes, results)
        for index, (before, after) in list(planned.items()):
            if after.holds_key() and not before.holds_key():  # claims its key first
                del planned[index]
                alone.append(index)
        for before, _ in planned.values():
            self._started.forget(queue, before.id)
        written = (await write(list(planned.values()))).ids
        await asyncio.gather(*(
            self._keys.release(after, after.rev) for before, after in planned.values()
            if after.id in written and before.holds_key() and not after.holds_key()
        ))  # fmt: skip
        again: list[int] = []
        for index, (before, after) in planned.items():
            if after.id in written:
                results[index] = (before, after)
                self._started.remember(after)
            else:
                again.append(index)
        retried = await asyncio.gather(
            *(self.mutate(queue, *changes[index]) for index in again), return_exceptions=True
        )
        for index, outcome in zip(again, retried, strict=True):
            results[index] = _outcome(outcome)
        for index in alone:
            try:
                results[index] = await self.mutate(queue, *changes[index])
            except TqueuesError as exc:
                results[index] = exc
        return [result for result in results if result is not None]


def _outcome(
    outcome: tuple[JobRecord, JobRecord] | BaseException,
) -> tuple[JobRecord, JobRecord] | TqueuesError:
    """A gathered :meth:`Mutations.mutate`'s result or its TqueuesError; anything
    else it raised is raised."""
    if isinstance(outcome, TqueuesError) or isinstance(outcome, tuple):
        return outcome
    raise outcome


__all__ = ["MUTATE_ATTEMPTS", "Mutations"]
