"""The transitions of a job, as pure functions from one :class:`JobRecord` to the next.

Every store applies these same functions, so the semantics cannot drift between stores:
a store reads a job, calls the transition (which raises if it is not allowed) and writes
the result only if the job did not change in between (compare-and-set on ``rev``). Each
transition returns the next revision (``rev + 1``) and records its name in ``event``,
which is what change streams report.

Lease rules: an operation that carries a lease token is accepted only while the job is
``started`` under that same token (else :class:`LeaseMismatch`); an operation without a
token (as the original TQueues clients send it) is accepted in any non-final state.
Operations on a final job raise :class:`InvalidTransition`, but for an operator's
:func:`kick` of a failed job, which sends it back to pending.

Cancellation (:func:`cancel`): a job not running ends ``cancelled`` at once; a started one
is flagged (``cancel_requested``) and keeps running until its worker hears of it; whatever
then ends the run but a finish (a failure, a release, a burial, its lease running out)
ends it ``cancelled``: a job asked to stop is never retried. A finish that comes first
wins: the job ran to its end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tqueues.errors import InvalidTransition, LeaseMismatch, ValidationError
from tqueues.jobs import (
    JSON,
    RESERVED_FIELDS,
    JobRecord,
    JobStatus,
    NewJob,
    QueueConfig,
    new_random_id,
)


def create(new: NewJob, config: QueueConfig, *, now: float, id: str | None = None) -> JobRecord:
    """The stored form of a newly put job, the queue's defaults filling what it left out;
    its id is ``id`` (a new random one if None).

    Pending, or delayed while its delay runs; an urgent job gets priority -1, ahead of all.
    A job put with ``after`` is waiting (:func:`unblock` then makes it pending or delayed).
    """
    delay = new.delay if new.delay is not None else config.delay
    ttl = new.ttl if new.ttl is not None else config.ttl
    priority = new.priority if new.priority is not None else config.priority
    status = JobStatus.DELAYED if delay > 0 else JobStatus.PENDING
    return JobRecord(
        id=id if id is not None else new_random_id(),
        queue=new.queue,
        method=new.method,
        args=new.args,
        kwargs=new.kwargs,
        status=JobStatus.WAITING if new.after else status,
        priority=-1 if new.urgent else priority,
        ttr=new.ttr if new.ttr is not None else config.ttr,
        max_attempts=new.max_attempts if new.max_attempts is not None else config.max_attempts,
        attempts=0,
        ready_at=now + delay,
        created_at=now,
        expires_at=now + ttl if ttl is not None else None,
        event="put",
        after=list(new.after),
        key=new.key,
    )


#: The fields :func:`claim` sets (the others it keeps as they were): a store may write a
#: claim as these alone.
CLAIM_FIELDS = ("status", "lease", "lease_expires", "attempts", "started_at", "worker",
                "event", "rev")  # fmt: skip


def claim(job: JobRecord, *, lease: str, worker: str | None, now: float) -> JobRecord:
    """A pending job taken by a worker: started, under a new lease of ``job.ttr`` seconds
    (only :data:`CLAIM_FIELDS` change)."""
    if job.status is not JobStatus.PENDING:
        raise InvalidTransition(f"job {job.id} is {job.status.value}, not pending")
    return job.revise(
        status=JobStatus.STARTED,
        lease=lease,
        lease_expires=now + job.ttr,
        attempts=job.attempts + 1,
        started_at=now,
        worker=worker,
        event="taken",
    )


def put_of_handed(claimed: JobRecord) -> JobRecord:
    """The put a job inserted already claimed (handed to a waiting taker in its put's
    write) was: the pending revision before :func:`claim`, as :func:`create` made it.

    Stores that learn of such an insert from a change feed publish this "put" before the
    "taken", so that watchers see the same two changes as for any other job.
    """
    return claimed.evolve(
        status=JobStatus.PENDING,
        lease=None,
        lease_expires=None,
        attempts=claimed.attempts - 1,
        started_at=None,
        worker=None,
        rev=claimed.rev - 1,
        event="put",
    )


def _check_lease(job: JobRecord, lease: str | None) -> None:
    if job.status.is_final:
        raise InvalidTransition(f"job {job.id} is already {job.status.value}", status=job.status)
    if lease is not None and (job.status is not JobStatus.STARTED or job.lease != lease):
        raise LeaseMismatch(
            f"the lease on job {job.id} is no longer yours: it expired and the job is now "
            f"{job.status.value}",
            status=job.status,
        )


def _check_not_waiting(job: JobRecord, what: str) -> None:
    if job.status is JobStatus.WAITING:
        raise InvalidTransition(
            f"job {job.id} is waiting for the jobs it names in 'after': it has no run to {what}",
            status=job.status,
        )


def update(
    job: JobRecord, fields: Mapping[str, JSON], *, lease: str | None, now: float
) -> JobRecord:
    """Merge ``fields`` into the job's own fields; with a lease, also extend the lease (touch)."""
    reserved = sorted(set(fields) & RESERVED_FIELDS)
    if reserved:
        raise ValidationError(
            f"field(s) owned by the dispatcher cannot be updated: {', '.join(reserved)}",
            fields=reserved,
        )
    _check_lease(job, lease)
    changes: dict[str, Any] = {"extra": {**job.extra, **fields}, "event": "updated"}
    if lease is not None:
        changes["lease_expires"] = now + job.ttr
    return job.revise(**changes)


