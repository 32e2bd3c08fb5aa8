"""What the dispatcher's requests may say: their bodies and query strings as pydantic models.

Each model does two things from one declaration: it validates requests (pydantic-core
compiles it once, at import; a request costs a call into Rust, not a schema build) and
it gives its JSON Schema to the OpenAPI document (:mod:`tqueues.dispatcher.openapi`), so
the document cannot say other than the server does. The operations that take them are
declared in :mod:`tqueues.dispatcher.operations`.

:func:`validate` turns pydantic's errors into the dispatcher's 400 answer, a
:class:`~tqueues.errors.ValidationError` that names the field (``field``, or ``fields``
for missing and unknown ones; ``index`` for an item of a batch, ``jobs[3]``) and says the
rule, read from the same JSON Schema (``'ttr' must be a number from 0.1 to 604800``).

Bodies are strict JSON: ``"5"`` is not a number nor ``1`` a boolean, but a number
without a fraction is an integer (``5.0`` is 5), as JSON Schema says. Query strings are
text, read as the types they declare. Unknown body fields are refused; unknown query
parameters are ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from tqueues import jobs
from tqueues.errors import ValidationError
from tqueues.ids import MAX_ID_BYTES, problem
from tqueues.jobs import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY,
    MAX_PRIORITY,
    MAX_TTR,
    QUEUE_NAME_RE,
    RESERVED_FIELDS,
    TTL_ACTIONS,
    JobStatus,
)
from tqueues.lifecycle import KICKABLE
from tqueues.limits import (
    DEFAULT_PAGE,
    MAX_AFTER,
    MAX_BATCH,
    MAX_EVERY,
    MAX_KEY,
    MAX_KICK,
    MAX_OUTCOMES,
    MAX_PAGE,
    MAX_TAKE,
    MAX_TAKE_QUEUES,
    MIN_EVERY,
)

MAX_ID = 128  #: the longest lease, cursor item or stream ``ref``.
MAX_WORKER = 200  #: the longest name of a taker.
MAX_CURSOR = 1024
#: The job actions a batch of outcomes may carry: how a run ends (a worker's calls).
OUTCOME_ACTIONS = ("finish", "fail", "release", "requeue", "bury")
PEEKABLE = (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.BURIED)
PEEK_STATUSES = tuple(status.value for status in PEEKABLE)
KICK_STATUSES = tuple(status.value for status in KICKABLE)


M = TypeVar("M", bound=BaseModel)


def _whole(value: object) -> object:
    """A float without a fraction as the integer it is (JSON Schema's ``integer``)."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


# -- the types fields are made of ----------------------------------------------------------


QueueName = Annotated[str, Field(pattern=QUEUE_NAME_RE.pattern)]
#: A job id as the document promises it is accepted: ASCII, no NUL, at most MAX_ID_BYTES
#: bytes. The server also takes other text of at most that many bytes of UTF-8 (no job
#: has such an id: 404), which JSON Schema, counting characters, cannot say.
JOB_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^[\\x01-\\x7f]{{1,{MAX_ID_BYTES}}}$",
    "description": "A job's id (the dispatcher makes 32 hex digits).",
}
QUEUE_NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": QUEUE_NAME_RE.pattern}
WORKER_ID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": f"^[\\x01-\\x7f]{{1,{MAX_ID_BYTES}}}$",
    "description": "A worker's name in the registry.",
}
JobId = Annotated[str, WithJsonSchema(JOB_ID_SCHEMA)]
#: An entry of a put's ``after`` as the document promises it is accepted: a job id without
#: ``/`` (a job of the put's queue) or ``queue/id``; ASCII as JOB_ID_SCHEMA says why.
AFTER_ITEM_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": (
        f"^(?:[\\x01-\\x2e\\x30-\\x7f]{{1,{MAX_ID_BYTES}}}"
        f"|[A-Za-z0-9_]{{1,64}}/[\\x01-\\x7f]{{1,{MAX_ID_BYTES}}})$"
    ),
    "description": "A job's id (of the same queue), or 'queue/id'.",
}


def _no_parent_job(kwargs: dict[str, Any]) -> dict[str, Any]:
    if "tq_parent_job" in kwargs:
        raise ValueError("'tq_parent_job' is set by the worker, not in 'kwargs'")
    return kwargs


