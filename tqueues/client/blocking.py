"""The blocking twin of :class:`~tqueues.client.aio.Client`, for scripts, shells and the
synchronous code of web applications.

:class:`BlockingClient` has every method of the asyncio client, with the same name,
arguments, answer and exceptions. Each call runs in the calling thread: the asyncio
client's own method runs over :class:`CurlClient`, whose one request (libcurl, see
:mod:`tqueues.client.curl`) blocks instead of suspending, so there is no event loop to hop
to and back. Each thread keeps a keep-alive connection of its own; one client may be shared
between threads. Only the job stream (a WebSocket) runs an asyncio client, on a private
event loop in a daemon thread started when the first stream opens. Close the client (or use
``with``) to close its connections and stop that thread.
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from tqueues import codec
from tqueues.client.aio import Client
from tqueues.client.answers import JSONDict, answer_of
from tqueues.client.curl import CurlTransport, TransportError
from tqueues.client.stream import JobStream
from tqueues.errors import DispatcherUnavailable

P = ParamSpec("P")
T = TypeVar("T")


def content_type(header: str) -> tuple[bool, str]:
    """Whether a Content-Type header value names JSON, and its charset (default UTF-8)."""
    if header.partition(";")[0].strip().lower() == "application/json":
        return True, "utf-8"
    message = email.message.Message()
    message["Content-Type"] = header
    return False, message.get_content_charset() or "utf-8"


class CurlClient(Client):
    """The asyncio client's methods over a blocking transport: :meth:`request` never
    suspends, so each method's coroutine runs to its end in one step (see
    :func:`complete`). Used by :class:`BlockingClient`; not for use on an event loop, whose
    other tasks would wait for every call."""

    def __init__(
        self, endpoint_url: str | Sequence[str], *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        super().__init__(endpoint_url, token=token, timeout=timeout)
        self.transport = CurlTransport(token=token)

    async def request(
        self,
        method: str,
        path: Sequence[str],
        body: Any = None,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """As :meth:`Client.request <tqueues.client.aio.Client.request>`, blocking the
        calling thread for the call. Of several dispatchers, a connection refused (nothing
        was sent) is tried on each of the others at once; a call that got no answer moves
        the next calls to the next one, and raises DispatcherUnavailable."""
        data = None if body is None else codec.dumps(body)
        for attempt in range(len(self.endpoint_urls)):
            endpoint_url = self.endpoint_url
            url = self.url(*path)
            if params:
                url = url.extend_query(params)
            try:
                answer = self.transport.request(method, str(url), data, self.timeout + wait)
            except TransportError as exc:
                self.unreachable(endpoint_url)
                if not exc.sent and attempt + 1 < len(self.endpoint_urls):
                    continue  # nothing was sent: the next dispatcher may take it
                raise DispatcherUnavailable(
                    f"cannot reach the dispatcher at {endpoint_url}: {exc}"
                ) from exc
            is_json, charset = content_type(answer.content_type)
            return answer_of(answer.status, answer.body, is_json=is_json, charset=charset)
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close every thread's connection."""
        self.transport.close()


