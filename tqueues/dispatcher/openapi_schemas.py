"""The component schemas of the OpenAPI document (:mod:`tqueues.dispatcher.openapi`):
Job, QueueConfig, QueueStats, DispatcherStats, Error and the request and answer bodies."""

from __future__ import annotations

from typing import Any

from tqueues.dispatcher.rest import (
    MAX_BATCH,
    MAX_ID,
    MAX_OUTCOMES,
    MAX_TAKE,
    OUTCOME_ACTIONS,
)
from tqueues.jobs import MAX_ATTEMPTS_LIMIT, MAX_DELAY, MAX_PRIORITY, MAX_TTR, JobStatus

Doc = dict[str, Any]
STATUSES = [status.value for status in JobStatus]


def ref(name: str) -> Doc:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str) -> Doc:
    """A value of JSON type ``kind`` or null."""
    return {"type": [kind, "null"]}


def seconds(description: str, *, low: float = 0, high: float = MAX_DELAY) -> Doc:
    """A number of seconds between ``low`` and ``high``."""
    return {"type": "number", "minimum": low, "maximum": high, "description": description}


def _per_status(description: str) -> Doc:
    """An object holding a count for every job status."""
    return {
        "type": "object",
        "description": description,
        "required": STATUSES,
        "additionalProperties": False,
        "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
    }