Kwargs = Annotated[
    dict[str, Any],
    AfterValidator(_no_parent_job),
    WithJsonSchema({"type": "object", "propertyNames": {"not": {"const": "tq_parent_job"}}}),
]
# Integers: a float without a fraction counts (the validator wraps the bounds before it).
Priority = Annotated[
    int, Field(ge=0, le=MAX_PRIORITY, description="Lower first."), BeforeValidator(_whole)
]
Attempts = Annotated[
    int, Field(ge=1, le=MAX_ATTEMPTS_LIMIT, description="Runs a job gets."), BeforeValidator(_whole)
]
KickBound = Annotated[int, Field(ge=1, le=MAX_KICK), BeforeValidator(_whole)]
TakeCount = Annotated[int, Field(ge=1, le=MAX_TAKE), BeforeValidator(_whole)]
NextTakeCount = Annotated[int, Field(ge=0, le=MAX_TAKE), BeforeValidator(_whole)]
Ttr = Annotated[float, Field(ge=0.1, le=MAX_TTR, description="Seconds a lease lasts.")]
Delay = Annotated[float, Field(ge=0, le=MAX_DELAY, description="Seconds before it may be taken.")]
Ttl = Annotated[float, Field(ge=0.001, le=MAX_DELAY, description="Seconds it may wait unfinished.")]
Retention = Annotated[float, Field(ge=0, le=10 * MAX_DELAY)]
Lease = Annotated[str, Field(max_length=MAX_ID)]
#: A unique job's key: any text of 1 to MAX_KEY characters without a NUL.
Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY,
        pattern=r"^[^\x00]+$",
        description="Unique jobs: while a job of the queue with this key is waiting, "
        "pending, delayed or started, a put with it adds nothing and answers that job (200, "
        "`duplicate`: true); the key is free again once the job ends.",
    ),
]
Worker = Annotated[str, Field(max_length=MAX_WORKER, description="The taker's name.")]


class Body(BaseModel):
    """A request body: a JSON object of exactly these fields, strictly typed."""

    model_config = ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, frozen=True, hide_input_in_errors=True
    )


class Query(BaseModel):
    """A query string: its parameters read from text; others are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


# -- jobs ----------------------------------------------------------------------------------


class NewJob(Body):
    """A job to enqueue. Options left out take the queue's."""

    method: Annotated[str, Field(min_length=1, max_length=512, pattern=r"\S")] = Field(
        description="What the worker runs: an importable module:function."
    )
    args: list[Any] = []
    kwargs: Kwargs = {}
    priority: Priority | None = None
    urgent: bool = Field(False, description="Ahead of every other pending job of the queue.")
    ttr: Ttr | None = None
    max_attempts: Attempts | None = None
    delay: Delay | None = None
    ttl: Ttl | None = None
    after: Annotated[
        list[Annotated[str, WithJsonSchema(AFTER_ITEM_SCHEMA)]], Field(max_length=MAX_AFTER)
    ] = Field(
        [],
        description="Jobs it waits for: ids of jobs of its queue, or 'queue/id'. It stays "
        "waiting until they all finished; buried if one fails for good or is deleted.",
    )
    key: Key | None = None
    #: Tolerated when it is the path's queue (a 400 otherwise); not in the document.
    queue: SkipJsonSchema[str | None] = None

    def to_job(self, queue: str) -> jobs.NewJob:
        """The job to store in ``queue``. Raises ValidationError (a bad ``after``)."""
        after = parse_after(self.after, queue) if self.after else []
        return jobs.NewJob(
            queue, self.method, self.args, self.kwargs, self.priority, self.ttr,
            self.max_attempts, self.delay, self.ttl, self.urgent, after, self.key,
        )  # fmt: skip