def finish(job: JobRecord, *, lease: str | None, result: JSON, now: float) -> JobRecord:
    """The job done, with ``result`` kept."""
    _check_lease(job, lease)
    return job.revise(
        status=JobStatus.FINISHED,
        result=result,
        finished_at=now,
        lease=None,
        lease_expires=None,
        event="finished",
    )


def fail(
    job: JobRecord,
    *,
    lease: str | None,
    error: str,
    traceback: str | None,
    now: float,
    backoff: Callable[[int], float],
    permanent: bool = False,
) -> JobRecord:
    """A failed run: retried after ``backoff(attempts)`` seconds while attempts remain.

    Out of attempts, the job is buried with its error; a ``permanent`` failure (one no
    retry can mend, such as a method the worker may not run) ends it failed at once.
    """
    _check_lease(job, lease)
    _check_not_waiting(job, "fail")
    if job.cancel_requested:
        return cancelled(job, now=now)
    common: dict[str, Any] = {"error": error, "traceback": traceback, "lease": None,
                              "lease_expires": None}  # fmt: skip
    if permanent:
        return job.revise(status=JobStatus.FAILED, finished_at=now, event="failed", **common)
    if job.attempts < job.max_attempts:
        delay = backoff(max(job.attempts, 1))
        status = JobStatus.DELAYED if delay > 0 else JobStatus.PENDING
        return job.revise(status=status, ready_at=now + delay, event="failed", **common)
    return job.revise(status=JobStatus.BURIED, event="buried", **common)


def release(
    job: JobRecord, *, lease: str | None, delay: float, now: float, to_end: bool = False
) -> JobRecord:
    """The job given back untried (its attempt is not counted), takeable after ``delay``.

    It keeps its place in the queue, unless ``to_end`` (requeue) puts it behind every
    job that is ready now.
    """
    _check_lease(job, lease)
    _check_not_waiting(job, "release")
    if job.cancel_requested:
        return cancelled(job, now=now)
    if delay > 0 or to_end:
        ready_at = now + delay
    else:
        ready_at = job.ready_at
    return job.revise(
        status=JobStatus.DELAYED if delay > 0 else JobStatus.PENDING,
        attempts=max(job.attempts - 1, 0) if job.status is JobStatus.STARTED else job.attempts,
        ready_at=ready_at,
        lease=None,
        lease_expires=None,
        event="released",
    )


def touch(job: JobRecord, *, lease: str, ttr: float | None, now: float) -> JobRecord:
    """The lease extended to ``ttr`` (default: the job's ttr) seconds from now."""
    _check_lease(job, lease)
    return job.revise(lease_expires=now + (ttr if ttr is not None else job.ttr), event="touched")


def outlive(job: JobRecord, *, now: float) -> JobRecord:
    """A waiting job whose ttl ran out, buried (a queue that deletes such jobs removes it)."""
    if (
        job.expires_at is None
        or job.expires_at > now
        or job.status
        not in (
            JobStatus.PENDING,
            JobStatus.DELAYED,
        )
    ):
        raise InvalidTransition(f"job {job.id} has not outlived its ttl")
    return job.revise(
        status=JobStatus.BURIED,
        error=f"its ttl ran out after {job.expires_at - job.created_at:g}s unfinished",
        event="buried",
    )


def expire(job: JobRecord, *, now: float) -> JobRecord:
    """A started job whose lease ran out: pending again, or buried when out of attempts."""
    if job.status is not JobStatus.STARTED or job.lease_expires is None:
        raise InvalidTransition(f"job {job.id} holds no lease")
    if job.lease_expires > now:
        raise InvalidTransition(f"the lease on job {job.id} has not expired")
    if job.cancel_requested:
        return cancelled(job, now=now)
    if job.attempts >= job.max_attempts:
        return job.revise(
            status=JobStatus.BURIED,
            lease=None,
            lease_expires=None,
            error=f"lease expired after {job.ttr:g}s on attempt {job.attempts} of "
            f"{job.max_attempts}",
            event="expired",
        )
    return job.revise(status=JobStatus.PENDING, lease=None, lease_expires=None, event="expired")


def promote(job: JobRecord, *, now: float) -> JobRecord:
    """A delayed job whose time has come: pending."""
    if job.status is not JobStatus.DELAYED or job.ready_at > now:
        raise InvalidTransition(f"job {job.id} is not due")
    return job.revise(status=JobStatus.PENDING, event="promoted")


