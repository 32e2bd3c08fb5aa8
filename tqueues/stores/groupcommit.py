"""Group commit for the embedded store: one thread owns the SQLite connection and runs
queued operations many to a transaction, each in its own savepoint.

Every operation is answered only after the ``COMMIT`` that makes it durable; under load
many operations share one disk sync, alone an operation costs one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

from tqueues.errors import StoreUnavailable

T = TypeVar("T")


@dataclasses.dataclass(slots=True)
class _Operation:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    batch: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


class GroupCommit:
    """The store's one thread: runs queued operations, many to a transaction.

    Each batch is ``BEGIN IMMEDIATE``, then per operation ``SAVEPOINT``/``RELEASE`` (or
    ``ROLLBACK TO`` when it raises), then one ``COMMIT``; only then are the operations
    answered, so an answer always means durable. If the commit fails, every operation of
    the batch gets the error (none of them happened).
    """

    MAX_BATCH = 512

    def __init__(self, connection: Callable[[], sqlite3.Connection | None]) -> None:
        self._connection = connection
        self._queue: SimpleQueue[_Operation | None] = SimpleQueue()
        self.commits = 0  #: transactions committed (operations share them under load)
        self._thread = threading.Thread(target=self._serve, name="tq-sqlite", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], args: tuple[Any, ...], batch: bool) -> Awaitable[T]:
        """Queue ``fn(*args)``; the future of its result (or exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Operation(fn, args, batch, future, loop))
        return future

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocks until it has)."""
        self._queue.put(None)
        self._thread.join()

    def _serve(self) -> None:
        held: _Operation | None = None
        while True:
            first = held or self._queue.get()
            held = None
            if first is None:
                return
            if not first.batch:
                self._answer([first], [self._call(first)])
                continue
            batch = [first]
            while len(batch) < self.MAX_BATCH:
                try:
                    following = self._queue.get_nowait()
                except Empty:
                    break
                if following is None or not following.batch:
                    held = following
                    if following is None:
                        self._queue.put(None)
                        held = None
                    break
                batch.append(following)
            self._answer(batch, self._run_batch(batch))

    @staticmethod
    def _call(operation: _Operation) -> tuple[Any, BaseException | None]:
        try:
            return operation.fn(*operation.args), None
        except BaseException as exc:  # handed to the caller
            return None, exc

    def _run_batch(self, batch: list[_Operation]) -> list[tuple[Any, BaseException | None]]:
        conn = self._connection()
        if conn is None:
            error = StoreUnavailable("the SQLite store is closed")
            return [(None, error)] * len(batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = []
            for operation in batch:
                conn.execute("SAVEPOINT operation")
                outcome = self._call(operation)
                if outcome[1] is not None and not conn.in_transaction:
                    # SQLite rolled the whole transaction back (a full disk, an I/O error):
                    # none of the batch happened.
                    return [(None, outcome[1])] * len(batch)
                if outcome[1] is not None:
                    conn.execute("ROLLBACK TO operation")
                conn.execute("RELEASE operation")
                outcomes.append(outcome)
            conn.execute("COMMIT")
            self.commits += 1
            return outcomes
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return [(None, exc)] * len(batch)

    @staticmethod
    def _answer(batch: list[_Operation], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        # One wake-up of each event loop per batch, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for operation, (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(operation.loop, []).append((operation.future, result, error))
        for loop, answers in by_loop.items():
            loop.call_soon_threadsafe(_settle_all, answers)


def _settle_all(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in answers:
        if future.done():  # the caller was cancelled; the operation happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