def parse_after(entries: Iterable[object], queue: str) -> list[str]:
    """The ``after`` of a job put in ``queue``: each entry (an id of a job of ``queue``,
    or ``"queue/id"``) as ``"queue/id"`` (:func:`tqueues.dependencies.key`), in order,
    each once. Raises ValidationError (400) naming the field, and the entry, for an entry
    that is not a job's name, or more than :data:`MAX_AFTER` of them."""
    names: dict[str, None] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise ValidationError(f"'after[{index}]' must be a job id or 'queue/id'", field="after")
        of, sep, job_id = entry.partition("/")
        if not sep:
            of, job_id = queue, entry
        elif not QUEUE_NAME_RE.match(of):
            raise ValidationError(
                f"'after[{index}]' names no queue: {of!r} is not a queue name",
                field="after", value=entry,
            )  # fmt: skip
        wrong = problem(job_id)
        if wrong is not None:
            raise ValidationError(f"'after[{index}]' {wrong}", field="after", value=entry)
        names[f"{of}/{job_id}"] = None
    if len(names) > MAX_AFTER:
        raise ValidationError(
            f"'after' names {len(names)} jobs; a job waits for at most {MAX_AFTER}",
            field="after",
        )
    return list(names)


class LegacyNewJob(NewJob):
    """A job to enqueue on ``/``: the body names its queue."""

    queue: QueueName


class BatchJob(NewJob):
    """A job of a batch: as :class:`NewJob` but for ``after``, which a batch does not take
    (the store refuses it with a 400 naming the job: a job that waits is put on its own);
    tolerated here only so that the refusal says so, and not in the document."""

    after: SkipJsonSchema[list[str]] = []


class JobBatch(Body):
    """Jobs to enqueue at once: all validated before any is stored, one durable write."""

    jobs: Annotated[list[BatchJob], Field(min_length=1, max_length=MAX_BATCH)]


def _job_or_batch(value: Any) -> str:
    return "JobBatch" if isinstance(value, dict) and "jobs" in value else "NewJob"


#: The body of an enqueue: one job, or a batch (``{"jobs": [...]}``).
Enqueue = Annotated[
    Annotated[NewJob, Tag("NewJob")] | Annotated[JobBatch, Tag("JobBatch")],
    Discriminator(_job_or_batch),
]


#: Fields to merge into a job; those the dispatcher owns are refused (400, by
#: :func:`tqueues.lifecycle.update`, which every store applies).
UpdateFields = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "description": "Fields to merge into the job, beside its own.",
            "propertyNames": {"not": {"enum": sorted(RESERVED_FIELDS)}},
        }
    ),
]


# -- queues --------------------------------------------------------------------------------


class QueueSettings(Body):
    """A queue's settings: defaults for new jobs, and policies; any subset."""

    ttr: Ttr | None = None
    max_attempts: Attempts | None = None
    delay: Delay | None = None
    ttl: Ttl | None = Field(None, description="null: jobs wait forever.")
    priority: Priority | None = None
    retention: Retention | None = Field(
        None, description="Seconds finished and failed jobs are kept."
    )
    ttl_action: Literal[TTL_ACTIONS] | None = None  # type: ignore[valid-type]  # a tuple's values

    def given(self) -> dict[str, Any]:
        """The settings the body gave (a null ttl among them), as QueueConfig takes them;
        a null other than ttl means "left as is"."""
        fields = self.model_dump(exclude_unset=True)
        return {k: v for k, v in fields.items() if v is not None or k == "ttl"}

    def applied_to(self, config: jobs.QueueConfig) -> jobs.QueueConfig:
        """``config`` with these settings changed."""
        return dataclasses.replace(config, **self.given())


class Pause(Body):
    """A queue's pause: for ``for`` seconds, or (left out) until resumed."""

    for_: Annotated[float, Field(gt=0, le=MAX_DELAY)] | None = Field(
        None,
        alias="for",
        description="Seconds the pause lasts; left out: until resumed. A pause under way "
        "is replaced.",
    )


class Kick(Body):
    """A queue's kick: up to ``bound`` jobs, of ``status`` when given."""

    bound: KickBound = 1
    status: Literal[KICK_STATUSES] | None = None  # type: ignore[valid-type]


# -- the transitions of one job ------------------------------------------------------------


class Finish(Body):
    """Finish the job with its ``result``."""

    result: Any = None


class Fail(Body):
    """A failed run: retried with backoff while attempts remain, then buried; failed at
    once when ``permanent``. ``error`` is kept to 10,000 characters, ``traceback`` to
    100,000."""

    error: Annotated[str, Field(min_length=1)]
    traceback: str | None = None
    permanent: bool = False


