"""Every error answer is JSON that names the problem; no traceback ever leaves the process."""

from __future__ import annotations

import contextlib
import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

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


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse requests a browser made for a page whose origin is not in --allowed_domains (403).

    CORS only keeps such a page from reading the answers: without this, a form on any site
    could enqueue a job (code the workers run) on a dispatcher without a token, an image
    tag could take jobs (a take is a GET) until they are buried, and any page could
    stream the jobs over /ws. Browsers send ``Origin`` on cross-origin requests that are
    not plain GETs, and ``Sec-Fetch-Site`` on all of them; clients that are not browsers
    send neither and are not affected.
    """
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None:
        refused = origin not in request.app[settings_key].allowed_domains
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
