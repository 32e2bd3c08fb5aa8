"""The client side of the dispatcher's WebSockets for calls: the job stream
(``/queues/{name}/jobs/stream``, enqueue without one HTTP request per job) and the take
stream (``/take/stream``, a worker's long-poll takes).

``async with client.job_stream("q") as stream: job = await stream.put("pkg.mod:f", [1])``.
:meth:`JobStream.put` and :meth:`JobStream.put_many` take the arguments, give the answers
and raise the errors of :meth:`Client.put <tqueues.client.aio.Client.put>` and
:meth:`Client.put_many <tqueues.client.aio.Client.put_many>`: a job is stored durably when
its call returns. :meth:`TakeStream.take` is :meth:`Client.take_any
<tqueues.client.aio.Client.take_any>`. Several tasks may call them at once. A socket opens
on entry (or the first call) and again on the next call after it dropped; the calls
waiting when it dropped raise DispatcherUnavailable (their jobs may or may not have been
stored, as when an HTTP answer is lost; a take's jobs are given back by the dispatcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from yarl import URL

from tqueues import codec
from tqueues.client.answers import JSONDict, frame_answer
from tqueues.client.errors_text import connection_error_text
from tqueues.errors import DispatcherUnavailable


class StreamClient(Protocol):
    """What a stream needs of its :class:`~tqueues.client.aio.Client` (which made it): the
    dispatchers and the one in use, the session, the URL of a path, a plain request (to
    learn why a socket was refused) and the move to the next dispatcher. A protocol, so
    that this module does not import the client that imports it."""

    @property
    def endpoint_urls(self) -> tuple[str, ...]: ...

    @property
    def endpoint_url(self) -> str: ...

    @property
    def timeout(self) -> float: ...

    @property
    def session(self) -> aiohttp.ClientSession: ...

    def url(self, *segments: str) -> URL: ...

    async def request(self, method: str, path: Sequence[str]) -> Any: ...

    def unreachable(self, endpoint_url: str) -> bool: ...


class _CallSocket:
    """A WebSocket of calls answered by ``ref``: ``path`` on the dispatcher, ``ok`` the
    statuses of a successful answer, ``what`` its name in errors."""

    ok: tuple[int, ...] = (200,)
    what = "socket"

    def __init__(self, client: StreamClient, path: Sequence[str]) -> None:
        self.client = client
        self.path = list(path)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[JSONDict]] = {}
        self._refs = itertools.count()
        self._url = client.endpoint_url  #: the dispatcher the socket is open to

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
            for attempt in range(len(self.client.endpoint_urls)):
                endpoint_url = self.client.endpoint_url
                try:
                    ws = await self.client.session.ws_connect(
                        self.client.url(*self.path),
                        heartbeat=30.0,
                        max_msg_size=0,  # the dispatcher bounds what it sends
                        timeout=aiohttp.ClientWSTimeout(ws_close=self.client.timeout),
                    )
                    break
                except aiohttp.WSServerHandshakeError as exc:
                    # The refusal's JSON body is not kept by aiohttp: ask the route again
                    # without the upgrade, and raise the typed error it names.
                    await self.client.request("GET", self.path)
                    raise DispatcherUnavailable(
                        f"the dispatcher refused the {self.what}: {exc}"
                    ) from exc
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    # Of several dispatchers, the next one (at once if nothing was sent).
                    self.client.unreachable(endpoint_url)
                    if isinstance(exc, aiohttp.ClientConnectorError) and attempt + 1 < len(
                        self.client.endpoint_urls
                    ):
                        continue
                    reason = connection_error_text(exc)
                    raise DispatcherUnavailable(
                        f"cannot reach the dispatcher at {endpoint_url}: {reason}"
                    ) from exc
            # Each socket has its calls: one that dropped fails only those sent on it.
            self._ws, self._pending, self._url = ws, {}, endpoint_url
            self._reader = asyncio.create_task(self._read(ws, self._pending, endpoint_url))
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

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, body: JSONDict, wait: float = 0.0) -> JSONDict:
        """Send ``body`` and return its answer (given up after ``wait`` plus the client's
        timeout seconds); an error answer raises its typed error."""
        ws = await self.connect()
        pending, ref = self._pending, next(self._refs)
        answered = asyncio.get_running_loop().create_future()
        pending[ref] = answered
        try:
            await ws.send_frame(codec.dumps({**body, "ref": ref}), aiohttp.WSMsgType.TEXT)
            async with asyncio.timeout(wait + self.client.timeout):  # (never swallows a
                answer = await answered  # cancellation, as wait_for of Python 3.11 may)
        except (TimeoutError, ConnectionError) as exc:
            reason = connection_error_text(exc, timeout=wait + self.client.timeout)
            url = self._url
            if self._ws is ws:  # a dispatcher that does not answer: the next one, if any
                self.client.unreachable(url)
            raise DispatcherUnavailable(
                f"the {self.what} to {url} gave no answer: {reason}"
            ) from exc
        finally:
            pending.pop(ref, None)
        return frame_answer(answer, self.ok)

    async def _read(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        pending: dict[int, asyncio.Future[JSONDict]],
        url: str,
    ) -> None:
        """Hand each answer to its call; when the socket ends, fail the calls left (and,
        if it was not closed here, move the client on to its next dispatcher, if any)."""
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
                f"the {self.what} to {url} closed (code {ws.close_code}){self.lost}"
            )
            if self._ws is ws:  # dropped, not closed by close()
                self._ws = None
                self.client.unreachable(url)
            for waiting in pending.values():
                if not waiting.done():
                    waiting.set_exception(gone)

    #: What a dropped socket means for the calls waiting on it (the end of their error).
    lost = ""


class JobStream(_CallSocket):
    """One producer's job stream to ``queue``; made by :meth:`Client.job_stream`."""

    ok = (201, 200)  #: 200: every job was a duplicate (unique jobs)
    what = "job stream"
    lost = ": its jobs may or may not have been stored"

    def __init__(self, client: StreamClient, queue: str) -> None:
        super().__init__(client, ["queues", queue, "jobs", "stream"])
        self.queue = queue

    async def __aenter__(self) -> JobStream:
        await self.connect()
        return self

    async def put(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: JSONDict | None = None,
        *,
        key: str | None = None,
        **options: Any,
    ) -> JSONDict:
        """Enqueue a job; the stored job (with ``key``: see :meth:`Client.put
        <tqueues.client.aio.Client.put>`). ``options``: priority, urgent, ttr, ttl, delay,
        max_attempts."""
        body = {"method": method, "args": list(args), "kwargs": kwargs or {}, **options}
        if key is not None:
            body["key"] = key
        answer = await self._call(body)
        job: JSONDict = answer["job"]
        return job

    async def put_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JSONDict]:
        """Enqueue 1 to 1,000 jobs in one durable write, all or none; the stored jobs."""
        answer = await self._call({"jobs": [dict(job) for job in jobs]})
        stored: list[JSONDict] = answer["jobs"]
        return stored