class Release(Body):
    """Give the job back untried, pending again after ``delay`` seconds."""

    delay: Delay = 0.0


class Touch(Body):
    """Extend the lease by ``ttr`` seconds from now (default: the job's ttr)."""

    ttr: Ttr | None = None


class Bury(Body):
    """Set the job aside until kicked, with a ``reason``."""

    reason: str | None = None


class KickJob(Body):
    """Nothing: a kick has no fields."""


class Cancel(Body):
    """Nothing: a cancel has no fields."""


class _Outcome(Body):
    id: Annotated[str, Field(min_length=1), WithJsonSchema(JOB_ID_SCHEMA)]
    lease: Lease | None = Field(
        None, description="The lease of the take; without it the outcome applies whoever "
        "holds the job."
    )  # fmt: skip


class FinishOutcome(_Outcome, Finish):
    action: Literal["finish"]


class FailOutcome(_Outcome, Fail):
    action: Literal["fail"]


class ReleaseOutcome(_Outcome, Release):
    action: Literal["release"]


class RequeueOutcome(_Outcome, Release):
    action: Literal["requeue"]


class BuryOutcome(_Outcome, Bury):
    action: Literal["bury"]


Outcome = Annotated[
    FinishOutcome | FailOutcome | ReleaseOutcome | RequeueOutcome | BuryOutcome,
    Field(discriminator="action"),
]


class OutcomeBatch(Body):
    """How runs ended, each applied on its own; with ``take``, the next jobs too."""

    outcomes: Annotated[list[Outcome], Field(min_length=1, max_length=MAX_OUTCOMES)]
    take: NextTakeCount = 0
    worker: Worker | None = None
    brief: bool = Field(False, description="Answer {stored: {id, status}}, not whole jobs.")


# -- the documented / API's end of a run -----------------------------------------------------


class LegacyRelease(Body):
    """Give the job back untried after ``delay``."""

    release: Literal[True]
    delay: Annotated[float, Field(ge=0, le=MAX_TTR)] = 0.0


class LegacyBury(Body):
    """Set the job aside until kicked."""

    bury: Literal[True]
    reason: str | None = None


def _end_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("error", "release", "bury"):
            if key in value:
                return {"error": "Fail", "release": "LegacyRelease", "bury": "LegacyBury"}[key]
    return "Finish"


#: The body of ``DELETE /``: one of four shapes.
LegacyEnd = Annotated[
    Annotated[Finish, Tag("Finish")]
    | Annotated[Fail, Tag("Fail")]
    | Annotated[LegacyRelease, Tag("LegacyRelease")]
    | Annotated[LegacyBury, Tag("LegacyBury")],
    Discriminator(_end_kind),
]


# -- query strings -------------------------------------------------------------------------


class LeaseQuery(Query):
    lease: Lease | None = Field(
        None, description="The lease of the take; 409 when it is no longer the caller's. "
        "Without it the operation applies whoever holds the job."
    )  # fmt: skip


class TouchQuery(Query):
    lease: Lease = Field(description="The lease of the take (409 when no longer the caller's).")


class TakeQuery(Query):
    """A take's parameters; ``wait`` is bounded by the dispatcher's ``--max_wait``."""

    wait: Annotated[float, Field(ge=0)] = Field(0.0, description="Seconds to wait for a job.")
    count: Annotated[int, Field(ge=1, le=MAX_TAKE)] = Field(1, description="Most jobs taken.")
    worker: Worker | None = None


class TakeAnyQuery(TakeQuery):
    queue: Annotated[list[QueueName], Field(min_length=1, max_length=MAX_TAKE_QUEUES)] = Field(
        description="The queues, repeated (?queue=a&queue=b), in the order to try them.",
        json_schema_extra={"uniqueItems": True},
    )


class ListQuery(Query):
    status: JobStatus | None = Field(None, description="Only jobs of this status.")
    cursor: Annotated[str, Field(max_length=MAX_CURSOR)] | None = Field(
        None, description="The next_cursor of the previous page."
    )
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = Field(
        DEFAULT_PAGE,
        description="Most jobs a page holds; a page also ends once its jobs pass about 4 MiB.",
    )


