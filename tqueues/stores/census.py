"""How many jobs each queue holds in each status, kept in memory by a store that alone
writes its jobs (the embedded store: its file belongs to one dispatcher).

The counts are taken once when the store opens (one walk of the jobs: about a quarter
of a second at 1,000,000 jobs), then moved by every write the store makes (an insert, a
claim, a change, a deletion: the reaper's too, a truncate, a drop) as that write's
transaction commits, whether or not its caller still waits for it. Reading them costs
nothing however deep the queue; counting through an index walks every entry (45-80 ms
at 1,000,000 jobs).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from tqueues.jobs import JobRecord, JobStatus


class Census:
    """Jobs per queue and status. Everything here runs on the event loop's thread."""

    def __init__(self) -> None:
        self._counts: dict[str, collections.Counter[JobStatus]] = collections.defaultdict(
            collections.Counter
        )

    def load(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Start from ``(queue, status, count)`` rows (a count of every job)."""
        self._counts.clear()
        for queue, status, count in rows:
            self._counts[queue][JobStatus(status)] = count

    def added(self, job: JobRecord) -> None:
        """``job`` was inserted."""
        self._counts[job.queue][job.status] += 1

    def moved(self, before: JobRecord, after: JobRecord) -> None:
        """A job was rewritten from ``before`` to ``after``."""
        if before.status is not after.status:
            counts = self._counts[after.queue]
            counts[before.status] -= 1
            counts[after.status] += 1

    def claimed(self, jobs: Iterable[JobRecord]) -> None:
        """Pending ``jobs`` were claimed (each is started now)."""
        for job in jobs:
            counts = self._counts[job.queue]
            counts[JobStatus.PENDING] -= 1
            counts[JobStatus.STARTED] += 1

    def removed(self, queue: str, status: JobStatus, count: int = 1) -> None:
        """``count`` jobs of ``status`` were deleted without being recorded."""
        self._counts[queue][status] -= count

    def of(self, queue: str) -> dict[JobStatus, int]:
        """The queue's count of each status that has jobs."""
        return {status: n for status, n in self._counts.get(queue, {}).items() if n}
