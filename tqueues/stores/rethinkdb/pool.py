"""Connections to RethinkDB: a small round-robin pool, reconnection backoff, and the one
place where driver errors become :class:`~tqueues.errors.StoreUnavailable`.

Every query of the package runs through :meth:`Pool.run`, under a timeout, without ever
cancelling the driver's wait for an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

from rethinkdb.ast import RqlQuery
from rethinkdb.errors import (
    ReqlAvailabilityError,
    ReqlDriverError,
    ReqlError,
    ReqlQueryLogicError,
    ReqlTimeoutError,
)

from tqueues.errors import StoreUnavailable
from tqueues.retry import Backoff
from tqueues.settings import RethinkDBSettings
from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.rethinkdb.wire import AnswerDecoder

log = logging.getLogger("tqueues.stores.rethinkdb")

#: The server's texts (RethinkDB 2.4, ``admin_op_exc.hpp`` and the admin terms) for a
#: missing table or database, and for creating one (or an index) that exists already.
#: Anchored, so a message that merely quotes such words (a datum in an error) is not one.
_MISSING = re.compile(r"^(Table|Database) `[^`]+` does not exist\.")
_EXISTS = re.compile(r"^(Table|Database|Index) `[^`]+` already exists")
#: The server's text when a name stands for two databases or tables (two ``db_create`` of
#: one name at once on a cluster make two: rethinkdb/rethinkdb#5900, #4898).
_AMBIGUOUS = re.compile(r"^(Table|Database) `[^`]+` is ambiguous")
#: The server's text for an index it does not know (yet: one being created elsewhere).
_MISSING_INDEX = re.compile(r"Index `[^`]+` was not found on table")
#: The server's texts (``datum.cc``, ``store_key.cc``) for a key it cannot hold: a string
#: with a NUL character, a primary key over 127 bytes. A query logic error, not an outage.
_BAD_KEY = re.compile(
    r'^(String ".*" (\(truncated\) )?contains NULL byte at offset \d+ in index key'
    r"|Primary key too long \(max \d+ characters\))",
    re.DOTALL,
)


def message(exc: BaseException) -> str:
    """A one-line description of a driver error (without the query printout)."""
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def first_error(result: Mapping[str, Any]) -> str:
    """The ``first_error`` of a write result, on one line (or the whole result)."""
    return " ".join(str(result.get("first_error") or result).split())


class Missing(StoreUnavailable):
    """The table or database a query names does not exist."""


class Exists(StoreUnavailable):
    """The table, database or index a query creates exists already."""


class MissingIndex(StoreUnavailable):
    """The index a query names does not exist on its table (or not yet: another process
    created it a moment ago, on another server of a cluster)."""


class Ambiguous(StoreUnavailable):
    """The database or table a query names exists twice (made at the same instant by two
    servers of a cluster); :meth:`Catalog.open
    <tqueues.stores.rethinkdb.queues.Catalog.open>` removes the extra ones."""


class KeyRefused(StoreUnavailable):
    """The server refused a key the query names as one no document can have (a NUL in
    it, too long): a mistake in the request, not an outage. The store turns it into
    what the request meant (no such job); the query changed nothing."""


FEED_HEARTBEAT = 10.0  #: seconds of feed silence after which the connection is pinged.
#: Seconds between two tries, while the pool is away from its first server, to return to it.
HOME_CHECK = 30.0


def consume(task: asyncio.Future[Any]) -> None:
    """Retrieve a background query's outcome so an abandoned failure is not logged."""
    if not task.cancelled():
        task.exception()


