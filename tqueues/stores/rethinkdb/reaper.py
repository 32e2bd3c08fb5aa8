"""The reaper of the RethinkDB store: per queue, expire run-out leases, promote due
delayed jobs, act on waiting jobs whose ttl ran out, and delete ended jobs past the
queue's retention.

Reads are index ranges (``state`` and ``ttl``, see :mod:`~tqueues.stores.rethinkdb.queries`),
never scans; each change is a compare-and-set, so dispatchers may reap concurrently and
each change happens once. A queue whose changefeed this process follows is read only
when its pending head says something there can come due
(:class:`~tqueues.stores.rethinkdb.head.DueTime`): the reaper follows every queue it
reaps, so an idle queue costs the server no reads but the safety nets (head.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues import lifecycle
from tqueues.errors import InvalidTransition, QueueNotFound
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.rethinkdb import queries
from tqueues.stores.rethinkdb.documents import doc_to_job, r
from tqueues.stores.rethinkdb.head import Heads, due_at, ended_at

REAP_BATCH = 256  #: jobs the reaper reads per queue, index and status in one round.
PURGE_BATCHES = 4  #: retention deletes of REAP_BATCH jobs per queue and status per round.
#: Seconds (of the reaper's ``now``) between two retention purges of a queue: every index
#: read costs the server about a millisecond of CPU even when it finds nothing, and a
#: retention (seconds to days) needs no half-second precision.
PURGE_INTERVAL = 5.0
#: the statuses of jobs that ended, which the retention purge deletes.
FINAL = tuple(status for status in JobStatus if status.is_final)
Step = Callable[..., JobRecord]


class Reaper:
    """The housekeeping of one store's queues. ``table(queue)`` is a queue's table;
    ``run(queue, query)`` runs a query on it (raising QueueNotFound, StoreUnavailable);
    ``change(queue, before, after)`` writes a change by compare-and-set (True if written),
    keeping a unique job's key in step; ``release_key(job, rev)`` releases a deleted
    job's key; ``record(after, before)`` records a change (statistics, history)."""

    def __init__(
        self,
        *,
        heads: Heads,
        table: Callable[[str], Any],
        run: Callable[[str, RqlQuery], Awaitable[Any]],
        durability: str,
        change: Callable[[str, JobRecord, JobRecord], Awaitable[bool]],
        release_key: Callable[[JobRecord, int], Awaitable[None]],
        record: Callable[[JobRecord, JobRecord], None],
    ) -> None:
        self.heads = heads
        self._table_of, self._run, self._durability = table, run, durability
        self._change, self._release_key, self._record = change, release_key, record
        #: queue -> the reaper's ``now`` of its last retention purge (see PURGE_INTERVAL)
        self._purged: dict[str, float] = {}

    async def reap(
        self, configs: Iterable[QueueConfig], now: float, *, follow: Callable[[str], object]
    ) -> int:
        """The housekeeping of the queues of ``configs`` as of ``now`` (see the module's
        docstring); how many jobs changed or went. ``follow(queue)`` makes sure the
        queue's changefeed runs (without waiting for it): until it is up, the queue is
        read every round. A queue gone meanwhile is skipped. Raises StoreUnavailable."""
        count = 0
        for config in configs:
            follow(config.name)
            try:
                count += await self._reap_queue(config, now)
            except QueueNotFound:
                continue
        return count

    def forget(self, queue: str) -> None:
        """Forget what the reaper knows of ``queue`` (it is being dropped)."""
        self._purged.pop(queue, None)

    async def _reap_queue(self, config: QueueConfig, now: float) -> int:
        queue, table = config.name, self._table_of(config.name)
        count = 0
        # the queue's head (its feed) knows when anything is next due: until then no read
        if self.heads.needs(queue, "sweep", now):
            end_sweep = self.heads.begin(queue, "sweep")
            next_due = float("-inf")  # unless the sweep ends well
            try:
                count, next_due = await self._sweep(config, now, with_next=end_sweep is not None)
            finally:
                if end_sweep is not None:
                    end_sweep(next_due)
        last = self._purged.get(queue)
        if last is not None and last <= now < last + PURGE_INTERVAL:
            return count
        cutoff = now - config.retention
        # the head knows when the earliest ended job it may delete ended: until its
        # retention has passed, no read
        if not self.heads.needs(queue, "purge", cutoff):
            return count
        self._purged[queue] = now
        end_purge = self.heads.begin(queue, "purge")
        earliest = float("-inf")  # unless the purge ends well
        try:
            deleted, left = await self._purge(table, queue, cutoff)
            count += deleted
            if end_purge is not None and not left:
                ends = r.expr([queries.next_due(table, status, cutoff) for status in FINAL])
                found = await self._run(queue, ends)
                earliest = min(
                    (when for docs in found for doc in docs
                     if (when := ended_at(doc_to_job(doc))) is not None),
                    default=float("inf"),
                )  # fmt: skip
        finally:
            if end_purge is not None:
                end_purge(earliest)
        return count

    async def _purge(self, table: Any, queue: str, cutoff: float) -> tuple[int, bool]:
        """Delete the queue's finished, failed and cancelled jobs that ended by ``cutoff``,
        at most PURGE_BATCHES batches of each; how many went, and whether some were left."""
        count, left = 0, False
        for status in FINAL:
            for _ in range(PURGE_BATCHES):
                purge = queries.due(table, status, cutoff, REAP_BATCH).delete(
                    durability=self._durability
                )
                result = await self._run(queue, purge)
                count += int(result.get("deleted", 0))
                if int(result.get("deleted", 0)) + int(result.get("skipped", 0)) < REAP_BATCH:
                    break
            else:
                left = True
        return count, left

    async def _sweep(
        self, config: QueueConfig, now: float, *, with_next: bool
    ) -> tuple[int, float]:
        """Expire the leases, promote the delays and act on the ttls of ``config``'s queue
        due by ``now``; how many jobs changed, and (``with_next``) the earliest time after
        ``now`` anything of the kind comes due (``now`` if jobs were left due, inf if
        none will be; -inf without ``with_next``)."""
        queue, table = config.name, self._table_of(config.name)
        count, next_due = 0, float("inf") if with_next else float("-inf")
        steps: tuple[tuple[str, JobStatus, Step], ...] = (
            ("state", JobStatus.STARTED, lifecycle.expire),
            ("state", JobStatus.DELAYED, lifecycle.promote),
            ("ttl", JobStatus.PENDING, lifecycle.outlive),
            ("ttl", JobStatus.DELAYED, lifecycle.outlive),
        )
        # the reads go in two queries (each read costs the server about a millisecond of
        # CPU even when it finds nothing, so fewer queries, not fewer reads, would not
        # help): leases and delays first, then the ttls, which must see the jobs those
        # steps made pending (a lease run out, a delay come) as they are now
        for pair in (steps[:2], steps[2:]):
            reads = [
                queries.due(table, status, now, REAP_BATCH, index=index).coerce_to("array")
                for index, status, _ in pair
            ]
            if with_next:
                reads += [queries.next_due(table, status, now, index=index)
                          for index, status, _ in pair]  # fmt: skip
            found = await self._run(queue, r.expr(reads))
            for (_, _, step), docs in zip(pair, found[: len(pair)], strict=True):
                delete = step is lifecycle.outlive and config.ttl_action == "delete"
                results = await asyncio.gather(
                    *(self._reap_one(queue, doc, step, now, delete=delete) for doc in docs)
                )
                count += sum(results)
                if len(docs) >= REAP_BATCH:
                    next_due = min(next_due, now)  # more may be due: sweep again soon
            for docs in found[len(pair) :]:
                for job in map(doc_to_job, docs):
                    when = due_at(job)
                    next_due = min(next_due, now if when is None else when)
        return count, next_due

    async def promote_due(self, queue: str, now: float) -> int:
        """Promote the delayed jobs of ``queue`` due by ``now`` (a batch), as the reaper
        does; how many this call promoted. Raises QueueNotFound, StoreUnavailable."""
        table = self._table_of(queue)
        query = queries.due(table, JobStatus.DELAYED, now, REAP_BATCH).coerce_to("array")
        docs = await self._run(queue, query)
        promote = lifecycle.promote
        return sum(
            await asyncio.gather(
                *(self._reap_one(queue, doc, promote, now, delete=False) for doc in docs)
            )
        )

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
            query = queries.delete_if_unchanged(
                self._table_of(queue), before, durability=self._durability
            )
            result = await self._run(queue, query)
            if result.get("deleted", 0) != 1:
                return 0
            await self._release_key(before, before.rev + 1)
            return 1
        if not await self._change(queue, before, after):
            return 0
        self._record(after, before)
        return 1


__all__ = ["FINAL", "PURGE_BATCHES", "PURGE_INTERVAL", "REAP_BATCH", "Reaper"]
