"""The OpenAPI 3.1 document of the dispatcher, built here and served on ``GET /openapi.json``.

It describes every REST route (:mod:`tqueues.dispatcher.rest`), the documented ``/`` API
(:mod:`tqueues.dispatcher.views`), ``/health``, ``/ws`` and itself, with the schemas of
Job, QueueConfig, QueueStats and Error. The tests validate the document and every answer
they get against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from aiohttp import web

from tqueues import __version__
from tqueues.dispatcher.openapi_schemas import SCHEMAS, STATUSES, Doc, nullable, ref
from tqueues.dispatcher.rest import (
    MAX_BATCH,
    MAX_KICK,
    MAX_OUTCOMES,
    MAX_PAGE,
    MAX_TAKE,
    MAX_TAKE_QUEUES,
)
from tqueues.jobs import MAX_TTR


def _json(schema: Doc, description: str) -> Doc:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Doc:
    return _json(ref("Error"), description)


ERRORS: Doc = {
    "400": _error("A malformed request; the answer names the field."),
    "401": _error("No valid bearer token (when the dispatcher has tokens)."),
    "403": _error("The token's role does not allow this."),
    "404": _error("The queue (queue_not_found) or job (job_not_found) does not exist."),
    "409": _error("lease_mismatch: the lease is no longer yours; invalid_transition: the "
                  "job's state does not allow this."),
    "413": _error("The body is larger than the dispatcher accepts."),
    "503": _error("The store cannot be reached or is full; retry later."),
}  # fmt: skip


def _param(name: str, where: str, schema: Doc, description: str, **more: Any) -> Doc:
    return {"name": name, "in": where, "schema": schema, "description": description, **more}


NAME = _param("name", "path", {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
              "The queue.", required=True)  # fmt: skip
JOB_ID = _param("id", "path", {"type": "string", "maxLength": 128}, "The job.", required=True)
LEASE = _param("lease", "query", {"type": "string"},
               "The lease of the take; 409 when it is no longer the caller's. Without it the "
               "operation applies whoever holds the job.")  # fmt: skip


def _op(
    summary: str,
    role: str,
    ok: dict[str, Doc],
    *,
    errors: tuple[str, ...] = ("400", "404"),
    body: Doc | None = None,
    body_required: bool = False,
    params: tuple[Doc, ...] = (),
    op_id: str,
) -> Doc:
    responses = {**ok, **{code: ERRORS[code] for code in (*errors, "401", "403", "503")}}
    operation: Doc = {
        "operationId": op_id,
        "summary": summary,
        "description": f"Roles: {role}.",
        "responses": dict(sorted(responses.items())),
    }
    if params:
        operation["parameters"] = list(params)
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def _action(name: str, summary: str, role: str, body: Doc, *, lease_required: bool = False) -> Doc:
    lease = {**LEASE, "required": True} if lease_required else LEASE
    return {
        "parameters": [NAME, JOB_ID],
        "post": _op(
            summary,
            role,
            {"200": _json(ref("Job"), "The job after the change.")},
            errors=("400", "404", "409"),
            body=body,
            params=(lease,),
            op_id=name,
        ),
    }


def _object(**properties: Doc) -> Doc:
    return {"type": "object", "additionalProperties": False, "properties": properties}


READ = "admin, producer, worker"
WORKER = "admin, worker"
SECONDS = {"type": "number", "minimum": 0}
TAKE_PARAMS = (
    _param("wait", "query", SECONDS, "Long-poll: seconds to wait for a job (up to --max_wait)."),
    _param("count", "query", {"type": "integer", "minimum": 1, "maximum": MAX_TAKE, "default": 1},
           "How many jobs at most."),
    _param("worker", "query", {"type": "string", "maxLength": 200},
           "The taker's name, recorded on the job."),
)  # fmt: skip

REST_PATHS: Doc = {
    "/queues": {
        "get": _op("List every queue with its settings.", READ,
                   {"200": _json(ref("QueueList"), "The queues, by name.")},
                   errors=(), op_id="list_queues"),
    },
    "/queues/{name}": {
        "parameters": [NAME],
        "get": _op("The queue's settings and statistics.", "admin",
                   {"200": _json(ref("QueueDetail"), "Settings and stats.")},
                   op_id="queue_settings"),
        "put": _op("Create the queue with these settings (idempotent).", "admin, producer",
                   {"201": _json(ref("QueueConfig"), "Created with these settings."),
                    "200": _json(ref("QueueConfig"),
                                 "It existed; its settings, unchanged.")},
                   errors=("400",), body=ref("QueueSettings"), op_id="create_queue"),
        "patch": _op("Change any subset of the queue's settings; jobs already put keep theirs.",
                     "admin", {"200": _json(ref("QueueConfig"), "The new settings.")},
                     body=ref("QueueSettings"), op_id="update_queue"),
        "delete": _op("Drop the queue and every job in it.", "admin",
                      {"200": _json(ref("Deleted"), "How many jobs went.")},
                      op_id="drop_queue"),
    },
    "/queues/{name}/truncate": {
        "parameters": [NAME],
        "post": _op("Remove every job of the queue; the queue stays.", "admin",
                    {"200": _json(ref("Deleted"), "How many jobs went.")}, op_id="truncate"),
    },
    "/queues/{name}/stats": {
        "parameters": [NAME],
        "get": _op("Jobs per status and this dispatcher's event counters.", "admin",
                   {"200": _json(ref("QueueStats"), "The statistics.")}, op_id="stats"),
    },
    "/stats": {
        "get": _op("Every queue's statistics, and their sums.", "admin",
                   {"200": _json(ref("DispatcherStats"), "The statistics.")},
                   op_id="dispatcher_stats"),
    },
    "/queues/{name}/kick": {
        "parameters": [NAME],
        "post": _op("Kick up to `bound` buried jobs (delayed ones when none is buried) to "
                    "pending; with `status`, jobs of that status only (failed jobs are kicked "
                    "only so). Buried and failed jobs get their attempts renewed.", "admin",
                    {"200": _json(ref("Kicked"), "How many were kicked.")},
                    body=_object(bound={"type": "integer", "minimum": 1, "maximum": MAX_KICK,
                                        "default": 1},
                                 status={"enum": ["buried", "failed", "delayed"]}),
                    op_id="kick"),
    },
    "/queues/{name}/jobs": {
        "parameters": [NAME],
        "post": _op(f"Enqueue one job, or a batch of 1 to {MAX_BATCH} (all validated before "
                    "any is stored; one durable write).", "admin, producer",
                    {"201": {"description": "The stored job, or the stored batch in order.",
                             "content": {"application/json": {"schema": {
                                 "oneOf": [ref("Job"), ref("StoredJobs")]}}}}},
                    body={"oneOf": [ref("NewJob"), ref("JobBatch")]}, body_required=True,
                    errors=("400", "404", "413"), op_id="put"),
        "get": _op("List the queue's jobs in creation order, a page at a time.", READ,
                   {"200": _json(ref("JobPage"), "One page.")}, op_id="list_jobs",
                   params=(
                       _param("status", "query", {"type": "string", "enum": STATUSES},
                              "Only jobs of this status."),
                       _param("cursor", "query", {"type": "string"},
                              "The next_cursor of the previous page."),
                       _param("limit", "query",
                              {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                               "default": 100},
                              "Most jobs a page holds; a page also ends once its jobs pass "
                              "about 4 MiB (next_cursor goes on)."),
                   )),
    },
    "/queues/{name}/jobs/next": {
        "parameters": [NAME],
        "get": _op("Peek the job of a status that comes next, without taking it.", READ,
                   {"200": _json(ref("Job"), "The job.")}, op_id="peek",
                   params=(_param("status", "query",
                                  {"type": "string", "enum": ["pending", "delayed", "buried"],
                                   "default": "pending"},
                                  "pending: the one a take gets; delayed: due first; "
                                  "buried: the oldest. 404 job_not_found when none."),)),
    },
    "/queues/{name}/jobs/stream": {
        "parameters": [NAME],
        "get": {"operationId": "jobStream",
                "summary": "WebSocket job stream: each message is a body of POST "
                           "/queues/{name}/jobs (with an optional `ref`), answered in order "
                           "with {ref, status, job | jobs} or {ref, status, error, message} "
                           "(see docs/rest-api.rst).",
                "description": "Roles: admin, producer. The token also as ?access_token=.",
                "responses": {"101": {"description": "Switching to the WebSocket protocol."},
                              **{code: ERRORS[code] for code in ("400", "401", "403", "404")}}},
    },
    "/queues/{name}/take": {
        "parameters": [NAME],
        "post": _op("Take up to `count` jobs, each with its lease, waiting up to `wait` "
                    "seconds for the first. An empty list when none came.", WORKER,
                    {"200": _json(ref("TakenJobs"), "The jobs taken (maybe none).")},
                    op_id="take_many", params=TAKE_PARAMS),
    },
    "/take": {
        "post": _op("Take up to `count` jobs of the first of the `queue` queues (in the "
                    "order given) that has pending jobs, waiting up to `wait` seconds for "
                    "a job in any of them. The jobs all come from one queue; an empty list "
                    "when none came. 404 if a queue does not exist (nothing is taken).",
                    WORKER, {"200": _json(ref("TakenJobs"), "The jobs taken (maybe none).")},
                    op_id="take_any",
                    params=(
                        _param("queue", "query",
                               {"type": "array", "minItems": 1, "maxItems": MAX_TAKE_QUEUES,
                                "uniqueItems": True, "items": NAME["schema"]},
                               "The queues, repeated (?queue=a&queue=b), in the order to "
                               "try them.", required=True, style="form", explode=True),
                        *TAKE_PARAMS,
                    )),
    },
    "/take/stream": {
        "get": {"operationId": "takeStream",
                "summary": "WebSocket take stream: each message is a take {queues, count, "
                           "wait, worker, ref}, as POST /take makes; each is answered, in "
                           "the order they end, with {ref, status, jobs} or {ref, status, "
                           "error, message} (see docs/rest-api.rst).",
                "description": "Roles: admin, worker.",
                "responses": {"101": {"description": "Switching to the WebSocket protocol."},
                              **{code: ERRORS[code] for code in ("401", "403")}}},
    },
    "/queues/{name}/outcomes": {
        "parameters": [NAME],
        "post": _op(f"Report how 1 to {MAX_OUTCOMES} runs ended, each applied on its own as "
                    "POST /queues/{name}/jobs/{id}/{action}?lease= would, in one durable "
                    "write. Every item is validated first; a 400 names the first bad one "
                    "(outcomes[i]). With `take`, up to that many pending jobs are also "
                    "taken (as POST /queues/{name}/take?count= without waiting) in the "
                    "same write: the next jobs in the same round trip.", WORKER,
                    {"200": _json(ref("OutcomeResults"),
                                  "One result per outcome, in order: the job after the "
                                  "change (durable), or the error that item alone got "
                                  "(404 job_not_found, 409 lease_mismatch or "
                                  "invalid_transition, 503); with `take`, the `jobs` "
                                  "taken (maybe none).")},
                    body=ref("OutcomeBatch"), body_required=True,
                    errors=("400", "404", "413"), op_id="report"),
    },
    "/queues/{name}/jobs/{id}": {
        "parameters": [NAME, JOB_ID],
        "get": _op("Read one job (its result once finished).", READ,
                   {"200": _json(ref("Job"), "The job.")}, op_id="get"),
        "patch": _op("Merge fields into the job; with `lease`, extend the lease too.", WORKER,
                     {"200": _json(ref("Job"), "The job after the change.")},
                     errors=("400", "404", "409"), body={"type": "object"}, params=(LEASE,),
                     op_id="update"),
        "delete": _op("Delete the job whatever its state.", "admin",
                      {"200": _json(ref("Job"), "The job as it was.")}, op_id="delete"),
    },
    "/queues/{name}/jobs/{id}/finish": _action(
        "finish", "Finish the job with its result.", WORKER, _object(result={})),
    "/queues/{name}/jobs/{id}/fail": _action(
        "fail", "Report a failed run: retried with backoff while attempts remain, then "
        "buried; failed at once when permanent.", WORKER,
        {**_object(error={"type": "string", "minLength": 1}, traceback=nullable("string"),
                   permanent={"type": "boolean", "default": False}), "required": ["error"]}),
    "/queues/{name}/jobs/{id}/release": _action(
        "release", "Give the job back untried; it keeps its place. Pending again after "
        "`delay`.", WORKER, _object(delay=SECONDS)),
    "/queues/{name}/jobs/{id}/requeue": _action(
        "requeue", "Give the job back untried, to the end of the queue.", WORKER,
        _object(delay=SECONDS)),
    "/queues/{name}/jobs/{id}/touch": _action(
        "touch", "Extend the lease by `ttr` seconds (default: the job's ttr) from now.",
        WORKER, _object(ttr={"type": "number", "minimum": 0.1, "maximum": MAX_TTR}),
        lease_required=True),
    "/queues/{name}/jobs/{id}/bury": _action(
        "bury", "Set the job aside until kicked.", WORKER,
        _object(reason=nullable("string"))),
    "/queues/{name}/jobs/{id}/kick": _action(
        "kick_job", "Make a buried, failed or delayed job pending now (a buried or failed "
        "one with its attempts renewed).", "admin", _object()),
}  # fmt: skip

QUEUE_Q = _param("queue", "query", {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"},
                 "The queue.", required=True)  # fmt: skip
ID_Q = _param("id", "query", {"type": "string", "maxLength": 128}, "The job.")
LEGACY = "The documented TQueues API. A missing queue answers 501 here."

ROOT_PATH: Doc = {
    "/": {
        "put": {**_op("Create the queue unless it exists.", "admin, producer",
                      {"200": {"description": "Always ok.",
                               "content": {"text/plain": {"schema": {"const": "ok"}}}}},
                      errors=("400",), body=ref("QueueSettings"), params=(QUEUE_Q,),
                      op_id="legacy_create_queue"), "tags": ["/"]},
        "post": {**_op("Enqueue a job (the body names its queue).", "admin, producer",
                       {"200": _json(ref("Job"), "The stored job."),
                        "501": _error("The queue does not exist.")},
                       errors=("400", "413"), body=ref("NewJob"), body_required=True,
                       op_id="legacy_put"), "tags": ["/"]},
        "get": {**_op("Take the next job of `queue` (its lease included), or read job `id`.",
                      "worker (take, read), producer (read)",
                      {"200": _json({"anyOf": [ref("TakenJob"), ref("Job")]}, "The job."),
                       "404": _error("queue_empty: no job came; job_not_found."),
                       "501": _error("The queue does not exist.")},
                      errors=("400",), op_id="legacy_take_or_get",
                      params=(QUEUE_Q, ID_Q,
                              _param("wait", "query", SECONDS, "Long-poll seconds."),
                              _param("worker", "query", {"type": "string"}, "Taker's name."))),
                "tags": ["/"]},
        "patch": {**_op("Merge fields into job `id`; with `lease`, touch it too.", WORKER,
                        {"200": _json(ref("Job"), "The job after the change."),
                         "501": _error("The queue does not exist.")},
                        errors=("400", "404", "409"), body={"type": "object"},
                        params=(QUEUE_Q, {**ID_Q, "required": True}, LEASE),
                        op_id="legacy_update"), "tags": ["/"]},
        "delete": {**_op("End the run of job `id`: {result}, {error, traceback, permanent}, "
                         "{release: true, delay} or {bury: true, reason}.", WORKER,
                         {"200": _json(ref("Job"), "The job after the change."),
                          "501": _error("The queue does not exist.")},
                         errors=("400", "404", "409"), body={"type": "object"},
                         params=(QUEUE_Q, {**ID_Q, "required": True}, LEASE),
                         op_id="legacy_end"), "tags": ["/"]},
    },
    "/health": {
        "get": {"operationId": "health", "summary": "200 while the store answers.",
                "description": "Any valid token.",
                "responses": {"200": _json(ref("Health"), "Healthy."),
                              "401": ERRORS["401"], "503": ERRORS["503"]}},
    },
    "/ws": {
        "get": {"operationId": "websocket",
                "summary": "WebSocket change stream of `queue` (see docs/http-api.rst).",
                "description": "Any valid token, also as ?access_token=.",
                "parameters": [QUEUE_Q],
                "responses": {"101": {"description": "Switching to the WebSocket protocol."},
                              "400": ERRORS["400"], "401": ERRORS["401"]}},
    },
    "/openapi.json": {
        "get": {"operationId": "openapi", "summary": "This document.",
                "description": "Any valid token.",
                "responses": {"200": {"description": "The OpenAPI document.",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}},
                              "401": ERRORS["401"]}},
    },
}  # fmt: skip


@functools.cache
def _document() -> Doc:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tqueues dispatcher",
            "version": __version__,
            "description": "Job queues over HTTP: the resource-style REST API under /queues "
            "and the documented TQueues API on /. See docs/rest-api.rst.",
        },
        "security": [{}, {"bearer": []}],
        "paths": {**REST_PATHS, **ROOT_PATH},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def document() -> Doc:
    """The OpenAPI document (a fresh copy the caller may change)."""
    return copy.deepcopy(_document())


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI document."""
    return web.json_response(_document())
