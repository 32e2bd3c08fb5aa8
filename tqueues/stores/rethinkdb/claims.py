"""Claims on the RethinkDB store: the concurrent claims of a queue served together, their
candidates from the queue's pending head (:mod:`~tqueues.stores.rethinkdb.head`) or one
index read, each job won by a compare-and-set in the queue's group-committed writes.

A candidate is known slim (no arguments, result or extra fields): its claim writes only
the fields a claim changes (a patch, conditional on the revision the candidate was read
at, so the fields left as stored are those of that revision), and the write's answer is
the whole job, handed out. So a claim is one query: no read of the jobs it picked.

The claims that concurrent requests make of one queue are served together
(:class:`~tqueues.stores.rethinkdb.coalesce.Coalescer`: while one group's look-up and
write are under way, the next requests wait and go together next): as many candidates as
they ask for in all, plus 7, in take order (priority, then ready_at), handed out in the
order the requests came, each job under a lease of its own and its request's ``worker``
and ``now``, and claimed in one write, each by its own compare-and-set
(:func:`~tqueues.stores.rethinkdb.queries.conditional_writes`: still pending at the
revision read, written as a patch). When other takers (other dispatchers) won some, the
next candidates are claimed; once every candidate is lost, the group looks again. A queue
where claims lost jobs to other takers lately spreads its picks
(:func:`~tqueues.stores.rethinkdb.head.spread`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import lifecycle
from tqueues.errors import QueueNotFound, StoreUnavailable
from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.rethinkdb import queries
from tqueues.stores.rethinkdb.coalesce import Coalescer, Request
from tqueues.stores.rethinkdb.documents import doc_to_job
from tqueues.stores.rethinkdb.head import SLIM_FIELDS, SPREAD, Heads, spread
from tqueues.stores.rethinkdb.pool import Missing
from tqueues.stores.rethinkdb.writes import Written

log = logging.getLogger("tqueues.stores.rethinkdb")

CLAIM_CANDIDATES = 8  #: pending jobs read per claim round.
CLAIM_ROUNDS = 64  #: claim rounds lost to other takers before giving up (returning None).


@dataclasses.dataclass(frozen=True, slots=True)
class Ask:
    """One caller's claim: up to ``count`` jobs for ``worker``, claimed as of ``now``."""

    count: int
    worker: str | None
    now: float


class Group:
    """The claims of one group of requests of ``queue`` (:meth:`Claims.claim`):
    per request, the jobs claimed so far and the error that stopped it, if any."""

    def __init__(self, queue: str, asks: list[Ask]) -> None:
        self.queue = queue
        self.asks = asks
        self.claimed: list[list[JobRecord]] = [[] for _ in asks]
        self.stopped: list[BaseException | None] = [None] * len(asks)

    def missing(self, i: int) -> int:
        """How many more jobs request ``i`` wants."""
        return self.asks[i].count - len(self.claimed[i])

    def wanting(self) -> list[int]:
        """The requests that want more and were not stopped, in order."""
        return [i for i in range(len(self.asks)) if self.stopped[i] is None and self.missing(i)]

    def stop(self, indices: Sequence[int], exc: BaseException) -> None:
        """Requests ``indices`` get no more (``exc`` stopped them): those with jobs get
        their jobs, the others ``exc``."""
        for i in indices:
            self.stopped[i] = exc
            if self.claimed[i]:
                log.warning("claim on queue %r stopped short: %s", self.queue, exc)

    def answer(self, requests: Sequence[Request[Ask, list[JobRecord]]]) -> None:
        for request, jobs, exc in zip(requests, self.claimed, self.stopped, strict=True):
            if jobs or exc is None:
                request.answer(jobs)
            else:
                request.fail(exc)


