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

A claim may carry writes of its own (:meth:`Claims.claim_along`: the outcomes a worker
reports in the request that takes its next jobs): they go in the group's first claim
write, in the same query (one query of both costs the server less than two: claims and
finishes of 20 jobs, 0.70 against 0.85 ms of its CPU a job), or, when the group writes
no claim (nothing pending, a failure first), in a query without claims once the group is
done.

Two groups of a queue may be in flight at once (CLAIM_PARALLEL); the second leaves out
the candidates the first is claiming, so they never try the same job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import lifecycle
from tqueues.errors import QueueNotFound, StoreUnavailable, TqueuesError
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
#: Claim groups of one queue in flight at once, each with candidates no other one holds
#: (with one group at a time, the server used about one of its two cores in W2 while the
#: next requests waited).
CLAIM_PARALLEL = 2


#: A job's (before, after) for a conditional write.
Pair = tuple[JobRecord, JobRecord]


@dataclasses.dataclass(frozen=True, slots=True)
class Ask:
    """One caller's claim: up to ``count`` jobs for ``worker``, claimed as of ``now``;
    ``along``, the caller's other writes of the queue, written with the claims."""

    count: int
    worker: str | None
    now: float
    along: Sequence[Pair] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """One caller's answer: the jobs it got, else the error that kept it from any (None:
    nothing was pending); what became of its ``along`` writes (None when it had none)."""

    jobs: list[JobRecord]
    error: BaseException | None = None
    along: Written | BaseException | None = None