#: The latest time a history read may name (epoch seconds: the year 5138).
MAX_EPOCH = 99_999_999_999
Epoch = Annotated[float, Field(ge=0, le=MAX_EPOCH)]


class HistoryQuery(Query):
    since: Epoch | None = Field(
        None, description="Epoch seconds; the minute holding it is included (default: an "
        "hour before `until`)."
    )  # fmt: skip
    until: Epoch | None = Field(None, description="Epoch seconds (default: now).")


# -- the worker registry ---------------------------------------------------------------

#: The most running jobs one heartbeat may list.
MAX_RUNNING = 10_000


class RunningJob(Body):
    queue: QueueName
    id: Annotated[str, Field(pattern=JOB_ID_SCHEMA["pattern"]), WithJsonSchema(JOB_ID_SCHEMA)]
    started_at: Epoch


class Heartbeat(Body):
    """What a worker says of itself every few seconds (see docs/observability.rst)."""

    host: Annotated[str, Field(max_length=255)]
    pid: Annotated[int, Field(ge=0, le=2**31), BeforeValidator(_whole)]
    version: Annotated[str, Field(max_length=64)]
    queues: Annotated[list[QueueName], Field(max_length=MAX_TAKE_QUEUES)]
    concurrency: Annotated[int, Field(ge=1, le=100_000), BeforeValidator(_whole)]
    running: Annotated[list[RunningJob], Field(max_length=MAX_RUNNING)] = Field(
        default_factory=list, description="The jobs it runs now."
    )
    started_at: Epoch = Field(description="When the worker started (its clock).")
    finished: Annotated[int, Field(ge=0), BeforeValidator(_whole)] = 0
    failed: Annotated[int, Field(ge=0), BeforeValidator(_whole)] = 0
    activity: Literal["running", "quiet", "stopping", "stopped"] = Field(
        "running", description="What it does: taking jobs, taking none (quiet), shutting "
        "down; stopped (its last heartbeat): it is dropped from the registry at once."
    )  # fmt: skip


class WorkersQuery(Query):
    queue: QueueName | None = Field(None, description="Only workers taking from this queue.")


# -- periodic jobs (tqueues.stores.schedules) -----------------------------------------

SCHEDULE_NAME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_-]{1,62}$",
    "description": "A schedule's name, unique in its queue.",
}
ScheduleName = Annotated[str, Field(pattern=SCHEDULE_NAME_SCHEMA["pattern"])]


class NewSchedule(Body):
    """A schedule to create: its name, the job each tick makes, and either ``cron`` (read
    in ``timezone``) or ``every`` (seconds). A bad cron expression or time zone, or both
    (or neither) of ``cron`` and ``every``, is a 400 naming the field."""

    name: ScheduleName
    job: NewJob = Field(description="The job each tick makes (the body of an enqueue).")
    cron: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        None, description="A cron expression: minute hour day-of-month month day-of-week."
    )
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        "UTC", description="The IANA time zone the cron expression is read in."
    )
    every: Annotated[float, Field(ge=MIN_EVERY, le=MAX_EVERY)] | None = Field(
        None, description="Seconds between ticks (the first one interval after creation)."
    )
    catch_up: Literal["latest", "all", "skip"] = Field(
        "latest",
        description="Ticks missed while no dispatcher ran: latest (one job, for the latest), "
        "all (one job each, up to 1000 a pass) or skip (none; a tick late by a minute or "
        "less is not missed).",
    )
    paused: bool = Field(False, description="Created paused (no tick fires until resumed).")


class PeekQuery(Query):
    status: Literal[PEEK_STATUSES] = Field(  # type: ignore[valid-type]
        "pending",
        description="pending: the one a take gets; delayed: due first; buried: the oldest.",
    )


class LegacyQueueQuery(Query):
    queue: QueueName = Field(description="The queue.")


class LegacyTakeQuery(LegacyQueueQuery, TakeQuery):
    """``GET /``: a take, or with ``id`` a read of that job."""

    id: JobId | None = Field(None, description="Read this job instead of taking one.")
    count: SkipJsonSchema[int] = 1  # one job at a time on /


