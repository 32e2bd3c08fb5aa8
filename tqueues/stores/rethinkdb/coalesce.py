"""Group commit for the RethinkDB store: per queue, the requests of concurrent callers that
arrive while that queue's batches are being served go together in the next batch.

No timer is involved: a request that finds a free place (fewer than ``parallel`` batches of
its queue in flight) is served at once (in a task started in the same turn of the event
loop, so the other requests of that turn join it), alone; under load a batch forms from
whatever queued during the round trips under way. More than one batch in flight lets the
server overlap their disk syncs (measured on RethinkDB 2.4.4 with ``durability hard``:
conditional replaces of 5 documents, one query at a time, 3.4 ms a query; two at a time,
2.4 ms each); which requests may go in flight together is the ``take`` function's choice.
Each request gets its own answer (or its own exception). A batch is served by a task of
its own, so a caller that is cancelled cuts no other caller's request short (its own
request still runs: the store's callers shield what must complete anyway).

:class:`Coalescer` holds the queueing; what a batch does is its ``serve`` function (the
store's conditional writes, its claims).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from tqueues.errors import StoreUnavailable

T = TypeVar("T")
R = TypeVar("R")


@dataclasses.dataclass(eq=False, slots=True)
class Request(Generic[T, R]):
    """One caller's request: ``item`` and the future its answer is set on."""

    item: T
    future: asyncio.Future[R]

    def answer(self, result: R) -> None:
        """Set the answer, unless the request has one (or its caller left)."""
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        """Set ``exc`` as the answer, unless the request has one."""
        if not self.future.done():
            self.future.set_exception(exc)


#: What a batch does: ``serve(key, requests)`` answers every request of the batch.
Serve = Callable[[str, list[Request[T, R]]], Awaitable[None]]
#: Which of the waiting requests of a key form its next batch: ``take(key, waiting)``
#: removes them from ``waiting`` and returns them, oldest first. It may take none while
#: another batch of ``key`` is in flight (what waits, waits for that one), never otherwise.
Take = Callable[[str, "collections.deque[Request[T, R]]"], list[Request[T, R]]]


def take_all(key: str, waiting: collections.deque[Request[Any, Any]]) -> list[Request[Any, Any]]:
    """Every waiting request."""
    batch = list(waiting)
    waiting.clear()
    return batch


class _Line(Generic[T, R]):
    """The requests of one key: those waiting, and the tasks serving them."""

    def __init__(self) -> None:
        self.waiting: collections.deque[Request[T, R]] = collections.deque()
        self.tasks: set[asyncio.Task[None]] = set()


class Coalescer(Generic[T, R]):
    """Per key, up to ``parallel`` batches in flight at a time; the requests that arrive
    while none can start form the next one (see the module's docstring). ``batches``
    counts the batches served and ``requests`` the requests: their ratio is how much was
    coalesced."""

    def __init__(
        self, serve: Serve[T, R], *, take: Take[T, R] = take_all, name: str, parallel: int = 1
    ) -> None:
        if parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self._serve_batch = serve
        self._take = take
        self._name = name
        self._parallel = parallel
        self._lines: dict[str, _Line[T, R]] = {}
        self.batches = 0
        self.requests = 0
        self.closed = False

    async def submit(self, key: str, item: T) -> R:
        """Queue ``item`` for ``key``'s next batch; its answer (or exception) once served.
        Raises StoreUnavailable once closed."""
        if self.closed:
            raise StoreUnavailable("the RethinkDB store is closed")
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line()
        request: Request[T, R] = Request(item, asyncio.get_running_loop().create_future())
        line.waiting.append(request)
        self.requests += 1
        if len(line.tasks) < self._parallel:
            task = asyncio.create_task(self._serve(key, line), name=f"{self._name} {key}")
            line.tasks.add(task)
        return await request.future

    async def _serve(self, key: str, line: _Line[T, R]) -> None:
        """Serve ``line``'s batches until none waits (or what waits must wait for another
        batch in flight, whose task serves it next); every request taken gets an answer,
        a failure of ``serve`` itself (a bug, a cancellation at close) included."""
        batch: list[Request[T, R]] = []
        try:
            while line.waiting:
                batch = self._take(key, line.waiting)
                if not batch:
                    if len(line.tasks) == 1:  # a take that would strand them: never wait
                        stranded = RuntimeError(f"{self._name}: took nothing, none in flight")
                        for request in line.waiting:
                            request.fail(stranded)
                        line.waiting.clear()
                    break  # what waits waits for another batch in flight, served next
                self.batches += 1
                try:
                    await self._serve_batch(key, batch)
                except Exception as exc:
                    for request in batch:
                        request.fail(exc)
                for request in batch:  # a serve that forgot one: never leave a caller hanging
                    request.fail(RuntimeError(f"{self._name}: request left unanswered"))
                batch = []
        except BaseException:
            closed = StoreUnavailable("the RethinkDB store is closed")
            for request in [*batch, *line.waiting]:
                request.fail(closed)
            line.waiting.clear()
            raise
        finally:
            line.tasks.discard(asyncio.current_task())
            if not line.tasks and not line.waiting and self._lines.get(key) is line:
                del self._lines[key]

    async def close(self) -> None:
        """Refuse new requests, and stop the batches under way (their requests, and those
        waiting, get StoreUnavailable)."""
        self.closed = True
        tasks = [task for line in self._lines.values() for task in line.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


__all__ = ["Coalescer", "Request", "take_all"]
