"""What an enqueue body means, and storing it: shared by ``POST /queues/{name}/jobs`` and
the job stream (:mod:`tqueues.dispatcher.jobstream`), so both accept and answer the same.

A body is one job (:class:`~tqueues.dispatcher.models.NewJob`) or a batch
``{"jobs": [job, ...]}`` of 1 to :data:`MAX_BATCH` jobs
(:class:`~tqueues.dispatcher.models.JobBatch`), validated by
:data:`~tqueues.dispatcher.models.Enqueue`. Every job is validated before any is stored;
a batch is one durable write, all or none.
"""

from __future__ import annotations

from typing import Any

from tqueues.dispatcher import models as m
from tqueues.dispatcher.models import MAX_BATCH
from tqueues.errors import ValidationError
from tqueues.jobs import NewJob
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


async def enqueue(store: Store, body: Any, queue: str) -> dict[str, Any]:
    """Validate and store ``body`` (read, or as validated already); durable when this
    returns. The answer: the stored job (``{"job": {...}}``) or jobs in order
    (``{"jobs": [...]}``).

    Raises ValidationError (nothing stored), QueueNotFound, StoreUnavailable.
    """
    if not isinstance(body, m.NewJob | m.JobBatch):
        body = m.validate(m.Enqueue, body)
    parsed = parse(body, queue)
    if isinstance(parsed, list):
        return {"jobs": [job.to_dict() for job in await store.put_many(parsed)]}
    return {"job": (await store.put(parsed)).to_dict()}


__all__ = ["MAX_BATCH", "enqueue", "parse"]
