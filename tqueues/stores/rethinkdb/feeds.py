"""The changefeeds: one per queue per process, fanned out to the store's hub.

Every change of a queue table, this process's own writes included, reaches
:class:`~tqueues.stores.hub.ChangeHub` through the table's feed, so the RethinkDB store
publishes nothing itself. A feed that breaks is reopened with backoff; a feed whose table
is gone (the queue was dropped) stops.

What the server sends (RethinkDB 2.4, ``changes`` docs and ``changefeed.cc``): with
``include_types`` each change is ``{"type", "old_val", "new_val"}``; ``squash`` is false
(the default), so every write arrives, in order per document. A dropped table ends the
feed with an error ("Changefeed aborted (table unavailable)."), after which reopening
finds the table missing; a lost connection ends it with the driver's "Connection is
closed." (a ReqlRuntimeError from the cursor). When the server's buffer for a slow
reader overflows (``changefeed_queue_size``, 100,000) it drops the oldest changes and
sends ``{"error": "Changefeed cache over array size limit, skipped N elements."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from rethinkdb.errors import ReqlCursorEmpty, ReqlError

from tqueues.errors import QueueNotFound, StoreUnavailable
from tqueues.jobs import ChangeEvent, JobStatus
from tqueues.lifecycle import put_of_handed
from tqueues.retry import Backoff, raise_if_cancelling
from tqueues.stores.hub import ChangeHub
from tqueues.stores.rethinkdb.documents import change_kind, doc_to_job
from tqueues.stores.rethinkdb.head import Heads
from tqueues.stores.rethinkdb.pool import Pool, message

log = logging.getLogger("tqueues.stores.rethinkdb")


RunOnQueue = Callable[..., Awaitable[Any]]


class Feed:
    """The changefeed of one queue: its task and whether it is open."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.up = asyncio.Event()  #: set while the feed is open.
        self.tried = asyncio.Event()  #: set once the last attempt asked for has ended.
        #: set to cut the wait before the next attempt short (someone waits for the feed)
        self.wake = asyncio.Event()
        self.error = ""  #: why it is down.


