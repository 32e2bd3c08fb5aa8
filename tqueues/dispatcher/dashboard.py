"""The dashboard: static HTML, CSS and JavaScript served under ``/ui/`` (docs/dashboard.rst).

The files are shipped in the package (``tqueues/dispatcher/ui``) and need no build step.
They are not operations of :data:`~tqueues.dispatcher.operations.OPERATIONS`: static files
have no body, query or JSON answer to declare, and an OpenAPI document lists an API, not
a web page. They hold no data either, so they are served without a token (a browser that
opens ``/ui/`` cannot send one yet): the page asks for the token and calls the API with
it, and every datum it shows comes through the API, whose roles apply as to any client.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

#: Where the dashboard's files are.
UI_DIR = Path(__file__).parent / "ui"
PREFIX = "/ui/"


def is_dashboard_file(request: web.Request) -> bool:
    """Whether the request is for one of the dashboard's static files (served to anyone)."""
    return request.method in ("GET", "HEAD") and (
        request.path == "/ui" or request.path.startswith(PREFIX)
    )


async def _to_index(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(PREFIX)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(UI_DIR / "index.html", headers=_HEADERS)


#: No caching across versions of the package (the files are small), and no framing.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data:; frame-ancestors 'none'",
}


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    if is_dashboard_file(request):
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)


def setup_dashboard(app: web.Application) -> None:
    """Serve the dashboard: ``/ui`` redirects to ``/ui/``, which is ``index.html``."""
    app.router.add_get("/ui", _to_index)
    app.router.add_get(PREFIX, _index)
    app.router.add_static(PREFIX, UI_DIR)
    app.on_response_prepare.append(_headers)
