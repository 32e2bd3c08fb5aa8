"""The client side of the job stream (``/queues/{name}/jobs/stream``): enqueue over one
WebSocket instead of one HTTP request per job.

``async with client.job_stream("q") as stream: job = await stream.put("pkg.mod:f", [1])``.
:meth:`JobStream.put` and :meth:`JobStream.put_many` take the arguments, give the answers
and raise the errors of :meth:`Client.put <tqueues.client.aio.Client.put>` and
:meth:`Client.put_many <tqueues.client.aio.Client.put_many>`: a job is stored durably when
its call returns. Several tasks may call them at once; the dispatcher handles a stream's
messages in the order they were sent. The socket opens on entry (or the first call) and
again on the next call after it dropped; the calls waiting when it dropped raise
DispatcherUnavailable (their jobs may or may not have been stored, as when an HTTP
answer is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from tqueues import codec
from tqueues.errors import DispatcherUnavailable

if TYPE_CHECKING:
    from tqueues.client.aio import Client, JSONDict


class JobStream:
    """One producer's job stream to ``queue``; made by :meth:`Client.job_stream`."""

    def __init__(self, client: Client, queue: str) -> None:
        self.client = client
        self.queue = queue
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[JSONDict]] = {}
        self._refs = itertools.count()

    async def __aenter__(self) -> JobStream:
        await self.connect()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the socket is open (it opens again on the next call if not)."""
        return self._ws is not None and not self._ws.closed

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        """The open socket, opened if need be. Raises what :meth:`Client.request` raises
        for the route (Unauthorized, Forbidden, QueueNotFound, ...), DispatcherUnavailable
        when the dispatcher cannot be reached."""
        async with self._connecting:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            path = ["queues", self.queue, "jobs", "stream"]
            try:
                ws = await self.client.session.ws_connect(
                    self.client.url(*path),
                    heartbeat=30.0,
                    max_msg_size=0,  # the dispatcher bounds what it sends (a batch's answer)
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.client.timeout),
                )
            except aiohttp.WSServerHandshakeError as exc:
                # The refusal's JSON body is not kept by aiohttp: ask the route again
                # without the upgrade, and raise the typed error it names.
                await self.client.request("GET", path)
                raise DispatcherUnavailable(
                    f"the dispatcher refused the job stream: {exc}"
                ) from exc
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise DispatcherUnavailable(
                    f"cannot reach the dispatcher at {self.client.endpoint_url}: {exc!r}"
                ) from exc
            # Each socket has its calls: one that dropped fails only those sent on it.
            self._ws, self._pending = ws, {}
            self._reader = asyncio.create_task(self._read(ws, self._pending))
            return ws

    async def close(self) -> None:
        """Close the socket (calls still waiting raise DispatcherUnavailable); idempotent."""
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is not None:
            await ws.close()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def put(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: JSONDict | None = None,
        **options: Any,
    ) -> JSONDict:
        """Enqueue a job; the stored job. ``options``: priority, urgent, ttr, ttl, delay,
        max_attempts."""
        answer = await self._call(
            {"method": method, "args": list(args), "kwargs": kwargs or {}, **options}
        )
        job: JSONDict = answer["job"]
        return job

    async def put_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JSONDict]:
        """Enqueue 1 to 1,000 jobs in one durable write, all or none; the stored jobs."""
        answer = await self._call({"jobs": [dict(job) for job in jobs]})
        stored: list[JSONDict] = answer["jobs"]
        return stored

    async def _call(self, body: JSONDict) -> JSONDict:
        from tqueues.client.aio import error_for

        ws = await self.connect()
        pending, ref = self._pending, next(self._refs)
        answered = asyncio.get_running_loop().create_future()
        pending[ref] = answered
        try:
            await ws.send_frame(codec.dumps({**body, "ref": ref}), aiohttp.WSMsgType.TEXT)
            answer = await asyncio.wait_for(answered, self.client.timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise DispatcherUnavailable(
                f"the job stream to {self.client.endpoint_url} gave no answer: {exc!r}"
            ) from exc
        finally:
            pending.pop(ref, None)
        if answer.get("status") == 201:
            return answer
        status = answer.pop("status", 500)
        answer.pop("ref", None)
        raise error_for(status, answer)

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, pending: dict[int, asyncio.Future[JSONDict]]
    ) -> None:
        """Hand each answer to its call; when the socket ends, fail the calls left."""
        try:
            async for message in ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    answer = codec.loads(message.data)
                    waiting = pending.pop(answer.get("ref"), None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(answer)
                elif message.type is aiohttp.WSMsgType.ERROR:
                    break
        finally:
            gone = DispatcherUnavailable(
                f"the job stream to {self.client.endpoint_url} closed"
                f" (code {ws.close_code}): its jobs may or may not have been stored"
            )
            for waiting in pending.values():
                if not waiting.done():
                    waiting.set_exception(gone)
            if self._ws is ws:
                self._ws = None
