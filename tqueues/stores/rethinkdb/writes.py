"""A queue's conditional writes, group-committed: the compare-and-set writes that
concurrent requests of one process make to one queue's jobs (claims, finishes, fails,
releases, the reaper's steps) go to the server many to a query
(:class:`~tqueues.stores.rethinkdb.coalesce.Coalescer`, up to PARALLEL queries in flight
per queue, no job in two of them), each document still written only if it is at the
revision (and status) its request read
(:func:`~tqueues.stores.rethinkdb.queries.conditional_writes`). Each request learns which
of its own jobs were written.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.stores.rethinkdb.coalesce import Coalescer, Request
from tqueues.stores.rethinkdb.pool import first_error
from tqueues.stores.rethinkdb.queries import Write, conditional_writes

log = logging.getLogger("tqueues.stores.rethinkdb")

MAX_WRITE = 512  #: documents one query writes at most (more wait for the next one).
#: Queries of one queue's writes in flight at once: the server overlaps their disk syncs
#: (see :mod:`~tqueues.stores.rethinkdb.coalesce`); a job is in one of them at most.
PARALLEL = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """One request's writes; ``alone``: in a query of its own (nothing else in it);
    ``patch``, if any: the only fields each write sets (see
    :func:`~tqueues.stores.rethinkdb.queries.conditional_writes`)."""

    writes: Sequence[Write]
    alone: bool = False
    patch: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Written:
    """What became of one request's writes: ``ids``, its jobs that were written; the
    query's ``errors`` (documents the server refused to write, any request's) and
    ``first_error``; ``shared``, whether the query held other requests' writes too;
    ``docs``, the documents written of a request of patches, by id (else empty)."""

    ids: frozenset[str]
    errors: int = 0
    first_error: str = ""
    shared: bool = False
    docs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def take_distinct(
    waiting: collections.deque[Request[Batch, Written]],
    busy: set[str] | frozenset[str] = frozenset(),
) -> list[Request[Batch, Written]]:
    """The next query's requests: the oldest waiting ones, as long as their jobs are
    distinct and in no query in flight (``busy``: a request naming a job that a query in
    flight or a request before it names, in this batch or left waiting, waits for a later
    query, so two writes of one job keep their order) and MAX_WRITE documents are not
    passed (the first request that may go always goes: none only when every request
    waiting names a job of ``busy`` or of one waiting before it). An ``alone`` request
    goes in a query of its own."""
    batch: list[Request[Batch, Written]] = []
    held: list[Request[Batch, Written]] = []
    ids: set[str] = set()
    blocked: set[str] = set(busy)
    while waiting:
        request = waiting[0]
        names = [before.id for before, _, _ in request.item.writes]
        if batch and (request.item.alone or len(ids) + len(names) > MAX_WRITE):
            break
        waiting.popleft()
        if blocked.intersection(names) or ids.intersection(names):
            held.append(request)
            blocked.update(names)
            continue
        batch.append(request)
        ids.update(names)
        if request.item.alone:
            break
    waiting.extendleft(reversed(held))
    return batch


class QueueWrites:
    """The conditional writes of every queue of one store: ``table(queue)`` is a queue's
    table, ``run(queue, query)`` runs a query on it (raising QueueNotFound,
    StoreUnavailable); documents are written with ``durability``."""

    def __init__(
        self,
        table: Callable[[str], Any],
        run: Callable[[str, RqlQuery], Awaitable[Any]],
        durability: str,
    ) -> None:
        self._table = table
        self._run = run
        self._durability = durability
        self._busy: dict[str, set[str]] = {}  #: per queue, the jobs of its queries in flight
        self._coalescer: Coalescer[Batch, Written] = Coalescer(
            self._serve, take=self._take, name="rethinkdb writes", parallel=PARALLEL
        )

    @property
    def queries(self) -> int:
        """Queries sent so far (each carries one or more requests' writes)."""
        return self._coalescer.batches

    @property
    def requests(self) -> int:
        """Requests made so far."""
        return self._coalescer.requests

    async def write(
        self,
        queue: str,
        writes: Sequence[Write],
        *,
        alone: bool = False,
        patch: tuple[str, ...] = (),
    ) -> Written:
        """Write each ``(before, after, status)`` of ``queue`` whose job is still at
        ``before.rev`` (and ``status``), in the queue's next query (with ``alone``, in a
        query holding nothing else; with ``patch``, only those fields of ``after``, and
        the documents written are answered too); ids must be distinct. Which were
        written. Raises QueueNotFound, StoreUnavailable (the query as a whole failed: any
        part of it may have been applied), ValueError (a patch that would lose a change:
        see :func:`~tqueues.stores.rethinkdb.queries.patch`)."""
        if not writes:
            return Written(frozenset())
        return await self._coalescer.submit(queue, Batch(writes, alone, patch))

    def _take(
        self, queue: str, waiting: collections.deque[Request[Batch, Written]]
    ) -> list[Request[Batch, Written]]:
        """:func:`take_distinct` past the jobs of the queue's queries in flight; the jobs
        taken are in flight until :meth:`_serve` has their answer."""
        busy = self._busy.setdefault(queue, set())
        batch = take_distinct(waiting, busy)
        busy.update(before.id for request in batch for before, _, _ in request.item.writes)
        return batch

    async def _serve(self, queue: str, batch: list[Request[Batch, Written]]) -> None:
        writes = [write for request in batch for write in request.item.writes]
        patched = {
            before.id: request.item.patch
            for request in batch
            if request.item.patch
            for before, _, _ in request.item.writes
        }
        try:
            query = conditional_writes(
                self._table(queue), writes, durability=self._durability, patched=patched
            )
            result = await self._run(queue, query)
        except Exception as exc:
            for request in batch:
                request.fail(exc)
            return
        finally:
            busy = self._busy.get(queue, set())
            busy.difference_update(before.id for before, _, _ in writes)
            if not busy:
                self._busy.pop(queue, None)
        errors = int(result.get("errors") or 0)
        text = first_error(result) if errors else ""
        revs = {after.id: after.rev for _, after, _ in writes}
        written: dict[str, Any] = {}
        for change in result.get("changes") or ():
            new = change.get("new_val")
            if isinstance(new, dict) and revs.get(str(new.get("id"))) == new.get("rev"):
                written[str(new["id"])] = new
        shared = len(batch) > 1
        for request in batch:
            mine = frozenset(b.id for b, _, _ in request.item.writes if b.id in written)
            docs = {job_id: written[job_id] for job_id in mine} if request.item.patch else {}
            request.answer(Written(mine, errors, text, shared, docs))

    async def close(self) -> None:
        """Stop: queries under way and waiting requests get StoreUnavailable."""
        await self._coalescer.close()


__all__ = ["MAX_WRITE", "PARALLEL", "Batch", "QueueWrites", "Written", "take_distinct"]
