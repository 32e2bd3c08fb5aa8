"""The job stream at ``/queues/{name}/jobs/stream``: enqueue over one WebSocket.

A producer that enqueues one job at a time pays for a whole HTTP request and answer per
job; on a WebSocket each job is one small frame each way. Every message the client sends
is the body ``POST /queues/{name}/jobs`` takes (one job, or a batch ``{"jobs": [...]}``),
with an optional ``"ref"`` (a string of at most 128 characters, or an integer) that comes
back in its answer. Each message is answered, in the order sent, with

- ``{"ref": ref, "status": 201, "job": {...}}`` (``"jobs": [...]`` for a batch) once the
  job is durable, as the HTTP route answers it (200 when every job was a duplicate of a
  live job holding its ``key``);
- ``{"ref": ref, "status": 400|404|503|..., "error": code, "message": ...}`` otherwise,
  the same error the HTTP route gives, and nothing stored. The socket stays open.

Messages are handled one after another (the next is read once the previous is answered),
so the jobs of one stream are stored in the order sent, and a fast producer is held back
by TCP rather than by memory. A message larger than the dispatcher's body limit closes the
socket with 1009 (message too big). Authentication and roles are the HTTP route's: a
producer or admin token, in the ``Authorization`` header (or ``access_token`` in the query,
for browsers). A missing queue is refused before the upgrade (404).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType, web

from tqueues import codec
from tqueues.dispatcher import enqueuing
from tqueues.dispatcher.keys import websockets_key
from tqueues.dispatcher.middlewares import INTERNAL_ERROR
from tqueues.dispatcher.operation import refuse_plain_get
from tqueues.dispatcher.requests import parse_json
from tqueues.dispatcher.rest import MAX_ID, RestView, as_missing
from tqueues.errors import QueueNotFound, TqueuesError, ValidationError

log = logging.getLogger(__name__)


def message_ref(body: dict[str, Any]) -> str | int | None:
    """Take the message's ``ref`` out of ``body``; raises ValidationError for a bad one
    (shared with the take stream)."""
    ref = body.pop("ref", None)
    if ref is None or (isinstance(ref, str) and len(ref) <= MAX_ID):
        return ref
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref
    raise ValidationError(
        f"'ref' must be a string of at most {MAX_ID} characters or an integer", field="ref"
    )


class JobStream(RestView):
    """``GET /queues/{name}/jobs/stream``: the WebSocket of one producer."""

    async def get(self) -> web.StreamResponse:
        """Upgrade to the job stream; answer each message as described above."""
        queue = self.queue
        await self.store.get_queue(queue)  # 404 before the upgrade when it is missing
        if (refused := refuse_plain_get(self.request)) is not None:
            return refused
        ws = web.WebSocketResponse(
            heartbeat=30.0,
            compress=False,
            max_msg_size=self.settings.max_body,
            decode_text=False,  # the JSON codec reads the bytes
        )
        await ws.prepare(self.request)
        sockets = self.request.app[websockets_key]
        sockets.add(ws)
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    answer = await self._answer(message.data, queue)
                    await ws.send_frame(codec.dumps(answer), WSMsgType.TEXT)
                elif message.type is WSMsgType.ERROR:
                    break
        except ConnectionResetError:
            pass
        finally:
            sockets.discard(ws)
            await ws.close()
        return ws

    async def _answer(self, data: bytes | str, queue: str) -> dict[str, Any]:
        """The answer to one message; never raises."""
        ref = None
        try:
            body = parse_json(data, "the message")
            if not isinstance(body, dict):
                raise ValidationError("the message must be a JSON object")
            ref = message_ref(body)
            try:
                status, stored = await enqueuing.enqueue(self.store, body, queue)
            except QueueNotFound as exc:  # dropped since the upgrade: 404, as on the route
                raise as_missing(exc) from None
            return {"ref": ref, "status": status, **stored}
        except TqueuesError as exc:
            if exc.status == 503:
                log.warning("job stream %s: %s", queue, exc.message, extra={"action": exc.code})
            return {**exc.to_dict(), "ref": ref, "status": exc.status}
        except Exception:
            log.exception("unhandled error in the job stream of %s", queue,
                          extra={"action": "internal_error"})  # fmt: skip
            return {"error": "internal_error", "message": INTERNAL_ERROR, "ref": ref, "status": 500}
