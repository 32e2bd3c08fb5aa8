"""The started jobs a process keeps as it last wrote them: a hint that lets a job's next
change (its outcome, usually) be one conditional write, with no read before it.

A kept job is never trusted beyond the compare-and-set it proposes: a write that finds the
job moved on (another process changed it) is redone from a fresh read, and so is a change
the kept job refuses (the refusal may come from a stale copy).
"""

from __future__ import annotations

import collections
import json

from tqueues.errors import TqueuesError
from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.primitives import Mutation

#: started jobs kept at most (the oldest written dropped first), and the most JSON (in
#: characters of ``args``, ``kwargs`` and ``extra``) a job may hold to be kept.
STARTED_CACHE, STARTED_CACHE_JSON = 20_000, 8192


class StartedJobs:
    """(queue, id) -> a started job as this process last wrote it."""

    def __init__(self, size: int = STARTED_CACHE, max_json: int = STARTED_CACHE_JSON) -> None:
        self.size, self.max_json = size, max_json
        self._jobs: collections.OrderedDict[tuple[str, str], JobRecord] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def remember(self, job: JobRecord) -> None:
        """Keep ``job`` (as just written) if it is started and its ``args``, ``kwargs`` and
        ``extra`` take at most ``max_json`` characters of JSON; else forget it."""
        key = (job.queue, job.id)
        self._jobs.pop(key, None)
        if job.status is not JobStatus.STARTED:
            return
        try:
            size = len(json.dumps((job.args, job.kwargs, job.extra), default=str))
        except (TypeError, ValueError):
            return
        if size > self.max_json:
            return
        self._jobs[key] = job
        if len(self._jobs) > self.size:
            self._jobs.popitem(last=False)

    def forget(self, queue: str, job_id: str) -> None:
        self._jobs.pop((queue, job_id), None)

    def changed(
        self, queue: str, job_id: str, change: Mutation
    ) -> tuple[JobRecord, JobRecord] | None:
        """(before, after) from the job as kept, if it is kept and ``change`` accepts it;
        None otherwise (the caller reads the job: a refusal is only trusted from a fresh
        read, since the kept job may be stale)."""
        before = self._jobs.get((queue, job_id))
        if before is None:
            return None
        try:
            return before, change(before).succeeding(before)
        except TqueuesError:
            return None


__all__ = ["STARTED_CACHE", "STARTED_CACHE_JSON", "StartedJobs"]
