"""What every store implements: the primitives under the store boundary.

:class:`Primitives` declares them (queues, insert, claim, mutate, reap, listing, and the
optional one-write insert-and-claim); :class:`tqueues.stores.base.Store` writes the
operations the dispatcher calls on top of them, once for every store. Conventions as
there: times are epoch seconds (floats), durations seconds, and every mutating call
returns the job as stored after the change.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar, Self

from tqueues.errors import TqueuesError
from tqueues.jobs import JobRecord, JobStatus, QueueConfig, new_random_id
from tqueues.stores.history import Bucket, Counts
from tqueues.stores.schedules import ScheduleRecord
from tqueues.stores.workers import Command, WorkerRecord

Mutation = Callable[[JobRecord], JobRecord]
#: What :meth:`Primitives.mutate_and_claim` gives: the changes' results, each (before,
#: after) or its own error, or the error that failed them all; the jobs claimed, or the
#: error that kept the claim from any.
MutatedAndClaimed = tuple[
    list[tuple[JobRecord, JobRecord] | TqueuesError] | TqueuesError,
    list[JobRecord] | TqueuesError,
]


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing and the cursor of the next (None on the last page)."""

    jobs: list[JobRecord]
    next_cursor: str | None


class Primitives(abc.ABC):
    """The primitives a store implements (each raises StoreUnavailable when its backend
    cannot be reached or cannot write), and its open/close lifecycle."""

    #: Whether :meth:`insert_and_claim` is one write. Only then does a put hand its job to
    #: a taker of this process that is waiting: with two writes, the taker would be woken
    #: by the insert's notification and race the put's own claim.
    hands_off: ClassVar[bool] = False

    @staticmethod
    def new_id() -> str:
        """The id of a job being put. Random by default: RethinkDB shards a table by
        ranges of its primary key, and random ids spread the inserts over the shards."""
        return new_random_id()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect and prepare the backend (idempotent schema set-up)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release every connection and task; the store cannot be used afterwards."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- primitives every store implements ------------------------------------------------

    @abc.abstractmethod
    async def create_queue(self, config: QueueConfig) -> bool:
        """Create the queue with these defaults unless it exists; True if it was created.

        Idempotent: an existing queue keeps its settings.
        """

    @abc.abstractmethod
    async def get_queue(self, name: str) -> QueueConfig:
        """The queue's settings. Raises :class:`~tqueues.errors.QueueNotFound`."""

    @abc.abstractmethod
    async def list_queues(self) -> list[QueueConfig]:
        """Every queue, by name."""

    @abc.abstractmethod
    async def update_queue(self, config: QueueConfig) -> None:
        """Replace the settings of queue ``config.name``; jobs already put keep theirs.

        Raises QueueNotFound.
        """

    @abc.abstractmethod
    async def drop_queue(self, name: str) -> int:
        """Remove the queue and every job in it; how many jobs went. Raises QueueNotFound."""

    @abc.abstractmethod
    async def truncate(self, queue: str) -> int:
        """Remove every job of the queue (the queue stays); how many went. Raises QueueNotFound."""

    @abc.abstractmethod
    async def count_jobs(self, queue: str) -> dict[JobStatus, int]:
        """How many jobs the queue holds in each status (index counts). Raises QueueNotFound."""

    @abc.abstractmethod
    async def remove(self, queue: str, job_id: str) -> JobRecord:
        """Delete the job whatever its status; the job as it was. Raises JobNotFound."""

    @abc.abstractmethod
    async def peek(self, queue: str, status: JobStatus) -> JobRecord | None:
        """The job of ``status`` that comes next, or None: for pending, the one a take gets;
        for delayed, the one due first; otherwise the oldest. Raises QueueNotFound."""

    @abc.abstractmethod
    async def insert(self, job: JobRecord) -> JobRecord:
        """Store a new job durably before returning. Raises QueueNotFound."""

    async def insert_many(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        """Store several new jobs durably; all or nothing where the backend allows.

        The default inserts one at a time; stores override it with a batch write.
        Raises QueueNotFound.
        """
        return [await self.insert(job) for job in jobs]

    @abc.abstractmethod
    async def insert_unique(self, jobs: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """Store new jobs durably (unique jobs, #25), each unless a live job of its queue
        (:data:`~tqueues.jobs.KEY_HOLDING`) holds its ``key``, an earlier job of ``jobs``
        included; per job in order, ``(the job as stored, True)``, or ``(the live job
        that holds the key, as stored, False)`` with nothing added. Jobs without a key
        are always inserted. Race-free: of puts of one key at the same instant, from any
        number of processes, one inserts. The jobs of a batch may be stored with other
        ids (as :meth:`insert_many`). Raises QueueNotFound.
        """

    @abc.abstractmethod
    async def claim_many(
        self, queue: str, count: int, *, worker: str | None, now: float
    ) -> list[JobRecord]:
        """Atomically take up to ``count`` of the most urgent pending jobs (lowest priority,
        then oldest ``ready_at``), in one write where the store can; fewer, or none, when
        fewer are pending.

        Each job becomes started under a fresh lease of its own (see
        :func:`tqueues.lifecycle.claim`); it is handed to exactly one caller however many
        claim at once. Costs an index read, whatever the size of the queue. Raises
        QueueNotFound.
        """

    async def claim_first(
        self, queues: Sequence[str], count: int, *, worker: str | None, now: float
    ) -> list[JobRecord]:
        """:meth:`claim_many` on the first of ``queues`` (in that order) that has pending
        jobs; none when none has. Raises QueueNotFound (before claiming anything where the
        store checks every queue first, as the embedded store does in one operation; the
        default claims from each queue in turn)."""
        for queue in queues:
            jobs = await self.claim_many(queue, count, worker=worker, now=now)
            if jobs:
                return jobs
        return []

    async def claim(self, queue: str, *, worker: str | None, now: float) -> JobRecord | None:
        """:meth:`claim_many` of one: the job, or None when none is pending."""
        jobs = await self.claim_many(queue, 1, worker=worker, now=now)
        return jobs[0] if jobs else None

    async def insert_and_claim(
        self,
        job: JobRecord,
        count: int,
        *,
        worker: str | None,
        now: float,
        committed: Callable[[list[JobRecord]], None] | None = None,
    ) -> tuple[JobRecord, list[JobRecord]]:
        """Store a new pending job durably and claim up to ``count`` pending jobs of its
        queue (as :meth:`claim_many`: the most urgent first, the new job among them) in
        one write; the job as stored, and the claimed jobs.

        ``committed``, if given, is called on the event loop with the claimed jobs as soon
        as the write is committed, which may be before it is on disk (the return waits for
        that): the taker can start on them while the disk syncs. Not called if the write
        fails. Only a store that can make this one write implements it, and sets
        :attr:`hands_off`. Raises QueueNotFound.
        """
        raise NotImplementedError(f"{type(self).__name__} does not hand jobs off")

    @abc.abstractmethod
    async def get(self, queue: str, job_id: str) -> JobRecord:
        """The job. Raises QueueNotFound, :class:`~tqueues.errors.JobNotFound`."""

    @abc.abstractmethod
    async def mutate(
        self, queue: str, job_id: str, change: Mutation
    ) -> tuple[JobRecord, JobRecord]:
        """Apply ``change`` to the job atomically; return (before, after).

        ``change`` is a pure function of the job that raises to refuse; the store writes its
        result only if the job is still the revision it passed in (and retries otherwise).
        The job's key follows (unique jobs): a change that ends a job frees its key, one
        that makes an ended job live again takes it, or raises KeyTaken (nothing written)
        when another live job of the queue holds it. Raises QueueNotFound, JobNotFound,
        KeyTaken, or whatever ``change`` raises.
        """

    async def mutate_many(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[tuple[JobRecord, JobRecord] | TqueuesError]:
        """Apply each ``(job id, change)`` as :meth:`mutate` does; per item (before, after)
        or the TqueuesError it alone raised (JobNotFound, what its change raised,
        StoreUnavailable).

        The default runs them concurrently; stores override it with one write (one
        transaction, a savepoint each). Raises QueueNotFound, or StoreUnavailable when the
        write as a whole failed.
        """
        await self.get_queue(queue)
        results = await asyncio.gather(
            *(self.mutate(queue, job_id, change) for job_id, change in changes),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, TqueuesError):
                raise result
        return results  # type: ignore[return-value]

    async def mutate_and_claim(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        count: int,
        *,
        worker: str | None,
        now: float,
    ) -> MutatedAndClaimed:
        """:meth:`mutate_many` and :meth:`claim_many` of ``queue`` together: what each
        gave, neither raised: the changes' results or the TqueuesError that failed them as
        a whole; the jobs claimed or the TqueuesError that kept the claim from any.

        The default runs the two concurrently (the embedded store's group commit puts
        them in one commit); the RethinkDB store writes both in one query.
        """
        results = await asyncio.gather(
            self.mutate_many(queue, changes),
            self.claim_many(queue, count, worker=worker, now=now),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, TqueuesError):
                raise result
        return results[0], results[1]  # type: ignore[return-value]

    @abc.abstractmethod
    async def list_jobs(
        self,
        queue: str,
        *,
        status: JobStatus | None = None,
        cursor: str | None = None,
        limit: int = 500,
        max_bytes: int | None = None,
    ) -> Page:
        """The queue's jobs (of one ``status``, or all) in creation order, ``limit`` at a time.

        ``cursor`` is the ``next_cursor`` of the previous page. With ``max_bytes``, the page
        also ends once its jobs' JSON (as the store keeps it: about their size in an
        answer) has reached that many bytes: it holds at least one job, and at most one
        past ``max_bytes``; besides the page, at most the row of the job after it is read
        into the process (enough to tell that more follow), so what a page costs in memory
        is bounded whatever the jobs' sizes. ``next_cursor`` is None on the last page only
        (a page cut short has one, as a full page may). Raises QueueNotFound.
        """

    @abc.abstractmethod
    async def reap(self, now: float) -> int:
        """The housekeeping of every queue, as of ``now``; how many jobs changed.

        Expires leases that ran out (:func:`~tqueues.lifecycle.expire`), promotes delayed
        jobs that are due (:func:`~tqueues.lifecycle.promote`), acts on waiting jobs whose
        ttl ran out (buried by :func:`~tqueues.lifecycle.outlive`, or deleted, by the
        queue's ``ttl_action``) and deletes finished and failed jobs older than the queue's
        ``retention``. Idempotent and safe to run from several processes at once; records
        each change with :meth:`record` (deletions are not recorded; stores whose change
        feeds report every write publish them as "deleted").
        """

    # -- throughput history (see tqueues.stores.history) --------------------------------

    @abc.abstractmethod
    async def add_history(self, counts: Counts) -> None:
        """Add each ``(queue, bucket start, event) -> count`` to the stored bucket, one
        atomic addition per key (concurrent additions from other processes all count).
        Raises StoreUnavailable (some additions may have been made)."""

    @abc.abstractmethod
    async def read_history(self, queue: str, since: int, until: int) -> list[Bucket]:
        """The stored buckets of ``queue`` starting in ``[since, until]`` (epoch seconds),
        earliest first; minutes without any event are left out."""

    @abc.abstractmethod
    async def purge_history(self, before: int) -> int:
        """Delete every bucket that starts before ``before`` (epoch seconds); how many
        counts were deleted."""

    @abc.abstractmethod
    async def count_ahead(self, job: JobRecord, limit: int) -> int:
        """How many pending jobs of ``job.queue`` a take hands out before ``job`` (of higher
        priority, or equal and ready earlier), counted through the take index up to
        ``limit``. Raises QueueNotFound."""

    # -- the worker registry (see tqueues.stores.workers) --------------------------------

    @abc.abstractmethod
    async def save_worker(self, record: WorkerRecord) -> WorkerRecord:
        """Store a worker's heartbeat: its fields replace the stored ones, but for the
        ``command`` an operator left, which is kept; the worker as stored."""

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]:
        """Every worker stored, by id."""

    @abc.abstractmethod
    async def command_worker(self, worker_id: str, command: Command) -> WorkerRecord:
        """Leave ``command`` for the worker (a "stop" is not undone by a later "quiet");
        the worker as stored. Raises WorkerNotFound."""

    @abc.abstractmethod
    async def forget_workers(self, *, before: float | None = None, id: str | None = None) -> int:
        """Delete the workers last seen before ``before``, or the worker ``id``; how many
        went."""

    # -- periodic jobs (see tqueues.stores.schedules) -------------------------------------

    @abc.abstractmethod
    async def insert_once(self, job: JobRecord) -> bool:
        """Store a new job durably unless a job of its id is stored already, or (a job
        with a key) a live job of its queue holds its key: True if it was inserted, False
        if the store refused it (the job stored is left as it is). Raises QueueNotFound."""

    @abc.abstractmethod
    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        """Store a new schedule. Raises ScheduleExists (one of its queue and name is
        stored)."""

    @abc.abstractmethod
    async def list_schedules(self, queue: str | None = None) -> list[ScheduleRecord]:
        """The schedules stored (of ``queue`` only, if given), by queue and name."""

    @abc.abstractmethod
    async def swap_schedule(self, before: ScheduleRecord, after: ScheduleRecord) -> bool:
        """Replace the stored schedule by ``after`` if it is still ``before`` (same
        ``rev``); ``after`` must have ``rev`` one more. False if it changed or went."""

    @abc.abstractmethod
    async def delete_schedule(self, queue: str, name: str) -> bool:
        """Delete the schedule; False if there was none."""

    @abc.abstractmethod
    async def promote_due(self, queue: str, now: float) -> int:
        """Make the delayed jobs of ``queue`` due by ``now`` pending
        (:func:`~tqueues.lifecycle.promote`), each by the compare-and-set the reaper uses
        (a job another process promoted first is skipped); records each change; how many
        this call promoted (at most a batch: call again while the next is due). Raises
        QueueNotFound."""

    @abc.abstractmethod
    async def set_pause(self, name: str, paused: bool, until: float | None) -> QueueConfig:
        """Write the queue's pause state (``paused``, and its end ``until`` in epoch
        seconds, None: until resumed), changing nothing else of its settings whoever else
        writes them; the settings after. Raises QueueNotFound."""

    # -- dependencies (see tqueues.stores.dependents) -------------------------------------

    @abc.abstractmethod
    async def add_edges(self, job: JobRecord) -> None:
        """Store an edge from each job ``job.after`` names (``"queue/id"``) to ``job``,
        found by the prerequisite through an index of the store's own (not one of the
        jobs' tables); an edge stored already is left as it is. Durable when this
        returns."""

    @abc.abstractmethod
    async def dependents_of(self, queue: str, job_id: str) -> list[str]:
        """The jobs (``"queue/id"``) whose edges name the job ``job_id`` of ``queue``: one
        index read."""

    @abc.abstractmethod
    async def drop_edges(self, queue: str, job_id: str) -> None:
        """Delete the edges from the job ``job_id`` of ``queue`` (it ended: its
        dependents are settled)."""

    def work(self) -> dict[str, int]:
        """What the store's own machinery did since it was made, by name: counters that
        only grow (a group commit's operations and commits, say), for the dispatcher's
        metrics (``tqueues_store_work_total``). Each store names its own; none by
        default. No I/O."""
        return {}

    async def watch(self, queue: str) -> None:  # noqa: B027 - optional hook
        """Make sure changes of ``queue`` reach :attr:`hub` (stores with feeds start one)."""
