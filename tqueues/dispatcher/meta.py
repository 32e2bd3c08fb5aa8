"""The routes about the dispatcher itself: ``/health`` and ``/openapi.json``."""

from __future__ import annotations

from aiohttp import web

from tqueues import __version__
from tqueues.dispatcher.keys import store_key

#: The OpenAPI document of this dispatcher, encoded once (see :mod:`tqueues.dispatcher.openapi`).
document_key = web.AppKey("openapi_document", bytes)


async def health(request: web.Request) -> web.Response:
    """``GET /health``: 200 with the version and queues while the store answers."""
    queues = await request.app[store_key].list_queues()
    return web.json_response({"status": "ok", "version": __version__, "queues": len(queues)})


async def openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI document."""
    return web.Response(body=request.app[document_key], content_type="application/json")
