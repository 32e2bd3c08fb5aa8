"""The take stream at ``/take/stream``: a worker's long-poll takes over one WebSocket.

A long-poll take over HTTP is a whole request and answer per take; on the take stream a
take is one small frame each way, and the jobs a put hands a waiting taker go out as one
frame the moment they are claimed. Each message the client sends is a take::

    {"queues": ["q", ...], "count": 1, "wait": 30.0, "worker": "w1", "ref": 7}

``queues`` (1 to MAX_TAKE_QUEUES names, in the order to try them) is required; ``count``
(1 to MAX_TAKE, default 1), ``wait`` (seconds, 0 to ``--max_wait``, default 0), ``worker``
and ``ref`` (a string of at most 128 characters or an integer, sent back) are optional:
the take ``POST /take?queue=...`` makes. Each message is answered with
``{"ref": ref, "status": 200, "jobs": [...]}`` (each job with its ``lease``; an empty list
when none came in time) or ``{"ref": ref, "status": 400|404|503, "error": ..., "message":
...}`` (nothing taken).

Takes run side by side (at most MAX_IN_FLIGHT at a time; the socket is read no further
until one ends), so their answers come in the order they end, matched by ``ref``. When
the socket closes, the takes still waiting end and anything claimed for them, or
claimed and not delivered, is given back at once (not after its ``ttr``). Roles are the
HTTP take's: a worker or admin token in the ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web

from tqueues import codec
from tqueues.dispatcher.jobstream import message_ref
from tqueues.dispatcher.keys import websockets_key
from tqueues.dispatcher.middlewares import INTERNAL_ERROR
from tqueues.dispatcher.models import TakeMessage, bounded, validate
from tqueues.dispatcher.operation import refuse_plain_get
from tqueues.dispatcher.requests import parse_json
from tqueues.dispatcher.rest import RestView, as_missing
from tqueues.dispatcher.taking import take_queues
from tqueues.errors import QueueNotFound, TqueuesError, ValidationError
from tqueues.jobs import JobRecord

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 16  #: takes of one socket running at a time.


class TakeStream(RestView):
    """``GET /take/stream``: the WebSocket of one worker's takes."""

    async def get(self) -> web.StreamResponse:
        """Upgrade to the take stream; answer each take as described above."""
        if (refused := refuse_plain_get(self.request)) is not None:
            return refused
        # The socket is read all along (takes run in tasks of their own), so pings are
        # answered while takes wait.
        ws = web.WebSocketResponse(
            heartbeat=30.0, compress=False, max_msg_size=64 * 1024, decode_text=False
        )
        await ws.prepare(self.request)
        sockets = self.request.app[websockets_key]
        sockets.add(ws)
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        takes: set[asyncio.Task[None]] = set()
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await slots.acquire()
                    task = asyncio.create_task(self._take_and_answer(ws, message.data))
                    takes.add(task)
                    task.add_done_callback(takes.discard)
                    task.add_done_callback(lambda _: slots.release())
                elif message.type is WSMsgType.ERROR:
                    break
        except ConnectionResetError:
            pass
        finally:
            sockets.discard(ws)
            for task in takes:
                task.cancel()  # a take cancelled mid-claim gives back what it got
            await asyncio.gather(*takes, return_exceptions=True)
            await ws.close()
        return ws

    async def _take_and_answer(self, ws: web.WebSocketResponse, data: bytes | str) -> None:
        answer, jobs = await self._take(data)
        transport = self.request.transport
        if jobs and (ws.closed or transport is None or transport.is_closing()):
            self.store.give_back(jobs)  # the taker went away
            return
        try:
            await ws.send_frame(codec.dumps(answer), WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):  # the socket closed meanwhile
            self.store.give_back(jobs)
        except asyncio.CancelledError:
            self.store.give_back(jobs)  # whether the frame went out is unknown
            raise

    async def _take(self, data: bytes | str) -> tuple[dict[str, Any], list[JobRecord]]:
        """The answer to one take, and the jobs it hands over; never raises but
        CancelledError (a take cancelled mid-claim gives back what it got)."""
        ref = None
        try:
            body = parse_json(data, "the message")
            if not isinstance(body, dict):
                raise ValidationError("the message must be a JSON object")
            ref = message_ref(body)
            take = validate(bounded(TakeMessage, self.settings.max_wait), body)
            queues, worker, wait, count = take.queues, take.worker or None, take.wait, take.count
            take_queues(queues, "queues")
            try:
                jobs = await self.store.take_any(queues, count, worker=worker, wait=wait)
            except QueueNotFound as exc:
                raise as_missing(exc) from None
            return {
                "ref": ref,
                "status": 200,
                "jobs": [job.to_dict(with_lease=True) for job in jobs],
            }, jobs
        except TqueuesError as exc:
            if exc.status == 503:
                log.warning("take stream: %s", exc.message, extra={"action": exc.code})
            return {**exc.to_dict(), "ref": ref, "status": exc.status}, []
        except Exception:
            log.exception("unhandled error in a take stream", extra={"action": "internal_error"})
            return {"error": "internal_error", "message": INTERNAL_ERROR, "ref": ref,
                    "status": 500}, []  # fmt: skip


__all__ = ["TakeStream"]
