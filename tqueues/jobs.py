"""The job model: what a job is, the states it moves through and how it is written as JSON.

Stores return :class:`JobRecord` objects, never raw rows or documents; the dispatcher writes
them as JSON with :meth:`JobRecord.to_dict`. All times are epoch seconds (floats), all
durations seconds (floats).
"""

from __future__ import annotations

import dataclasses
import enum
import operator
import re
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import uuid_utils

from tqueues.errors import ValidationError
from tqueues.limits import DEFAULT_TTR

JSON = Any
DEFAULT_PRIORITY = 1024  #: beanstalkd's default; lower is more urgent.
MAX_PRIORITY = 2**32 - 1  #: priorities are unsigned 32-bit numbers.
DEFAULT_MAX_ATTEMPTS = 3  #: takes (runs) a job gets before it ends failed.
MAX_TTR = 7 * 24 * 3600.0
MAX_ATTEMPTS_LIMIT = 1000
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    #: Ready to be taken (beanstalkd's "ready").
    PENDING = "pending"
    #: Put with ``after``: waits until every job it names has finished, then becomes
    #: pending (or delayed); buried when one of them ends otherwise or is deleted.
    WAITING = "waiting"
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
    #: Cancelled by request (:func:`tqueues.lifecycle.cancel`): never run, or stopped while
    #: it ran; never retried.
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for the states a job never leaves (but for a kick of a failed job)."""
        return self in _FINAL


_FINAL = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})

#: The states in which a job holds its ``key`` (unique jobs, #25): while a job of the
#: queue with that key is in one of them, a put with the key returns it instead of adding
#: a job; once it leaves them (it finished, was buried, failed, cancelled or deleted) the
#: key is free. The one list every store builds on (the embedded store's unique index,
#: the RethinkDB store's key table): a new live state is added here. (A waiting job is
#: live too, though a job with ``after`` may not have a key yet.)
KEY_HOLDING = (JobStatus.WAITING, JobStatus.PENDING, JobStatus.DELAYED, JobStatus.STARTED)


def new_random_id() -> str:
    """A new job id: 32 hex digits of a random UUID (version 4)."""
    return uuid.uuid4().hex


def new_ordered_id() -> str:
    """A new job id that sorts after the ids this process made before: 32 hex digits of
    a UUID version 7 (RFC 9562: milliseconds since the epoch, a counter within the same
    millisecond, then random bits)."""
    return uuid_utils.uuid7().hex


def new_lease() -> str:
    """A new lease token, handed to the worker that takes a job: 128 bits from ``secrets``."""
    return secrets.token_hex(16)


def new_leases(count: int) -> list[str]:
    """``count`` new lease tokens as :func:`new_lease` makes them, from one read of the
    system's random source."""
    digits = secrets.token_hex(16 * count)
    return [digits[i : i + 32] for i in range(0, 32 * count, 32)]


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


MAX_DELAY = 365 * 24 * 3600.0
DEFAULT_RETENTION = 7 * 24 * 3600.0  #: seconds finished, failed, cancelled jobs are kept.
TTL_ACTIONS = ("bury", "delete")