class TakeStream(_CallSocket):
    """One worker's take stream (``/take/stream``); made by :meth:`Client.take_stream`.

    A take cancelled while it waits closes the socket (it opens again on the next call),
    so that the dispatcher gives back at once whatever it claims for that take."""

    what = "take stream"

    def __init__(self, client: StreamClient) -> None:
        super().__init__(client, ["take", "stream"])
        self._closing: set[asyncio.Task[bool]] = set()  #: sockets of cancelled takes

    async def close(self) -> None:
        await super().close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def __aenter__(self) -> TakeStream:
        await self.connect()
        return self

    async def take(
        self, queues: Sequence[str], count: int = 1, *, wait: float = 0.0, worker: str | None = None
    ) -> list[JSONDict]:
        """Up to ``count`` jobs, each with its ``lease``, of the first of ``queues`` that
        has any, waiting up to ``wait`` seconds; as :meth:`Client.take_any
        <tqueues.client.aio.Client.take_any>`."""
        body: JSONDict = {"queues": list(queues), "count": count, "wait": float(wait)}
        if worker:
            body["worker"] = worker
        try:
            answer = await self._call(body, wait)
        except asyncio.CancelledError:
            ws = self._ws
            if ws is not None:
                self._ws = None
                closing = asyncio.get_running_loop().create_task(ws.close())
                self._closing.add(closing)  # (a task nobody holds may be collected)
                closing.add_done_callback(self._closing.discard)
            raise
        jobs: list[JSONDict] = answer["jobs"]
        return jobs
