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

from tqueues.dispatcher import openapi, ws
from tqueues.dispatcher.auth import auth_middleware
from tqueues.dispatcher.dashboard import setup_dashboard
from tqueues.dispatcher.keys import settings_key, store_key, websockets_key
from tqueues.dispatcher.meta import document_key
from tqueues.dispatcher.metrics import Metrics, http_middleware, metrics_key, time_writes
from tqueues.dispatcher.middlewares import error_middleware, host_middleware, origin_middleware
from tqueues.dispatcher.operation import operations_key
from tqueues.dispatcher.operations import OPERATIONS
from tqueues.dispatcher.reaper import reap_forever
from tqueues.dispatcher.scheduler import fire_forever
from tqueues.dispatcher.upkeep import flush_last, keep_up
from tqueues.settings import DispatcherSettings, is_loopback
from tqueues.stores import open_store
from tqueues.stores.base import Store

log = logging.getLogger(__name__)


def setup_routes(app: web.Application, allowed_domains: tuple[str, ...]) -> None:
    """Register a route for every operation of the table (:data:`OPERATIONS`), in its order,
    and remember each route's operation (for the role checks and the views' input)."""
    routes = app[operations_key] = {}
    for operation in OPERATIONS:
        route = app.router.add_route(operation.method, operation.path, operation.view)
        routes[route] = operation
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


def create_app(
    settings: DispatcherSettings | None = None, store: Store | None = None
) -> web.Application:
    """The dispatcher as an aiohttp application; ``store`` defaults to the one ``settings`` name."""
    settings = settings or DispatcherSettings()
    metrics = Metrics()
    # The metrics' middleware first: it sees every answer as the client gets it.
    middlewares: list[Middleware] = [
        http_middleware(metrics), error_middleware, origin_middleware, auth_middleware
    ]  # fmt: skip
    if not settings.tokens and is_loopback(settings.listen_host):
        # Without a token, only loopback names (DNS rebinding): docs/security.rst.
        middlewares.insert(2, host_middleware(settings.listen_host))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body)
    app[settings_key] = settings
    app[metrics_key] = metrics
    app[document_key] = openapi.encoded(settings)
    app[websockets_key] = weakref.WeakSet()
    the_store = store if store is not None else open_store(settings)

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await the_store.open()
        app[store_key] = the_store
        the_store.observer = metrics
        untime = time_writes(the_store, metrics.wrote)
        reaper = asyncio.create_task(reap_forever(the_store, settings.reap_interval))
        upkeep = asyncio.create_task(keep_up(the_store, settings.history_keep))
        scheduler = asyncio.create_task(fire_forever(the_store))
        yield
        for task in (reaper, upkeep, scheduler):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await flush_last(the_store)
        await ws.close_all(app)
        await the_store.close()
        untime()
        the_store.observer = None

    app.cleanup_ctx.append(store_ctx)
    # On shutdown, before the server waits for open handlers: an open WebSocket would
    # otherwise hold the shutdown for the runner's whole shutdown_timeout.
    app.on_shutdown.append(ws.close_all)
    setup_routes(app, settings.allowed_domains)
    # The dashboard's static files are not operations of the table (nothing to declare in
    # an OpenAPI document); see tqueues/dispatcher/dashboard.py.
    setup_dashboard(app)
    return app
