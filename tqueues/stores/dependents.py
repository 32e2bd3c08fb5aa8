"""Jobs that wait for other jobs (#25, part 4), written once for every store on top of
its primitives: a put with ``after``, what a prerequisite's end does to the jobs waiting
for it, and the sweep that repairs what a process killed half-way left (the semantics are
in :mod:`tqueues.dependencies`).

What is stored: the waiting job, with its prerequisites in ``after``; one *edge* per
prerequisite (:meth:`~tqueues.stores.primitives.Primitives.add_edges`: the prerequisite's
``queue/id`` to the dependent's, found by the prerequisite through an index, in a table
of the store's own: never an index of the queues' job tables, which every plain job's
write would pay for); and a flag on the prerequisite, ``has_dependents``, set once and
never unset. A job's end looks its dependents up only when its flag is set, so a job
nobody waits for costs nothing more than before.

Why no job waits forever, without transactions (RethinkDB has none across documents):

* A put writes the waiting job (with a key, unless a live job holds it: then the put
  is a duplicate and writes nothing more), then the edges, then sets the flag of each
  prerequisite not ended by a compare-and-set of that job (:func:`lifecycle.awaited`),
  which either writes the flag or finds the job ended (finished, buried, ...); and then
  judges the job from what those writes found (:func:`~tqueues.dependencies.verdict`).
  The edges come before the flags, which is what an end relies on.
* An end (finish, burial, failure, cancel, deletion) of a prerequisite is also a
  compare-and-set of that job. The two are ordered on its revision: if the flag came
  first, the end's write carries it, and the process that ended it looks the edges up
  (written before the flag) and settles the dependents; if the end came first, the flag's
  compare-and-set sees the job ended, and the put settles its job itself.
* Settling a dependent is a compare-and-set that applies only to a job still
  ``waiting`` (:func:`lifecycle.unblock`, :func:`lifecycle.orphan`): both sides may try
  at once, and one wins; the other finds it settled and does nothing.
* A process killed between its writes (a put before its edges or flags, an end before
  it settled the dependents) leaves a job waiting that nobody will settle: the sweep
  (:meth:`Dependents.sweep`, every :data:`SWEEP_INTERVAL` seconds from the reaper) reads
  every waiting job's prerequisites, settles what is due, and sets the missing flags.
  So does a prerequisite deleted with its queue (a drop, a truncate): its dependents are
  buried by the sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from tqueues import clock, lifecycle
from tqueues.dependencies import DEAD, Verdict, key, split, verdict
from tqueues.errors import (
    InvalidTransition,
    JobNotFound,
    QueueNotFound,
    TqueuesError,
    ValidationError,
)
from tqueues.jobs import Enqueued, JobRecord, JobStatus
from tqueues.stores.primitives import Mutation, Primitives

#: The store's apply (a change by compare-and-set, recorded and published).
Apply = Callable[[str, str, Mutation], Awaitable[JobRecord]]
#: The store's insert of a new job, recorded and published (``hand_off``: to a waiting
#: taker of this process, if pending); with a key, the live job holding it instead.
Insert = Callable[[JobRecord, bool], Awaitable[Enqueued]]

log = logging.getLogger(__name__)

#: Seconds between two sweeps of the waiting jobs (the safety net; see the module).
SWEEP_INTERVAL = 5.0
#: Waiting jobs one sweep judges per queue (the next sweep goes on from there).
SWEEP_BATCH = 200


class Dependents:
    """The dependencies of one store's jobs (see the module): its primitives, and its
    operations that record and publish what they write."""

    def __init__(self, store: Primitives, apply: Apply, insert: Insert) -> None:
        self.store = store
        self._apply = apply
        self._insert = insert
        self._settling: set[asyncio.Task[None]] = set()  #: ends being followed up
        self._cursors: dict[str, str | None] = {}  #: where the sweep goes on, per queue
        self._swept = 0.0  #: when the last sweep ran (monotonic seconds)

    # -- a put ----------------------------------------------------------------------------

    async def put(self, job: JobRecord, *, hand_off: bool) -> Enqueued:
        """Store ``job`` (made waiting by :func:`lifecycle.create`, its ``after`` set) as
        its prerequisites make it: pending (or delayed) if they all finished, buried if
        one ended otherwise, else waiting, linked to them (see the module); or, when a
        live job holds its key, nothing (that job is the answer, a duplicate). Durable
        when this returns. Raises ValidationError (400) naming a prerequisite that does
        not exist (nothing stored); QueueNotFound, StoreUnavailable."""
        found = {name: await self._read(name) for name in job.after}
        for name, prerequisite in found.items():
            if prerequisite is None:
                raise ValidationError(
                    f"'after' names job {name}, which does not exist", field="after", value=name
                )
        judged = verdict(job.after, found)
        now = clock.now()
        if judged.outcome != "wait":  # stored settled, as a put
            settled = _apply(job, judged, now).evolve(rev=job.rev, event="put")
            return await self._insert(settled, hand_off)
        enqueued = await self._insert(job, False)
        if enqueued.duplicate:
            return enqueued
        job = enqueued.job
        await self.store.add_edges(job)
        for name in judged.outstanding:
            found[name] = await self._flag(name)
        judged = verdict(job.after, found)
        if judged.outcome == "wait":
            return enqueued
        return Enqueued(await self._settle(job.queue, job.id, judged) or job)

    async def _read(self, name: str) -> JobRecord | None:
        """The job ``queue/id``, or None when it (or its queue) does not exist."""
        try:
            return await self.store.get(*split(name))
        except (JobNotFound, QueueNotFound):
            return None

    async def _flag(self, name: str) -> JobRecord | None:
        """Set ``has_dependents`` on the job ``queue/id`` unless it is set or the job
        ended (:func:`lifecycle.awaited`); the job as this write found or left it (None:
        gone)."""
        seen: JobRecord | None = None

        def flag(job: JobRecord) -> JobRecord:
            nonlocal seen
            seen = job
            return lifecycle.awaited(job)

        try:
            return await self._apply(*split(name), flag)
        except InvalidTransition:
            return seen  # flagged already, or ended: as the last read found it
        except (JobNotFound, QueueNotFound):
            return None

    async def _settle(self, queue: str, job_id: str, judged: Verdict) -> JobRecord | None:
        """Make the waiting job pending (or delayed) or buried as ``judged`` says, by
        compare-and-set; the job after, or None when it was no longer waiting (settled
        by someone else, cancelled, deleted)."""
        now = clock.now()
        try:
            return await self._apply(queue, job_id, lambda job: _apply(job, judged, now))
        except (InvalidTransition, JobNotFound, QueueNotFound):
            return None

    # -- a prerequisite's end -------------------------------------------------------------

    def ended(self, job: JobRecord, *, deleted: bool = False) -> None:
        """``job``, which has dependents, just ended as a prerequisite (or was deleted):
        settle them in the background (the answer to the change that ended it does not
        wait for its dependents; the sweep covers a process that stops first)."""
        task = asyncio.ensure_future(self._follow_up(job, deleted))
        self._settling.add(task)
        task.add_done_callback(self._followed_up)

    def _followed_up(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            message = exc.message if isinstance(exc, TqueuesError) else repr(exc)
            log.warning(
                "the jobs waiting for a job that ended are left to the sweep: %s",
                message,
                extra={"action": "dependents_failed"},
            )

    async def _follow_up(self, prerequisite: JobRecord, deleted: bool) -> None:
        name = key(prerequisite.queue, prerequisite.id)
        for dependent in await self.store.dependents_of(prerequisite.queue, prerequisite.id):
            job = await self._read(dependent)
            if job is None or job.status is not JobStatus.WAITING:
                continue
            found: dict[str, JobRecord | None] = {name: None if deleted else prerequisite}
            if not deleted and prerequisite.status not in DEAD:
                # Finished: the others are read until one has not finished (a
                # prerequisite that ended otherwise buries the job when it ends itself).
                for other in job.after:
                    if other not in found:
                        found[other] = read = await self._read(other)
                        if read is None or read.status is not JobStatus.FINISHED:
                            break
            judged = verdict(job.after, found)
            if judged.outcome != "wait":
                await self._settle(job.queue, job.id, judged)
        await self.store.drop_edges(prerequisite.queue, prerequisite.id)

    def close(self) -> None:
        """Stop following ends up (the sweep of the next start does it); idempotent."""
        for task in tuple(self._settling):
            task.cancel()

    # -- the sweep ------------------------------------------------------------------------

    async def sweep(self, force: bool = False) -> int:
        """Every :data:`SWEEP_INTERVAL` seconds (each call, if ``force``): judge up to
        :data:`SWEEP_BATCH` waiting jobs of each queue from their prerequisites as they are
        now, settle those whose time came, and flag the outstanding prerequisites whose
        flag a killed put never set; how many jobs were settled. Raises StoreUnavailable."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._swept < SWEEP_INTERVAL:
            return 0
        self._swept = loop.time()
        settled = 0
        for config in await self.store.list_queues():
            try:
                settled += await self._sweep_queue(config.name)
            except QueueNotFound:
                continue
        return settled

    async def _sweep_queue(self, queue: str) -> int:
        page = await self.store.list_jobs(
            queue, status=JobStatus.WAITING, cursor=self._cursors.get(queue), limit=SWEEP_BATCH
        )
        self._cursors[queue] = page.next_cursor
        settled = 0
        for job in page.jobs:
            found = {name: await self._read(name) for name in job.after}
            judged = verdict(job.after, found)
            if judged.outcome == "wait":
                for name in judged.outstanding:
                    prerequisite = found[name]
                    if prerequisite is not None and not prerequisite.has_dependents:
                        await self.store.add_edges(job)  # (a put killed before its flags)
                        found[name] = await self._flag(name)
                judged = verdict(job.after, found)
            if judged.outcome != "wait" and await self._settle(queue, job.id, judged):
                settled += 1
        return settled

    # -- what is outstanding (explain) ------------------------------------------------------

    async def outstanding(self, job: JobRecord) -> Sequence[str]:
        """The prerequisites of ``job`` that have not finished yet, as read now."""
        found = {name: await self._read(name) for name in job.after}
        judged = verdict(job.after, found)
        return judged.outstanding


def _apply(job: JobRecord, judged: Verdict, now: float) -> JobRecord:
    """``judged`` applied to the waiting ``job``. Raises InvalidTransition (not waiting)."""
    if judged.outcome == "ready":
        return lifecycle.unblock(job, now=now)
    return lifecycle.orphan(job, reason=judged.reason or "a prerequisite failed", now=now)


__all__ = ["SWEEP_BATCH", "SWEEP_INTERVAL", "Dependents"]
