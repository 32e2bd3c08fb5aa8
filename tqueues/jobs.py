"""The job model: what a job is, the states it moves through and how it is written as JSON.

Stores return :class:`Job` objects, never raw rows or documents; the dispatcher writes
them as JSON with :meth:`Job.to_dict`. All times are epoch seconds (floats), all
durations seconds (floats).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any

from tqueues.errors import ValidationError

JSON = Any
DEFAULT_PRIORITY = 1024  #: beanstalkd's default; lower is more urgent.
MAX_PRIORITY = 2**32 - 1  #: priorities are unsigned 32-bit numbers.
DEFAULT_TTR = 60.0  #: seconds a worker holds a job before its lease expires.
DEFAULT_MAX_ATTEMPTS = 3  #: takes (runs) a job gets before it ends failed.
MAX_TTR = 7 * 24 * 3600.0
MAX_ATTEMPTS_LIMIT = 1000
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    #: Ready to be taken (beanstalkd's "ready").
    PENDING = "pending"
    #: Waiting for its retry time; becomes pending when it comes.
    DELAYED = "delayed"
    #: Taken by a worker that holds its lease (beanstalkd's "reserved").
    STARTED = "started"
    #: Done; ``result`` holds the method's return value.
    FINISHED = "finished"
    #: Out of attempts, or set aside by hand: kept with its last error for an operator
    #: to inspect and kick back to pending (the dead-letter state).
    BURIED = "buried"
    #: Failed for good (a failure reported as permanent); ``error`` and ``traceback`` say why.
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """True for the states a job never leaves."""
        return self in (JobStatus.FINISHED, JobStatus.FAILED)


def new_id() -> str:
    """A new job id: 32 hex digits of a random UUID."""
    return uuid.uuid4().hex


def new_lease() -> str:
    """A new lease token, handed to the worker that takes a job."""
    return uuid.uuid4().hex


def validate_queue_name(name: object) -> str:
    """Return ``name`` if it is a valid queue name, else raise :class:`ValidationError`.

    Queue names are 1 to 64 ASCII letters, digits and underscores: valid RethinkDB table
    names and safe anywhere else.
    """
    if not isinstance(name, str) or not name:
        raise ValidationError("the 'queue' parameter is required", field="queue")
    if not QUEUE_NAME_RE.match(name):
        raise ValidationError(
            "queue names are 1 to 64 letters, digits or underscores", field="queue", value=name
        )
    return name


def _number(
    fields: Mapping[str, Any], name: str, default: float, *, low: float, high: float
) -> float:
    value = fields.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"'{name}' must be a number", field=name)
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low:g} and {high:g}", field=name)
    return float(value)


def _integer(fields: Mapping[str, Any], name: str, default: int, *, low: int, high: int) -> int:
    value = fields.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"'{name}' must be an integer", field=name)
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low} and {high}", field=name)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's defaults, applied to jobs put without their own values."""

    name: str
    ttr: float = DEFAULT_TTR
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @classmethod
    def from_request(cls, name: str, fields: Mapping[str, Any]) -> QueueConfig:
        """Validate a queue's name and settings from a request; raises :class:`ValidationError`."""
        unknown = set(fields) - {"ttr", "max_attempts"}
        if unknown:
            raise ValidationError(f"unknown queue setting(s): {', '.join(sorted(unknown))}")
        return cls(
            name=validate_queue_name(name),
            ttr=_number(fields, "ttr", DEFAULT_TTR, low=0.1, high=MAX_TTR),
            max_attempts=_integer(
                fields, "max_attempts", DEFAULT_MAX_ATTEMPTS, low=1, high=MAX_ATTEMPTS_LIMIT
            ),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """A job as a producer asks for it, validated; the store adds the rest."""

    queue: str
    method: str
    args: list[JSON] = dataclasses.field(default_factory=list)
    kwargs: dict[str, JSON] = dataclasses.field(default_factory=dict)
    priority: int = DEFAULT_PRIORITY
    ttr: float | None = None  #: None: the queue's default.
    max_attempts: int | None = None  #: None: the queue's default.
    delay: float = 0.0

    @classmethod
    def from_request(cls, fields: Mapping[str, Any]) -> NewJob:
        """Validate an enqueue request's fields; raises :class:`ValidationError` naming the field.

        Required: ``queue`` and ``method`` (strings). Optional: ``args`` (list), ``kwargs``
        (object with string keys), ``priority`` (0 to 2**32-1, lower first), ``ttr``
        (seconds), ``max_attempts`` and ``delay`` (seconds).
        """
        missing = [name for name in ("queue", "method") if name not in fields]
        if missing:
            raise ValidationError(f"missing field(s): {', '.join(missing)}", fields=missing)
        unknown = set(fields) - {
            "queue",
            "method",
            "args",
            "kwargs",
            "priority",
            "ttr",
            "max_attempts",
            "delay",
        }
        if unknown:
            raise ValidationError(f"unknown field(s): {', '.join(sorted(unknown))}")
        method = fields["method"]
        if not isinstance(method, str) or not method.strip() or len(method) > 512:
            raise ValidationError("'method' must be a non-empty string", field="method")
        args = fields.get("args", [])
        if args is None:
            args = []
        if not isinstance(args, list):
            raise ValidationError("'args' must be a list", field="args")
        kwargs = fields.get("kwargs", {})
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValidationError("'kwargs' must be an object", field="kwargs")
        if "tq_parent_job" in kwargs:
            raise ValidationError("'tq_parent_job' is set by the worker", field="kwargs")
        ttr = fields.get("ttr")
        max_attempts = fields.get("max_attempts")
        return cls(
            queue=validate_queue_name(fields["queue"]),
            method=method,
            args=args,
            kwargs=kwargs,
            priority=_integer(fields, "priority", DEFAULT_PRIORITY, low=0, high=MAX_PRIORITY),
            ttr=None if ttr is None else _number(fields, "ttr", 0, low=0.1, high=MAX_TTR),
            max_attempts=None
            if max_attempts is None
            else _integer(fields, "max_attempts", 0, low=1, high=MAX_ATTEMPTS_LIMIT),
            delay=_number(fields, "delay", 0.0, low=0.0, high=MAX_TTR * 52),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """A stored job. Immutable: stores return a new one for every change."""

    id: str
    queue: str
    method: str
    args: list[JSON]
    kwargs: dict[str, JSON]
    status: JobStatus
    priority: int
    ttr: float
    max_attempts: int
    attempts: int  #: how many times the job was taken.
    ready_at: float  #: when it became (or becomes) takeable; orders jobs of equal priority.
    created_at: float
    lease: str | None = None  #: token of the current holder while started.
    lease_expires: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    result: JSON = None
    error: str | None = None
    traceback: str | None = None
    extra: dict[str, JSON] = dataclasses.field(default_factory=dict)  #: fields set by update.
    rev: int = 0  #: bumped by every write; stores compare-and-set on it.
    event: str = "put"  #: the change that made this revision (a ChangeEvent kind).

    def to_dict(self, *, with_lease: bool = False) -> dict[str, JSON]:
        """The job as JSON; ``extra`` fields sit at the top level beside the others.

        The lease token is a capability: it is included only for the worker that took the job.
        """
        doc = {
            name: getattr(self, name)
            for name in self.__slots__  # type: ignore[attr-defined]
            if name not in ("extra", "lease")
        }
        doc["status"] = self.status.value
        if with_lease:
            doc["lease"] = self.lease
        return {**self.extra, **doc}

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


#: Fields of a job that the dispatcher owns; an update (PATCH) may not set them.
RESERVED_FIELDS = frozenset(field.name for field in dataclasses.fields(Job))


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change to a job, as stores publish it and the WebSocket stream sends it."""

    #: put, taken, updated, finished, failed, buried, released, expired, promoted, kicked,
    #: deleted: the ``event`` of the job's revision (see :mod:`tqueues.lifecycle`).
    kind: str
    queue: str
    job: Job
    old_status: JobStatus | None = None

    def to_dict(self) -> dict[str, JSON]:
        """The event as the WebSocket stream sends it."""
        return {
            "type": "change",
            "kind": self.kind,
            "queue": self.queue,
            "old_status": self.old_status.value if self.old_status else None,
            "job": self.job.to_dict(),
        }
