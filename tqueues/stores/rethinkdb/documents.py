"""Jobs and queue settings as RethinkDB documents, ReQL literals and listing cursors.

Pure functions (no I/O), unit-tested without a server. ``r`` is the one driver instance
the whole package builds its queries with (asyncio connections).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.ast import RqlQuery

from tqueues.jobs import Job, JobStatus, QueueConfig

r = RethinkDB()
r.set_loop_type("asyncio")

#: Every field of a job document, in the order of :class:`Job`.
FIELDS = tuple(field.name for field in dataclasses.fields(Job))
FLOAT_FIELDS = frozenset({"ttr", "ready_at", "created_at"})
OPTIONAL_FLOAT_FIELDS = frozenset({"lease_expires", "started_at", "finished_at", "expires_at"})
INT_FIELDS = frozenset({"priority", "max_attempts", "attempts", "rev"})
#: Every setting of a queue; its document in ``tqueues_queues`` holds these and ``ready``.
CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(QueueConfig))
CONFIG_FLOATS = frozenset({"ttr", "delay", "retention"})
CONFIG_INTS = frozenset({"max_attempts", "priority"})
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def job_to_doc(job: Job) -> dict[str, Any]:
    """The job as its RethinkDB document (status as its string value, ``extra`` nested)."""
    doc = {name: getattr(job, name) for name in FIELDS}
    doc["status"] = job.status.value
    return doc


def doc_to_job(doc: Mapping[str, Any]) -> Job:
    """The :class:`Job` a RethinkDB document holds.

    Numbers are normalised (RethinkDB returns integral doubles as JSON integers); fields a
    document written by an older version lacks (``expires_at``, ``event``) take the
    dataclass defaults. Raises KeyError or ValueError for a document that is not a job.
    """
    fields: dict[str, Any] = {name: doc[name] for name in FIELDS if name in doc}
    for name in FLOAT_FIELDS:
        fields[name] = float(fields[name])
    for name in OPTIONAL_FLOAT_FIELDS:
        if fields.get(name) is not None:
            fields[name] = float(fields[name])
    for name in INT_FIELDS:
        if name in fields:
            fields[name] = int(fields[name])
    fields["status"] = JobStatus(fields["status"])
    fields["extra"] = dict(fields.get("extra") or {})
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    if not isinstance(fields.get("event", ""), str):
        fields["event"] = str(fields["event"])
    return Job(**fields)


def config_to_doc(config: QueueConfig) -> dict[str, Any]:
    """The queue's settings as the fields of its ``tqueues_queues`` document (no ``ready``)."""
    return config.to_dict()


def doc_to_config(doc: Mapping[str, Any]) -> QueueConfig:
    """The settings a ``tqueues_queues`` document holds; settings a document written by an
    older version lacks take the defaults. Raises KeyError without ``name``."""
    fields: dict[str, Any] = {name: doc[name] for name in CONFIG_FIELDS if name in doc}
    for name in CONFIG_FLOATS & fields.keys():
        fields[name] = float(fields[name])
    for name in CONFIG_INTS & fields.keys():
        fields[name] = int(fields[name])
    if fields.get("ttl") is not None:
        fields["ttl"] = float(fields["ttl"])
    return QueueConfig(**fields)


def change_kind(old: Job | None, new: Job | None) -> str:
    """The kind of change that turned ``old`` into ``new`` (None: absent): the new revision's
    ``event`` (set by the transitions of :mod:`tqueues.lifecycle`), or "deleted"."""
    return "deleted" if new is None else new.event


def reql_literal(value: Any) -> RqlQuery:
    """``value`` (JSON data) as a ReQL literal, built bottom-up.

    Unlike ``r.expr`` this has no nesting limit (the driver refuses data nested more than 20
    levels), so any job the dispatcher accepts can be stored.
    """
    if isinstance(value, Mapping):
        return r.ast.MakeObj({str(key): reql_literal(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return r.ast.MakeArray(*(reql_literal(item) for item in value))
    return r.expr(value)


def format_cursor(job: Job) -> str:
    """The cursor of the page after ``job``: ``CREATED_AT:ID`` (the float's repr)."""
    return f"{job.created_at!r}:{job.id}"


def parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    """``CREATED_AT:ID`` as a pair, or None for no (or an unreadable) cursor."""
    if not cursor:
        return None
    created_at, sep, job_id = cursor.rpartition(":")
    if not sep or not _JOB_ID_RE.match(job_id):
        return None
    try:
        value = float(created_at)
    except ValueError:
        return None
    return value, job_id


def batch_ids(jobs: Sequence[Job]) -> list[Job]:
    """The jobs of one batch with ids that sort in batch order (a shared random prefix of
    24 hex digits, then the position as 8).

    Jobs put together share ``created_at`` and ``ready_at``, and RethinkDB breaks ties in
    a secondary index by primary key: these ids make the take order and the listing order
    of a batch its put order, as on SQLite.
    """
    prefix = uuid.uuid4().hex[:24]
    return [job.evolve(id=f"{prefix}{position:08x}") for position, job in enumerate(jobs)]


__all__ = [
    "FIELDS",
    "batch_ids",
    "change_kind",
    "config_to_doc",
    "doc_to_config",
    "doc_to_job",
    "format_cursor",
    "job_to_doc",
    "parse_cursor",
    "r",
    "reql_literal",
]
