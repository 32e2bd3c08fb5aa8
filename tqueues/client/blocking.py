"""The blocking twin of :class:`~tqueues.client.aio.Client`, for scripts and shells.

:class:`BlockingClient` runs an asyncio :class:`Client` on a private event loop in a
daemon thread and waits for each call, so every method has the same name, arguments,
answer and exceptions as the asyncio one. It is safe to share between threads. Close it
(or use ``with``) to stop the thread and its HTTP session.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from tqueues.client.aio import Client, JSONDict
from tqueues.client.stream import JobStream

P = ParamSpec("P")
T = TypeVar("T")


def _twin(
    method: Callable[Concatenate[Client, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[BlockingClient, P], T]:
    """The blocking version of an asyncio Client method."""

    @functools.wraps(method)
    def call(self: BlockingClient, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.client, *args, **kwargs))

    return call


class BlockingClient:
    """``with BlockingClient(url) as client: client.put("q", "pkg.mod:func", [1])``.

    The arguments are those of :class:`~tqueues.client.aio.Client`.
    """

    def __init__(
        self, endpoint_url: str, *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.client = Client(endpoint_url, token=token, timeout=timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tqueues-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def endpoint_url(self) -> str:
        return self.client.endpoint_url

    def _run(self, call: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            call.close()
            raise RuntimeError("the client is closed")

        async def run() -> T:
            return await call

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def close(self) -> None:
        """Close the HTTP session and stop the loop thread; idempotent."""
        if self._closed:
            return
        self._run(self.client.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

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
    kick = _twin(Client.kick)
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
        **options: Any,
    ) -> JSONDict:
        return self._owner._run(self.stream.put(method, args, kwargs, **options))

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
