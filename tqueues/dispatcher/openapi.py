"""The OpenAPI 3.1 document of the dispatcher, written from the table of operations.

Every path, method, role, parameter and request body comes from
:data:`tqueues.dispatcher.operations.OPERATIONS` and the pydantic models it names
(:mod:`tqueues.dispatcher.models`), so the document says what the server does; the
schemas of the answers are :mod:`tqueues.dispatcher.openapi_schemas`. The document is
made once per dispatcher (its ``--max_wait`` bounds ``wait``) and served on
``GET /openapi.json``.

What the document cannot say, and the server does anyway, is said in descriptions: a
job id of other text than ASCII is looked up (404) rather than refused; a ``queue`` in a
REST job is tolerated when it is the path's; a plain GET on a WebSocket answers 426.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

from pydantic import BaseModel, TypeAdapter

from tqueues import __version__, codec
from tqueues.dispatcher.models import (
    JOB_ID_SCHEMA,
    QUEUE_NAME_SCHEMA,
    SCHEDULE_NAME_SCHEMA,
    WORKER_ID_SCHEMA,
)
from tqueues.dispatcher.openapi_schemas import SCHEMAS, Doc, ref
from tqueues.dispatcher.operation import (
    ROLES,
    Answer,
    Operation,
    document_path,
    list_parameters,
    query_model,
)
from tqueues.dispatcher.operations import OPERATIONS
from tqueues.settings import DispatcherSettings

REF = "#/components/schemas/{model}"

#: The error answers, by status; each operation lists those it may give (401, 403 and
#: 503 always).
ERRORS: dict[int, str] = {
    400: "A malformed request; the answer names the field and the rule.",
    401: "No valid bearer token (when the dispatcher has tokens).",
    403: "The token's role does not allow this.",
    404: "The queue (queue_not_found), job (job_not_found) or schedule (schedule_not_found) "
    "does not exist.",
    409: "lease_mismatch: the lease is no longer yours; invalid_transition: the job's state "
    "does not allow this; schedule_exists: a schedule of that name is in the queue.",
    413: "The body is larger than the dispatcher accepts.",
    426: "upgrade_required: this is a WebSocket; a request without the handshake "
    "(Upgrade: websocket) is refused.",
    503: "The store cannot be reached or is full; retry later.",
}
PATH_PARAMETERS: dict[str, Doc] = {
    "name": {"name": "name", "in": "path", "required": True, "schema": QUEUE_NAME_SCHEMA,
             "description": "The queue."},
    "id": {"name": "id", "in": "path", "required": True, "schema": JOB_ID_SCHEMA,
           "description": "The job. Other text of at most 127 bytes of UTF-8 is looked up "
           "too (404)."},
    "worker": {"name": "worker", "in": "path", "required": True, "schema": WORKER_ID_SCHEMA,
               "description": "The worker's name (by default host:pid). Other text of at "
               "most 127 bytes of UTF-8 is accepted too."},
    "schedule": {"name": "schedule", "in": "path", "required": True,
                 "schema": SCHEDULE_NAME_SCHEMA, "description": "The schedule."},
}  # fmt: skip


class _Components:
    """The component schemas: the answers', and every model a body names."""

    def __init__(self) -> None:
        self.schemas: Doc = copy.deepcopy(SCHEMAS)

    def body(self, kind: Any) -> Doc:
        """The schema of a body of ``kind``; its models become components."""
        schema = TypeAdapter(kind).json_schema(ref_template=REF)
        self.schemas.update(schema.pop("$defs", {}))
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            self.schemas[kind.__name__] = schema
            return ref(kind.__name__)
        return schema


def _answer(answer: Answer) -> Doc:
    doc: Doc = {"description": answer.description}
    if answer.schema is None:
        return doc
    schema = ref(answer.schema) if isinstance(answer.schema, str) else answer.schema
    doc["content"] = {answer.content_type: {"schema": _refs(schema)}}
    return doc


