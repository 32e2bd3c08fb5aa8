"""Dependencies between jobs (#25, part 4): what ``after`` names and what a waiting job's
prerequisites decide. Pure functions; the store's side is :mod:`tqueues.stores.dependents`.

A job put with ``after`` names the jobs it waits for: each entry is a job id (a job of the
same queue) or ``"queue/id"`` (a job of any queue; queue names have no ``/``, and the ids
the dispatcher makes have none either). Entries are kept as ``"queue/id"`` (:func:`key`;
a request's are checked by :func:`tqueues.dispatcher.models.parse_after`). Every
prerequisite must exist when the job is put (an unknown one is a 400), so a job can
only name jobs older than itself: the one cycle a request could ask for is a job naming
itself, which cannot happen either, since its id is made by the dispatcher when it is put.

The job then waits (``waiting``) until every prerequisite has finished; it becomes
pending (or delayed, while its own delay runs). When a prerequisite ends any other way
for good (buried, failed or cancelled) or is deleted, the waiting job is buried, its
``error`` naming that prerequisite and what became of it (:func:`verdict`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from tqueues.jobs import JobRecord, JobStatus

#: What a prerequisite may end as that buries the jobs waiting for it.
DEAD = frozenset({JobStatus.BURIED, JobStatus.FAILED, JobStatus.CANCELLED})


def key(queue: str, job_id: str) -> str:
    """How ``after`` names a job: ``"queue/id"``."""
    return f"{queue}/{job_id}"


def split(name: str) -> tuple[str, str]:
    """The ``(queue, id)`` of a :func:`key`."""
    queue, _, job_id = name.partition("/")
    return queue, job_id


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a waiting job's prerequisites, as read, make of it: ``"ready"`` (all
    finished), ``"bury"`` (one ended otherwise or is gone: ``reason`` says which) or
    ``"wait"`` (``outstanding`` names those not ended yet)."""

    outcome: str
    reason: str | None = None
    outstanding: tuple[str, ...] = ()


def verdict(after: Sequence[str], found: Mapping[str, JobRecord | None]) -> Verdict:
    """The :class:`Verdict` of a job waiting for ``after``, its prerequisites as
    ``found`` (by :func:`key`; None: no such job). A prerequisite not in ``found`` counts
    as outstanding (not read)."""
    outstanding: list[str] = []
    for name in after:
        if name not in found:
            outstanding.append(name)
            continue
        job = found[name]
        if job is None:
            return Verdict("bury", f"prerequisite {name} was deleted")
        if job.status in DEAD:
            return Verdict("bury", f"prerequisite {name} is {job.status.value}")
        if job.status is not JobStatus.FINISHED:
            outstanding.append(name)
    if outstanding:
        return Verdict("wait", outstanding=tuple(outstanding))
    return Verdict("ready")


def settles(job: JobRecord) -> bool:
    """Whether ``job`` has ended as a prerequisite: finished, or one of :data:`DEAD`."""
    return job.status is JobStatus.FINISHED or job.status in DEAD


__all__ = ["DEAD", "Verdict", "key", "settles", "split", "verdict"]
