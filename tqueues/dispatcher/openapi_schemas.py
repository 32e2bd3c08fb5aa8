"""The schemas of the dispatcher's answers in the OpenAPI document
(:mod:`tqueues.dispatcher.openapi`): Job, QueueConfig, QueueStats, DispatcherStats, Error
and the other answer bodies. (What requests may say is the models of
:mod:`tqueues.dispatcher.models`.)"""

from __future__ import annotations

from typing import Any

from tqueues.dispatcher.models import MAX_TAKE
from tqueues.jobs import MAX_PRIORITY, JobStatus

Doc = dict[str, Any]
STATUSES = [status.value for status in JobStatus]


def ref(name: str) -> Doc:
    """A reference to a component schema."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str) -> Doc:
    """A value of JSON type ``kind`` or null."""
    return {"type": [kind, "null"]}


def _per_status(description: str) -> Doc:
    """An object holding a count for every job status."""
    return {
        "type": "object",
        "description": description,
        "required": STATUSES,
        "additionalProperties": False,
        "properties": {s: {"type": "integer", "minimum": 0} for s in STATUSES},
    }


#: A queue's pause state, in its settings and its statistics (issue #25).
PAUSE_PROPERTIES: Doc = {
    "paused": {"type": "boolean",
               "description": "Takes hand out none of its jobs (puts are still accepted)."},
    "paused_until": {**nullable("number"),
                     "description": "When the pause ends (epoch seconds); null: when resumed."},
}  # fmt: skip

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
            "args": {"type": "array", "items": {}},
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
            "cancel_requested": {"type": "boolean", "description": "A started job asked to "
                                 "stop: its worker hears of it at its next heartbeat."},
            "after": {"type": "array", "items": {"type": "string"},
                      "description": "The jobs it waits for (or waited for), as 'queue/id'."},
            "has_dependents": {"type": "boolean", "description": "A job put with 'after' "
                               "names it: its end settles the jobs waiting for it."},
            "event": {"type": "string"},
            "key": {**nullable("string"), "description": "Its unique key: no other job of "
                    "its queue with this key is pending, delayed or started while it is."},
            "duplicate": {"type": "boolean", "description": "Only in the answer of a put "
                          "with a key: true when a live job held the key (this job, "
                          "untouched; nothing was stored), false when the job was stored."},
        },
    },
    "QueueConfig": {
        "type": "object",
        "required": ["name", "ttr", "max_attempts", "delay", "ttl", "priority", "retention",
                     "ttl_action", "paused", "paused_until"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
            "ttr": {"type": "number"},
            "max_attempts": {"type": "integer"},
            "delay": {"type": "number"},
            "ttl": nullable("number"),
            "priority": {"type": "integer"},
            "retention": {"type": "number"},
            "ttl_action": {"type": "string", "enum": ["bury", "delete"]},
            **PAUSE_PROPERTIES,
        },
    },
    "QueueStats": {
        "type": "object",
        "required": ["queue", "jobs", "total", "paused", "paused_until", "counters"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string"},
            "jobs": _per_status("Jobs per status; every status is present."),
            "total": {"type": "integer", "minimum": 0},
            **PAUSE_PROPERTIES,
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
    "Schedule": {
        "type": "object",
        "description": "A schedule of periodic jobs (see docs/lifecycle.rst).",
        "required": ["queue", "name", "job", "cron", "timezone", "every", "catch_up",
                     "paused", "next_tick", "created_at", "last_tick"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string"},
            "name": {"type": "string"},
            "job": {"type": "object", "description": "The job each tick makes."},
            "cron": {**nullable("string"), "description": "The cron expression, if any."},
            "timezone": {"type": "string", "description": "Its IANA time zone."},
            "every": {**nullable("number"), "description": "Seconds between ticks, if so."},
            "catch_up": {"type": "string", "enum": ["latest", "all", "skip"]},
            "paused": {"type": "boolean"},
            "next_tick": {"type": "number", "description": "The next tick (epoch seconds)."},
            "created_at": {"type": "number"},
            "last_tick": {**nullable("number"), "description": "The latest tick fired."},
        },
    },
    "ScheduleList": {
        "type": "object",
        "required": ["schedules"],
        "additionalProperties": False,
        "properties": {"schedules": {"type": "array", "items": ref("Schedule")}},
    },
    "Deleted": {
        "type": "object",
        "required": ["queue", "deleted"],
        "additionalProperties": False,
        "properties": {"queue": {"type": "string"}, "deleted": {"type": "integer", "minimum": 0}},
    },
    "QueueHistory": {
        "type": "object",
        "required": ["queue", "bucket", "since", "until", "buckets"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string"},
            "bucket": {"type": "integer", "description": "Seconds per bucket (60)."},
            "since": {"type": "integer", "description": "Start of the first minute read."},
            "until": {"type": "number"},
            "buckets": {
                "type": "array",
                "description": "Minutes with events, earliest first, summed over every "
                "dispatcher of the store.",
                "items": {
                    "type": "object",
                    "required": ["at", "counts"],
                    "additionalProperties": False,
                    "properties": {
                        "at": {"type": "integer", "description": "The minute's start."},
                        "counts": {
                            "type": "object",
                            "description": "Events (put, taken, finished, failed, buried, "
                            "released, expired, promoted, kicked, deleted) counted.",
                            "additionalProperties": {"type": "integer", "minimum": 1},
                        },
                    },
                },
            },
        },
    },
    "Worker": {
        "type": "object",
        "required": ["id", "host", "pid", "version", "queues", "concurrency", "running",
                     "started_at", "last_seen", "finished", "failed", "activity", "command",
                     "state", "seen_ago"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "host": {"type": "string"},
            "pid": {"type": "integer"},
            "version": {"type": "string"},
            "queues": {"type": "array", "items": {"type": "string"}},
            "concurrency": {"type": "integer"},
            "running": {"type": "array", "description": "The jobs it runs now.", "items": {
                "type": "object", "required": ["queue", "id", "started_at"],
                "properties": {"queue": {"type": "string"}, "id": {"type": "string"},
                               "started_at": {"type": "number"}}}},
            "started_at": {"type": "number", "description": "When it started (its clock)."},
            "last_seen": {"type": "number", "description": "Its last heartbeat (ours)."},
            "finished": {"type": "integer", "description": "Jobs it finished."},
            "failed": {"type": "integer", "description": "Runs that failed."},
            "activity": {"type": "string", "enum": ["running", "quiet", "stopping"]},
            "command": {"enum": ["quiet", "stop", None],
                        "description": "What an operator asked of it."},
            "state": {"type": "string", "enum": ["running", "quiet", "stopping", "lost"]},
            "seen_ago": {"type": "number", "description": "Seconds since its last heartbeat."},
        },
    },
    "WorkerList": {
        "type": "object",
        "required": ["workers"],
        "additionalProperties": False,
        "properties": {"workers": {"type": "array", "items": ref("Worker")}},
    },
    "HeartbeatAnswer": {
        "type": "object",
        "required": ["command", "interval", "cancel"],
        "additionalProperties": False,
        "properties": {
            "command": {"enum": ["quiet", "stop", None]},
            "interval": {"type": "number", "description": "Seconds until the next one."},
            "cancel": {"type": "array", "items": {"type": "string"},
                       "description": "Ids of the running jobs asked to stop: the worker "
                       "stops each and reports it."},
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["queue", "id", "status", "summary", "reasons"],
        "additionalProperties": False,
        "properties": {
            "queue": {"type": "string"},
            "id": {"type": "string"},
            "status": {"type": "string"},
            "summary": {"type": "string", "description": "The reasons' texts, in a paragraph."},
            "reasons": {
                "type": "array",
                "description": "Most telling first; each with the fields it rests on.",
                "items": {
                    "type": "object",
                    "required": ["code", "text"],
                    "properties": {
                        "code": {"type": "string", "enum": [
                            "finished", "failed", "cancelled", "buried", "cancel_requested",
                            "leased", "lease_expired", "waiting", "delayed", "paused", "queued",
                            "no_worker", "no_worker_taking", "workers", "ttl"]},
                        "text": {"type": "string"},
                    },
                },
            },
        },
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
    "Whoami": {
        "type": "object",
        "required": ["role", "operations"],
        "properties": {
            "role": {"type": "string", "description": "The token's role (admin when the "
                     "dispatcher has no tokens)."},
            "operations": {"type": "array", "items": {"type": "string"},
                           "description": "The operationIds this token may call."},
        },
    },
}  # fmt: skip

#: A job as its taker gets it: the Job, its lease present (a whole schema of its own, not
#: an allOf that narrows ``lease``, which client generators cannot merge).
SCHEMAS["TakenJob"] = {
    **SCHEMAS["Job"],
    "description": "A job as its taker gets it, with the lease that proves it holds it.",
    "required": [*SCHEMAS["Job"]["required"], "lease"],
    "properties": {**SCHEMAS["Job"]["properties"], "lease": {"type": "string"}},
}