class Feeds:
    """The feeds of one store. ``run_on_queue(queue, query, conn=...)`` runs a query on a
    queue's table (a missing table raising QueueNotFound); ``table(queue)`` is the table."""

    def __init__(
        self,
        *,
        pool: Pool,
        hub: ChangeHub,
        table: Callable[[str], Any],
        run_on_queue: RunOnQueue,
        timeout: float,
        heads: Heads,
    ) -> None:
        self.pool, self.hub, self.table = pool, hub, table
        #: the pending heads, each alive while its queue's feed is up (see head.py)
        self.heads = heads
        self.run_on_queue, self.timeout = run_on_queue, timeout
        self.closed = False
        self._feeds: dict[str, Feed] = {}
        #: told the queue each time its feed opens (changes made while it was down were
        #: not heard of: the store reads what it must, such as the earliest due time)
        self.on_open: Callable[[str], object] | None = None

    async def watch(self, queue: str) -> None:
        """Make sure the queue's changefeed runs; return once it is open. A feed that is
        down and waiting out its backoff is tried again at once (someone needs it now: a
        server that failed over serves again within seconds), and this waits for that try.

        Raises StoreUnavailable when the feed cannot be opened within the timeout (it keeps
        retrying in the background, with backoff).
        """
        feed = self.follow(queue)
        if feed.up.is_set():
            return
        if not feed.wake.is_set() and feed.tried.is_set():
            feed.tried.clear()  # the next attempt's end is what this waits for
            feed.wake.set()
        if not feed.tried.is_set():
            tried = asyncio.ensure_future(feed.tried.wait())
            try:
                await asyncio.wait({tried}, timeout=self.timeout)
            finally:
                tried.cancel()
        if not feed.up.is_set():
            raise StoreUnavailable(
                f"the change feed of queue {queue!r} is down: {feed.error or 'opening'}"
            )

    def follow(self, queue: str) -> Feed:
        """Make sure the queue's changefeed runs (started in the background if it was not:
        no wait for it to open); the feed. Raises StoreUnavailable once closed."""
        if self.closed:
            raise StoreUnavailable("the RethinkDB store is not open")
        feed = self._feeds.get(queue)
        if feed is None or feed.task is None or feed.task.done():
            feed = self._feeds[queue] = Feed()
            feed.task = asyncio.create_task(self._follow(queue, feed), name=f"feed:{queue}")
        return feed

    def stop(self, queue: str) -> None:
        """Stop following ``queue`` (it is being dropped)."""
        feed = self._feeds.pop(queue, None)
        self.heads.forget(queue)
        if feed is not None and feed.task is not None:
            feed.task.cancel()

    async def close(self) -> None:
        """Stop every feed and wait for them to end; idempotent."""
        self.closed = True
        feeds, self._feeds = self._feeds, {}
        tasks = [feed.task for feed in feeds.values() if feed.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, queue: str, feed: Feed) -> None:
        """Run the queue's changefeed until cancelled, reopening it with backoff when it
        breaks; stop when the queue no longer exists."""
        backoff = Backoff()
        while not self.closed:
            gone = False
            try:
                await self._follow_once(queue, feed, backoff)
            except asyncio.CancelledError:
                raise
            except QueueNotFound as exc:
                feed.error, gone = exc.message, True
            except (ReqlError, StoreUnavailable, OSError, TimeoutError) as exc:
                feed.error = exc.message if isinstance(exc, StoreUnavailable) else message(exc)
                if feed.up.is_set():
                    log.warning("change feed of queue %r broke: %s", queue, feed.error)
                    self.hub.changes_missed(queue, f"its change feed broke: {feed.error}")
            finally:
                feed.up.clear()
                feed.tried.set()
            if gone:
                if self._feeds.get(queue) is feed:
                    del self._feeds[queue]
                return
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):  # the backoff, or until woken
                async with asyncio.timeout(backoff.next()):
                    await feed.wake.wait()
            feed.wake.clear()

    async def _follow_once(self, queue: str, feed: Feed, backoff: Backoff) -> None:
        """Open the feed, announce it, and deliver its changes until it breaks."""
        conn = await self.pool.get()
        cursor = await self.run_on_queue(
            queue, self.table(queue).changes(include_types=True, squash=False), conn=conn
        )
        self.heads.opened(queue)
        try:
            feed.error = ""
            feed.up.set()
            feed.tried.set()
            backoff.reset()
            # Whatever changed while the feed was down is found by the index reads of claims.
            self.hub.notify_ready(queue)
            if self.on_open is not None:
                self.on_open(queue)
            changes = self.pool.changes(cursor, conn, running=lambda: not self.closed)
            async with contextlib.aclosing(changes):
                async for change in changes:
                    self.deliver(queue, change)
        except ReqlCursorEmpty:
            return
        finally:
            self.heads.forget(queue)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await cursor.close()

    def deliver(self, queue: str, change: Mapping[str, Any]) -> None:
        """Turn one changefeed message into a ChangeEvent on the hub.

        A job inserted already claimed (a put handed to a waiting taker) is reported as
        its "put" then "taken", as any other job. A deletion is reported as "deleted",
        whoever made it (an operator's delete, the reaper's ttl or retention purge, a
        truncate). The server's notice that it dropped changes (its buffer overflowed) is
        logged and ends the queue's subscriptions with ChangesMissed (WebSocket clients
        reconnect for a new snapshot) and wakes its takers, which read the index; so does
        a feed that breaks.
        """
        if "error" in change:
            log.warning("change feed of queue %r: %s", queue, change["error"])
            self.heads.reset(queue)
            self.hub.changes_missed(queue, str(change["error"]))
            return
        if change.get("type") not in (None, "add", "change", "remove"):
            return  # "state", "initial", "uninitial": not changes
        try:
            old = doc_to_job(change["old_val"]) if change.get("old_val") else None
            new = doc_to_job(change["new_val"]) if change.get("new_val") else None
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("queue %r holds a document that is not a job: %s", queue, exc)
            return
        self.heads.apply(queue, old, new)
        kind = change_kind(old, new)
        job = new if new is not None else old.evolve(event=kind) if old is not None else None
        if job is None:
            return
        if old is None and kind == "taken" and self.hub.subscriber_count(queue):
            # inserted already claimed (handed to a waiting taker): its put first, waking
            # nobody, as the embedded store publishes such a job
            put = put_of_handed(job)
            self.hub.publish(ChangeEvent("put", queue, put, None), wake=False)
            self.hub.publish(ChangeEvent(kind, queue, job, JobStatus.PENDING))
            return
        self.hub.publish(ChangeEvent(kind, queue, job, old.status if old else None))


__all__ = ["Feed", "Feeds"]
