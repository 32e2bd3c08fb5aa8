"""What an HTTP operation of the dispatcher is, and how a view reads its validated input.

An :class:`Operation` says everything about one method on one path: the view that answers,
its name, the roles that may call it, what it takes (a body and a query string, as
pydantic models of :mod:`tqueues.dispatcher.models`) and what it answers. The table of
them all is :data:`tqueues.dispatcher.operations.OPERATIONS`; the routes
(:func:`tqueues.dispatcher.app.setup_routes`), the role checks
(:mod:`tqueues.dispatcher.auth`) and the OpenAPI document
(:mod:`tqueues.dispatcher.openapi`) are made from it and from nothing else.

A view reads its input with :func:`body_of` and :func:`query_of`, which validate it with
the models its operation declares, so what a view accepts is what the document says.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pydantic
from aiohttp import hdrs, web

from tqueues.dispatcher.models import Query, adapter, bounded, query_input, refusal
from tqueues.dispatcher.requests import read_object
from tqueues.errors import TqueuesError

#: The roles a token may have; ``admin`` may call every operation, ``monitor`` only those
#: about the dispatcher itself (health, statistics, metrics), never a job.
ROLES = ("admin", "producer", "worker", "monitor")
ANY_ROLE = frozenset(ROLES)


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """One documented answer: what it means and the schema of its body (the name of a
    component schema of :mod:`tqueues.dispatcher.openapi_schemas`, an inline schema, or
    None for no body)."""

    description: str
    schema: str | dict[str, Any] | None = "Error"
    content_type: str = "application/json"


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One method on one path: the only place its route, roles and document are spelled."""

    method: str
    #: The path as the router matches it (``{id:[^/]+}``); the document drops the regex.
    path: str
    #: What answers: a class-based view (its method of this name) or a handler function.
    view: type[web.View] | Callable[[web.Request], Awaitable[web.StreamResponse]]
    name: str  #: the operationId.
    roles: frozenset[str]  #: who may call it, ``admin`` always among them.
    summary: str
    answers: Mapping[int, Answer]  #: every answer but the errors every operation may give.
    #: Error answers besides 401, 403 and 503, which every operation may give.
    errors: tuple[int, ...] = (400, 404)
    body: Any = None  #: the body's model (or an annotated union of models); None: no body.
    body_required: bool = False
    query: type[Query] | None = None  #: the query string's model.
    #: Roles that may also call it when the query names a job (``?id=``: the ``/`` API).
    read_roles: frozenset[str] = frozenset()
    #: Fields of a form body that hold JSON (``curl -F args='[1]'``).
    form_json: tuple[str, ...] = ()
    websocket: bool = False  #: a WebSocket: a plain GET is answered 426.
    #: Whether the token may come as ``?access_token=`` (browsers set no WebSocket headers).
    token_in_query: bool = False
    tag: str = ""  #: the document's tag (``/`` for the original API).
    description: str = ""

    def permits(self, role: str, request: web.Request) -> bool:
        """Whether a token of ``role`` may make this request."""
        return role in self.roles or (bool(self.read_roles) and role in self.read_roles
                                      and "id" in request.query)  # fmt: skip


def document_path(path: str) -> str:
    """A route's path as the document (and the metrics) write it: ``{id:[^/]+}`` is
    ``{id}``."""
    return re.sub(r"\{(\w+):[^{}]*\}", r"{\1}", path)


#: The operation of every route, by the route the router matched (set up by create_app).
operations_key = web.AppKey("operations", dict)


def operation_of(request: web.Request) -> Operation | None:
    """The operation the request was routed to; None if no route matched (404, 405)."""
    route = request.match_info.route
    found: Operation | None = request.app[operations_key].get(route)
    return found


def _operation(request: web.Request) -> Operation:
    operation = operation_of(request)
    if operation is None:  # pragma: no cover - a view always has its operation
        raise LookupError(f"no operation for {request.method} {request.path}")
    return operation


async def body_of(request: web.Request, defaults: Mapping[str, Any] | None = None) -> Any:
    """The request's body validated by its operation's model, with ``defaults`` for the
    fields it leaves out. Raises ValidationError (400) naming the field and the rule."""
    operation = _operation(request)
    data = await read_object(request, form_json=operation.form_json)
    if defaults:
        data = {**defaults, **data}
    kind = operation.body
    try:
        return adapter(kind).validate_python(data)
    except pydantic.ValidationError as exc:
        raise refusal(kind, exc) from None


def query_of(request: web.Request) -> Any:
    """The request's query string validated by its operation's model, with ``wait``
    bounded by the dispatcher's ``--max_wait``; 400 naming the parameter otherwise."""
    from tqueues.dispatcher.keys import settings_key  # keys imports this module

    operation = _operation(request)
    model = query_model(operation, request.app[settings_key].max_wait)
    data = dict(query_input(request.query, list_parameters(model)))
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise refusal(model, exc) from None


def query_model(operation: Operation, max_wait: float) -> type[Query]:
    """The model of ``operation``'s query string on a dispatcher of this ``--max_wait``."""
    if operation.query is None:
        return Query
    return bounded(operation.query, max_wait)


@functools.cache
def list_parameters(model: type[Query]) -> frozenset[str]:
    """The parameters of ``model`` that may repeat (``?queue=a&queue=b``)."""
    fields = model.model_fields.items()
    return frozenset(name for name, field in fields if typing.get_origin(field.annotation) is list)


class UpgradeRequired(TqueuesError):
    """This is a WebSocket: connect with an Upgrade: websocket handshake."""

    status = 426
    code = "upgrade_required"


def refuse_plain_get(request: web.Request) -> web.Response | None:
    """For a WebSocket view, before it upgrades: the 426 answer (JSON, with ``Upgrade:
    websocket``) to a request that is not a WebSocket handshake; None for one that is.
    (aiohttp's own answer is a bare 400 "No WebSocket UPGRADE hdr".)"""
    upgrade = request.headers.get(hdrs.UPGRADE, "").strip().lower()
    connection = request.headers.get(hdrs.CONNECTION, "").lower()
    if upgrade == "websocket" and "upgrade" in connection:
        return None
    refused = UpgradeRequired(
        f"{request.path} is a WebSocket: connect with the headers Upgrade: websocket and "
        "Connection: Upgrade (a WebSocket client does)"
    )
    response = web.json_response(refused.to_dict(), status=refused.status)
    response.headers[hdrs.UPGRADE] = "websocket"
    response.headers[hdrs.CONNECTION] = "Upgrade"
    return response
