"""The change stream at ``/ws?queue=NAME``: the queue's jobs, then every change, as JSON.

Messages: ``{"type": "initial", "job": {...}}`` for each job the queue holds, then
``{"type": "synced"}``, then ``{"type": "change", "kind": ..., "old_status": ...,
"job": {...}}`` as changes happen. The subscription starts before the snapshot is read, so
no change is missed; a change may repeat what the snapshot showed (compare ``rev``).

With ``start=now`` there is no snapshot: ``synced`` comes at once, once the subscription
is in place, and every change after it follows. A client that shows a bounded part of a
queue (the dashboard's page of jobs, the counts) reads it through the REST API after
``synced``, and so misses nothing, at any queue size; after a reconnect it does the same.

What the dispatcher holds for one client is bounded in bytes by ``--ws_buffer``
(:attr:`~tqueues.settings.DispatcherSettings.ws_buffer`): the snapshot is read and sent a
page of at most that many bytes at a time, each change is encoded once for every client of
the queue (:class:`~tqueues.stores.hub.FrameSubscription`), and a client that leaves more
than that many bytes of changes unread (it does not read, or its socket does not drain) is
closed with 1013 (try again later) and a reason, with one log line. So is every client of
a queue whose RethinkDB change feed broke or dropped changes, after what it was already
sent. Either way the client may have missed changes: reconnect for a new snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from tqueues import codec
from tqueues.dispatcher.keys import settings_key, store_key, websockets_key
from tqueues.dispatcher.models import WsQuery
from tqueues.dispatcher.operation import query_of, refuse_plain_get
from tqueues.dispatcher.requests import query_queue
from tqueues.errors import TqueuesError
from tqueues.stores.base import Store
from tqueues.stores.hub import FrameSubscription

log = logging.getLogger(__name__)

SNAPSHOT_LIMIT = 500  #: jobs of the snapshot read at a time (fewer when they are large).
#: Seconds a client being closed gets to take what was sent and the close frame before the
#: connection is cut (a client that does not read would otherwise hold it forever).
CLOSE_TIMEOUT = 10.0
SHUTDOWN_CLOSE_TIMEOUT = 2.0  #: the same, when the dispatcher shuts down.
_SYNCED = codec.dumps({"type": "synced"})


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes."""
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            break


async def _send_snapshot(
    ws: web.WebSocketResponse, store: Store, queue: str, max_bytes: int
) -> None:
    """Send every job of ``queue``, a page of at most ``max_bytes`` (and SNAPSHOT_LIMIT
    jobs) at a time, each page sent (as far as the socket takes it) before the next is
    read. Raises what the store raises, and ConnectionResetError once the client is gone."""
    cursor: str | None = None
    while True:
        page = await store.list_jobs(
            queue, cursor=cursor, limit=SNAPSHOT_LIMIT, max_bytes=max_bytes
        )
        jobs, cursor = page.jobs, page.next_cursor
        del page
        jobs.reverse()
        while jobs:  # each job let go of once it is sent
            frame = codec.dumps({"type": "initial", "job": jobs.pop().to_dict()})
            await ws.send_frame(frame, WSMsgType.TEXT)
            del frame
        if cursor is None:
            return


async def _stream(
    ws: web.WebSocketResponse, store: Store, subscription: FrameSubscription, snapshot: bool
) -> None:
    """Send the snapshot (if ``snapshot``), ``synced``, then every change's frame as the
    subscription hands them out. Raises ChangesMissed when the subscription ends,
    ConnectionResetError when the client has gone, and what the store raises while the
    snapshot is read."""
    if snapshot:
        await _send_snapshot(ws, store, subscription.queue, subscription.max_bytes)
    await ws.send_frame(_SYNCED, WSMsgType.TEXT)
    while True:
        await ws.send_frame(await subscription.get(), WSMsgType.TEXT)


async def _close(
    ws: web.WebSocketResponse, transport: asyncio.Transport | None, code: int, reason: str
) -> None:
    """Close with ``code`` and ``reason`` (at most 123 bytes); if the client has not taken
    the close within CLOSE_TIMEOUT seconds (it does not read), cut the connection, which
    frees what is still buffered for it."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason.encode()[:123])
    except TimeoutError:
        if transport is not None:
            transport.abort()


async def websocket(request: web.Request) -> web.StreamResponse:
    """Stream one queue's jobs and changes to a WebSocket client."""
    store = request.app[store_key]
    budget = request.app[settings_key].ws_buffer
    queue = query_queue(request)
    query: WsQuery = query_of(request)
    await store.get_queue(queue)  # 501 before the upgrade when the queue is missing
    if (refused := refuse_plain_get(request)) is not None:
        return refused
    await store.watch(queue)
    # No per-message deflate: change events are small, and compressing each cost more CPU
    # than the rest of the dispatcher's work on a job.
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False)
    await ws.prepare(request)
    request.app[websockets_key].add(ws)
    transport = request.transport
    reader = asyncio.create_task(_drain_client(ws))
    try:
        with store.hub.subscribe_frames(queue, budget) as subscription:
            snapshot = query.start == "snapshot"
            sender = asyncio.create_task(_stream(ws, store, subscription, snapshot))
            try:
                # The sender may be stuck writing to a client that does not read: an
                # overflow of its subscription wakes this handler instead.
                await asyncio.wait(
                    {sender, reader, subscription.too_slow}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        # Out of the hub before the close, which may wait for the client.
        if subscription.overflowed:
            log.warning(
                "closing the change stream of queue %r to %s: it left more than %d bytes of "
                "changes unread",
                queue,
                request.remote,
                budget,
                extra={"action": "ws_too_slow", "queue": queue},
            )
            reason = f"too slow: more than {budget} bytes of changes unread; reconnect"
            await _close(ws, transport, WSCloseCode.TRY_AGAIN_LATER, reason)
        elif not sender.cancelled() and (error := sender.exception()) is not None:
            if isinstance(error, TqueuesError):  # ChangesMissed; the store, mid-snapshot
                await _close(ws, transport, WSCloseCode.TRY_AGAIN_LATER, error.message)
            elif not isinstance(error, ConnectionResetError):
                raise error
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        request.app[websockets_key].discard(ws)
        await _close(ws, transport, WSCloseCode.OK, "")  # nothing if closed already
        if transport is not None and transport.get_write_buffer_size():
            # The connection is closing once what is buffered is sent: a client that does
            # not read it within CLOSE_TIMEOUT (its heartbeat failed, say) is cut off then,
            # rather than held whenever it reads or goes away.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, _abort_if_unsent, transport)
    return ws


def _abort_if_unsent(transport: asyncio.Transport) -> None:
    if transport.get_write_buffer_size():
        transport.abort()


async def close_all(app: web.Application) -> None:
    """On shutdown, close every WebSocket with GOING_AWAY, all at once, giving each at most
    SHUTDOWN_CLOSE_TIMEOUT seconds (a client that does not read would otherwise hold the
    shutdown forever; aiohttp closes the connection of a close it gives up on)."""

    async def close(ws: web.WebSocketResponse) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_CLOSE_TIMEOUT):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"dispatcher shutting down")

    sockets = app[websockets_key]
    await asyncio.gather(*(close(ws) for ws in set(sockets)))
