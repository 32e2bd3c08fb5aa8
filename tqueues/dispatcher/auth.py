"""Bearer-token authentication for every route and the WebSocket.

Tokens carry a role. ``admin`` may do everything; the roles of every other operation are
those its entry in :data:`tqueues.dispatcher.operations.OPERATIONS` gives (the only
place they are spelled). In short: on ``/``, a ``producer`` may create queues, enqueue and
read jobs (PUT, POST, GET by id); a ``worker`` may take, update and end jobs (GET, PATCH,
DELETE) and read them. On the REST API every role reads jobs and the list of queues;
producers create queues and enqueue; workers take, update, touch, finish, fail, release,
requeue and bury (one job at a time or many, ``/outcomes``); queue settings and stats,
kicks, deletes, truncate and drop are the admin's. The WebSocket, ``/health`` and
``/openapi.json`` and ``/whoami`` need any valid token. A request without a valid token gets 401 and
learns nothing else; a valid token without the role gets 403.

Browsers cannot set headers on a WebSocket, so the operations that say so
(``token_in_query``: ``/ws`` and the job stream ``/queues/{name}/jobs/stream``, a
producer's) also accept the token as the ``access_token`` query parameter (it may then
appear in proxy logs: prefer the header).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from tqueues.dispatcher.dashboard import is_dashboard_file
from tqueues.dispatcher.keys import settings_key
from tqueues.dispatcher.middlewares import error_response
from tqueues.dispatcher.operation import Operation, operation_of, operations_key


def role_of(tokens: Mapping[str, str], presented: str) -> str | None:
    """The role of the token ``presented``, compared in constant time; None if it is unknown."""
    found = None
    for token, role in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = role
    return found


def _presented(request: web.Request, operation: Operation | None) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if operation is not None and operation.token_in_query:
        return request.query.get("access_token", "")
    return ""


def permitted(role: str, request: web.Request, operation: Operation | None) -> bool:
    """Whether ``role`` may make this request, routed to ``operation``: the roles of the
    operation say (:data:`tqueues.dispatcher.operations.OPERATIONS`)."""
    if role == "admin":
        return True
    if operation is None:
        return True  # no such route: the router answers 404 or 405, which reveals nothing
    return operation.permits(role, request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests without a valid bearer token (401) or its role's right (403)."""
    tokens = request.app[settings_key].tokens
    if not tokens or request.method == "OPTIONS":  # CORS preflights carry no credentials
        return await handler(request)
    if is_dashboard_file(request):  # static files without data; the page asks for a token
        return await handler(request)
    operation = operation_of(request)
    role = role_of(tokens, _presented(request, operation))
    if role is None:
        response = error_response(401, "unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tqueues"'
        return response
    if not permitted(role, request, operation):
        return error_response(403, "forbidden", f"a {role} token may not {request.method} this")
    return await handler(request)


async def whoami(request: web.Request) -> web.Response:
    """``GET /whoami``: the role of the token presented (``admin`` on a dispatcher without
    tokens, where anyone may do anything) and the names of the operations it may call
    (operations whose right depends on the query, such as a read on ``/``, are left out).
    The dashboard shows only the buttons these allow; the API checks them anyway."""
    tokens = request.app[settings_key].tokens
    role = role_of(tokens, _presented(request, operation_of(request))) if tokens else "admin"
    assert role is not None  # the middleware refused the request otherwise
    routes = request.app[operations_key].values()
    operations = sorted({op.name for op in routes if role == "admin" or role in op.roles})
    return web.json_response({"role": role, "operations": operations})