class LegacyJobQuery(LegacyQueueQuery):
    id: JobId = Field(description="The job.")
    #: Any text, as the original API took it: one that is not the job's answers 409.
    lease: str | None = Field(
        None, description="The lease of the take; 409 when it is not the caller's. Without "
        "it the operation applies whoever holds the job."
    )  # fmt: skip


class WsQuery(LegacyQueueQuery):
    access_token: str | None = Field(None, description="The token, for browsers (no header).")
    start: Literal["snapshot", "now"] = Field(
        "snapshot", description="`snapshot`: every job the queue holds, then `synced`, then "
        "the changes (the original API); `now`: `synced` at once, then the changes (read "
        "what you show through the REST API after `synced`: nothing is missed)."
    )  # fmt: skip


class StreamQuery(Query):
    access_token: str | None = Field(None, description="The token, for browsers (no header).")


class TakeMessage(Body):
    """A take on the take stream (``/take/stream``), as ``POST /take`` makes it."""

    queues: Annotated[list[QueueName], Field(min_length=1, max_length=MAX_TAKE_QUEUES)]
    count: TakeCount = 1
    wait: Annotated[float, Field(ge=0)] = 0.0
    worker: Worker | None = None


@functools.cache
def bounded(query: type[M], max_wait: float) -> type[M]:
    """``query`` with its ``wait`` at most ``max_wait`` (the dispatcher's setting); made
    once per model and setting."""
    if "wait" not in query.model_fields:
        return query
    wait = Annotated[float, Field(ge=0, le=max_wait)]
    field = (wait, Field(0.0, description="Seconds to wait for a job (long-poll)."))
    return pydantic.create_model(query.__name__, __base__=query, wait=field)


# -- validation ----------------------------------------------------------------------------


@functools.cache
def adapter(kind: Any) -> TypeAdapter[Any]:
    """The compiled validator of a body or query type (made once)."""
    return TypeAdapter(kind)


def validate(kind: Any, data: Any, *, where: str = "") -> Any:
    """``data`` validated as ``kind`` (a model or an annotated type of them).

    Raises :class:`ValidationError` naming the field and the rule; ``where`` (such as
    ``jobs[3]``) prefixes the message and is the error's ``index``.
    """
    try:
        return adapter(kind).validate_python(data)
    except pydantic.ValidationError as exc:
        raise refusal(kind, exc, where=where) from None