def bury(job: JobRecord, *, lease: str | None, reason: str | None, now: float) -> JobRecord:
    """Set the job aside (dead-letter) until an operator kicks it; ``reason`` kept as error."""
    _check_lease(job, lease)
    if job.status is JobStatus.BURIED:
        raise InvalidTransition(f"job {job.id} is already buried", status=job.status)
    if job.cancel_requested:
        return cancelled(job, now=now)
    return job.revise(
        status=JobStatus.BURIED,
        lease=None,
        lease_expires=None,
        error=reason if reason is not None else job.error,
        event="buried",
    )


#: The states an operator's kick sends a job back from, to pending.
KICKABLE = (JobStatus.BURIED, JobStatus.DELAYED, JobStatus.FAILED)


def kick(job: JobRecord, *, now: float) -> JobRecord:
    """A buried, failed or delayed job, pending at the end of the queue (an operator's call).

    A buried or failed job gets its attempts renewed (``attempts`` 0: its whole
    ``max_attempts`` again, as a job just put; beanstalkd's kick and Tarantool's dig make
    a buried job ready with no count of its runs to carry over). A failed job is final
    until then: a kick is the one way out of ``failed``, and it is no longer final
    (``finished_at`` cleared, so the queue's retention no longer applies to it). Both keep
    their last ``error`` and ``traceback`` until the next run ends. A delayed job keeps
    its attempts: it only stops waiting.
    """
    if job.status not in KICKABLE:
        raise InvalidTransition(
            f"job {job.id} is {job.status.value}; only buried, failed or delayed jobs can be "
            "kicked",
            status=job.status,
        )
    attempts = job.attempts if job.status is JobStatus.DELAYED else 0
    return job.revise(
        status=JobStatus.PENDING, attempts=attempts, ready_at=now, finished_at=None, event="kicked"
    )


#: The states a cancel ends at once (a started job is flagged instead).
CANCELLABLE = (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.WAITING, JobStatus.BURIED)


def cancel(job: JobRecord, *, lease: str | None, now: float) -> JobRecord:
    """Stop the job for good (a producer's or an operator's call, or its worker's report
    that it stopped it).

    A pending, delayed, waiting or buried job ends ``cancelled`` at once (event "cancelled"). A
    started job is flagged ``cancel_requested`` (event "cancel_requested"; again if
    already flagged) and keeps its lease: its worker hears of it at its next heartbeat
    and stops the run, which then ends cancelled (see the module's docstring). With
    ``lease`` (the worker that holds the job reporting it stopped), a started job ends
    cancelled at once. Raises InvalidTransition for a job that ended (409), LeaseMismatch.
    """
    _check_lease(job, lease)
    if job.status is JobStatus.STARTED and lease is None:
        return job.revise(cancel_requested=True, event="cancel_requested")
    return cancelled(job, now=now)


def cancelled(job: JobRecord, *, now: float) -> JobRecord:
    """The job ended ``cancelled``: final, its lease gone, its error and result kept."""
    return job.revise(
        status=JobStatus.CANCELLED,
        finished_at=now,
        lease=None,
        lease_expires=None,
        event="cancelled",
    )


# -- dependencies (see tqueues.dependencies) -------------------------------------------------


def awaited(job: JobRecord) -> JobRecord:
    """The job with ``has_dependents`` set: a job put with ``after`` names it, so that its
    end looks its dependents up (event "awaited"). Raises InvalidTransition when the flag
    is set already, or the job has ended as a prerequisite (finished, buried, failed,
    cancelled: the dependent reads that itself, and a flag would be of no use)."""
    if job.has_dependents:
        raise InvalidTransition(f"job {job.id} has dependents already", status=job.status)
    if job.status in (JobStatus.FINISHED, JobStatus.BURIED, JobStatus.FAILED,
                      JobStatus.CANCELLED):  # fmt: skip
        raise InvalidTransition(f"job {job.id} is {job.status.value}", status=job.status)
    return job.revise(has_dependents=True, event="awaited")


def unblock(job: JobRecord, *, now: float) -> JobRecord:
    """A waiting job whose prerequisites all finished: pending at the end of the queue (its
    ``ready_at`` now), or delayed while its own delay runs (event "promoted")."""
    if job.status is not JobStatus.WAITING:
        raise InvalidTransition(f"job {job.id} is {job.status.value}, not waiting")
    if job.ready_at > now:
        return job.revise(status=JobStatus.DELAYED, event="promoted")
    return job.revise(status=JobStatus.PENDING, ready_at=now, event="promoted")


def orphan(job: JobRecord, *, reason: str, now: float) -> JobRecord:
    """A waiting job one of whose prerequisites failed for good or went: buried with
    ``reason`` as its error (an operator may kick it)."""
    if job.status is not JobStatus.WAITING:
        raise InvalidTransition(f"job {job.id} is {job.status.value}, not waiting")
    return job.revise(status=JobStatus.BURIED, error=reason, event="buried")
