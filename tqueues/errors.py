"""The exceptions of tqueues: one root, a docstring that is the default message.

Every error carries the HTTP ``status`` it maps to and a short machine-readable ``code``;
the dispatcher's error middleware turns any :class:`TqueuesError` into a JSON answer
``{"error": code, "message": str(exc), **details}`` with that status.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TqueuesError(Exception):
    """Something went wrong in tqueues."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the HTTP answer for this error."""
        return {"error": self.code, "message": self.message, **self.details}


class ValidationError(TqueuesError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class NotFound(TqueuesError):
    """What the request names does not exist."""

    status = 404
    code = "not_found"


class Conflict(TqueuesError):
    """The request conflicts with the current state of what it names."""

    status = 409
    code = "conflict"


class Unavailable(TqueuesError):
    """A service tqueues needs cannot answer right now; retry later."""

    status = 503
    code = "unavailable"


class QueueNotFound(NotFound):
    """The queue does not exist."""

    # The documented `/` API answers 501 when the queue (table) does not exist.
    status = 501
    code = "queue_not_found"


class QueueMissing(QueueNotFound):
    """The queue does not exist (the REST API's answer, 404; same code as QueueNotFound)."""

    status = 404


class QueueEmpty(TqueuesError):
    """No job is ready in the queue; retry later."""

    status = 404
    code = "queue_empty"


class JobNotFound(NotFound):
    """The job does not exist in that queue."""

    status = 404
    code = "job_not_found"

    @classmethod
    def in_queue(cls, queue: str, job_id: str) -> JobNotFound:
        """The error for job ``job_id`` missing from ``queue`` (what every store raises)."""
        return cls(f"job {job_id!r} does not exist in queue {queue!r}", id=job_id)


class WorkerNotFound(NotFound):
    """No worker of that name is in the registry (never seen, or dropped)."""

    status = 404
    code = "worker_not_found"


class ScheduleNotFound(NotFound):
    """No schedule of that name is in the queue."""

    status = 404
    code = "schedule_not_found"


class ScheduleExists(Conflict):
    """A schedule of that name is in the queue already (delete it first)."""

    status = 409
    code = "schedule_exists"


class LeaseMismatch(Conflict):
    """The lease is no longer yours: it expired and the job was given back or taken again."""

    status = 409
    code = "lease_mismatch"


class InvalidTransition(Conflict):
    """The job is not in a state that allows this operation."""

    status = 409
    code = "invalid_transition"


class KeyTaken(Conflict):
    """Another live job of the queue holds the job's key: it cannot become live again
    until that job ends (unique jobs)."""

    status = 409
    code = "key_taken"


class PayloadTooLarge(TqueuesError):
    """The request body is larger than the dispatcher accepts."""

    status = 413
    code = "payload_too_large"


class StoreUnavailable(Unavailable):
    """The store cannot be reached or cannot write right now; retry later."""

    status = 503
    code = "store_unavailable"


class DispatcherUnavailable(Unavailable):
    """The dispatcher cannot be reached; the client retries with backoff."""

    status = 503
    code = "dispatcher_unavailable"


class ImportTargetError(TqueuesError, ImportError):
    """The job's method cannot be imported on the worker."""

    status = 400
    code = "bad_method"


class MethodNotAllowed(ImportTargetError):
    """The job's method is outside the worker's allow-list; nothing was imported."""

    code = "method_not_allowed"


class Unauthorized(TqueuesError):
    """A valid bearer token is required."""

    status = 401
    code = "unauthorized"


class Forbidden(TqueuesError):
    """The token does not allow this operation."""

    status = 403
    code = "forbidden"
