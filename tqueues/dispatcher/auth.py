"""Bearer-token authentication for every route and the WebSocket.

Tokens carry a role. ``admin`` may do everything; ``producer`` may create queues, enqueue
and read jobs (PUT, POST, GET by id); ``worker`` may take, update and end jobs (GET,
PATCH, DELETE) and read them. On the REST API (:mod:`tqueues.dispatcher.rest`) the same
split holds route by route (:data:`REST_ALLOWED`): every role reads jobs and the list of
queues; producers create queues and enqueue; workers take, update, touch, finish, fail,
release, requeue and bury (one job at a time or many, ``/outcomes``); queue settings and
stats, kicks, deletes, truncate and drop are the admin's. The WebSocket, ``/health`` and
``/openapi.json`` need any valid token. A request without a valid token gets 401 and
learns nothing else; a valid token without the role gets 403.

Browsers cannot set headers on a WebSocket, so the WebSockets (``/ws`` and the job stream
``/queues/{name}/jobs/stream``, a producer's) also accept the token as the
``access_token`` query parameter (it may then appear in proxy logs: prefer the header).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from tqueues.dispatcher.keys import settings_key
from tqueues.dispatcher.middlewares import error_response

ROLES = ("admin", "producer", "worker")
#: What each role may do on ``/``: (method, whether the query names a job id).
ALLOWED: Mapping[str, frozenset[tuple[str, bool]]] = {
    "producer": frozenset({("PUT", False), ("PUT", True), ("POST", False), ("POST", True),
                           ("GET", True)}),
    "worker": frozenset({("GET", False), ("GET", True), ("PATCH", True), ("DELETE", True)}),
}  # fmt: skip
#: What each role may do on the REST API: (route name, method[, action]). Reads are for all.
REST_READS = frozenset({("queues", "GET"), ("jobs", "GET"), ("jobs.next", "GET"), ("job", "GET")})
WORKER_ACTIONS = ("finish", "fail", "release", "requeue", "touch", "bury")
REST_ALLOWED: Mapping[str, frozenset[tuple[str, ...]]] = {
    "producer": REST_READS | {("queue", "PUT"), ("jobs", "POST"), ("jobs.stream", "GET")},
    "worker": REST_READS
    | {("take", "POST"), ("take.any", "POST"), ("take.stream", "GET")}
    | {("job", "PATCH"), ("outcomes", "POST")}
    | {("job.action", "POST", action) for action in WORKER_ACTIONS},
}
OPEN_PATHS = ("/ws", "/health", "/openapi.json")


def role_of(tokens: Mapping[str, str], presented: str) -> str | None:
    """The role of the token ``presented``, compared in constant time; None if it is unknown."""
    found = None
    for token, role in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = role
    return found


def _presented(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if request.path == "/ws" or _route_name(request) == "jobs.stream":
        return request.query.get("access_token", "")
    return ""


def _route_name(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.name


def permitted(role: str, request: web.Request) -> bool:
    """Whether ``role`` may make this request."""
    if role == "admin" or request.path in OPEN_PATHS:
        return True
    if request.path == "/":
        return (request.method, "id" in request.query) in ALLOWED[role]
    name = _route_name(request)
    if name is None:
        return True  # no such route: the router answers 404 or 405, which reveals nothing
    key: tuple[str, ...] = (name, request.method)
    if "action" in request.match_info:
        key = (*key, request.match_info["action"])
    return key in REST_ALLOWED[role]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests without a valid bearer token (401) or its role's right (403)."""
    tokens = request.app[settings_key].tokens
    if not tokens or request.method == "OPTIONS":  # CORS preflights carry no credentials
        return await handler(request)
    role = role_of(tokens, _presented(request))
    if role is None:
        response = error_response(401, "unauthorized", "a valid bearer token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="tqueues"'
        return response
    if not permitted(role, request):
        return error_response(403, "forbidden", f"a {role} token may not {request.method} this")
    return await handler(request)
