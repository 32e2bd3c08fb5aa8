"""Why is my job not running? One job's situation in words and fields.

:func:`explain` is pure: the dispatcher gathers the job, its queue's settings, how many
jobs a take hands out before it, the workers of the registry and the time, and this
turns them into reasons, most telling first. Each reason is ``{"code", "text"}`` with the
fields it rests on (times are epoch seconds, durations seconds).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from tqueues.jobs import JSON, JobRecord, JobStatus, QueueConfig
from tqueues.stores.workers import WorkerRecord

#: Pending jobs counted ahead of a job at most (past it: "more than").
MAX_AHEAD = 10_000


def when(t: float, now: float) -> str:
    """``t`` in words: the UTC time and how far from ``now`` ("in 5 s", "3 min ago")."""
    stamp = datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({span(t - now)})"


def span(seconds: float) -> str:
    """A signed duration in words: "in 5 s", "3 min ago"."""
    size = abs(seconds)
    text = (
        f"{size:.1f} s" if size < 60 else f"{size / 60:.0f} min" if size < 3600
        else f"{size / 3600:.1f} h"
    )  # fmt: skip
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _reason(code: str, text: str, **fields: JSON) -> dict[str, JSON]:
    return {"code": code, "text": text, **fields}


def _ended(job: JobRecord, now: float) -> dict[str, JSON]:
    if job.status is JobStatus.FINISHED:
        return _reason("finished", f"It finished {when(job.finished_at or now, now)} after "
                       f"{job.attempts} attempt(s).", finished_at=job.finished_at,
                       attempts=job.attempts)  # fmt: skip
    if job.status is JobStatus.CANCELLED:
        return _reason("cancelled", f"It was cancelled {when(job.finished_at or now, now)}, "
                       f"after {job.attempts} attempt(s).", finished_at=job.finished_at,
                       attempts=job.attempts)  # fmt: skip
    if job.status is JobStatus.FAILED:
        return _reason("failed", f"It failed for good after {job.attempts} attempt(s): "
                       f"{job.error or 'no error given'}.", attempts=job.attempts,
                       error=job.error)  # fmt: skip
    return _reason("buried", f"It is buried after {job.attempts} of {job.max_attempts} "
                   f"attempt(s): {job.error or 'no error given'}. Kick it to run it again.",
                   attempts=job.attempts, max_attempts=job.max_attempts,
                   error=job.error)  # fmt: skip


def _leased(job: JobRecord, now: float) -> dict[str, JSON]:
    expires = job.lease_expires or now
    worker = job.worker or "(unnamed)"
    if expires >= now:
        return _reason("leased", f"It is running: leased to worker {worker} since "
                       f"{when(job.started_at or now, now)}; the lease ends "
                       f"{when(expires, now)} unless the worker touches it.",
                       worker=job.worker, started_at=job.started_at,
                       lease_expires=expires)  # fmt: skip
    return _reason("lease_expired", f"Its lease ran out {span(expires - now)} (worker "
                   f"{worker}): the reaper gives it back shortly.", worker=job.worker,
                   lease_expires=expires)  # fmt: skip


def _queued(job: JobRecord, ahead: int) -> dict[str, JSON]:
    if ahead >= MAX_AHEAD:
        text = f"More than {MAX_AHEAD:,} jobs are ahead of it in the take order."
    elif ahead:
        text = f"{ahead} job(s) of higher or equal priority are ahead of it in the take order."
    else:
        text = "It is next: the next take of this queue gets it."
    return _reason("queued", text, ahead=ahead, priority=job.priority)


def _workers(queue: str, workers: Sequence[WorkerRecord], now: float) -> dict[str, JSON]:
    watching = [w for w in workers if w.state(now) != "lost" and queue in w.queues]
    taking = [w for w in watching if w.state(now) == "running"]
    if not watching:
        return _reason("no_worker", f"No worker takes from queue {queue!r} (none has sent "
                       "a heartbeat in the last 15 s).", workers=0)  # fmt: skip
    if not taking:
        return _reason("no_worker_taking", f"The {len(watching)} worker(s) of queue "
                       f"{queue!r} are quiet or stopping: none takes.",
                       workers=len(watching))  # fmt: skip
    busy = sum(len(w.running) >= w.concurrency for w in taking)
    return _reason("workers", f"{len(taking)} worker(s) take from queue {queue!r}, {busy} "
                   "of them running as many jobs as they run at once.", workers=len(taking),
                   busy=busy)  # fmt: skip


def explain(
    job: JobRecord,
    config: QueueConfig,
    *,
    ahead: int | None,
    workers: Sequence[WorkerRecord],
    now: float,
    paused: bool = False,
    paused_until: float | None = None,
    outstanding: Sequence[str] = (),
) -> dict[str, Any]:
    """``{"queue", "id", "status", "summary", "reasons": [...]}`` for ``job``.

    ``ahead``: pending jobs a take hands out before it (counted up to MAX_AHEAD; None
    when not pending); ``workers``: the registry's workers; ``paused`` (until
    ``paused_until``, None: until resumed): the queue hands out nothing; ``outstanding``:
    of a waiting job, the jobs it waits for that have not finished (``queue/id``).
    """
    reasons: list[dict[str, JSON]] = []
    if job.status.is_final or job.status is JobStatus.BURIED:
        reasons.append(_ended(job, now))
    elif job.status is JobStatus.STARTED:
        if job.cancel_requested:
            reasons.append(_reason("cancel_requested", "Its cancellation was asked for: "
                                   "its worker stops it at its next heartbeat (about a "
                                   "second) and it ends cancelled.",
                                   worker=job.worker))  # fmt: skip
        reasons.append(_leased(job, now))
    else:
        if job.status is JobStatus.WAITING:
            names = ", ".join(outstanding) or "none (it is being settled)"
            reasons.append(_reason("waiting", f"It waits for {len(outstanding)} of the "
                                   f"{len(job.after)} job(s) it names in 'after' to finish: "
                                   f"{names}.", outstanding=list(outstanding),
                                   after=list(job.after)))  # fmt: skip
        if job.status is JobStatus.DELAYED:
            failed = f", after {job.attempts} failed attempt(s): {job.error}" if job.error else ""
            reasons.append(_reason("delayed", f"It is delayed until {when(job.ready_at, now)}"
                                   f"{failed}.", ready_at=job.ready_at,
                                   attempts=job.attempts))  # fmt: skip
        if paused:
            until = f"until {when(paused_until, now)}" if paused_until else "until resumed"
            reasons.append(_reason("paused", f"The queue is paused {until}: takes get nothing.",
                                   paused_until=paused_until))  # fmt: skip
        if job.status is JobStatus.PENDING and ahead is not None:
            reasons.append(_queued(job, ahead))
        reasons.append(_workers(job.queue, workers, now))
        if job.expires_at is not None:
            action = "deleted" if config.ttl_action == "delete" else "buried"
            reasons.append(_reason("ttl", f"Unless taken by {when(job.expires_at, now)}, it "
                                   f"is {action} (its ttl).", expires_at=job.expires_at,
                                   ttl_action=config.ttl_action))  # fmt: skip
    return {
        "queue": job.queue,
        "id": job.id,
        "status": job.status.value,
        "summary": " ".join(str(reason["text"]) for reason in reasons),
        "reasons": reasons,
    }


__all__ = ["MAX_AHEAD", "explain", "span", "when"]