def refusal(kind: Any, exc: pydantic.ValidationError, *, where: str = "") -> ValidationError:
    """The dispatcher's 400 for the first problem pydantic found in ``kind``'s input."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    root = schema_of(kind)
    # Missing and unknown fields of the same object are named together.
    for kind_of, words in (("missing", "missing"), ("extra_forbidden", "unknown")):
        if first["type"] == kind_of:
            parent = first["loc"][:-1]
            names = [str(e["loc"][-1]) for e in errors
                     if e["type"] == kind_of and e["loc"][:-1] == parent]  # fmt: skip
            index, _, _ = _walk(root, parent, where)
            details: dict[str, Any] = {"field": names[0], "fields": names}
            if index:
                details["index"] = index
            prefix = f"{index}: " if index else ""
            return ValidationError(f"{prefix}{words} field(s): {', '.join(names)}", **details)
    index, field, schema = _walk(root, first["loc"], where)
    context = first.get("ctx", {})
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):  # an outcome's action
        field = str(context.get("discriminator", "")).strip("'")
        schema = {"enum": list(schema.get("discriminator", {}).get("mapping", {}))}
    details = {"field": field} if field else {}
    if index:
        details["index"] = index
    prefix = f"{index}: " if index and field else ""
    if first["type"] == "value_error":  # a rule of our own; its text says it all
        reason = str(context.get("error", first["msg"]))
        return ValidationError(f"{prefix}{reason}", **details)
    rule = _rule(schema) or _WORDS.get(first["type"], first["msg"].lower())
    if field:
        return ValidationError(f"{prefix}'{field}' must be {rule}", **details)
    return ValidationError(f"{index or 'the body'} must be {rule}", **details)


@functools.cache
def schema_of(kind: Any) -> dict[str, Any]:
    """The JSON Schema ``kind`` validates, its definitions under ``$defs``."""
    return adapter(kind).json_schema()


#: What a value must be, for errors whose schema says no type.
_WORDS = {"model_type": "a JSON object", "dict_type": "a JSON object",
          "model_attributes_type": "a JSON object"}  # fmt: skip


def _walk(
    root: dict[str, Any], loc: tuple[int | str, ...], where: str
) -> tuple[str, str, dict[str, Any]]:
    """Where an error is: the item of a batch (``jobs[3]``, after ``where``), the field
    in it (``ttr``; "" for the item itself) and the part of ``root`` that validates it.
    The tags of unions (model names, outcome actions) in ``loc`` are skipped."""
    index, field, name = where, "", ""
    schema = _resolve(root, root)
    for part in loc:
        if isinstance(part, int):
            schema = _resolve(root, schema.get("items", {}))
            if not _holds_fields(root, schema):  # an item of a list of values: the list's
                continue
            index = f"{where}: {name}[{part}]" if where else f"{name}[{part}]"
            field = ""
        elif part in schema.get("properties", {}):
            name = field = part
            schema = _resolve(root, schema["properties"][part])
        elif "oneOf" in schema or "anyOf" in schema:
            schema = _member(root, schema, part)
        else:
            field, schema = part, {}
    return index, field, schema


def _holds_fields(root: dict[str, Any], schema: dict[str, Any]) -> bool:
    """Whether values of ``schema`` are objects (or a union of them): items with fields."""
    options = [_resolve(root, o) for o in schema.get("oneOf", schema.get("anyOf", [schema]))]
    return any(o.get("type") == "object" or "properties" in o for o in options)


def _member(root: dict[str, Any], schema: dict[str, Any], tag: str) -> dict[str, Any]:
    """The member of a union that a tag (a model's name, an outcome's action) names."""
    mapping = schema.get("discriminator", {}).get("mapping", {})
    if tag in mapping:
        return _resolve(root, {"$ref": mapping[tag]})
    for option in schema.get("oneOf", schema.get("anyOf", [])):
        if option.get("$ref", "").rsplit("/", 1)[-1] == tag:
            return _resolve(root, option)
    return {}


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root.get("$defs", {}).get(schema["$ref"].rsplit("/", 1)[-1], {})
    return schema


def _rule(schema: dict[str, Any]) -> str:
    """What a value must be, in words, from its JSON Schema."""
    options = [_resolve({}, o) for o in schema.get("anyOf", [])]
    nullable = any(o.get("type") == "null" for o in options)
    plain = [o for o in options if o.get("type") != "null"]
    if len(plain) == 1:
        schema = plain[0]
    words = _plain_rule(schema)
    return f"{words} or null" if words and nullable else words


def _plain_rule(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    words = {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "object": "a JSON object",
        "array": "a list",
        "string": "a string",
    }.get(kind if isinstance(kind, str) else "", "")
    low, high = _number(schema.get("minimum")), _number(schema.get("maximum"))
    if low and high:
        words += f" from {low} to {high}"
    elif low:
        words += f" of at least {low}"
    elif high:
        words += f" of at most {high}"
    if kind == "array":
        words += _count(schema, "minItems", "maxItems", "item")
    if kind == "string":
        if schema.get("minLength") == 1:
            words = "a non-empty string"
        if "maxLength" in schema:
            words += f" of at most {schema['maxLength']} characters"
        if "pattern" in schema:
            words += f" matching {schema['pattern']}"
    return words


def _number(value: float | None) -> str:
    """A bound as a rule says it: 604800, 0.1, 4294967295."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _count(schema: dict[str, Any], low_key: str, high_key: str, what: str) -> str:
    low, high = schema.get(low_key), schema.get(high_key)
    if low is not None and high is not None:
        return f" of {low} to {high} {what}s"
    return ""


def query_input(query: Mapping[str, str], lists: frozenset[str]) -> Iterator[tuple[str, Any]]:
    """A query string's parameters as a model takes them: one value each (the first),
    every value of the ``lists`` parameters."""
    getall = getattr(query, "getall", None)
    for name in set(query):
        if name in lists and getall is not None:
            yield name, getall(name)
        else:
            yield name, query[name]
