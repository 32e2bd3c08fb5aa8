"""The change stream at ``/ws?queue=NAME``: the queue's jobs, then every change, as JSON.

Messages: ``{"type": "initial", "job": {...}}`` for each job the queue holds, then
``{"type": "synced"}``, then ``{"type": "change", "kind": ..., "old_status": ...,
"job": {...}}`` as changes happen. The subscription starts before the snapshot is read, so
no change is missed; a change may repeat what the snapshot showed (compare ``rev``).
When changes may have been missed after all (the client read too slowly, or a RethinkDB
change feed broke or dropped changes) the socket closes with 1013 (try again later) and a
reason: reconnect for a new snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from tqueues import codec
from tqueues.dispatcher.keys import store_key, websockets_key
from tqueues.dispatcher.requests import query_queue
from tqueues.stores.hub import ChangesMissed

log = logging.getLogger(__name__)


async def _drain_client(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends until it closes."""
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            break


async def websocket(request: web.Request) -> web.StreamResponse:
    """Stream one queue's jobs and changes to a WebSocket client."""
    store = request.app[store_key]
    queue = query_queue(request)
    await store.get_queue(queue)  # 501 before the upgrade when the queue is missing
    await store.watch(queue)
    # No per-message deflate: change events are small, and compressing each cost more CPU
    # than the rest of the dispatcher's work on a job.
    ws = web.WebSocketResponse(heartbeat=30.0, compress=False)
    await ws.prepare(request)
    request.app[websockets_key].add(ws)
    reader = asyncio.create_task(_drain_client(ws))
    try:
        with store.hub.subscribe(queue) as subscription:
            cursor: str | None = None
            while True:
                page = await store.list_jobs(queue, cursor=cursor)
                for job in page.jobs:
                    await ws.send_str(codec.dumps_str({"type": "initial", "job": job.to_dict()}))
                if (cursor := page.next_cursor) is None:
                    break
            await ws.send_json({"type": "synced"})
            events = asyncio.ensure_future(anext(subscription))
            while True:
                done, _ = await asyncio.wait({events, reader}, return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    events.cancel()
                    break
                await ws.send_str(codec.dumps_str(events.result().to_dict()))
                events = asyncio.ensure_future(anext(subscription))
    except ChangesMissed as exc:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=exc.message.encode()[:120])
    except ConnectionResetError:
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        request.app[websockets_key].discard(ws)
        await ws.close()
    return ws


async def close_all(app: web.Application) -> None:
    """On shutdown, close every WebSocket with GOING_AWAY."""
    sockets = app[websockets_key]
    for ws in set(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"dispatcher shutting down")
