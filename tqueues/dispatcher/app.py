"""The dispatcher's aiohttp application: routes, middlewares, and the resources it owns.

``create_app(settings, store=None)`` is used by the command line, by the tests and by
anyone embedding the dispatcher; every resource (the store, the reaper task, the open
WebSockets) is opened and closed in ``cleanup_ctx``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Middleware

from tqueues import __version__
from tqueues.dispatcher import jobstream, rest, takestream, taking, ws
from tqueues.dispatcher.auth import auth_middleware
from tqueues.dispatcher.keys import settings_key, store_key, websockets_key
from tqueues.dispatcher.middlewares import error_middleware, host_middleware, origin_middleware
from tqueues.dispatcher.openapi import openapi
from tqueues.dispatcher.reaper import reap_forever
from tqueues.dispatcher.views import Dispatcher
from tqueues.settings import DispatcherSettings, is_loopback
from tqueues.stores import open_store
from tqueues.stores.base import Store

log = logging.getLogger(__name__)


def setup_routes(app: web.Application, allowed_domains: tuple[str, ...]) -> None:
    """The only place URLs are spelled."""
    app.router.add_view("/", Dispatcher)
    app.router.add_get("/ws", ws.websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/openapi.json", openapi)
    # The REST API; the names are what auth.permitted checks roles against. The router
    # tries the paths under /queues/ one after another in this order, so the ones every
    # job goes through come first (put, take, outcome reports, job actions); "jobs/next"
    # and "jobs/stream" must come before "jobs/{id}". A job id is any one segment (aiohttp's
    # default leaves out braces): the view answers for every id, 400 for one no job can have.
    queue, job = "/queues/{name}", "/queues/{name}/jobs/{id:[^/]+}"
    app.router.add_view(queue + "/jobs", rest.Jobs, name="jobs")
    app.router.add_view(queue + "/take", taking.Take, name="take")
    app.router.add_view(queue + "/outcomes", taking.Outcomes, name="outcomes")
    actions = "|".join(rest.ACTIONS)
    app.router.add_view(job + "/{action:" + actions + "}", rest.JobAction, name="job.action")
    app.router.add_view(queue + "/jobs/next", rest.NextJob, name="jobs.next")
    app.router.add_view(queue + "/jobs/stream", jobstream.JobStream, name="jobs.stream")
    app.router.add_view(job, rest.JobView, name="job")
    app.router.add_view(queue, rest.Queue, name="queue")
    app.router.add_view(queue + "/truncate", rest.QueueTruncate, name="queue.truncate")
    app.router.add_view(queue + "/stats", rest.QueueStatsView, name="queue.stats")
    app.router.add_view(queue + "/kick", rest.QueueKick, name="queue.kick")
    app.router.add_view("/stats", rest.DispatcherStatsView, name="stats")
    app.router.add_view("/queues", rest.Queues, name="queues")
    app.router.add_view("/take", taking.TakeAny, name="take.any")
    app.router.add_view("/take/stream", takestream.TakeStream, name="take.stream")
    if allowed_domains:
        cors = aiohttp_cors.setup(
            app,
            defaults={
                origin: aiohttp_cors.ResourceOptions(
                    allow_credentials=False,
                    expose_headers="*",
                    allow_headers="*",
                    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
                for origin in allowed_domains
            },
        )
        for route in list(app.router.routes()):
            cors.add(route)


async def health(request: web.Request) -> web.Response:
    """``GET /health``: 200 with the version and queues while the store answers."""
    queues = await request.app[store_key].list_queues()
    return web.json_response({"status": "ok", "version": __version__, "queues": len(queues)})


def create_app(
    settings: DispatcherSettings | None = None, store: Store | None = None
) -> web.Application:
    """The dispatcher as an aiohttp application; ``store`` defaults to the one ``settings`` name."""
    settings = settings or DispatcherSettings()
    middlewares: list[Middleware] = [error_middleware, origin_middleware, auth_middleware]
    if not settings.tokens and is_loopback(settings.listen_host):
        # Without a token, only loopback names (DNS rebinding): docs/security.rst.
        middlewares.insert(1, host_middleware(settings.listen_host))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body)
    app[settings_key] = settings
    app[websockets_key] = weakref.WeakSet()
    the_store = store if store is not None else open_store(settings)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await the_store.open()
        app[store_key] = the_store
        reaper = asyncio.create_task(reap_forever(the_store, settings.reap_interval))
        yield
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        await ws.close_all(app)
        await the_store.close()

    app.cleanup_ctx.append(store_ctx)
    # On shutdown, before the server waits for open handlers: an open WebSocket would
    # otherwise hold the shutdown for the runner's whole shutdown_timeout.
    app.on_shutdown.append(ws.close_all)
    setup_routes(app, settings.allowed_domains)
    return app
