"""Jobs and queue settings as RethinkDB documents, ReQL literals and listing cursors.

Pure functions (no I/O), unit-tested without a server. ``r`` is the one driver instance
the whole package builds its queries with (asyncio connections).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.ast import RqlQuery

from tqueues.jobs import JobRecord, JobStatus, QueueConfig, new_ordered_id

r = RethinkDB()
r.set_loop_type("asyncio")

#: Every field of a job document, in the order of :class:`JobRecord`.
FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))
FLOAT_FIELDS = frozenset({"ttr", "ready_at", "created_at"})
OPTIONAL_FLOAT_FIELDS = frozenset({"lease_expires", "started_at", "finished_at", "expires_at"})
INT_FIELDS = frozenset({"priority", "max_attempts", "attempts", "rev"})
#: Every setting of a queue; its document in ``tqueues_queues`` holds these and ``ready``.
CONFIG_FIELDS = tuple(field.name for field in dataclasses.fields(QueueConfig))
CONFIG_FLOATS = frozenset({"ttr", "delay", "retention"})
CONFIG_INTS = frozenset({"max_attempts", "priority"})
_JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
#: Object keys RethinkDB does not keep as sent: it reads an object with the key
#: ``$reql_type$`` as one of its own types (a time, binary data, a geometry), so it would
#: refuse the job (an invalid one) or change it (a valid one), and it cuts a key at its
#: first NUL character (two keys may then clash, or the key is changed). Such keys are
#: stored escaped (see :func:`escape_key`), and so are keys that start with the escape
#: character, so that every escaped key reads back as it was sent.
PSEUDO_TYPE_KEY = "$reql_type$"
#: Texts one of which the JSON of data (:func:`dumps`) holds if a key in it needs escaping:
#: the pseudo-type key, a NUL character, a string that starts with a backslash.
_ESCAPE_MARKERS = (PSEUDO_TYPE_KEY, "\\u0000", '"\\\\')
_DECODE = re.compile(r"%(25|00)")
#: The field of a job's document that says it holds escaped keys (so that reading every
#: other document costs nothing more).
ESCAPED = "escaped_keys"
#: The fields of a job that hold the producer's and the worker's JSON.
JSON_FIELDS = ("args", "kwargs", "result", "extra")


def job_to_doc(job: JobRecord) -> dict[str, Any]:
    """The job as its RethinkDB document (status as its string value, ``extra`` nested);
    :func:`job_literal` is what is written. ``after`` and ``has_dependents`` are left out
    while empty and false (most jobs: their documents stay as they were before #25)."""
    doc = {name: getattr(job, name) for name in FIELDS}
    doc["status"] = job.status.value
    if not job.after:
        del doc["after"]
    if not job.has_dependents:
        del doc["has_dependents"]
    return doc


def job_literal(job: JobRecord) -> RqlQuery:
    """The job's document as the ReQL every single-document write stores: one ``r.json``
    of :func:`stored_documents` (the server parses it once; building the document as
    nested ReQL terms cost about half a millisecond of Python per job)."""
    return r.json(dumps(stored_documents([job])[0]))


def stored_documents(jobs: Sequence[JobRecord]) -> list[dict[str, Any]]:
    """The jobs' documents (:func:`job_to_doc`) as they are stored: the keys RethinkDB
    would not keep as sent escaped (:func:`escape_key`), and ``escaped_keys: true`` on a
    document that has any, for :func:`doc_to_job`. Only documents whose JSON holds one of
    the few texts such a key needs are walked (a cheap test on the JSON of them all)."""
    docs = [job_to_doc(job) for job in jobs]
    text = dumps([[doc[name] for name in JSON_FIELDS] for doc in docs])
    if not any(marker in text for marker in _ESCAPE_MARKERS):
        return docs
    for doc in docs:
        escaped: list[str] = []
        for name in JSON_FIELDS:
            doc[name] = escape_data(doc[name], escaped)
        if escaped:
            doc[ESCAPED] = True
    return docs


def escape_data(value: Any, escaped: list[str] | None = None) -> Any:
    """JSON data with every key RethinkDB would not keep escaped (:func:`escape_key`),
    as new containers; each escaped key is appended to ``escaped``, if given."""
    if isinstance(value, Mapping):
        items: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            stored = escape_key(name)
            if stored is not None:
                name = stored
                if escaped is not None:
                    escaped.append(name)
            items[name] = escape_data(item, escaped)
        return items
    if isinstance(value, list | tuple):
        return [escape_data(item, escaped) for item in value]
    return value


def dumps(value: Any) -> str:
    """``value`` as the compact JSON ``r.json`` is given. Raises ValueError for NaN or an
    infinity (which the server could not hold either)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def doc_to_job(doc: Mapping[str, Any]) -> JobRecord:
    """The :class:`JobRecord` a RethinkDB document holds.

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
    if doc.get(ESCAPED):
        for name in JSON_FIELDS:
            if name in fields:
                fields[name] = unescape(fields[name])
    fields["status"] = JobStatus(fields["status"])
    if "after" in fields:
        fields["after"] = list(fields["after"])
    fields["extra"] = dict(fields.get("extra") or {})
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    if not isinstance(fields.get("event", ""), str):
        fields["event"] = str(fields["event"])
    return JobRecord(**fields)


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
    for name in ("ttl", "paused_until"):
        if fields.get(name) is not None:
            fields[name] = float(fields[name])
    return QueueConfig(**fields)


def change_kind(old: JobRecord | None, new: JobRecord | None) -> str:
    """The kind of change that turned ``old`` into ``new`` (None: absent): the new revision's
    ``event`` (set by the transitions of :mod:`tqueues.lifecycle`), or "deleted"."""
    return "deleted" if new is None else new.event


def escape_key(key: str) -> str | None:
    """How an object key is stored, if not as it is (None): a key ``$reql_type$``, with a
    NUL character or starting with a backslash becomes a backslash and the key with ``%``
    written ``%25`` and NUL ``%00``. No stored key then has a NUL or is ``$reql_type$``,
    and :func:`unescape_key` reverses it (the keys it leaves never start with a
    backslash)."""
    if key == PSEUDO_TYPE_KEY or "\x00" in key or key.startswith("\\"):
        return "\\" + key.replace("%", "%25").replace("\x00", "%00")
    return None


def unescape_key(key: str) -> str:
    """An object key as it was sent (see :func:`escape_key`)."""
    if not key.startswith("\\"):
        return key
    return _DECODE.sub(lambda code: "%" if code.group(1) == "25" else "\x00", key[1:])


def reql_literal(value: Any, escaped: list[str] | None = None) -> RqlQuery:
    """``value`` (JSON data) as a ReQL literal, built bottom-up, that RethinkDB stores as
    it is sent: the keys it would not keep are escaped (:func:`escape_key`) and appended
    to ``escaped``, if given; :func:`unescape` gives back exactly what was sent.

    Unlike ``r.expr`` this has no nesting limit (the driver refuses data nested more than 20
    levels), so any job the dispatcher accepts can be stored.
    """
    return _literal(escape_data(value, escaped))


def _literal(value: Any) -> RqlQuery:
    """JSON data whose keys are already escaped as a ReQL literal, built bottom-up."""
    if isinstance(value, Mapping):
        return r.ast.MakeObj({key: _literal(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return r.ast.MakeArray(*(_literal(item) for item in value))
    return r.expr(value)


def unescape(value: Any) -> Any:
    """JSON data as :func:`reql_literal` was given it: every key as it was sent."""
    if isinstance(value, dict):
        return {unescape_key(key): unescape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unescape(item) for item in value]
    return value


def format_cursor(job: JobRecord) -> str:
    """The cursor of the page after ``job``: its id (ids sort in creation order)."""
    return job.id


def parse_cursor(cursor: str | None) -> str | None:
    """The job id of a cursor (``ID``, or ``CREATED_AT:ID`` as earlier versions made
    them), or None for no (or an unreadable) cursor."""
    if not cursor:
        return None
    job_id = cursor.rpartition(":")[2]
    return job_id if _JOB_ID_RE.match(job_id) else None


def batch_ids(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    """The jobs of one batch with ids that sort in batch order, after the ids made before
    (:func:`~tqueues.jobs.new_ordered_id`'s first 24 hex digits, then the position as 8).

    Jobs put together share ``created_at`` and ``ready_at``, and RethinkDB breaks ties in
    a secondary index by primary key: these ids make the take order and the listing order
    of a batch its put order, as on SQLite.
    """
    prefix = new_ordered_id()[:24]
    return [job.evolve(id=f"{prefix}{position:08x}") for position, job in enumerate(jobs)]


__all__ = [
    "ESCAPED",
    "FIELDS",
    "batch_ids",
    "change_kind",
    "config_to_doc",
    "doc_to_config",
    "doc_to_job",
    "dumps",
    "escape_data",
    "escape_key",
    "format_cursor",
    "job_literal",
    "job_to_doc",
    "parse_cursor",
    "r",
    "reql_literal",
    "stored_documents",
    "unescape",
    "unescape_key",
]