class Claims:
    """The claims of one store. ``table(queue)`` is a queue's table; ``run(queue, query)``
    runs a query on it (raising QueueNotFound, StoreUnavailable); ``write_many(queue,
    pairs, status=..., patch=fields)`` writes claims by compare-and-set and answers what it
    wrote (:class:`~tqueues.stores.rethinkdb.writes.Written`);
    ``remember(job)`` keeps a claimed job for its outcome; ``undo_claim(job)`` releases a
    claim that got no answer, in the background; ``new_lease()`` mints a lease token."""

    def __init__(
        self,
        *,
        heads: Heads,
        table: Callable[[str], Any],
        run: Callable[[str, RqlQuery], Awaitable[Any]],
        write_many: Callable[..., Awaitable[Written]],
        remember: Callable[[JobRecord], None],
        undo_claim: Callable[[JobRecord], None],
        new_lease: Callable[[], str],
    ) -> None:
        self.heads = heads
        self._table, self._run, self._write_many = table, run, write_many
        self._remember, self._undo_claim, self._new_lease = remember, undo_claim, new_lease
        self.coalescer: Coalescer[Ask, list[JobRecord]] = Coalescer(
            self._serve, name="rethinkdb claims"
        )
        self.index_reads = 0  #: index reads of candidates so far

    async def claim(
        self, queue: str, count: int, worker: str | None, now: float
    ) -> list[JobRecord]:
        """Up to ``count`` of the most urgent pending jobs of ``queue``, claimed for
        ``worker`` as of ``now`` (see the module's docstring); fewer (or none) when fewer
        are pending. A claim write that gets no answer (a connection lost, a timeout) may
        still have been applied: each job it tried is undone in the background,
        conditional on the lease minted for it. The jobs earlier writes won are returned,
        not dropped, since they are started under leases only this call knows. Raises
        QueueNotFound, or StoreUnavailable, only when nothing was claimed."""
        return await self.coalescer.submit(queue, Ask(count, worker, now))

    async def close(self) -> None:
        """Stop: claims under way and waiting get StoreUnavailable."""
        await self.coalescer.close()

    async def _serve(self, queue: str, requests: list[Request[Ask, list[JobRecord]]]) -> None:
        """Claim for a group of requests of ``queue`` (see :meth:`claim`), and answer
        each: its jobs, or the error that kept it from getting any."""
        group = Group(queue, [request.item for request in requests])
        for attempt in range(CLAIM_ROUNDS):
            active = group.wanting()
            if not active:
                break
            need = sum(group.missing(i) for i in active)
            contended = attempt > 0 or self.heads.contended(queue)
            spare = need * (SPREAD - 1) if contended else CLAIM_CANDIDATES - 1
            try:
                pending = await self._candidates(queue, need, spare)
                if pending and contended:  # other processes take from it: mostly not these
                    pending = spread(pending, need)
            except (QueueNotFound, StoreUnavailable) as exc:
                group.stop(active, exc)
                break
            if not pending:
                break
            await self._claim_from(group, pending)
        else:
            if group.wanting():
                log.warning("claim on queue %r lost %d rounds to other takers", queue, CLAIM_ROUNDS)
        group.answer(requests)

    async def _candidates(self, queue: str, need: int, spare: int) -> list[JobRecord]:
        """Up to ``need`` + ``spare`` of the most urgent pending jobs of ``queue`` (more
        when a read fills its head), in take order, slim
        (:func:`~tqueues.stores.rethinkdb.head.slim`): from the queue's head when it can
        tell, else from one index read of their slim fields, which fills the head if the
        queue's feed is up. Raises QueueNotFound, StoreUnavailable."""
        found = self.heads.candidates(queue, need, spare)
        if found is not None:
            return found
        end_fill = self.heads.begin_fill(queue)
        want = need + spare
        limit = max(want, self.heads.size) if end_fill is not None else want
        self.index_reads += 1
        read: list[JobRecord] | None = None
        try:
            docs = await self._run(
                queue, queries.claim_candidates(self._table(queue), limit, SLIM_FIELDS)
            )
            read = [doc_to_job(doc) for doc in docs]
        finally:
            if end_fill is not None:
                end_fill(read, limit)
        return [job for job in read if job.status is JobStatus.PENDING]

    async def _claim_from(self, group: Group, pending: list[JobRecord]) -> None:
        """Hand ``pending`` (candidates just read) out to the group's requests that want
        more, in their order, and claim them in one write; again with the candidates
        left while some were lost to other takers."""
        while pending and (active := group.wanting()):
            tries: dict[int, list[tuple[JobRecord, JobRecord]]] = {}
            for i in active:
                ask = group.asks[i]
                take = pending[: group.missing(i)]
                del pending[: len(take)]
                tries[i] = [
                    (before, lifecycle.claim(
                        before, lease=self._new_lease(), worker=ask.worker, now=ask.now
                    ).succeeding(before))
                    for before in take
                ]  # fmt: skip
            try:
                won = await self._claim_these(group.queue, [p for t in tries.values() for p in t])
            except (QueueNotFound, StoreUnavailable) as exc:
                group.stop(active, exc)
                return
            for i, pairs in tries.items():
                group.claimed[i] += [won[after.id] for _, after in pairs if after.id in won]
                for before, after in pairs:
                    if after.id in won:
                        self.heads.apply(group.queue, before, won[after.id])
                    else:
                        self.heads.lost(group.queue, before)

    async def _claim_these(
        self, queue: str, pairs: Sequence[tuple[JobRecord, JobRecord]]
    ) -> dict[str, JobRecord]:
        """Claim each job ``before`` (pending, distinct, as read, slim) as its ``after`` (a
        claim under a lease of its own) in one write of the fields a claim changes; the
        jobs won, whole as written, by id (those another taker won meanwhile are left
        out).

        A write whose answer never came (the server died mid-query, a timeout) may still
        have been applied: the jobs would then sit started under leases nobody holds until
        they expire (``ttr``, a minute by default). So each is undone in the background as
        soon as the server answers (``undo_claim``). Raises StoreUnavailable,
        QueueNotFound.
        """
        try:
            written = await self._write_many(
                queue, pairs, status=JobStatus.PENDING, patch=lifecycle.CLAIM_FIELDS
            )
        except StoreUnavailable as exc:
            if not isinstance(exc, Missing):
                for _, after in pairs:
                    self._undo_claim(after)
            raise
        won = {job_id: doc_to_job(doc) for job_id, doc in written.docs.items()}
        for job in won.values():
            self._remember(job)
        return won


__all__ = ["CLAIM_CANDIDATES", "CLAIM_ROUNDS", "Ask", "Claims", "Group"]
