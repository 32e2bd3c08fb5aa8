"""Group commit for the embedded store: one thread owns the SQLite connection and runs
queued operations many to a transaction, each in its own savepoint.

Every operation is answered only once the ``COMMIT`` of its transaction is durable; under
load many operations share one disk sync, alone an operation costs one. With a ``sync``
function (the store's ``fdatasync`` of its write-ahead log; SQLite then syncs only around
its checkpoints) the disk sync is pipelined: while one sync runs, the store's thread goes
on with the next transactions, and the sync after it answers them all. Only a
``committed`` callback (see :meth:`GroupCommit.submit`) hears of a commit before that.
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
    committed: Callable[[Any], None] | None = None


_Outcome = tuple[Any, BaseException | None]


class GroupCommit:
    """The store's one thread: runs queued operations, many to a transaction.

    Each batch is ``BEGIN IMMEDIATE``, then per operation ``SAVEPOINT``/``RELEASE`` (or
    ``ROLLBACK TO`` when it raises), then one ``COMMIT``; the operations are answered once
    that commit is durable, so an answer always means durable. If the commit fails, every
    operation of the batch gets the error (none of them happened).

    ``sync``, if given, makes every transaction committed so far durable (blocking; raises
    OSError). It then runs on a thread of its own (:class:`_Syncer`) while this one goes
    on; the answers of the transactions committed meanwhile (reads included: nothing is
    answered from a state that is not durable yet) wait for the next sync. Without it,
    each ``COMMIT`` is durable by itself (SQLite syncs) and is answered at once.

    ``rolled_back``, if given, is called on this thread whenever anything written was
    rolled back (an operation that raised, a transaction that failed): whoever keeps
    state beside the database drops it there.
    """

    MAX_BATCH = 512

    def __init__(
        self,
        connection: Callable[[], sqlite3.Connection | None],
        sync: Callable[[], None] | None = None,
        rolled_back: Callable[[], None] | None = None,
    ) -> None:
        self._connection = connection
        self._rolled_back = rolled_back or (lambda: None)
        self._queue: SimpleQueue[_Operation | None] = SimpleQueue()
        self._mutex = threading.Lock()  #: guards _queued and the choice to run inline
        self._queued = 0  #: operations queued for the thread and not yet done
        self._running = threading.Lock()  #: held by whoever runs a batch: thread or caller
        self.operations = 0  #: operations submitted
        self.commits = 0  #: transactions committed (operations share them under load)
        self.inline_runs = 0  #: operations run on their caller's thread (the store idle)
        self._inline_this_turn = False  #: one ran inline in this turn of the caller's loop
        self._syncer = _Syncer(sync) if sync is not None else None
        self._thread = threading.Thread(target=self._serve, name="tq-sqlite", daemon=True)
        self._thread.start()

    @property
    def syncs(self) -> int:
        """Disk syncs done by ``sync`` (0 without it: SQLite syncs in each ``COMMIT``)."""
        return self._syncer.syncs if self._syncer is not None else 0

    def submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        batch: bool,
        committed: Callable[[T], None] | None = None,
        cheap: bool = False,
    ) -> Awaitable[T]:
        """Queue ``fn(*args)``; the future of its result (or exception), settled once its
        transaction is durable. ``committed``, if given, is called on the caller's loop
        with the result as soon as the transaction is committed, before it is synced (not
        at all if the operation or its transaction fails), and always before the future
        is settled: a caller that finds the future done knows ``committed`` has run.

        A ``cheap`` operation (a few index lookups and row writes: it blocks the caller
        while it runs) submitted while the thread is idle and nothing is queued runs
        right here instead, in a transaction of its own: no wake-up of the thread and
        back. Only the first of a turn of the caller's loop does; the operations of
        concurrent requests still share the thread's transactions. Its answer is the
        same, as durable (with ``sync``, the sync thread still answers it); it never
        overtakes an operation submitted before it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        operation = _Operation(fn, args, batch, future, loop, committed)
        self.operations += 1
        with self._mutex:
            inline = (
                cheap
                and batch
                and not self._inline_this_turn
                and self._queued == 0
                and self._running.acquire(blocking=False)
            )
            if inline:
                self._inline_this_turn = True
            else:
                self._queued += 1
                self._queue.put(operation)
        if inline:
            # Only the first of the operations submitted in one turn of the loop: the
            # others (concurrent requests) are group-committed by the thread as before.
            loop.call_soon(self._next_turn)
            try:
                self._run_inline(operation)
            finally:
                self._running.release()
        return future

    def _next_turn(self) -> None:
        self._inline_this_turn = False

    def _run_inline(self, operation: _Operation) -> None:
        """Run a lone operation here, on its caller's loop, while the store's thread is
        idle (no wake-up of that thread and back); answered as the thread would."""
        self.inline_runs += 1
        batch = [operation]
        outcomes = self._run_batch(batch)
        if operation.committed is not None and outcomes[0][1] is None:
            # Right here, before the future is settled: its caller may resume without
            # yielding to the loop (the future is done already) and must find that
            # ``committed`` ran, as when the thread answers (it schedules ``committed``
            # before the answer).
            _call_here(operation.loop, operation.committed, outcomes[0][0])
        if self._syncer is None:
            _settle_all([(operation.future, *outcomes[0])])
        else:
            self._syncer.committed(batch, outcomes)

    def stop(self) -> None:
        """Finish what is queued, then end the thread (blocks until it has)."""
        self._queue.put(None)
        self._thread.join()
        if self._syncer is not None:
            self._syncer.stop()

    def _serve(self) -> None:
        held: _Operation | None = None
        while True:
            first = held or self._queue.get()
            held = None
            if first is None:
                return
            with self._running:
                if not first.batch:
                    if self._syncer is not None:
                        self._syncer.flush()  # e.g. closing: after what went before is durable
                    self._answer([first], [self._call(first)])
                    self._done(1)
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
                outcomes = self._run_batch(batch)
                self._tell_committed(batch, outcomes)
                if self._syncer is None:
                    self._answer(batch, outcomes)
                else:
                    self._syncer.committed(batch, outcomes)  # and go on while it syncs
                self._done(len(batch))

    def _done(self, count: int) -> None:
        """``count`` queued operations have run: a caller may run its own inline again
        once none is left (so an operation never overtakes one submitted before it)."""
        with self._mutex:
            self._queued -= count

    @staticmethod
    def _tell_committed(batch: list[_Operation], outcomes: list[_Outcome]) -> None:
        for operation, (result, error) in zip(batch, outcomes, strict=True):
            if operation.committed is not None and error is None:
                _call_soon(operation.loop, operation.committed, result)

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
            if len(batch) == 1:  # alone, its transaction is all the savepoint it needs
                outcome = self._call(batch[0])
                if outcome[1] is not None:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._rolled_back()
                    return [outcome]
                conn.execute("COMMIT")
                self.commits += 1
                return [outcome]
            outcomes = []
            for operation in batch:
                conn.execute("SAVEPOINT operation")
                outcome = self._call(operation)
                if outcome[1] is not None and not conn.in_transaction:
                    # SQLite rolled the whole transaction back (a full disk, an I/O error):
                    # none of the batch happened.
                    self._rolled_back()
                    return [(None, outcome[1])] * len(batch)
                if outcome[1] is not None:
                    conn.execute("ROLLBACK TO operation")
                    self._rolled_back()
                conn.execute("RELEASE operation")
                outcomes.append(outcome)
            conn.execute("COMMIT")
            self.commits += 1
            return outcomes
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._rolled_back()
            return [(None, exc)] * len(batch)

    @staticmethod
    def _answer(batch: list[_Operation], outcomes: list[_Outcome]) -> None:
        # One wake-up of each event loop per batch, not one per operation.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
        for operation, (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(operation.loop, []).append((operation.future, result, error))
        for loop, answers in by_loop.items():
            _call_soon(loop, _settle_all, answers)


class _Syncer:
    """Makes committed transactions durable, one ``sync`` at a time, on a thread of its
    own, and answers them.

    The store's thread hands over each committed batch (:meth:`committed`) and goes on;
    the first sync that begins after a batch's ``COMMIT`` answers it, together with
    whatever else was committed while the sync before it ran.
    """

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._waiting: list[tuple[list[_Operation], list[_Outcome]]] = []
        self._busy = False  #: a sync is running
        self._stopping = False
        self._failure: StoreUnavailable | None = None  #: a sync failed: nothing is durable
        self.syncs = 0  #: syncs done (each answers every batch committed before it began)
        self._thread = threading.Thread(target=self._serve, name="tq-sqlite-sync", daemon=True)
        self._thread.start()

    def committed(self, batch: list[_Operation], outcomes: list[_Outcome]) -> None:
        """``batch`` is committed: answer it with ``outcomes`` once durable."""
        with self._cond:
            self._waiting.append((batch, outcomes))
            self._cond.notify_all()

    def flush(self) -> None:
        """Block until everything handed over is durable and answered."""
        with self._cond:
            self._cond.notify_all()
            while self._waiting or self._busy:
                self._cond.wait()

    def stop(self) -> None:
        """Sync and answer what is left, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not (self._waiting or self._stopping):
                    self._cond.wait()
                if not self._waiting:  # stopping, and nothing is left
                    return
                self._busy = True
                work, self._waiting = self._waiting, []
            self._sync_and_answer(work)

    def _sync_and_answer(self, work: list[tuple[list[_Operation], list[_Outcome]]]) -> None:
        failure = self._failure
        if failure is None:
            try:
                self._sync()
                self.syncs += 1
            except Exception as exc:
                # Whether these commits reached the disk is unknown, and after a failed
                # fsync Linux may report later ones as done whatever became of the data:
                # every answer from now on is this failure, until the store is reopened.
                failure = self._failure = StoreUnavailable(
                    f"the SQLite store cannot sync to disk: {exc}; restart the dispatcher"
                )
        batch = [operation for operations, _ in work for operation in operations]
        if failure is None:
            outcomes = [outcome for _, results in work for outcome in results]
        else:
            outcomes = [(None, failure)] * len(batch)
        GroupCommit._answer(batch, outcomes)
        with self._cond:
            self._busy = False
            self._cond.notify_all()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """``callback(*args)`` on ``loop``, from another thread; nothing if the loop is closed
    (nobody is left there to answer, and this thread must go on serving the others)."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the event loop is closed
        pass


def _call_here(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """``callback(*args)`` now, on ``loop``'s own thread; an exception it raises goes to the
    loop's exception handler, as one from a callback the loop ran would."""
    try:
        callback(*args)
    except Exception as exc:
        loop.call_exception_handler(
            {"message": f"exception in callback {callback!r}", "exception": exc}
        )


def _settle_all(answers: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in answers:
        if future.done():  # the caller was cancelled; the operation happened all the same
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