SCHEMAS: Doc = {
    "Job": {
        "type": "object",
        "description": "A stored job. Fields set by updates sit at the top level beside these.",
        "required": [
            "id", "queue", "method", "args", "kwargs", "status", "priority", "ttr",
            "max_attempts", "attempts", "ready_at", "created_at", "rev", "event",
        ],
        "properties": {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "method": {"type": "string"},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "status": {"type": "string", "enum": STATUSES},
            "priority": {"type": "integer", "minimum": -1, "maximum": MAX_PRIORITY,
                         "description": "Lower first; -1 for urgent jobs."},
            "ttr": {"type": "number"},
            "max_attempts": {"type": "integer"},
            "attempts": {"type": "integer", "minimum": 0},
            "ready_at": {"type": "number"},
            "created_at": {"type": "number"},
            "lease": {**nullable("string"),
                      "description": "Only in the answer of a take, to the taker."},
            "lease_expires": nullable("number"),
            "started_at": nullable("number"),
            "finished_at": nullable("number"),
            "worker": nullable("string"),
            "result": {"description": "The return value of a finished job."},
            "error": nullable("string"),
            "traceback": nullable("string"),
            "expires_at": nullable("number"),
            "rev": {"type": "integer"},
            "event": {"type": "string"},
        },
    },
    "TakenJob": {
        "allOf": [ref("Job"), {"type": "object", "required": ["lease"],
                               "properties": {"lease": {"type": "string"}}}],
    },
    "NewJob": {
        "type": "object",
        "required": ["method"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string", "description": "Optional; must match the path."},
            "method": {"type": "string", "minLength": 1, "maxLength": 512},
            "args": {"type": "array"},
            "kwargs": {"type": "object"},
            "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY},
            "urgent": {"type": "boolean"},
            "ttr": seconds("Lease length.", low=0.1, high=MAX_TTR),
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_LIMIT},
            "delay": seconds("Seconds before it may be taken."),
            "ttl": seconds("Seconds it may wait unfinished.", low=0.001),
        },
    },
    "QueueSettings": {
        "type": "object",
        "additionalProperties": False,
        "description": "Defaults for new jobs and policies; any subset.",
        "properties": {
            "ttr": seconds("Lease length.", low=0.1, high=MAX_TTR),
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_LIMIT},
            "delay": seconds("Default delay of new jobs."),
            "ttl": {"type": ["number", "null"], "minimum": 0.001, "maximum": MAX_DELAY},
            "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY},
            "retention": seconds("How long finished and failed jobs are kept.",
                                  high=10 * MAX_DELAY),
            "ttl_action": {"type": "string", "enum": ["bury", "delete"]},
        },
    },
    "QueueConfig": {
        "type": "object",
        "required": ["name", "ttr", "max_attempts", "delay", "ttl", "priority", "retention",
                     "ttl_action"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
            "ttr": {"type": "number"},
            "max_attempts": {"type": "integer"},
            "delay": {"type": "number"},
            "ttl": nullable("number"),
            "priority": {"type": "integer"},
            "retention": {"type": "number"},
            "ttl_action": {"type": "string", "enum": ["bury", "delete"]},
        },
    },
    "QueueStats": {
        "type": "object",
        "required": ["queue", "jobs", "total", "counters"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string"},
            "jobs": _per_status("Jobs per status; every status is present."),
            "total": {"type": "integer", "minimum": 0},
            "counters": {
                "type": "object",
                "description": "Events since this dispatcher started (put, taken, ...).",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
        },
    },
    "DispatcherStats": {
        "type": "object",
        "required": ["queues", "jobs", "total", "counters", "by_queue"],
        "additionalProperties": False,
        "properties": {
            "queues": {"type": "integer", "minimum": 0},
            "jobs": _per_status("Jobs per status over every queue."),
            "total": {"type": "integer", "minimum": 0},
            "counters": {
                "type": "object",
                "description": "Events since this dispatcher started, over every queue.",
                "additionalProperties": {"type": "integer", "minimum": 0},
            },
            "by_queue": {"type": "array", "items": ref("QueueStats")},
        },
    },
    "QueueDetail": {
        "allOf": [ref("QueueConfig"), {"type": "object", "required": ["stats"],
                                       "properties": {"stats": ref("QueueStats")}}],
    },
    "QueueList": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "array", "items": ref("QueueConfig")}},
    },
    "JobPage": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "jobs": {"type": "array", "items": ref("Job")},
            "next_cursor": {**nullable("string"),
                            "description": "Pass as ?cursor= for the next page; null: last."},
        },
    },
    "JobBatch": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                "items": ref("NewJob")}},
    },
    "StoredJobs": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "items": ref("Job")}},
    },
    "TakenJobs": {
        "type": "object",
        "required": ["jobs"],
        "additionalProperties": False,
        "properties": {"jobs": {"type": "array", "maxItems": MAX_TAKE,
                                "items": ref("TakenJob")}},
    },
    "Outcome": {
        "type": "object",
        "required": ["id", "action"],
        "description": "One run's end: the job, its lease and the action, with the fields of "
                       "that action's body (finish: result; fail: error, traceback, permanent; "
                       "release, requeue: delay; bury: reason).",
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID},
            "lease": {**nullable("string"), "maxLength": MAX_ID,
                      "description": "The lease of the take; without it the outcome applies "
                                     "whoever holds the job."},
            "action": {"type": "string", "enum": list(OUTCOME_ACTIONS)},
            "result": {},
            "error": {"type": "string", "minLength": 1},
            "traceback": nullable("string"),
            "permanent": {"type": "boolean"},
            "delay": {"type": "number", "minimum": 0},
            "reason": nullable("string"),
        },
    },
    "OutcomeBatch": {
        "type": "object",
        "required": ["outcomes"],
        "additionalProperties": False,
        "properties": {"outcomes": {"type": "array", "minItems": 1, "maxItems": MAX_OUTCOMES,
                                    "items": ref("Outcome")},
                       "take": {"type": "integer", "minimum": 0, "maximum": MAX_TAKE,
                                "default": 0},
                       "worker": {"type": "string", "maxLength": 200},
                       "brief": {"type": "boolean", "default": False}},
    },
    "OutcomeResults": {
        "type": "object",
        "required": ["results"],
        "additionalProperties": False,
        "properties": {"results": {"type": "array", "items": {"oneOf": [
            {"type": "object", "required": ["job"], "additionalProperties": False,
             "properties": {"job": ref("Job")}},
            {"type": "object", "required": ["stored"], "additionalProperties": False,
             "properties": {"stored": {
                 "type": "object", "required": ["id", "status"], "additionalProperties": False,
                 "properties": {"id": {"type": "string"},
                                "status": {"type": "string", "enum": STATUSES}}}}},
            {"type": "object", "required": ["error"], "additionalProperties": False,
             "properties": {"error": {"allOf": [ref("Error"), {
                 "type": "object", "required": ["status"],
                 "properties": {"status": {"type": "integer", "minimum": 400}}}]}}},
        ]}}, "jobs": {"type": "array", "maxItems": MAX_TAKE, "items": ref("TakenJob")}},
    },
    "Deleted": {
        "type": "object",
        "required": ["queue", "deleted"],
        "additionalProperties": False,
        "properties": {"queue": {"type": "string"}, "deleted": {"type": "integer", "minimum": 0}},
    },
    "Kicked": {
        "type": "object",
        "required": ["queue", "kicked"],
        "additionalProperties": False,
        "properties": {"queue": {"type": "string"}, "kicked": {"type": "integer", "minimum": 0}},
    },
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "description": "Other keys (field, fields, queue, ...) name the offending input.",
        "properties": {
            "error": {"type": "string", "description": "A stable code, e.g. queue_not_found."},
            "message": {"type": "string"},
            "field": {"type": "string"},
            "fields": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "queues"],
        "properties": {"status": {"const": "ok"}, "version": {"type": "string"},
                       "queues": {"type": "integer"}},
    },
}  # fmt: skip