class Pool:
    """A few asyncio connections, used round-robin (each multiplexes many queries).

    A dead connection is replaced on its next use. Of several servers
    (``settings.servers``, one cluster), connections go to the one in use; when a connect
    to it fails, the next ones are tried in turn at once, and a connection to it that is
    lost or stops answering moves the pool on to the next server, so the pool leaves a
    dead server within one failed query. After every server failed a connect, further
    connects are refused at once (StoreUnavailable) until a backoff delay has passed, so
    requests fail fast while the cluster is down.

    The first server is the pool's home (several dispatchers of a cluster each name their
    own first, to spread the load): while the pool is away from it, every ``home_check``
    seconds a use of the pool tries, in the background, to connect to it and to see every
    table of the database ready for writes from there; when it is, new connections go home
    again. The connections on the other server are retired, not broken: each is closed
    once no query or changefeed runs on it, so no feed breaks for the move.
    """

    def __init__(self, settings: RethinkDBSettings, *, home_check: float = HOME_CHECK) -> None:
        self.settings = settings
        self.servers = settings.servers
        self._current = 0  #: the index in ``servers`` of the server new connections go to.
        self._slots: list[Any] = [None] * settings.pool_size
        self._slot_server = [0] * settings.pool_size  #: the server each slot's connection is on
        self._locks = [asyncio.Lock() for _ in range(settings.pool_size)]
        self._next = 0
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._last_error = ""
        self._closers: set[asyncio.Task[None]] = set()
        self._home_check = home_check
        self._home_at = 0.0  #: time.monotonic() after which to try the home server again
        self._homing: asyncio.Task[None] | None = None
        self._retired: list[Any] = []  #: connections away from home, closed once idle
        #: per connection, its last ping: when it was sent, and its answer
        self._pings: weakref.WeakKeyDictionary[Any, tuple[float, asyncio.Future[Any]]] = (
            weakref.WeakKeyDictionary()
        )
        self.closed = False

    @property
    def address(self) -> str:
        """``host:port`` of the server in use."""
        host, port = self.servers[self._current]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _move_on(self, server: int) -> None:
        """The server ``server`` failed: the next connections go to the next server (once
        per failure of the server in use; a failure of one left already changes nothing)."""
        if len(self.servers) > 1 and server == self._current:
            failed = self.address
            self._current = (server + 1) % len(self.servers)
            self._home_at = time.monotonic() + self._home_check
            log.warning(
                "RethinkDB at %s failed; connecting to %s", failed, self.address,
                extra={"action": "rethinkdb_failover"},
            )  # fmt: skip

    async def _connect(self, server: int | None = None) -> Any:
        """A new connection to the server in use (or to ``servers[server]``)."""
        settings = self.settings
        host, port = self.servers[self._current if server is None else server]
        return await r.connect(
            host=host,
            port=port,
            user=settings.user,
            password=settings.password,
            timeout=max(1, round(settings.timeout)),
            json_decoder=AnswerDecoder,
        )

    async def get(self) -> Any:
        """An open connection. Raises StoreUnavailable when none can be had."""
        if self.closed:
            raise StoreUnavailable("the RethinkDB store is closed")
        if self._current != 0 or self._retired:
            self._tend_home()
        index = self._next
        self._next = (index + 1) % len(self._slots)
        conn = self._slots[index]
        if conn is not None and conn.is_open():
            return conn
        async with self._locks[index]:
            conn = self._slots[index]
            if conn is not None and conn.is_open():
                return conn
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:
                raise StoreUnavailable(
                    f"cannot reach RethinkDB at {self.settings.address}: {self._last_error} "
                    "(reconnecting)"
                )
            errors: list[str] = []
            for _ in self.servers:
                server = self._current
                try:
                    async with asyncio.timeout(self.settings.timeout):
                        conn = await self._connect()
                    break
                except (ReqlError, OSError, TimeoutError) as exc:
                    said = (
                        message(exc)
                        if not isinstance(exc, TimeoutError)
                        else f"no answer within {self.settings.timeout:g}s"
                    )
                    errors.append(said if len(self.servers) == 1 else f"{self.address}: {said}")
                    self._move_on(server)
                    cause: BaseException = exc
            else:
                self._last_error = "; ".join(errors)
                self._retry_at = loop.time() + self._backoff.next()
                where = self.address if len(self.servers) == 1 else "any of its servers"
                raise StoreUnavailable(
                    f"cannot reach RethinkDB at {where}: {self._last_error}"
                ) from cause
            if self.closed:  # closed while connecting
                self._close_later(conn)
                raise StoreUnavailable("the RethinkDB store is closed")
            self._backoff.reset()
            self._retry_at = 0.0
            old, self._slots[index] = self._slots[index], conn
            self._slot_server[index] = server
            if old is not None:
                self._close_later(old)
            return conn

    def _tend_home(self) -> None:
        """Away from home: start a try to return when one is due. Close the retired
        connections that have become idle."""
        for conn in tuple(self._retired):
            if _idle(conn):
                self._retired.remove(conn)
                self._close_later(conn)
        if self._current == 0 or self._homing is not None or time.monotonic() < self._home_at:
            return
        self._home_at = time.monotonic() + self._home_check
        self._homing = asyncio.ensure_future(self._go_home())

        def done(task: asyncio.Future[None]) -> None:
            self._homing = None
            consume(task)

        self._homing.add_done_callback(done)

    async def _go_home(self) -> None:
        """Connect to the home server; if every table of the database is ready for writes
        from there, new connections go home and the others are retired."""
        timeout = self.settings.timeout
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect(0)
        except (ReqlError, OSError, TimeoutError):
            return
        try:
            ready = r.db(self.settings.db).wait(wait_for="ready_for_writes", timeout=timeout)
            async with asyncio.timeout(timeout + 1):
                await ready.run(conn)
        except (ReqlError, OSError, TimeoutError):
            self._close_later(conn)
            return
        if self.closed or self._current == 0:
            self._close_later(conn)
            return
        away, self._current = self.address, 0
        log.info(
            "RethinkDB at %s is back; connecting to it instead of %s", self.address, away,
            extra={"action": "rethinkdb_home"},
        )  # fmt: skip
        for index, slot in enumerate(self._slots):
            if slot is not None and self._slot_server[index] != 0:
                self._slots[index] = None
                self._retired.append(slot)
        for index, slot in enumerate(self._slots):
            if slot is None:
                self._slots[index], self._slot_server[index] = conn, 0
                break
        else:
            self._close_later(conn)

    async def changes(
        self, cursor: Any, conn: Any, *, running: Callable[[], bool] = lambda: True
    ) -> AsyncGenerator[Any, None]:
        """The changes a changefeed ``cursor`` (on ``conn``) delivers, while ``running()``.
        After FEED_HEARTBEAT seconds of silence the connection is pinged (:meth:`ping`),
        so that a dead one ends the feed with its error instead of leaving it waiting.
        Use it under :func:`contextlib.aclosing`: the read under way is then cancelled
        when the caller stops. Raises what the cursor and the ping raise.

        The changes of a batch already received are taken straight from the cursor
        (``next(wait=False)``); only a wait for the next batch is a task of its own (with
        the heartbeat's timeout), so a burst of changes costs no task per change."""
        pending: asyncio.Future[Any] | None = None
        try:
            while running():
                if pending is None:
                    try:
                        change = await cursor.next(wait=False)
                    except ReqlTimeoutError:  # none received yet: wait for the next batch
                        pending = asyncio.ensure_future(cursor.next())
                    else:
                        yield change
                        continue
                done, _ = await asyncio.wait({pending}, timeout=FEED_HEARTBEAT)
                if not done:  # quiet: is the connection still there?
                    await self.ping(conn)
                    continue
                change, pending = pending.result(), None
                yield change
        finally:
            if pending is not None:
                pending.cancel()
                pending.add_done_callback(consume)

    async def ping(self, conn: Any) -> None:
        """Check that ``conn`` still answers (a query on it), one check for every feed on
        it: a ping under way, or one sent less than FEED_HEARTBEAT / 2 seconds ago and
        answered, serves them all (so idle feeds cost the server a ping per connection,
        not per feed). Raises what :meth:`run` raises."""
        now = asyncio.get_running_loop().time()
        last = self._pings.get(conn)
        if last is not None:
            sent, answer = last
            answered = answer.done() and not answer.cancelled() and answer.exception() is None
            if not answer.done() or (answered and now - sent < FEED_HEARTBEAT / 2):
                await asyncio.shield(answer)
                return
        answer = asyncio.ensure_future(self.run(r.expr(1), conn=conn))
        answer.add_done_callback(consume)
        self._pings[conn] = (now, answer)
        await asyncio.shield(answer)

    async def run(self, query: RqlQuery, *, timeout: float | None = None, conn: Any = None) -> Any:
        """Run ``query``; its result (``coerce_to("array")`` reads as lists, feeds as cursors).

        Raises StoreUnavailable for a lost connection, an unavailable table, a refused query
        or no answer within ``timeout`` (default ``settings.timeout``) seconds; its
        subclasses :class:`Missing` ("Table `db.t` does not exist.", also for a database)
        and :class:`Exists` ("Table/Database/Index `x` already exists ...") and
        :class:`Ambiguous` ("Database `x` is ambiguous ...") let callers tell those
        apart, and :class:`KeyRefused` a key the server cannot hold (a NUL in it, over 127
        bytes), and :class:`MissingIndex` an index the table does not have ("Index `x`
        was not found on table ..."; one still building is plain StoreUnavailable).
        """
        timeout = self.settings.timeout if timeout is None else timeout
        if conn is None:
            conn = await self.get()
        try:
            task = asyncio.ensure_future(query.run(conn))
        except ReqlDriverError as exc:  # the connection closed under us
            self.discard(conn)
            raise StoreUnavailable(f"lost RethinkDB at {self.address}: {message(exc)}") from exc
        task.add_done_callback(consume)
        # asyncio.wait, not wait_for: the query task is never cancelled (cancelling the
        # driver's wait for an answer makes it close the whole connection when the answer
        # comes), and a cancellation of the caller is never swallowed.
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            self.discard(conn)
            raise StoreUnavailable(
                f"RethinkDB at {self.address} did not answer within {timeout:g}s"
            )
        try:
            return task.result()
        except (ReqlDriverError, OSError) as exc:  # the connection broke (timeouts too)
            self.discard(conn)
            raise StoreUnavailable(f"lost RethinkDB at {self.address}: {message(exc)}") from exc
        except ReqlError as exc:
            text = message(exc)
            if _MISSING.match(text):
                raise Missing(text) from exc
            if _EXISTS.match(text):
                raise Exists(text) from exc
            if _AMBIGUOUS.match(text):
                raise Ambiguous(text) from exc
            if isinstance(exc, ReqlQueryLogicError) and _BAD_KEY.match(text):
                raise KeyRefused(text) from exc
            if not isinstance(exc, ReqlAvailabilityError):
                # A query the server cannot run at all is a bug of ours: log it whole.
                # An unavailable replica (a restart, a lost node) is an outage, which the
                # caller reports in one line; the query printout would only flood the log.
                log.error("RethinkDB refused a query: %s", exc)
            unavailable = MissingIndex if _MISSING_INDEX.search(text) else StoreUnavailable
            raise unavailable(f"RethinkDB cannot serve the request: {text}") from exc

    def discard(self, conn: Any) -> None:
        """Close ``conn`` (it stopped answering, or broke) so the next use of its slot
        reconnects, to the next server if ``conn`` was on the one in use.

        Queries and feeds still running on it fail at once.
        """
        for index, slot in enumerate(self._slots):
            if slot is conn:
                self._slots[index] = None
                self._move_on(self._slot_server[index])
        if conn in self._retired:
            self._retired.remove(conn)
        self._close_later(conn)

    def _close_later(self, conn: Any) -> None:
        task = asyncio.ensure_future(self._close(conn))
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def _close(self, conn: Any) -> None:
        # The driver's reader task ends with the socket's error (a reset by a server that
        # died) and, when closing fails on that same error, nobody awaits it: retrieve
        # its outcome so asyncio does not log it as "never retrieved" with a traceback.
        reader = getattr(getattr(conn, "_instance", None), "_reader_task", None)
        if isinstance(reader, asyncio.Future):
            reader.add_done_callback(consume)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            async with asyncio.timeout(2.0):
                await conn.close(noreply_wait=False)

    async def close(self) -> None:
        """Close every connection."""
        self.closed = True
        if self._homing is not None:
            self._homing.cancel()
        for index, conn in enumerate(self._slots):
            self._slots[index] = None
            if conn is not None:
                self._close_later(conn)
        retired, self._retired = self._retired, []
        for conn in retired:
            self._close_later(conn)
        if self._closers:
            await asyncio.gather(*tuple(self._closers), return_exceptions=True)


def _idle(conn: Any) -> bool:
    """No query waits for an answer on ``conn`` and no cursor (a changefeed) is open on it
    (the driver's own bookkeeping; a closed connection is idle)."""
    instance = getattr(conn, "_instance", None)
    if instance is None or not conn.is_open():
        return True
    return not getattr(instance, "_user_queries", None) and not getattr(
        instance, "_cursor_cache", None
    )


__all__ = [
    "FEED_HEARTBEAT",
    "HOME_CHECK",
    "Ambiguous",
    "Exists",
    "KeyRefused",
    "Missing",
    "MissingIndex",
    "Pool",
    "consume",
    "first_error",
    "message",
]
