"""Every error answer is JSON that names the problem; no traceback ever leaves the process."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging

import yarl
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tqueues.dispatcher.keys import settings_key
from tqueues.errors import TqueuesError

log = logging.getLogger(__name__)

#: The message of every 500 answer: what failed is in the log, never in the answer.
INTERNAL_ERROR = "the dispatcher failed; see its log"


def error_response(status: int, code: str, message: str, **details: object) -> web.Response:
    """A JSON error answer: ``{"error": code, "message": message, ...details}``."""
    return web.json_response({"error": code, "message": message, **details}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`TqueuesError` and aiohttp's HTTP errors into JSON answers; log the rest.

    An answer to a request whose body could not be read is sent at once and the
    connection closed after it (:func:`answer_and_close`).
    """
    response = await _answer(request, handler)
    if (
        request.content.exception() is not None
        and isinstance(response, web.Response)
        and not response.prepared
    ):
        return await answer_and_close(request, response)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TqueuesError as exc:
        if exc.status == 503:
            log.warning(
                "%s %s: %s", request.method, request.path, exc.message, extra={"action": exc.code}
            )
        return web.json_response(exc.to_dict(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = (exc.reason or "error").lower().replace(" ", "_")
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            message = f"the request body is larger than {request.app._client_max_size} bytes"
        response = error_response(exc.status, code, message or code)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except json.JSONDecodeError as exc:  # pragma: no cover - views validate bodies themselves
        return error_response(400, "bad_json", f"the body is not valid JSON: {exc}")
    except Exception:
        log.exception(
            "unhandled error in %s %s",
            request.method,
            request.path,
            extra={"action": "internal_error"},
        )
        return error_response(500, "internal_error", INTERNAL_ERROR)


async def answer_and_close(request: web.Request, response: web.Response) -> web.Response:
    """Send ``response`` now and close the connection after it.

    For a request whose body could not be read (a broken chunked or compressed encoding):
    what follows on the connection cannot be trusted to start a request, and aiohttp
    would otherwise read on after the answer and log the same error as unhandled.
    """
    response.force_close()
    with contextlib.suppress(ConnectionError):  # the client went away meanwhile
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()
    return response


@functools.lru_cache(maxsize=256)
def loopback_host(host: str, listen_host: str) -> bool:
    """Whether the ``Host`` header ``host`` names this machine's loopback: ``localhost``
    (or a name under ``.localhost``), an address of 127.0.0.0/8 or ``[::1]``, or
    ``listen_host``, with any port. A page of another site whose name was rebound to
    127.0.0.1 (DNS rebinding) sends its own name."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name in ("localhost", listen_host.strip("[]").lower()) or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_middleware(listen_host: str) -> Middleware:
    """Refuse (421) requests whose ``Host`` does not name the loopback (:func:`loopback_host`).

    For a dispatcher on loopback without a token: a page whose host name an attacker
    rebinds to 127.0.0.1 is "same-origin" to the browser, which would let it take and
    read jobs; its requests still carry its own name in ``Host``. Clients that send no
    ``Host`` (not browsers) pass.
    """

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if host is None or loopback_host(host, listen_host):
            return await handler(request)
        return error_response(
            421,
            "host_not_allowed",
            f"this dispatcher has no token, so it answers only requests for localhost, "
            f"127.0.0.1 or [::1], not for {host[:100]!r} (a page of another site whose name "
            "was pointed at this machine would send that); give the dispatcher a --token "
            "to serve other names",
        )

    return check_host


def _origin_host(origin: str) -> str | None:
    """The ``host[:port]`` of an ``Origin`` header (the port left out when it is the
    scheme's); None when it names none (``null``, or not a URL)."""
    try:
        return yarl.URL(origin).host_port_subcomponent
    except ValueError:
        return None


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests a browser made for a page whose origin is not in --allowed_domains (403).

    CORS only keeps such a page from reading the answers: without this, a form on any site
    could enqueue a job (code the workers run) on a dispatcher without a token, an image
    tag could take jobs (a take is a GET) until they are buried, and any page could
    stream the jobs over /ws. Browsers send ``Origin`` on cross-origin requests that are
    not plain GETs, and ``Sec-Fetch-Site`` on all of them; clients that are not browsers
    send neither and are not affected. The dispatcher's own pages (the dashboard) are
    allowed: an Origin whose host is the request's Host is the same origin.
    """
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None:
        # The dispatcher's own pages (the dashboard at /ui/) are of its own origin: their
        # WebSocket carries an Origin whose host is the one the request names.
        refused = (
            origin not in request.app[settings_key].allowed_domains
            and _origin_host(origin) != request.host
        )
        what = f"the web origin {origin[:200]!r}"
    else:
        refused = site is not None and site not in ("same-origin", "none")
        what = f"another site (Sec-Fetch-Site: {site[:50]})" if site else ""
    if refused:
        return error_response(
            403,
            "origin_not_allowed",
            f"requests from {what} are not allowed; list the origin in --allowed_domains",
        )
    return await handler(request)
