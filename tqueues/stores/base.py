"""The store boundary: the one seam between the dispatcher and where jobs live.

A store keeps queues and jobs durably and publishes every change to its :attr:`Store.hub`.
Subclasses implement a handful of primitives (:mod:`tqueues.stores.primitives`:
``insert``, ``claim_many``, ``mutate``, ``reap``, ...); the operations the dispatcher calls
(put, take with long-poll, update, finish, fail, release) are written once here on top of
them and the pure transitions of :mod:`tqueues.lifecycle`, so every store behaves alike.

Conventions: times are epoch seconds (floats) from :func:`tqueues.clock.now`; durations
are seconds (floats). A job is addressed by its queue and id. Every mutating call returns
the job as stored after the change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from tqueues import clock, lifecycle
from tqueues.dependencies import settles
from tqueues.errors import (
    InvalidTransition,
    JobNotFound,
    KeyTaken,
    QueueNotFound,
    ScheduleNotFound,
    StoreUnavailable,
    TqueuesError,
    ValidationError,
)
from tqueues.jobs import (
    JSON,
    Enqueued,
    JobRecord,
    JobStatus,
    NewJob,
    QueueConfig,
    QueueStats,
    new_lease,
)
from tqueues.retry import RetryPolicy
from tqueues.stores import history
from tqueues.stores.dependents import Dependents
from tqueues.stores.hub import ChangeHub
from tqueues.stores.primitives import Mutation, Page, Primitives
from tqueues.stores.schedules import ScheduleRecord, mark, tick_id
from tqueues.stores.timers import DueTimers
from tqueues.stores.waiters import WaitLine

#: bytes of jobs one page of a kick reads at most (see Store.kick).
KICK_PAGE_BYTES = 4 * 1024 * 1024

log = logging.getLogger(__name__)


class Observer(Protocol):
    """What watches a store's work from outside (the dispatcher's metrics): told on the
    event loop's thread, and must cost no more than a few counter increments."""

    def changed(self, job: JobRecord, before: JobRecord | None) -> None:
        """A change this process made (``job.event``; ``before``, the job before it, when
        the store had it)."""


