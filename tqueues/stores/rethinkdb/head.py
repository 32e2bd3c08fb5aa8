"""The pending head of each queue: its most urgent pending jobs, kept in memory from the
queue's changefeed, so that a claim finds its candidates without an index read.

Why: every index range read costs a RethinkDB 2.4 server about a millisecond of CPU even
when it finds nothing, and a read of ``n`` candidates reads ``n`` documents from each of
the table's eight hash sub-shards (a read of 27 candidates: about 5 ms of server CPU, more
than writing the claims of 20 jobs). The changefeed already brings every change of the
table to this process; a :class:`Head` keeps, per queue, the pending jobs at the front
of the take order (the ``state`` index: priority, then ``ready_at``, then id), and a claim
reads only when the head cannot answer.

A head is a hint, never the truth: the claim that uses it is a compare-and-set on the
job's ``rev`` and status, so a stale entry costs a lost claim (the entry is dropped), never
a job taken twice. What the head guarantees instead is that it misses nothing for long:

* It is trusted only while its queue's feed is up, and only from a fill (an index read)
  begun after the feed opened. A feed that breaks, or that reports dropped changes, makes
  it cold (:meth:`Heads.forget`): the next claim reads the index and fills it again.
* Changes are applied by revision: each job's ``rev`` grows with every write, so a change
  older than what the head knows (a feed message that arrives after this process's own
  claim was answered, or a fill's read that raced a change) is ignored. A job that stops
  being pending leaves a tombstone (its revision) so that an older "pending" of it is not
  taken back in; tombstones are bounded (:data:`TOMBSTONES`), and a stale entry that gets
  past them only costs a lost claim.
* A head holds at most ``size`` jobs. When more are pending it is *incomplete*: it knows
  nothing beyond its ``bound`` (the key of the last job it keeps), drops changes of jobs
  beyond it, and answers a claim for more jobs than it holds with None (read the index).
* It is refilled at most every ``refresh`` seconds even when it answers, a safety net
  against a change the feed did not deliver.

The same feed tells the reaper when a queue needs its sweep (expired leases, due delayed
jobs, ttls) and its retention purge: a head also keeps, for each, a :class:`DueTime`,
the earliest time anything it acts on may come due, from what its last run read (the
earliest lease, delay and ttl after it; the earliest finished, failed or cancelled job
left) and every change since (a claim's lease, a delayed put, a job with a ttl, a job
that ended). Until then the reaper leaves the queue's index alone: an idle queue costs
the server no reads but one sweep every SWEEP_SAFETY seconds and one purge every
PURGE_SAFETY seconds. The times are
only ever lowered by changes, so a lease that a heartbeat extended makes one sweep that
finds nothing and reads the next time.

A head holds jobs *slim* (:func:`slim`: no arguments, results or fields set by updates),
so that a queue of large jobs costs it little memory; a fill reads only the fields it
keeps (:data:`SLIM_FIELDS`), and a claim writes only the fields a claim changes, its
write's answer being the whole job (:mod:`~tqueues.stores.rethinkdb.claims`).

Pure bookkeeping, no I/O; one instance per store, used from the event loop only.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import random
import time
from collections.abc import Callable, Sequence

from tqueues.jobs import JobRecord, JobStatus

Key = tuple[int, float, str]

#: pending jobs a head keeps per queue, and what a fill reads.
HEAD_SIZE = 512
#: seconds a head answers claims from memory before the next claim refills it.
HEAD_REFRESH = 10.0
#: revisions of jobs that stopped being pending, kept per queue (oldest forgotten first).
TOMBSTONES = 8192
#: a tombstone's revision for a deleted job: no later revision can follow.
DELETED = 1 << 62
#: seconds between two sweeps of a queue whose head says nothing is due (a safety net).
SWEEP_SAFETY = 30.0
#: seconds between two retention purges of a queue whose head says nothing has passed its
#: retention (a safety net: a purge late by minutes delays only the deletion of old jobs).
PURGE_SAFETY = 300.0
#: per chore of the reaper, its safety net
SAFETY = {"sweep": SWEEP_SAFETY, "purge": PURGE_SAFETY}
#: seconds after a lost claim during which a queue counts as contended (see spread).
CONTENDED = 10.0
#: a contended claim of ``n`` jobs picks among the ``n * SPREAD`` most urgent candidates.
SPREAD = 16


#: the fields of a job a head keeps (and a fill reads): the rest are left empty.
SLIM_FIELDS = ("id", "queue", "method", "status", "priority", "ttr", "max_attempts",
               "attempts", "ready_at", "created_at", "rev", "expires_at")  # fmt: skip


def slim(job: JobRecord) -> JobRecord:
    """``job`` without what it carries (arguments, result, error, fields set by updates):
    enough to order it and to know its revision, never to be written or handed out."""
    if not (job.args or job.kwargs or job.extra or job.result is not None or job.after):
        if job.error is None and job.traceback is None:
            return job
    return job.evolve(args=[], kwargs={}, extra={}, result=None, error=None, traceback=None,
                      after=[])  # fmt: skip


def take_key(job: JobRecord) -> Key:
    """Where ``job`` stands in the take order (the ``state`` index, ties by id)."""
    return (job.priority, job.ready_at, job.id)


def ended_at(job: JobRecord) -> float | None:
    """When ``job`` ended, if it is finished, failed or cancelled (its retention runs from
    then); None otherwise."""
    return job.finished_at if job.status.is_final else None


class DueTime:
    """The earliest time (wall clock, seconds) something may come due for one of the
    reaper's chores on one queue: from what the chore's last run read, lowered by every
    change since (also those during the run: it may have read before them)."""

    def __init__(self) -> None:
        self.at = float("-inf")  #: -inf: unknown, so due
        self.low = float("inf")  #: the earliest change since the run under way began
        self.running = 0
        self.ran_at = 0.0  #: monotonic time the last run ended

    def lower(self, when: float) -> None:
        self.at = min(self.at, when)
        self.low = min(self.low, when)

    def due(self, now: float, safety: float) -> bool:
        """Whether the chore should run as of ``now`` (or ``safety`` seconds passed)."""
        return self.at <= now or time.monotonic() - self.ran_at >= safety

    def begin(self) -> None:
        if not self.running:
            self.low = float("inf")
        self.running += 1

    def end(self, found: float) -> None:
        """The run read that nothing comes due before ``found`` (-inf: it failed)."""
        self.running -= 1
        self.at = min(found, self.low)
        self.ran_at = time.monotonic()


def due_at(job: JobRecord) -> float | None:
    """When the sweep may next act on ``job`` as it is (wall clock, seconds): its lease
    running out, its delay or its ttl; None for a job it leaves be."""
    status = job.status
    times: list[float] = []
    if status is JobStatus.STARTED and job.lease_expires is not None:
        times.append(job.lease_expires)
    if status is JobStatus.DELAYED:
        times.append(job.ready_at)
    if status in (JobStatus.PENDING, JobStatus.DELAYED) and job.expires_at is not None:
        times.append(job.expires_at)
    return min(times) if times else None


def spread(candidates: Sequence[JobRecord], count: int) -> list[JobRecord]:
    """``candidates`` (in take order) reordered so that takers in other processes, which
    see the same candidates, mostly pick others: the first ``count * SPREAD`` are shuffled
    within each run of one priority, so a higher priority still goes first, while among
    jobs of one priority the order is kept only within that window."""
    window = list(candidates[: count * SPREAD])
    picked: list[JobRecord] = []
    for _, run in itertools.groupby(window, key=lambda job: job.priority):
        jobs = list(run)
        random.shuffle(jobs)
        picked += jobs
    return picked + list(candidates[len(window) :])


class Head:
    """The pending head of one queue (see the module's docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: dict[str, JobRecord] = {}
        self.keys: list[Key] = []  #: the keys of ``jobs``, in take order.
        self.complete = False  #: it holds every pending job of the queue.
        self.bound: Key | None = None  #: when incomplete: the last key it knows of.
        self.filled_at = 0.0  #: monotonic time of its last fill (0: never filled: cold).
        #: fills under way: meanwhile every pending job a change brings is kept, since
        #: the read may have been answered before that change (the fill then trims)
        self.filling = 0
        #: the lowest bound a trim set while fills were under way: the jobs it dropped
        #: beyond are unknown to those fills too
        self.cut: Key | None = None
        #: the reaper's chores: when the sweep may have something to do, and the earliest
        #: end of a job the retention purge may delete (its retention after that)
        self.due = {"sweep": DueTime(), "purge": DueTime()}
        self.gone: collections.OrderedDict[str, int] = collections.OrderedDict()

    def apply(self, old: JobRecord | None, new: JobRecord | None) -> None:
        """One change of a job (``old`` before, ``new`` after; None: absent)."""
        if new is not None:
            if (when := due_at(new)) is not None:
                self.due["sweep"].lower(when)
            if (ended := ended_at(new)) is not None:
                self.due["purge"].lower(ended)
        if new is None:
            if old is not None:
                self.stale(old.id, DELETED)
            return
        if new.status is not JobStatus.PENDING:
            self.stale(new.id, new.rev)
            return
        if self.gone.get(new.id, -1) >= new.rev:
            return
        held = self.jobs.get(new.id)
        if held is not None:
            if held.rev >= new.rev:
                return
            self._remove(held)
        if (
            self.complete
            or self.filling
            or (self.bound is not None and take_key(new) <= self.bound)
        ):
            self._add(new)
            self._trim()

    def stale(self, job_id: str, rev: int) -> None:
        """The job is not pending at any revision up to ``rev``: drop what the head holds
        of it at such a revision, and remember ``rev``."""
        if self.gone.get(job_id, -1) < rev:
            self.gone[job_id] = rev
            self.gone.move_to_end(job_id)
            if len(self.gone) > TOMBSTONES:
                self.gone.popitem(last=False)
        held = self.jobs.get(job_id)
        if held is not None and held.rev <= rev:
            self._remove(held)

    def fill(self, read: Sequence[JobRecord], limit: int) -> None:
        """Merge an index read of the ``limit`` most urgent pending jobs, begun after the
        feed opened (the changes applied since then are newer or as new)."""
        keep = dict(self.jobs)
        self.jobs, self.keys = {}, []
        self.complete, self.bound = True, None
        for job in read:
            if job.status is JobStatus.PENDING and self.gone.get(job.id, -1) < job.rev:
                held = keep.get(job.id)
                if held is None or held.rev < job.rev:
                    keep[job.id] = job
        for job in keep.values():
            self._add(job)
        bounds = [self.cut] if self.cut is not None else []
        if len(read) >= limit:  # jobs may be pending beyond the read
            bounds.append(max(take_key(job) for job in read))
        if bounds:  # the head knows nothing beyond the lowest
            last = min(bounds)
            self.complete, self.bound = False, last
            while self.keys and self.keys[-1] > last:
                self._remove(self.jobs[self.keys[-1][2]])
        # fills still under way were begun before this one trimmed: they do not know
        # what lies beyond its bound either (the lowest bound, any earlier cut included)
        if not self.filling:
            self.cut = None
        elif bounds:
            self.cut = self.bound
        self._trim()
        self.filled_at = time.monotonic()

    def candidates(self, count: int, spare: int, refresh: float) -> list[JobRecord] | None:
        """The ``count`` most urgent pending jobs it holds, and up to ``spare`` more (for
        claims lost to other takers); None when it cannot tell: it holds fewer than
        ``count`` while jobs may be pending beyond it, or it was never filled, or its last
        fill is older than ``refresh`` seconds."""
        if not self.filled_at or time.monotonic() - self.filled_at > refresh:
            return None
        if not self.complete and len(self.keys) < count:
            return None
        return [self.jobs[job_key[2]] for job_key in self.keys[: count + spare]]

    def _add(self, job: JobRecord) -> None:
        job = slim(job)
        self.jobs[job.id] = job
        bisect.insort(self.keys, take_key(job))

    def _remove(self, job: JobRecord) -> None:
        del self.jobs[job.id]
        job_key = take_key(job)
        index = bisect.bisect_left(self.keys, job_key)
        if index < len(self.keys) and self.keys[index] == job_key:
            del self.keys[index]

    def _trim(self) -> None:
        while len(self.keys) > self.size:
            self._remove(self.jobs[self.keys[-1][2]])
            self.complete, self.bound = False, self.keys[-1]
            if self.filling and (self.cut is None or self.bound < self.cut):
                self.cut = self.bound


class Heads:
    """The heads of one store's queues, each tied to its queue's changefeed: a head exists
    from the feed's opening (:meth:`opened`) until it breaks (:meth:`forget`), and answers
    claims only after a fill begun in between (:meth:`begin_fill`, :meth:`end_fill`)."""

    def __init__(self, size: int = HEAD_SIZE, refresh: float = HEAD_REFRESH) -> None:
        self.size, self.refresh = size, refresh
        self._heads: dict[str, Head] = {}  #: queues whose feed is up
        #: "answered": claims (groups) answered from memory; "fills": index reads that
        #: filled a head; "lost": claims of candidates that another taker won first;
        #: "sweeps", "purges": runs of the reaper's chores that set a head's due time
        self.counts: collections.Counter[str] = collections.Counter()
        self._lost_at: dict[str, float] = {}  #: queue -> monotonic time of its last lost claim

    def opened(self, queue: str) -> None:
        """The queue's feed just opened: a head starts, cold until filled."""
        self._heads[queue] = Head(self.size)

    def reset(self, queue: str) -> None:
        """Start the queue's head afresh, cold, if it has one (its jobs went all at once,
        a truncate); its feed stays up."""
        if queue in self._heads:
            self.opened(queue)

    def forget(self, queue: str) -> None:
        """The queue's feed broke, missed changes, or the queue is going: no head."""
        self._heads.pop(queue, None)

    def apply(self, queue: str, old: JobRecord | None, new: JobRecord | None) -> None:
        """A change of a job of ``queue``, from its feed or from this process's own write
        (answered before the feed brings it: the feed's copy is then ignored)."""
        head = self._heads.get(queue)
        if head is not None:
            head.apply(old, new)

    def lost(self, queue: str, job: JobRecord) -> None:
        """A claim of ``job`` (pending at ``job.rev``) lost: it moved on."""
        self.counts["lost"] += 1
        self._lost_at[queue] = time.monotonic()
        head = self._heads.get(queue)
        if head is not None:
            head.stale(job.id, job.rev)

    def candidates(self, queue: str, count: int, spare: int = 0) -> list[JobRecord] | None:
        """Up to ``count`` (and ``spare`` more) of the most urgent pending jobs of
        ``queue`` from memory (see :meth:`Head.candidates`); None when the head cannot
        tell (no feed, not filled, too few held, due for refresh)."""
        head = self._heads.get(queue)
        found = None if head is None else head.candidates(count, spare, self.refresh)
        if found is not None:
            self.counts["answered"] += 1
        return found

    def any_pending(self, queue: str) -> bool | None:
        """Whether ``queue`` has a pending job, from memory; None when its head cannot
        tell (a put for a waiting taker asks, which is not a claim: not counted)."""
        head = self._heads.get(queue)
        found = None if head is None else head.candidates(1, 0, self.refresh)
        return None if found is None else bool(found)

    def needs(self, queue: str, chore: str, now: float) -> bool:
        """Whether the reaper's ``chore`` ("sweep", or "purge" with ``now`` less the
        queue's retention) should read the queue's index as of ``now`` (wall clock): it
        has no head (no feed), or something may be due, or its last run is SWEEP_SAFETY
        (a sweep) or PURGE_SAFETY (a purge) seconds old."""
        head = self._heads.get(queue)
        return head is None or head.due[chore].due(now, SAFETY[chore])

    def begin(self, queue: str, chore: str) -> Callable[[float], None] | None:
        """Before the reaper's ``chore`` reads the queue's index: a function to call once
        with the earliest time after the run that its reads found (inf: none; the run's
        ``now`` if it left jobs due; -inf if it failed), which sets the head's due time;
        None when the queue has no head."""
        head = self._heads.get(queue)
        if head is None:
            return None
        due = head.due[chore]
        due.begin()

        def end(found: float) -> None:
            due.end(found)  # (harmless on a head since forgotten)
            if self._heads.get(queue) is head:
                self.counts[f"{chore}s"] += 1

        return end

    def contended(self, queue: str) -> bool:
        """Whether a claim of ``queue`` lost a job to another taker in the last
        CONTENDED seconds (other processes take from it too)."""
        return time.monotonic() - self._lost_at.get(queue, -CONTENDED) < CONTENDED

    def begin_fill(self, queue: str) -> Callable[[Sequence[JobRecord] | None, int], None] | None:
        """Before an index read of the queue's pending jobs: a function to call once with
        what it read (None if the read failed) and the limit it read with, which fills the
        head if the head it was begun for is still there; None when the queue has no head
        (no feed)."""
        head = self._heads.get(queue)
        if head is None:
            return None
        head.filling += 1

        def end_fill(read: Sequence[JobRecord] | None, limit: int) -> None:
            """Fill with ``read`` (None: the read failed, nothing to fill with)."""
            head.filling -= 1
            if read is not None and self._heads.get(queue) is head:
                head.fill(read, limit)
                self.counts["fills"] += 1

        return end_fill


__all__ = [
    "HEAD_REFRESH",
    "HEAD_SIZE",
    "SLIM_FIELDS",
    "DueTime",
    "Head",
    "Heads",
    "due_at",
    "ended_at",
    "slim",
    "spread",
    "take_key",
]