def _refs(schema: Any) -> Any:
    """``schema`` with ``{"$ref": "Job"}`` shorthands made full references."""
    if isinstance(schema, dict):
        return {k: (ref(v)["$ref"] if k == "$ref" and "/" not in v else _refs(v))
                for k, v in schema.items()}  # fmt: skip
    if isinstance(schema, list):
        return [_refs(v) for v in schema]
    return schema


def _parameters(operation: Operation, max_wait: float) -> list[Doc]:
    names = re.findall(r"\{(\w+)", operation.path)
    parameters = [PATH_PARAMETERS[name] for name in names]
    if operation.query is None:
        return parameters
    model = query_model(operation, max_wait)
    schema = _inline(model.model_json_schema())
    required = set(schema.get("required", []))
    lists = list_parameters(model)
    for name, prop in schema.get("properties", {}).items():
        parameter: Doc = {"name": name, "in": "query", "required": name in required,
                          "schema": _not_null(prop)}  # fmt: skip
        description = prop.get("description") or parameter["schema"].pop("description", None)
        if description:
            parameter["description"] = description
        if name in lists:
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


def _inline(schema: Doc) -> Doc:
    """``schema`` with its references to its own ``$defs`` replaced by what they name (a
    parameter's schema stands alone)."""
    defs = schema.pop("$defs", {})

    def inline(value: Any) -> Any:
        if isinstance(value, dict):
            if "$ref" in value:
                return inline(defs[value["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in value.items()}
        if isinstance(value, list):
            return [inline(v) for v in value]
        return value

    return dict(inline(schema))


def _not_null(schema: Doc) -> Doc:
    """A query parameter's schema: absent, not null, is how a query leaves one out."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "description")}
    if schema.get("default", 0) is None:  # left out, not null
        del schema["default"]
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema = {**options[0], **schema}
    elif options:
        schema["anyOf"] = options
    return schema


def _operation(operation: Operation, components: _Components, max_wait: float) -> Doc:
    answers = {status: _answer(answer) for status, answer in operation.answers.items()}
    errors = (*operation.errors, 401, 403, 503, *((426,) if operation.websocket else ()))
    for status in errors:
        answers.setdefault(status, _answer(Answer(ERRORS[status])))
    roles = ", ".join(role for role in ROLES if role in operation.roles)
    description = operation.description or f"Roles: {roles}."
    if operation.token_in_query:
        description += " The token also as ?access_token= (browsers)."
    doc: Doc = {
        "operationId": operation.name,
        "summary": operation.summary,
        "description": description,
        "responses": {str(status): answers[status] for status in sorted(answers)},
    }
    if operation.tag:
        doc["tags"] = [operation.tag]
    parameters = _parameters(operation, max_wait)
    if parameters:
        doc["parameters"] = parameters
    if operation.body is not None:
        doc["requestBody"] = {
            "required": operation.body_required,
            "content": {"application/json": {"schema": components.body(operation.body)}},
        }
    return doc


@functools.cache
def _document(max_wait: float) -> Doc:
    components = _Components()
    paths: Doc = {}
    for operation in OPERATIONS:
        path = paths.setdefault(document_path(operation.path), {})
        path[operation.method.lower()] = _operation(operation, components, max_wait)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tqueues dispatcher",
            "version": __version__,
            "description": "Job queues over HTTP: the resource-style REST API under /queues "
            "and the documented TQueues API on /. See docs/rest-api.rst.",
        },
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def document(settings: DispatcherSettings | None = None) -> Doc:
    """The OpenAPI document of a dispatcher with ``settings`` (a fresh copy the caller may
    change)."""
    return copy.deepcopy(_document((settings or DispatcherSettings()).max_wait))


def encoded(settings: DispatcherSettings) -> bytes:
    """The document as ``GET /openapi.json`` answers it."""
    return codec.dumps(_document(settings.max_wait))