class Store(Primitives):
    """Where queues and jobs live. Open it before use and close it after; one per process.

    Raises, from any method: :class:`~tqueues.errors.StoreUnavailable` when the backend
    cannot be reached or cannot write (the operation did not happen, or for a write whose
    answer was lost, may have happened: retry is safe for everything but ``put``).
    """

    def __init__(self, *, retry: RetryPolicy | None = None) -> None:
        self.hub = ChangeHub()
        self.retry = retry or RetryPolicy()
        self._background: set[asyncio.Future[JobRecord]] = set()
        #: events per queue since this store was created (this process only)
        self.counters: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        #: long-poll takers of this process waiting for a job, per queue, oldest first;
        #: each job that becomes pending wakes one of them (see WaitLine.wake)
        self._waiters = WaitLine(self.give_back, self.counters)
        self.hub.on_pending = self._waiters.wake
        self._unflushed = history.Unflushed()  #: counted, not yet in the stored history
        self._flushing: asyncio.Future[None] | None = None  #: the last flush's write
        #: Told of every change :meth:`record` counts; None: nobody.
        self.observer: Observer | None = None
        #: set when this process changed a schedule (the firing loop looks again at once)
        self.schedules_changed = asyncio.Event()

        #: per queue, a timer on the earliest due time of the delayed jobs this process
        #: knows of (its own writes, and the changes its feeds report): delays are exact
        self._delays = DueTimers(self._promote, "promotion")
        self.hub.on_delayed = self._delays.arm
        self._looks: set[asyncio.Task[None]] = set()  #: reads of earliest due times
        #: per queue, a timer on the end of its pause, which wakes its takers
        self._pause_ends = DueTimers(self._pause_ended, "pause end")
        #: jobs put with ``after``, and the ends of the jobs they wait for
        self.dependents = Dependents(self, self.apply, self._insert_from_dependents)

    # -- operations, written once ------------------------------------------------------------

    def record(self, job: JobRecord, before: JobRecord | None = None) -> None:
        """Count a change this process made and publish it."""
        self.counters[job.queue][job.event] += 1
        if self.observer is not None:
            self.observer.changed(job, before)
        if job.status is JobStatus.DELAYED:
            self._delays.arm(job.queue, job.ready_at)
        if job.has_dependents and settles(job) and (before is None or before.status != job.status):
            self.dependents.ended(job)  # (a job nobody waits for never gets here)
        self.publish(job, before)

    def publish(self, job: JobRecord, before: JobRecord | None = None) -> None:
        """Tell the hub about a change this process made (stores with feeds override).

        The kind of change is ``job.event``; ``before`` is the job before it (a claim,
        "taken", always starts from pending).
        """
        old_status = before.status if before else None
        if job.event == "taken":
            old_status = JobStatus.PENDING
        self.hub.publish_job(job, old_status)

    async def put(self, new: NewJob) -> JobRecord:
        """Enqueue a job with the queue's defaults; durable when this returns: the job
        stored, or with a ``key`` a live job holds, that job (see :meth:`enqueue`). A job
        put with ``after`` waits for the jobs it names (see ``tqueues.stores.dependents``).

        Raises QueueNotFound, ValidationError (``after`` names a job that does not exist).
        """
        return (await self.enqueue(new)).job

    async def enqueue(self, new: NewJob) -> Enqueued:
        """:meth:`put`, saying whether the put was a duplicate: a job with a ``key`` that
        a live job of the queue holds (:data:`~tqueues.jobs.KEY_HOLDING`) adds nothing,
        and the answer is that job, untouched (see :meth:`insert_unique`). A job with a
        key is never handed off in its put's write: it is inserted, then wakes a taker.
        A job with both a key and ``after`` holds its key while it waits (``waiting`` is
        in KEY_HOLDING); a duplicate put of it stores nothing, no edge either.

        Raises QueueNotFound, ValidationError (``after`` names a job that does not exist).
        """
        config = await self.get_queue(new.queue)
        now = clock.now()
        job = lifecycle.create(new, config, now=now, id=self.new_id())
        paused = config.paused and config.is_paused(now)
        if job.status is JobStatus.WAITING:
            return await asyncio.shield(self.dependents.put(job, hand_off=not paused))
        if job.key is not None:
            (enqueued,) = await asyncio.shield(self._insert_unique_and_publish([job]))
            return enqueued
        return Enqueued(await asyncio.shield(self._insert_and_publish(job, hand_off=not paused)))

    async def _insert_from_dependents(self, job: JobRecord, hand_off: bool) -> Enqueued:
        """A put's job as its prerequisites made it (see tqueues.stores.dependents): with
        a key, inserted unless a live job holds the key (then that job, a duplicate)."""
        if job.key is not None:
            (enqueued,) = await self._insert_unique_and_publish([job])
            return enqueued
        return Enqueued(await self._insert_and_publish(job, hand_off=hand_off))

    async def _insert_and_publish(self, job: JobRecord, *, hand_off: bool = True) -> JobRecord:
        handing = hand_off and self.hands_off and job.status is JobStatus.PENDING
        waiter = self._waiters.choose(job.queue) if handing else None
        if waiter is None:
            job = await self.insert(job)
            self.record(job)
            return job
        # A taker is waiting: claim for it in the same write (one disk sync, no wake-up),
        # and hand it what was claimed once committed: the taker may start while the disk
        # syncs. The put itself is answered only once the write is durable. (Should the
        # machine, not a process, fail in between, the taker ran a job its producer was
        # never told was stored, and whose retry runs it again: at least once.)
        handed = False

        def hand(claimed: list[JobRecord]) -> None:
            # Once only, whoever calls first (the commit, or the put below): a second
            # call would find the taker served and give back the job it is running.
            nonlocal handed
            if handed:
                return
            handed = True
            if not waiter.hand(claimed):
                self.give_back(claimed)  # the taker went away meanwhile
            elif claimed:
                self.counters[job.queue]["handed"] += len(claimed)

        try:
            job, claimed = await self.insert_and_claim(
                job, waiter.count, worker=waiter.worker, now=clock.now(), committed=hand
            )
        except BaseException:
            if not handed:
                waiter.hand([])  # the taker looks for itself
            raise
        if not handed:
            hand(claimed)
        if any(taken.id == job.id for taken in claimed):
            with self._waiters.quiet(job.queue):  # its "put" wakes nobody: it is taken
                self.record(job)
        else:
            self.record(job)  # older jobs were claimed: this one is pending, for the next
        for taken in claimed:
            self.record(taken)
        return job

    async def put_many(self, jobs: Sequence[NewJob]) -> list[JobRecord]:
        """Enqueue several jobs in one durable write; the jobs stored (for a duplicate,
        the live job that holds its key: see :meth:`enqueue_many`). Raises QueueNotFound,
        ValidationError (a job with ``after``: such jobs are put one at a time)."""
        return [enqueued.job for enqueued in await self.enqueue_many(jobs)]

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[Enqueued]:
        """:meth:`put_many`, saying of each job whether it was a duplicate (as
        :meth:`enqueue`; a job whose key an earlier job of the batch has is a duplicate
        of that one). Raises QueueNotFound, ValidationError (a job with ``after``)."""
        for index, new in enumerate(jobs):
            if new.after:
                raise ValidationError(
                    f"jobs[{index}]: 'after' is not taken in a batch: put a job that waits "
                    "for others on its own",
                    field="after", index=f"jobs[{index}]",
                )  # fmt: skip
        now = clock.now()
        configs = {name: await self.get_queue(name) for name in {new.queue for new in jobs}}
        created = [
            lifecycle.create(new, configs[new.queue], now=now, id=self.new_id()) for new in jobs
        ]
        if any(job.key is not None for job in created):
            return await asyncio.shield(self._insert_unique_and_publish(created))
        stored = await asyncio.shield(self._insert_many_and_publish(created))
        return [Enqueued(job) for job in stored]

    async def _insert_unique_and_publish(self, jobs: list[JobRecord]) -> list[Enqueued]:
        answers = []
        for job, inserted in await self.insert_unique(jobs):
            if inserted:
                self.record(job)
            else:
                self.counters[job.queue]["duplicate"] += 1
            answers.append(Enqueued(job, duplicate=not inserted))
        return answers

    async def _insert_many_and_publish(self, jobs: list[JobRecord]) -> list[JobRecord]:
        stored = await self.insert_many(jobs)
        for job in stored:
            self.record(job)
        return stored

    async def take(
        self, queue: str, *, worker: str | None = None, wait: float = 0.0, poll: float = 5.0
    ) -> JobRecord | None:
        """Claim the next pending job, waiting up to ``wait`` seconds for one; None if none came.

        Wakes as soon as the hub reports a pending job in the queue; as a safety net,
        re-checks every ``poll`` seconds while it is the longest-waiting taker of the
        queue. Raises QueueNotFound.
        """
        jobs = await self.take_many(queue, 1, worker=worker, wait=wait, poll=poll)
        return jobs[0] if jobs else None

    async def take_many(
        self,
        queue: str,
        count: int,
        *,
        worker: str | None = None,
        wait: float = 0.0,
        poll: float = 5.0,
    ) -> list[JobRecord]:
        """Claim up to ``count`` pending jobs in one store write, waiting up to ``wait``
        seconds for the first; an empty list if none came.

        Wakes as soon as the hub reports a pending job in the queue (each such job wakes
        one waiting taker, the longest-waiting: see :class:`WaitLine`); as a safety net,
        the longest-waiting taker of the queue re-checks every ``poll`` seconds. A caller
        cancelled mid-claim gives back what the claim got. Raises QueueNotFound.
        """
        return await self.take_any((queue,), count, worker=worker, wait=wait, poll=poll)

    async def take_any(
        self,
        queues: Sequence[str],
        count: int,
        *,
        worker: str | None = None,
        wait: float = 0.0,
        poll: float = 5.0,
    ) -> list[JobRecord]:
        """Claim up to ``count`` pending jobs of the first of ``queues`` (in that order)
        that has any, in one store write, waiting up to ``wait`` seconds for a job in any
        of them; an empty list if none came. The jobs all come from one queue.

        As :meth:`take_many` otherwise. Raises QueueNotFound (the first missing queue,
        before anything is claimed).
        """
        configs = await self._watch_all(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        ticket: int | None = None  #: its place in the lines, once it waited
        searching = False  #: looking for jobs nobody was woken for (see Waited)
        settled = False  #: promotions due by its deadline were waited for
        while True:
            since = self._waiters.signals(queues)  # before looking: no wake-up is lost
            takeable = _unpaused(queues, configs)
            claiming = asyncio.ensure_future(self._claim_and_publish(takeable, count, worker))
            try:
                jobs = await asyncio.shield(claiming)
            except asyncio.CancelledError:
                # The caller went away mid-claim: give back whatever the claim got.
                claiming.add_done_callback(self._give_back)
                raise
            if jobs:
                if searching:  # found unannounced: there may be more; the next taker looks
                    self._waiters.wake(jobs[0].queue, search=True)
                return jobs
            remaining = deadline - loop.time()
            if remaining <= 0 and not settled:
                # A job due by now whose promotion is under way (or whose timer has not
                # fired yet) is takeable: wait for that write and look once more.
                settled = True
                if await self._delays.settle(takeable):
                    continue
            if remaining <= 0:
                for queue in queues:
                    self.counters[queue]["take_timeout" if wait else "take_empty"] += 1
                return []
            if ticket is None:
                ticket = self._waiters.ticket()
                for queue in queues:
                    self.counters[queue]["take_waited"] += 1
            waited = await self._waiters.wait(
                queues, count, worker, since=since, timeout=remaining, ticket=ticket, poll=poll
            )
            if waited.jobs:
                return waited.jobs
            searching = waited.searching
            configs = [await self.get_queue(queue) for queue in queues]  # paused meanwhile?

    async def _watch_all(self, queues: Sequence[str]) -> list[QueueConfig]:
        """The settings of ``queues``, each watched (and, the first time, its delay timer
        armed from the store). Raises QueueNotFound (the first missing queue)."""
        configs = [await self.get_queue(queue) for queue in queues]
        for queue in queues:
            await self.watch(queue)
        return configs

    async def _claim_and_publish(
        self, queues: Sequence[str], count: int, worker: str | None
    ) -> list[JobRecord]:
        if not queues:  # every one paused
            return []
        jobs = await self.claim_first(queues, count, worker=worker, now=clock.now())
        for job in jobs:
            self.record(job)
        return jobs

    def _give_back(self, claiming: asyncio.Future[list[JobRecord]]) -> None:
        if claiming.cancelled() or claiming.exception() is not None:
            return
        self.give_back(claiming.result())

    def give_back(self, jobs: Sequence[JobRecord]) -> None:
        """Release claimed jobs nobody will run (their taker went away), in the background,
        so the caller's cancellation cannot cut it short. A release that fails is logged;
        the job's lease then expires as usual."""
        for job in jobs:
            task = asyncio.ensure_future(self.release(job.queue, job.id, lease=job.lease))
            self._background.add(task)
            task.add_done_callback(self._gave_back)

    def _gave_back(self, task: asyncio.Future[JobRecord]) -> None:
        self._background.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning(
                "could not give back a job nobody runs (its lease will expire): %s",
                exc,
                extra={"action": "give_back_failed"},
            )

    async def apply(self, queue: str, job_id: str, change: Mutation) -> JobRecord:
        """Write ``change`` (see the ``*_change`` methods) to the job and publish it; the job
        after it. Runs to the end even if the caller is cancelled. Raises JobNotFound and
        whatever ``change`` raises."""
        return await asyncio.shield(self._mutate_and_publish(queue, job_id, change))

    async def _mutate_and_publish(self, queue: str, job_id: str, change: Mutation) -> JobRecord:
        before, after = await self.mutate(queue, job_id, change)
        self.record(after, before)
        return after

    async def apply_many(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[JobRecord | TqueuesError]:
        """Apply each ``(job id, change)`` as :meth:`apply` would, in one store write where
        the store can; per item, the job after its change or the error it alone got
        (JobNotFound, LeaseMismatch, InvalidTransition, QueueNotFound, StoreUnavailable...),
        returned, not raised. Runs to the end even if the caller is cancelled.
        """
        return await asyncio.shield(self._mutate_many_and_publish(queue, changes))

    async def _mutate_many_and_publish(
        self, queue: str, changes: Sequence[tuple[str, Mutation]]
    ) -> list[JobRecord | TqueuesError]:
        try:
            results = await self.mutate_many(queue, changes)
        except (QueueNotFound, StoreUnavailable) as exc:  # each item's answer
            return [exc] * len(changes)
        return self._publish_many(results)

    def _publish_many(
        self, results: Sequence[tuple[JobRecord, JobRecord] | TqueuesError]
    ) -> list[JobRecord | TqueuesError]:
        """Publish what :meth:`mutate_many` wrote; per item, the job after or its error."""
        answers: list[JobRecord | TqueuesError] = []
        for result in results:
            if isinstance(result, TqueuesError):
                answers.append(result)
            else:
                before, after = result
                self.record(after, before)
                answers.append(after)
        return answers

    async def apply_and_take(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        count: int,
        *,
        worker: str | None = None,
    ) -> tuple[list[JobRecord | TqueuesError], list[JobRecord]]:
        """:meth:`apply_many`, and up to ``count`` pending jobs of ``queue`` claimed for
        ``worker`` alongside (as :meth:`take_many` without waiting), in one store write
        where the store can (:meth:`mutate_and_claim`): per change, what
        :meth:`apply_many` answers; the jobs taken. None are taken while the queue is
        paused, when the claim (or the change feed a take needs) failed with a
        StoreUnavailable (the next take meets it), or when the changes failed as a whole
        (what was claimed is given back). Runs to the end even if the caller is
        cancelled, and then gives back the jobs taken."""
        task = asyncio.ensure_future(self._apply_and_take(queue, changes, count, worker))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._give_back_taken)
            raise

    async def _apply_and_take(
        self,
        queue: str,
        changes: Sequence[tuple[str, Mutation]],
        count: int,
        worker: str | None,
    ) -> tuple[list[JobRecord | TqueuesError], list[JobRecord]]:
        try:
            config = await self.get_queue(queue)
        except (QueueNotFound, StoreUnavailable) as exc:
            return [exc] * len(changes), []
        taking = count > 0 and bool(_unpaused((queue,), (config,)))
        if taking:
            try:
                await self.watch(queue)
            except (QueueNotFound, StoreUnavailable):  # no feed for a take: the outcomes alone
                taking = False
        if not taking:
            return await self._mutate_many_and_publish(queue, changes), []
        results, claimed = await self.mutate_and_claim(
            queue, changes, count, worker=worker, now=clock.now()
        )
        jobs = claimed if isinstance(claimed, list) else []
        if isinstance(results, TqueuesError):
            self.give_back(jobs)
            return [results] * len(changes), []
        for job in jobs:
            self.record(job)
        if not jobs:
            self.counters[queue]["take_empty"] += 1
        return self._publish_many(results), jobs

    def _give_back_taken(
        self, task: asyncio.Future[tuple[list[JobRecord | TqueuesError], list[JobRecord]]]
    ) -> None:
        if not task.cancelled() and task.exception() is None:
            self.give_back(task.result()[1])

    def update_change(self, fields: Mapping[str, JSON], *, lease: str | None = None) -> Mutation:
        """Merge ``fields`` into the job; with a lease, also extend it by the job's ttr.
        Raises (when applied) LeaseMismatch, InvalidTransition (final job), ValidationError
        (a field the dispatcher owns)."""
        now = clock.now()
        return lambda j: lifecycle.update(j, fields, lease=lease, now=now)

    def finish_change(self, *, lease: str | None = None, result: JSON = None) -> Mutation:
        """Mark the job finished with ``result``. Raises (when applied) LeaseMismatch,
        InvalidTransition."""
        now = clock.now()
        return lambda j: lifecycle.finish(j, lease=lease, result=result, now=now)

    def fail_change(
        self,
        *,
        lease: str | None = None,
        error: str,
        traceback: str | None = None,
        permanent: bool = False,
    ) -> Mutation:
        """Record a failed run: retried with backoff while attempts remain, else buried;
        failed at once when ``permanent``. Raises (when applied) LeaseMismatch,
        InvalidTransition."""
        now = clock.now()

        def change(job: JobRecord) -> JobRecord:
            return lifecycle.fail(
                job,
                lease=lease,
                error=error,
                traceback=traceback,
                now=now,
                backoff=self.retry.delay,
                permanent=permanent,
            )

        return change

    def release_change(
        self, *, lease: str | None = None, delay: float = 0.0, to_end: bool = False
    ) -> Mutation:
        """Give a taken job back untried, takeable again after ``delay`` seconds; it keeps
        its place unless ``to_end`` (requeue). Raises (when applied) LeaseMismatch,
        InvalidTransition."""
        now = clock.now()
        return lambda j: lifecycle.release(j, lease=lease, delay=delay, now=now, to_end=to_end)

    def touch_change(self, *, lease: str, ttr: float | None = None) -> Mutation:
        """Extend the lease to ``ttr`` seconds (default: the job's ttr) from now. Raises
        (when applied) LeaseMismatch, InvalidTransition."""
        now = clock.now()
        return lambda j: lifecycle.touch(j, lease=lease, ttr=ttr, now=now)

    def bury_change(self, *, lease: str | None = None, reason: str | None = None) -> Mutation:
        """Set the job aside until kicked; by its worker (with the lease) or an operator.
        Raises (when applied) LeaseMismatch, InvalidTransition (final or already buried)."""
        now = clock.now()
        return lambda j: lifecycle.bury(j, lease=lease, reason=reason, now=now)

    def kick_change(self) -> Mutation:
        """Make a buried or failed (attempts renewed) or delayed job pending now, at the end
        of the queue (:func:`~tqueues.lifecycle.kick`). Raises (when applied)
        InvalidTransition (not buried, failed or delayed)."""
        now = clock.now()
        return lambda j: lifecycle.kick(j, now=now)

    def cancel_change(self, *, lease: str | None = None) -> Mutation:
        """Cancel the job (:func:`~tqueues.lifecycle.cancel`): pending, delayed or buried,
        it ends cancelled; started, it is flagged for its worker (with its lease: the
        worker stopped it, it ends cancelled). Raises (when applied) InvalidTransition (it
        ended), LeaseMismatch."""
        now = clock.now()
        return lambda j: lifecycle.cancel(j, lease=lease, now=now)

    async def update(
        self, queue: str, job_id: str, fields: Mapping[str, JSON], *, lease: str | None = None
    ) -> JobRecord:
        """:meth:`update_change` applied; no fields with a lease is a :meth:`touch`.
        Raises JobNotFound and what the change raises."""
        if not fields and lease is not None:
            return await self.touch(queue, job_id, lease=lease)
        return await self.apply(queue, job_id, self.update_change(fields, lease=lease))

    async def finish(
        self, queue: str, job_id: str, *, lease: str | None = None, result: JSON = None
    ) -> JobRecord:
        """:meth:`finish_change` applied. Raises JobNotFound, LeaseMismatch,
        InvalidTransition."""
        return await self.apply(queue, job_id, self.finish_change(lease=lease, result=result))

    async def fail(
        self,
        queue: str,
        job_id: str,
        *,
        lease: str | None = None,
        error: str,
        traceback: str | None = None,
        permanent: bool = False,
    ) -> JobRecord:
        """:meth:`fail_change` applied. Raises JobNotFound, LeaseMismatch,
        InvalidTransition."""
        change = self.fail_change(
            lease=lease, error=error, traceback=traceback, permanent=permanent
        )
        return await self.apply(queue, job_id, change)

    async def release(
        self,
        queue: str,
        job_id: str,
        *,
        lease: str | None = None,
        delay: float = 0.0,
        to_end: bool = False,
    ) -> JobRecord:
        """:meth:`release_change` applied. Raises JobNotFound, LeaseMismatch,
        InvalidTransition."""
        change = self.release_change(lease=lease, delay=delay, to_end=to_end)
        return await self.apply(queue, job_id, change)

    async def touch(
        self, queue: str, job_id: str, *, lease: str, ttr: float | None = None
    ) -> JobRecord:
        """:meth:`touch_change` applied. Raises JobNotFound, LeaseMismatch,
        InvalidTransition."""
        return await self.apply(queue, job_id, self.touch_change(lease=lease, ttr=ttr))

    async def bury(
        self, queue: str, job_id: str, *, lease: str | None = None, reason: str | None = None
    ) -> JobRecord:
        """:meth:`bury_change` applied. Raises JobNotFound, LeaseMismatch,
        InvalidTransition."""
        return await self.apply(queue, job_id, self.bury_change(lease=lease, reason=reason))

    async def kick_job(self, queue: str, job_id: str) -> JobRecord:
        """:meth:`kick_change` applied. Raises JobNotFound, InvalidTransition, KeyTaken
        (another live job of the queue holds its key)."""
        return await self.apply(queue, job_id, self.kick_change())

    async def cancel(self, queue: str, job_id: str, *, lease: str | None = None) -> JobRecord:
        """:meth:`cancel_change` applied. Raises JobNotFound, InvalidTransition,
        LeaseMismatch."""
        return await self.apply(queue, job_id, self.cancel_change(lease=lease))

    async def cancel_requests(self, running: Sequence[tuple[str, str]]) -> list[str]:
        """Of the jobs ``(queue, id)`` a worker says it runs, the ids of those asked to stop
        (flagged ``cancel_requested``, or already cancelled): each read by its primary key,
        all at once. Jobs or queues that are gone are left out."""

        async def asked(queue: str, job_id: str) -> bool:
            try:
                job = await self.get(queue, job_id)
            except (JobNotFound, QueueNotFound):
                return False
            return job.cancel_requested or job.status is JobStatus.CANCELLED

        found = await asyncio.gather(*(asked(queue, job_id) for queue, job_id in running))
        return [job_id for (_, job_id), yes in zip(running, found, strict=True) if yes]

    async def kick(self, queue: str, bound: int, status: JobStatus | None = None) -> int:
        """Kick up to ``bound`` jobs, oldest first: of ``status`` (buried, failed or
        delayed) when given, else buried ones if there are any, else delayed ones (as
        beanstalkd does: failed jobs only when named); how many were kicked. Each is its
        own compare-and-set (:meth:`kick_job`): a job that changed meanwhile (kicked by
        another caller) is skipped, not kicked twice, and so is a job whose key another
        live job holds (unique jobs: it stays as it is). Raises QueueNotFound,
        ValidationError (another status)."""
        if status is not None and status not in lifecycle.KICKABLE:
            kickable = ", ".join(s.value for s in lifecycle.KICKABLE)
            raise ValidationError(f"'status' of a kick must be {kickable}", field="status")
        order = (status,) if status is not None else (JobStatus.BURIED, JobStatus.DELAYED)
        for kicked_status in order:
            kicked, seen, cursor = 0, 0, None
            while seen < bound:
                # pages bounded in bytes too: 10,000 large jobs are never held at once
                page = await self.list_jobs(
                    queue, status=kicked_status, cursor=cursor, limit=bound - seen,
                    max_bytes=KICK_PAGE_BYTES,
                )  # fmt: skip
                seen += len(page.jobs)
                for job in page.jobs:
                    try:
                        await self.kick_job(queue, job.id)
                        kicked += 1
                    except (InvalidTransition, JobNotFound):
                        continue  # changed meanwhile
                    except KeyTaken:
                        continue  # another live job holds its key: left as it is
                if page.next_cursor is None or not page.jobs:
                    break
                cursor = page.next_cursor
            if seen:
                return kicked
        return 0

    async def delete(self, queue: str, job_id: str) -> JobRecord:
        """Delete any job (an operator's call); the job as it was. Raises JobNotFound."""
        job = await self.remove(queue, job_id)
        self.record(job.evolve(event="deleted"), job)
        if job.has_dependents:
            self.dependents.ended(job, deleted=True)
        return job

    async def stats(self, queue: str) -> QueueStats:
        """Jobs by status, whether the queue is paused (until when), and this process's
        event counters. Raises QueueNotFound."""
        config = (await self.get_queue(queue)).as_of(clock.now())
        counts = await self.count_jobs(queue)
        return QueueStats(
            queue=queue,
            counts={status.value: counts.get(status, 0) for status in JobStatus},
            counters=dict(sorted(self.counters[queue].items())),
            paused=config.paused,
            paused_until=config.paused_until,
        )

    # -- delays and pauses ---------------------------------------------------------------------

    def look_for_delays(self, queue: str) -> None:
        """In the background, arm the queue's delay timer on its earliest delayed job in
        the store: for jobs delayed while this process could not hear of it (stores with
        feeds call it when a queue's feed opens)."""
        task = asyncio.ensure_future(self._look(queue))
        self._looks.add(task)
        task.add_done_callback(self._looks.discard)

    async def _look(self, queue: str) -> None:
        try:
            job = await self.peek(queue, JobStatus.DELAYED)
        except TqueuesError as exc:
            log.debug("no look at the delayed jobs of %r: %s", queue, exc.message)
            return
        if job is not None:
            self._delays.arm(queue, job.ready_at)

    async def _promote(self, queue: str) -> float | None:
        """The delay timer of ``queue`` fired: promote its due jobs (each wakes a taker as
        it is published); the due time of the next delayed job, if any."""
        await self.promote_due(queue, clock.now())
        job = await self.peek(queue, JobStatus.DELAYED)
        return job.ready_at if job is not None else None

    async def _pause_ended(self, queue: str) -> None:
        """The pause of ``queue`` ran out: its takers look again."""
        self._waiters.wake(queue, None)

    async def pause(self, queue: str, *, seconds: float | None = None) -> QueueConfig:
        """Pause the queue for ``seconds`` (None: until :meth:`resume`): takes hand out
        none of its jobs, puts are still accepted. A paused queue's pause is replaced (its
        end moved, or dropped). The settings after (``paused``, ``paused_until`` in epoch
        seconds). Raises QueueNotFound."""
        until = clock.now() + seconds if seconds is not None else None
        config = await self.set_pause(queue, True, until)
        self.pause_changed(config)
        return config.as_of(clock.now())

    async def resume(self, queue: str) -> QueueConfig:
        """End the queue's pause (none: nothing changes); its takers get jobs at once.
        The settings after. Raises QueueNotFound."""
        config = await self.set_pause(queue, False, None)
        self.pause_changed(config)
        return config

    def pause_changed(self, config: QueueConfig) -> None:
        """The queue's pause state is now ``config``'s (a change this process made, or,
        on a store several dispatchers share, one it learnt of): time its end, and wake
        its takers if it is not paused."""
        self._pause_ends.forget(config.name)
        if config.is_paused(clock.now()):
            if config.paused_until is not None:
                self._pause_ends.arm(config.name, config.paused_until)
        else:
            self._waiters.wake(config.name, None)

    def stop_timers(self) -> None:
        """Cancel the delay and pause timers (the store is closing); idempotent."""
        self._delays.close()
        self._pause_ends.close()
        self.dependents.close()
        for task in self._looks:
            task.cancel()

    async def dispatcher_stats(self) -> dict[str, JSON]:
        """Statistics of every queue, and their sums: ``{"queues", "jobs", "total",
        "counters", "by_queue"}`` (counters: this process's events since it started)."""
        by_queue = [await self.stats(config.name) for config in await self.list_queues()]
        jobs = {status.value: 0 for status in JobStatus}
        counters: collections.Counter[str] = collections.Counter()
        for stats in by_queue:
            for status, count in stats.counts.items():
                jobs[status] += count
            counters.update(stats.counters)
        return {
            "queues": len(by_queue),
            "jobs": jobs,
            "total": sum(jobs.values()),
            "counters": dict(sorted(counters.items())),
            "by_queue": [stats.to_dict() for stats in by_queue],
        }

    async def flush_history(self, now: float) -> int:
        """Add what this process counted since its last flush to the stored history (see
        :mod:`tqueues.stores.history`); how many counts were written. Raises
        StoreUnavailable: the counts are kept for the next flush. A flush whose caller is
        cancelled goes on to its answer (its write may be applied already), and the next
        flush waits for it, so no count is added twice (a stopping dispatcher's last
        flush follows the cancelled periodic one)."""
        if self._flushing is not None and not self._flushing.done():
            # the last flush is still under way (its caller was cancelled: a dispatcher
            # stopping): its write may be applied, so wait for its answer, not add again
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flushing)
        self._unflushed.collect(self.counters, now)
        counts = self._unflushed.drain()
        if not counts:
            return 0

        async def add() -> None:
            try:
                await self.add_history(counts)
            except BaseException:
                self._unflushed.restore(counts)
                raise

        # a cancelled caller leaves the write to finish: counts restored only on failure
        self._flushing = asyncio.ensure_future(add())
        await asyncio.shield(self._flushing)
        return len(counts)

    async def history(self, queue: str, *, since: float, until: float) -> list[history.Bucket]:
        """The queue's per-minute counts of events (put, taken, finished, failed, ...)
        between ``since`` and ``until`` (epoch seconds; the bucket holding ``since`` is
        included), summed over every dispatcher sharing the store, earliest first; minutes
        without events are left out. What a dispatcher counted in its last few seconds
        (:data:`~tqueues.stores.history.FLUSH_INTERVAL`) is not there yet. Raises
        QueueNotFound."""
        await self.get_queue(queue)
        return await self.read_history(queue, history.bucket_of(since), int(until))

    # -- periodic jobs (see tqueues.stores.schedules) ---------------------------------------

    async def add_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        """Store a new schedule of an existing queue. Raises QueueNotFound, ScheduleExists."""
        await self.get_queue(schedule.queue)
        await self.create_schedule(schedule)
        self.schedules_changed.set()
        return schedule

    async def get_schedule(self, queue: str, name: str) -> ScheduleRecord:
        """The schedule. Raises ScheduleNotFound."""
        for schedule in await self.list_schedules(queue):
            if schedule.name == name:
                return schedule
        raise ScheduleNotFound(f"no schedule {name!r} in queue {queue!r}", queue=queue,
                               name=name)  # fmt: skip

    async def pause_schedule(
        self, queue: str, name: str, *, paused: bool, now: float
    ) -> ScheduleRecord:
        """Pause the schedule (no tick fires), or resume it: its next tick is then the
        first after ``now`` (the ticks of the pause are never caught up). The schedule as
        stored. Raises ScheduleNotFound."""
        while True:
            before = await self.get_schedule(queue, name)
            if before.paused == paused:
                return before
            after = dataclasses.replace(before, paused=paused, rev=before.rev + 1)
            if not paused:
                after = dataclasses.replace(after, next_tick=next(before.ticks_after(now)))
            if await self.swap_schedule(before, after):
                self.schedules_changed.set()
                return after

    async def remove_schedule(self, queue: str, name: str) -> None:
        """Delete the schedule (the jobs it made stay). Raises ScheduleNotFound."""
        if not await self.delete_schedule(queue, name):
            raise ScheduleNotFound(f"no schedule {name!r} in queue {queue!r}", queue=queue,
                                   name=name)  # fmt: skip

    async def run_schedule(self, queue: str, name: str) -> JobRecord:
        """Make the schedule's job now, outside its ticks (a new id of its own; the
        schedule is left as it is); durable when this returns. With a key a live job
        holds, that job (nothing is made). Raises ScheduleNotFound, QueueNotFound."""
        schedule = await self.get_schedule(queue, name)
        config = await self.get_queue(queue)
        job = lifecycle.create(schedule.template(), config, now=clock.now(), id=self.new_id())
        job = mark(job, schedule, None)
        if job.key is not None:
            (enqueued,) = await asyncio.shield(self._insert_unique_and_publish([job]))
            return enqueued.job
        return await asyncio.shield(self._insert_and_publish(job))

    async def fire_schedules(self, now: float) -> float | None:
        """Fire every schedule not paused whose ticks are due at ``now`` (see
        :mod:`tqueues.stores.schedules`; safe with any number of processes at once); the
        earliest next tick of those schedules, or None if there is none. A schedule whose
        queue cannot be found is left for later. Raises StoreUnavailable."""
        earliest: float | None = None
        for schedule in await self.list_schedules():
            if schedule.paused:
                continue
            try:
                upcoming = await self.fire_schedule(schedule, now)
            except QueueNotFound:
                log.debug("schedule %s: its queue is missing", schedule.key)
                continue
            earliest = upcoming if earliest is None else min(earliest, upcoming)
        return earliest

    async def fire_schedule(self, schedule: ScheduleRecord, now: float) -> float:
        """Make the jobs of the ``schedule``'s ticks due at ``now`` (each under its tick's
        id, so a second insert of one is refused), then move its ``next_tick`` on with a
        compare-and-set (another process may have done it: that is fine). Its next tick.
        Raises QueueNotFound, StoreUnavailable."""
        ticks, upcoming = schedule.plan(now)
        if not ticks and upcoming == schedule.next_tick:
            return upcoming
        if ticks:
            config = await self.get_queue(schedule.queue)
            for tick in ticks:
                job = lifecycle.create(schedule.template(), config, now=now,
                                       id=tick_id(schedule.uid, tick))  # fmt: skip
                job = mark(job, schedule, tick)
                if await asyncio.shield(self.insert_once(job)):
                    self.record(job)
        last = ticks[-1] if ticks else schedule.last_tick
        after = dataclasses.replace(
            schedule, next_tick=upcoming, last_tick=last, rev=schedule.rev + 1
        )
        await self.swap_schedule(schedule, after)
        return upcoming

    @staticmethod
    def new_lease() -> str:
        """A fresh lease token for a claim."""
        return new_lease()


def key_taken(job: JobRecord, holder: JobRecord) -> KeyTaken:
    """The refusal of a change that would make ``job`` live again while ``holder``, another
    live job of its queue, holds its key."""
    return KeyTaken(
        f"job {job.id} cannot become {job.status.value} again: job {holder.id} of queue "
        f"{job.queue!r} holds its key {job.key!r} until it ends",
        key=job.key, holder=holder.id,
    )  # fmt: skip


def _unpaused(queues: Sequence[str], configs: Sequence[QueueConfig]) -> Sequence[str]:
    """The queues of ``queues`` (whose settings are ``configs``) not paused now."""
    if not any(config.paused for config in configs):
        return queues
    now = clock.now()
    return [config.name for config in configs if not config.is_paused(now)]


__all__ = ["Mutation", "Observer", "Page", "Store", "key_taken"]
