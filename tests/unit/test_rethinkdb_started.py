"""The started jobs the RethinkDB store keeps as it last wrote them (started.py): what it
keeps, for how long, and when it proposes a change without a read."""

from __future__ import annotations

import pytest

from tqueues import lifecycle
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig
from tqueues.stores.primitives import Mutation

pytest.importorskip("rethinkdb")

from tqueues.stores.rethinkdb.started import StartedJobs

NOW = 1_000_000.0


def started(n: int, *, args: list[object] | None = None, queue: str = "q") -> JobRecord:
    new = NewJob.from_request({"queue": queue, "method": "m:f", "args": args or [n]})
    job = lifecycle.create(new, QueueConfig(queue), now=NOW, id=f"job-{n:04d}")
    return lifecycle.claim(job, lease=f"lease-{n}", worker=None, now=NOW)


def finish(lease: str | None) -> Mutation:
    return lambda job: lifecycle.finish(job, lease=lease, result=None, now=NOW + 1)


def test_a_kept_job_proposes_its_change_and_a_refused_change_proposes_nothing() -> None:
    kept = StartedJobs()
    job = started(1)
    kept.remember(job)
    before, after = kept.changed("q", job.id, finish(job.lease)) or (None, None)
    assert before == job and after is not None
    assert after.status is JobStatus.FINISHED and after.rev == job.rev + 1
    # another lease: the kept copy may be stale, so its refusal is not trusted
    assert kept.changed("q", job.id, finish("someone-else")) is None
    # another queue's job of the same id is another job
    assert kept.changed("other", job.id, finish(job.lease)) is None


def test_only_started_jobs_of_small_json_are_kept() -> None:
    kept = StartedJobs(max_json=100)
    small, large = started(1), started(2, args=["x" * 200])
    kept.remember(small)
    kept.remember(large)
    assert len(kept) == 1 and kept.changed("q", large.id, finish(large.lease)) is None
    # a job written as anything but started is forgotten
    done = lifecycle.finish(small, lease=small.lease, result=1, now=NOW + 1)
    kept.remember(done)
    assert len(kept) == 0


def test_the_oldest_written_goes_first_and_forget_forgets() -> None:
    kept = StartedJobs(size=3)
    jobs = [started(n) for n in range(4)]
    for job in jobs[:3]:
        kept.remember(job)
    kept.remember(jobs[0])  # written again: the newest now
    kept.remember(jobs[3])
    assert len(kept) == 3
    assert kept.changed("q", jobs[1].id, finish(jobs[1].lease)) is None
    for job in (jobs[0], jobs[2], jobs[3]):
        assert kept.changed("q", job.id, finish(job.lease)) is not None
    kept.forget("q", jobs[2].id)
    assert len(kept) == 2 and kept.changed("q", jobs[2].id, finish(jobs[2].lease)) is None