class Group:
    """The claims of one group of requests of ``queue`` (:meth:`Claims.claim`):
    per request, the jobs claimed so far, the error that stopped it, if any, and what
    became of its ``along`` writes (those not written yet wait in :attr:`unwritten`)."""

    def __init__(self, queue: str, asks: list[Ask]) -> None:
        self.queue = queue
        self.asks = asks
        self.claimed: list[list[JobRecord]] = [[] for _ in asks]
        self.stopped: list[BaseException | None] = [None] * len(asks)
        self.along: list[Written | BaseException | None] = [None] * len(asks)
        self.unwritten: dict[int, Sequence[Pair]] = {
            i: ask.along for i, ask in enumerate(asks) if ask.along
        }

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

    def answer(self, requests: Sequence[Request[Ask, Claimed]]) -> None:
        for i, request in enumerate(requests):
            jobs = self.claimed[i]
            request.answer(Claimed(jobs, None if jobs else self.stopped[i], self.along[i]))


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
        self.coalescer: Coalescer[Ask, Claimed] = Coalescer(
            self._serve, name="rethinkdb claims", parallel=CLAIM_PARALLEL
        )
        self.index_reads = 0  #: index reads of candidates so far
        #: per queue, the candidates of claim writes in flight (no other group tries them)
        self._claiming: dict[str, set[str]] = {}

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
        claimed = await self.coalescer.submit(queue, Ask(count, worker, now))
        if claimed.error is not None:
            raise claimed.error
        return claimed.jobs

    async def claim_along(
        self, queue: str, count: int, worker: str | None, now: float, along: Sequence[Pair]
    ) -> tuple[list[JobRecord] | TqueuesError, Written | BaseException]:
        """:meth:`claim`, with ``along`` (the caller's conditional writes of other jobs of
        ``queue``, distinct, as ``write_many`` takes them) written in the same query as the
        claims (see the module's docstring). Both answers, neither raised: the jobs
        claimed or the error that kept the claim from any; what ``write_many`` answered
        for ``along`` or raised (StoreUnavailable: any of it may have been written)."""
        claimed = await self.coalescer.submit(queue, Ask(count, worker, now, tuple(along)))
        jobs: list[JobRecord] | TqueuesError = claimed.jobs
        if isinstance(claimed.error, TqueuesError):
            jobs = claimed.error
        elif claimed.error is not None:
            raise claimed.error  # a bug, not an answer
        written = claimed.along if claimed.along is not None else Written(frozenset())
        return jobs, written

    async def close(self) -> None:
        """Stop: claims under way and waiting get StoreUnavailable."""
        await self.coalescer.close()

    async def _serve(self, queue: str, requests: list[Request[Ask, Claimed]]) -> None:
        """Claim for a group of requests of ``queue`` (see :meth:`claim`), and answer
        each: its jobs, or the error that kept it from getting any, and its ``along``
        writes' answer."""
        group = Group(queue, [request.item for request in requests])
        await self._claim_for(group)
        if group.unwritten:  # no claim was written: they go in a query of their own
            await self._write_along(group, [])
        group.answer(requests)

    async def _claim_for(self, group: Group) -> None:
        """The claim rounds of ``group``: candidates, then their claim writes, until every
        request has its jobs, none is pending, or an error stopped them."""
        queue = group.queue
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

    async def _candidates(self, queue: str, need: int, spare: int) -> list[JobRecord]:
        """Up to ``need`` + ``spare`` of the most urgent pending jobs of ``queue`` (more
        when a read fills its head), in take order, slim
        (:func:`~tqueues.stores.rethinkdb.head.slim`): from the queue's head when it can
        tell, else from one index read of their slim fields, which fills the head if the
        queue's feed is up. Candidates another group is claiming are left out (the head
        is asked for as many more). Raises QueueNotFound, StoreUnavailable."""
        busy = len(self._claiming.get(queue, ()))
        found = self.heads.candidates(queue, need + busy, spare)
        if found is not None:
            return self._free(queue, found)
        end_fill = self.heads.begin_fill(queue)
        want = need + busy + spare
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
        return self._free(queue, [job for job in read if job.status is JobStatus.PENDING])

    def _free(self, queue: str, candidates: list[JobRecord]) -> list[JobRecord]:
        """``candidates`` less those a claim write in flight tries."""
        busy = self._claiming.get(queue)
        return [job for job in candidates if job.id not in busy] if busy else candidates

    async def _claim_from(self, group: Group, pending: list[JobRecord]) -> None:
        """Hand ``pending`` (candidates just read) out to the group's requests that want
        more, in their order, and claim them in one write; again with the candidates
        left while some were lost to other takers. The candidates a write tries are
        another group's to skip until it is answered."""
        while (pending := self._free(group.queue, pending)) and (active := group.wanting()):
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
            pairs = [p for t in tries.values() for p in t]
            busy = self._claiming.setdefault(group.queue, set())
            ids = {before.id for before, _ in pairs}
            busy.update(ids)
            try:
                won = await self._claim_these(group.queue, pairs, group)
            except (QueueNotFound, StoreUnavailable) as exc:
                group.stop(active, exc)
                return
            finally:
                busy.difference_update(ids)
                if not busy and self._claiming.get(group.queue) is busy:
                    del self._claiming[group.queue]
            for i, pairs in tries.items():
                group.claimed[i] += [won[after.id] for _, after in pairs if after.id in won]
                for before, after in pairs:
                    if after.id in won:
                        self.heads.apply(group.queue, before, won[after.id])
                    else:
                        self.heads.lost(group.queue, before)

    async def _write_along(
        self, group: Group, claims: Sequence[Pair]
    ) -> Written | BaseException | None:
        """Write ``claims`` (see :meth:`_claim_these`; none: no claim write) and the
        group's ``along`` writes not written yet in one query: each request's writes are
        a request of the queue's writes of their own, made in the same turn of the event
        loop, so they go together (:class:`~tqueues.stores.rethinkdb.coalesce.Coalescer`).
        Sets each request's ``along`` answer; the claims' answer or what their write
        raised (None without claims)."""
        unwritten, group.unwritten = group.unwritten, {}
        writes: list[Awaitable[Written]] = [
            self._write_many(group.queue, pairs) for pairs in unwritten.values()
        ]
        if claims:
            writes.insert(0, self._write_many(
                group.queue, claims, status=JobStatus.PENDING, patch=lifecycle.CLAIM_FIELDS
            ))  # fmt: skip
        answers = await asyncio.gather(*writes, return_exceptions=True)
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer  # cancelled: the store is closing
        claimed = answers.pop(0) if claims else None
        for i, answer in zip(unwritten, answers, strict=True):
            group.along[i] = answer
        return claimed

    async def _claim_these(
        self, queue: str, pairs: Sequence[Pair], group: Group
    ) -> dict[str, JobRecord]:
        """Claim each job ``before`` (pending, distinct, as read, slim) as its ``after`` (a
        claim under a lease of its own) in one write of the fields a claim changes, with
        the group's ``along`` writes not written yet (:meth:`_write_along`); the jobs won,
        whole as written, by id (those another taker won meanwhile are left out).

        A write whose answer never came (the server died mid-query, a timeout) may still
        have been applied: the jobs would then sit started under leases nobody holds until
        they expire (``ttr``, a minute by default). So each is undone in the background as
        soon as the server answers (``undo_claim``). Raises StoreUnavailable,
        QueueNotFound.
        """
        written = await self._write_along(group, pairs)
        if isinstance(written, BaseException):
            if isinstance(written, StoreUnavailable) and not isinstance(written, Missing):
                for _, after in pairs:
                    self._undo_claim(after)
            raise written
        assert written is not None
        won = {job_id: doc_to_job(doc) for job_id, doc in written.docs.items()}
        for job in won.values():
            self._remember(job)
        return won


__all__ = [
    "CLAIM_CANDIDATES",
    "CLAIM_PARALLEL",
    "CLAIM_ROUNDS",
    "Ask",
    "Claimed",
    "Claims",
    "Group",
    "Pair",
]