@dataclasses.dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings: defaults for jobs put without their own values, and policies."""

    name: str
    ttr: float = DEFAULT_TTR  #: seconds a taken job's lease lasts.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  #: runs before a failing job is buried.
    delay: float = 0.0  #: seconds before a new job may be taken.
    ttl: float | None = None  #: seconds a job may wait unfinished (None: forever).
    priority: int = DEFAULT_PRIORITY  #: 0 (most urgent) to 2**32-1.
    retention: float = DEFAULT_RETENTION  #: seconds finished/failed/cancelled jobs are kept.
    ttl_action: str = "bury"  #: what happens to a job whose ttl ran out: bury or delete.
    #: Paused: takes hand out none of its jobs (puts are still accepted). A state set by
    #: :meth:`~tqueues.stores.base.Store.pause` and ``resume``, not a setting.
    paused: bool = False
    #: When a pause ends by itself (epoch seconds); None: when resumed.
    paused_until: float | None = None

    def is_paused(self, now: float) -> bool:
        """Whether the queue is paused at ``now`` (epoch seconds): a pause whose end has
        come is over, even before anyone wrote so."""
        return self.paused and (self.paused_until is None or self.paused_until > now)

    def as_of(self, now: float) -> QueueConfig:
        """These settings with the pause as it stands at ``now`` (a pause over: not paused)."""
        if self.paused and not self.is_paused(now):
            return dataclasses.replace(self, paused=False, paused_until=None)
        return self

    @classmethod
    def from_request(cls, name: str, fields: Mapping[str, Any]) -> QueueConfig:
        """Validate a queue's name and settings from a request; raises :class:`ValidationError`."""
        return cls(name=validate_queue_name(name)).changed(fields)

    def changed(self, fields: Mapping[str, Any]) -> QueueConfig:
        """These settings with ``fields`` changed (any subset), validated as the body of
        ``PATCH /queues/{name}`` is (:class:`tqueues.dispatcher.models.QueueSettings`);
        raises ValidationError naming the field and the rule."""
        from tqueues.dispatcher.models import QueueSettings, validate  # which imports this

        settings: QueueSettings = validate(QueueSettings, fields)
        return settings.applied_to(self)

    def to_dict(self) -> dict[str, JSON]:
        """The settings as JSON."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """A job as a producer asks for it, validated; the store adds the rest.

    Options left None take the queue's default.
    """

    queue: str
    method: str
    args: list[JSON] = dataclasses.field(default_factory=list)
    kwargs: dict[str, JSON] = dataclasses.field(default_factory=dict)
    priority: int | None = None
    ttr: float | None = None
    max_attempts: int | None = None
    delay: float | None = None
    ttl: float | None = None
    urgent: bool = False  #: ahead of every other ready job of the queue.
    #: The jobs it waits for, as ``"queue/id"`` (see ``tqueues.dependencies``).
    after: list[str] = dataclasses.field(default_factory=list)
    #: Unique jobs: while a job of the queue with this key is live (KEY_HOLDING), a put
    #: with it returns that job instead of adding one.
    key: str | None = None

    @classmethod
    def from_request(cls, fields: Mapping[str, Any]) -> NewJob:
        """Validate an enqueue request's fields as ``POST /`` does
        (:class:`tqueues.dispatcher.models.LegacyNewJob`: ``queue`` and ``method``
        required); raises :class:`ValidationError` naming the field and the rule."""
        from tqueues.dispatcher.models import LegacyNewJob, validate  # which imports this

        body: LegacyNewJob = validate(LegacyNewJob, fields)
        return body.to_job(body.queue)


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """A stored job. Immutable: stores return a new one for every change."""

    id: str
    queue: str
    method: str
    args: list[JSON]
    kwargs: dict[str, JSON]
    status: JobStatus
    priority: int  #: lower first; -1 for urgent jobs.
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
    expires_at: float | None = None  #: created_at + ttl: unfinished by then, the ttl acts.
    extra: dict[str, JSON] = dataclasses.field(default_factory=dict)  #: fields set by update.
    rev: int = 0  #: bumped by every write; stores compare-and-set on it.
    event: str = "put"  #: the change that made this revision (a ChangeEvent kind).
    #: A started job asked to stop (:func:`tqueues.lifecycle.cancel`): its worker hears of
    #: it at its next heartbeat; however the run then ends, the job ends cancelled.
    cancel_requested: bool = False
    #: The jobs this one waits for (``"queue/id"``), as put; empty for most jobs.
    after: list[str] = dataclasses.field(default_factory=list)
    #: Some job put with ``after`` names this one: when it ends, the store looks its
    #: dependents up (see ``tqueues.stores.dependents``). Never unset.
    has_dependents: bool = False
    #: Its unique key (see :data:`KEY_HOLDING`), or None: no other job of its queue with
    #: this key is live while it is.
    key: str | None = None

    def holds_key(self) -> bool:
        """Whether the job has a key and holds it: it is live (:data:`KEY_HOLDING`)."""
        return self.key is not None and self.status in KEY_HOLDING

    def to_dict(self, *, with_lease: bool = False) -> dict[str, JSON]:
        """The job as JSON; ``extra`` fields sit at the top level beside the others.

        The lease token is a capability: it is included only for the worker that took the job.
        ``after`` is left out while empty, and ``has_dependents`` while false.
        """
        doc = dict(zip(_DOC_FIELDS, _doc_values(self), strict=True))
        doc["status"] = self.status.value
        if not self.after:  # most jobs: their answers stay as they were before #25
            del doc["after"]
        if not self.has_dependents:
            del doc["has_dependents"]
        if with_lease:
            doc["lease"] = self.lease
        return {**self.extra, **doc} if self.extra else doc

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied. Raises TypeError for a name that is not a field.

        (Faster than :func:`dataclasses.replace`, which shows in profiles: every change of
        every job makes one or two copies.)
        """
        if not changes.keys() <= _JOB_FIELD_SET:
            raise TypeError(f"not fields of JobRecord: {sorted(changes.keys() - _JOB_FIELD_SET)}")
        return _evolve(self, changes)

    def revise(self, **changes: Any) -> JobRecord:
        """The next revision: :meth:`evolve` with ``rev`` one higher (what every transition
        of :mod:`tqueues.lifecycle` returns)."""
        changes["rev"] = self.rev + 1
        return self.evolve(**changes)

    def succeeding(self, before: JobRecord) -> JobRecord:
        """This job as the revision after ``before``: itself when its ``rev`` already is
        ``before.rev + 1``, else a copy that says so (stores call it on what they write)."""
        return self if self.rev == before.rev + 1 else self.evolve(rev=before.rev + 1)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> JobRecord:
        """The job of every field's value in declaration order (a store's row), unchecked."""
        return _from_values(values)