def complete(call: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (every await in it ends at
    :meth:`CurlClient.request`) to its end, in this thread; its result or exception."""
    try:
        call.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    call.close()
    raise RuntimeError(f"{call!r} waited for an event loop; BlockingClient has none for it")


def _twin(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[BlockingClient, P], T]:
    """The blocking version of an asyncio Client method."""

    @functools.wraps(method)
    def call(self: BlockingClient, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise RuntimeError("the client is closed")
        return complete(method(self.calls, *args, **kwargs))

    return call


class BlockingClient:
    """``with BlockingClient(url) as client: client.put("q", "pkg.mod:func", [1])``.

    The arguments are those of :class:`~tqueues.client.aio.Client` (a list of URLs
    too).
    """

    def __init__(
        self, endpoint_url: str | Sequence[str], *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        #: Every call but the job stream's.
        self.calls = CurlClient(endpoint_url, token=token, timeout=timeout)
        #: The asyncio client of the job streams, on ``_loop`` (started by the first).
        self.client = Client(endpoint_url, token=token, timeout=timeout)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def endpoint_url(self) -> str:
        """The URL of the dispatcher the calls go to now."""
        return self.calls.endpoint_url

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        """Run ``call`` on the stream loop (started now if need be) and wait for it."""
        with self._lock:
            if self._closed:
                call.close()
                raise RuntimeError("the client is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="tqueues-client", daemon=True
                )
                self._thread.start()
            loop = self._loop

        async def run() -> T:
            return await call

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    def close(self) -> None:
        """Close the connections and stop the stream loop's thread; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        complete(self.calls.close())
        if loop is not None and thread is not None:
            asyncio.run_coroutine_threadsafe(self.client.close(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    list_queues = _twin(Client.list_queues)
    create_queue = _twin(Client.create_queue)
    queue_settings = _twin(Client.queue_settings)
    update_queue = _twin(Client.update_queue)
    drop_queue = _twin(Client.drop_queue)
    truncate = _twin(Client.truncate)
    stats = _twin(Client.stats)
    dispatcher_stats = _twin(Client.dispatcher_stats)
    history = _twin(Client.history)
    workers = _twin(Client.workers)
    explain = _twin(Client.explain)
    quiet_worker = _twin(Client.quiet_worker)
    stop_worker = _twin(Client.stop_worker)
    create_schedule = _twin(Client.create_schedule)
    schedules = _twin(Client.schedules)
    schedule = _twin(Client.schedule)
    pause_schedule = _twin(Client.pause_schedule)
    resume_schedule = _twin(Client.resume_schedule)
    run_schedule = _twin(Client.run_schedule)
    delete_schedule = _twin(Client.delete_schedule)
    kick = _twin(Client.kick)
    pause = _twin(Client.pause)
    resume = _twin(Client.resume)
    put = _twin(Client.put)
    put_many = _twin(Client.put_many)
    take = _twin(Client.take)
    take_many = _twin(Client.take_many)
    take_any = _twin(Client.take_any)
    get = _twin(Client.get)
    list_jobs = _twin(Client.list_jobs)
    peek = _twin(Client.peek)
    update = _twin(Client.update)
    delete = _twin(Client.delete)
    finish = _twin(Client.finish)
    fail = _twin(Client.fail)
    release = _twin(Client.release)
    requeue = _twin(Client.requeue)
    touch = _twin(Client.touch)
    bury = _twin(Client.bury)
    kick_job = _twin(Client.kick_job)
    cancel = _twin(Client.cancel)
    report = _twin(Client.report)
    report_and_take = _twin(Client.report_and_take)
    health = _twin(Client.health)

    def job_stream(self, queue: str) -> BlockingJobStream:
        """The blocking twin of :meth:`Client.job_stream`: ``with client.job_stream(q) as s:``."""
        return BlockingJobStream(self, self.client.job_stream(queue))


class BlockingJobStream:
    """A :class:`~tqueues.client.stream.JobStream` run on its :class:`BlockingClient`'s
    loop: the same methods, answers and exceptions, each call blocking until answered."""

    def __init__(self, owner: BlockingClient, stream: JobStream) -> None:
        self._owner = owner
        self.stream = stream

    @property
    def connected(self) -> bool:
        return self.stream.connected

    def connect(self) -> None:
        """Open the socket now (it also opens on the first call)."""
        self._owner._run(self.stream.connect())

    def put(
        self,
        method: str,
        args: Sequence[Any] = (),
        kwargs: JSONDict | None = None,
        *,
        key: str | None = None,
        **options: Any,
    ) -> JSONDict:
        return self._owner._run(self.stream.put(method, args, kwargs, key=key, **options))

    def put_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[JSONDict]:
        return self._owner._run(self.stream.put_many(jobs))

    def close(self) -> None:
        self._owner._run(self.stream.close())

    def __enter__(self) -> BlockingJobStream:
        self.connect()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
