"""What an enqueue body means, and storing it: shared by ``POST /queues/{name}/jobs`` and
the job stream (:mod:`tqueues.dispatcher.jobstream`), so both accept and answer the same.

A body is one job (an object with ``method`` and the optional fields of
:meth:`~tqueues.jobs.NewJob.from_request`) or a batch ``{"jobs": [job, ...]}`` of 1 to
:data:`MAX_BATCH` jobs. Every job is validated before any is stored; a batch is one
durable write, all or none.
"""

from __future__ import annotations

from typing import Any

from tqueues.errors import ValidationError
from tqueues.jobs import NewJob
from tqueues.stores.base import Store

MAX_BATCH = 1000  #: jobs one enqueue request may carry.


def new_job(fields: Any, queue: str, where: str) -> NewJob:
    """The job ``fields`` describe, for ``queue``; ``where`` names it in errors ("the body",
    "jobs[3]"). Raises ValidationError naming the field (and ``index`` for a batch's job)."""
    if not isinstance(fields, dict):
        raise ValidationError(f"{where} must be a JSON object", field=where)
    if fields.get("queue", queue) != queue:
        raise ValidationError(f"{where}: 'queue' differs from the path", field="queue")
    try:
        return NewJob.from_request({**fields, "queue": queue})
    except ValidationError as exc:
        if where == "the body":
            raise
        raise ValidationError(f"{where}: {exc.message}", index=where, **exc.details) from None


def parse(body: dict[str, Any], queue: str) -> list[NewJob] | NewJob:
    """The job of a one-job body, or the jobs of a batch body, all validated.

    Raises ValidationError naming the first bad job (``jobs[i]``) and its field.
    """
    if "jobs" not in body:
        return new_job(body, queue, "the body")
    if set(body) != {"jobs"}:
        raise ValidationError("a batch body has only 'jobs'", fields=sorted(body))
    items = body["jobs"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise ValidationError(f"'jobs' must be a list of 1 to {MAX_BATCH} jobs", field="jobs")
    return [new_job(item, queue, f"jobs[{i}]") for i, item in enumerate(items)]


async def enqueue(store: Store, body: dict[str, Any], queue: str) -> dict[str, Any]:
    """Validate and store ``body``; durable when this returns. The answer: the stored job
    (``{"job": {...}}``) or jobs in order (``{"jobs": [...]}``).

    Raises ValidationError (nothing stored), QueueNotFound, StoreUnavailable.
    """
    parsed = parse(body, queue)
    if isinstance(parsed, list):
        return {"jobs": [job.to_dict() for job in await store.put_many(parsed)]}
    return {"job": (await store.put(parsed)).to_dict()}
