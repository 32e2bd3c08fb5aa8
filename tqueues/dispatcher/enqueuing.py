"""What an enqueue body means, and storing it: shared by ``POST /queues/{name}/jobs`` and
the job stream (:mod:`tqueues.dispatcher.jobstream`), so both accept and answer the same.

A body is one job (:class:`~tqueues.dispatcher.models.NewJob`) or a batch
``{"jobs": [job, ...]}`` of 1 to :data:`MAX_BATCH` jobs
(:class:`~tqueues.dispatcher.models.JobBatch`), validated by
:data:`~tqueues.dispatcher.models.Enqueue`. Every job is validated before any is stored;
a batch is one durable write, all or none.

Unique jobs (#25): the answer of a job with a ``key`` says ``"duplicate"``: false when it
was stored, true when a live job of the queue held the key (the job answered is that one,
untouched, and nothing was stored for it). The status is 201 when anything was stored,
200 when every job of the body was a duplicate.
"""

from __future__ import annotations

from typing import Any

from tqueues.dispatcher import models as m
from tqueues.dispatcher.models import MAX_BATCH
from tqueues.errors import ValidationError
from tqueues.jobs import Enqueued, NewJob
from tqueues.stores.base import Store


def _job(body: m.NewJob, queue: str, where: str) -> NewJob:
    """The job ``body`` describes, for ``queue``: a ``queue`` in it must be the path's."""
    if body.queue is not None and body.queue != queue:
        prefix = f"{where}: " if where else ""
        details = {"index": where} if where else {}
        raise ValidationError(f"{prefix}'queue' differs from the path", field="queue", **details)
    return body.to_job(queue)


def parse(body: m.NewJob | m.JobBatch, queue: str) -> list[NewJob] | NewJob:
    """The job of a one-job body, or the jobs of a batch body (both validated).

    Raises ValidationError naming the first job (``jobs[i]``) whose ``queue`` is not
    ``queue``.
    """
    if isinstance(body, m.JobBatch):
        return [_job(job, queue, f"jobs[{i}]") for i, job in enumerate(body.jobs)]
    return _job(body, queue, "")


def answer(enqueued: Enqueued) -> dict[str, Any]:
    """A stored job as a put answers it: the job, and for a job with a key whether the put
    was a duplicate."""
    job = enqueued.job.to_dict()
    if enqueued.job.key is not None:
        job["duplicate"] = enqueued.duplicate
    return job


async def enqueue(store: Store, body: Any, queue: str) -> tuple[int, dict[str, Any]]:
    """Validate and store ``body`` (read, or as validated already); durable when this
    returns. The status (201, or 200 when every job was a duplicate) and the answer: the
    stored job (``{"job": {...}}``) or jobs in order (``{"jobs": [...]}``).

    Raises ValidationError (nothing stored), QueueNotFound, StoreUnavailable.
    """
    if not isinstance(body, m.NewJob | m.JobBatch):
        body = m.validate(m.Enqueue, body)
    parsed = parse(body, queue)
    if isinstance(parsed, list):
        stored = await store.enqueue_many(parsed)
        status = 200 if all(enqueued.duplicate for enqueued in stored) else 201
        return status, {"jobs": [answer(enqueued) for enqueued in stored]}
    enqueued = await store.enqueue(parsed)
    return (200 if enqueued.duplicate else 201), {"job": answer(enqueued)}


__all__ = ["MAX_BATCH", "answer", "enqueue", "parse"]