_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))
_JOB_FIELD_SET = frozenset(_JOB_FIELDS)
#: The fields of :meth:`JobRecord.to_dict` (``extra`` is spread, the lease is a capability).
_DOC_FIELDS = tuple(name for name in _JOB_FIELDS if name not in ("extra", "lease"))
_doc_values = operator.attrgetter(*_DOC_FIELDS)


def _compile_copiers() -> tuple[
    Callable[[JobRecord, dict[str, Any]], JobRecord], Callable[[Any], JobRecord]
]:
    """Straight-line code that fills a new JobRecord through its slots (as dataclasses generates
    ``__init__``): ``evolve`` and ``from_values`` are on every store write's path, and a loop
    over the fields, or the frozen ``__init__``, cost twice as much."""
    scope: dict[str, Any] = {"_new": object.__new__, "JobRecord": JobRecord}
    for i, name in enumerate(_JOB_FIELDS):
        scope[f"_set{i}"] = getattr(JobRecord, name).__set__  # the slot's own setter
    evolve = "\n".join(
        f"    _set{i}(new, changes['{n}'] if '{n}' in changes else job.{n})"
        for i, n in enumerate(_JOB_FIELDS)
    )
    build = "\n".join(f"    _set{i}(new, values[{i}])" for i in range(len(_JOB_FIELDS)))
    source = (
        f"def evolve(job, changes):\n    new = _new(JobRecord)\n{evolve}\n    return new\n"
        f"def from_values(values):\n    new = _new(JobRecord)\n{build}\n    return new\n"
    )
    exec(compile(source, "<tqueues.jobs copiers>", "exec"), scope)  # our own text only
    return scope["evolve"], scope["from_values"]


_evolve, _from_values = _compile_copiers()


#: Fields of a job that the dispatcher owns; an update (PATCH) may not set them.
RESERVED_FIELDS = frozenset(field.name for field in dataclasses.fields(JobRecord))


class Enqueued(NamedTuple):
    """What a put stored: the job, and whether it is a duplicate (a live job of the queue
    held the put's key: ``job`` is that job, untouched, and nothing was added)."""

    job: JobRecord
    duplicate: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change to a job, as stores publish it and the WebSocket stream sends it."""

    #: put, taken, updated, finished, failed, buried, released, expired, promoted, kicked,
    #: cancel_requested, cancelled, awaited, deleted: the ``event`` of the job's revision (see
    #: :mod:`tqueues.lifecycle`).
    kind: str
    queue: str
    job: JobRecord
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


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's jobs by status, and what happened to it since this dispatcher started."""

    queue: str
    counts: dict[str, int]  #: jobs per status, every status present.
    counters: dict[str, int]  #: events (put, taken, finished, ...) since start, this process.
    paused: bool = False  #: takes hand out none of its jobs (see QueueConfig.paused).
    paused_until: float | None = None  #: when the pause ends (epoch seconds); None: resumed.

    def to_dict(self) -> dict[str, JSON]:
        """The statistics as JSON."""
        return {
            "queue": self.queue,
            "jobs": self.counts,
            "total": sum(self.counts.values()),
            "paused": self.paused,
            "paused_until": self.paused_until,
            "counters": self.counters,
        }
