"""A :class:`~tqueues.worker.Worker`'s take loop: the next job to run, however it comes.

:meth:`TakeLoop.next` hands out, in turn, the jobs held ready (:mod:`tqueues.prefetch`;
one that waited past a third of its ttr has its lease extended first), else waits for a
request in flight to bring some, else takes: a long-poll of the worker's queues, for as
many jobs as :class:`~tqueues.prefetch.Prefetch` says, over the take stream
(``/take/stream``) or over HTTP when the dispatcher has none. A dispatcher that cannot
be reached, or a queue that does not exist yet, is tried again with backoff (0.1 s to
5 s, with jitter). Every wait ends at once when the worker stops
(:class:`~tqueues.shutdown.Shutdown`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any

from tqueues.client import Client
from tqueues.client.stream import TakeStream
from tqueues.errors import NotFound, QueueNotFound
from tqueues.prefetch import Prefetch, loop_time
from tqueues.reporting import LOST, TRANSIENT
from tqueues.retry import Backoff
from tqueues.running import ttr_of
from tqueues.shutdown import Shutdown

log = logging.getLogger("tqueues.worker")


class TakeLoop:
    """Takes the jobs of ``queues`` through ``client`` for the worker ``worker_id``.

    ``wait`` is each long-poll's length in seconds (none with ``burst``: the loop ends
    once the queues are empty). Of several queues, each take asks for jobs of the first
    that has any, starting at the next queue in turn, or always at the first with
    ``strict_order``. Each job handed out is counted in ``counts`` as ``taken``.
    """

    def __init__(
        self,
        client: Client,
        queues: Sequence[str],
        *,
        prefetch: Prefetch,
        shutdown: Shutdown,
        counts: collections.Counter[str],
        worker_id: str,
        wait: float,
        burst: bool,
        strict_order: bool,
    ) -> None:
        self.client = client
        self.queues = tuple(queues)
        self.prefetch = prefetch
        self.shutdown = shutdown
        self.counts = counts
        self.worker_id = worker_id
        self.wait = wait
        self.burst = burst
        self.strict_order = strict_order
        #: The long-poll takes go over this WebSocket (one small frame each way, and the
        #: jobs a put hands over go out the moment they are claimed); None once the
        #: dispatcher turned out not to have it (an older one): then over HTTP.
        self.stream: TakeStream | None = client.take_stream()
        self._next_queue = 0

    async def next(self) -> dict[str, Any] | None:
        """The next job document, or None once stopping (or, in burst mode, when empty)."""
        backoff = Backoff()  # 0.1 s to 5 s, with jitter
        shutdown, prefetch = self.shutdown, self.prefetch
        while not shutdown.stopping:
            held = prefetch.pop_ready()
            if held is not None:
                doc, arrived = held
                if loop_time() - arrived > ttr_of(doc) / 3:
                    extended = await self._extend_lease(doc)
                    if extended is None:
                        continue
                    doc = extended
                self.counts["taken"] += 1
                return doc
            if prefetch.asking:  # a request in flight brings jobs, or ends empty: wait for it
                await shutdown.until_stopped(prefetch.next_arrival())
                continue
            try:
                doc = await shutdown.until_stopped(self._take_any())
            except (*TRANSIENT, QueueNotFound) as exc:
                # A queue that does not exist yet is waited for, like a dispatcher that is
                # not up yet: workers may start before whoever creates their queues.
                if self.burst and isinstance(exc, QueueNotFound):
                    return None
                pause = backoff.next()
                # One line a person reads: what failed (the client's message names the
                # URL and the reason in words) and when the next try is.
                log.warning(
                    "cannot take: %s; retrying in %.1f s",
                    exc.message,
                    pause,
                    extra={"action": "take_retry"},
                )
                await shutdown.until_stopped(asyncio.sleep(pause))
                continue
            backoff.reset()
            if doc is not None:
                self.counts["taken"] += 1
                return doc
            if self.burst:
                return None
        return None

    async def close(self) -> None:
        """Close the take stream, if open; idempotent."""
        if self.stream is not None:
            await self.stream.close()

    async def _extend_lease(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A taken job that waited more than a third of its ttr before it could start: its
        lease extended, or None if that is refused (the lease expired and the job is
        someone else's now)."""
        try:
            await self.client.update(doc["queue"], doc["id"], {}, lease=doc.get("lease"))
        except LOST as exc:
            log.warning(
                "job %s waited past its lease and was not started: %s",
                doc["id"],
                exc.message,
                extra={"action": "lease_lost"},
            )
            return None
        except TRANSIENT:
            pass  # the lease may still hold; at worst the job runs twice (at least once)
        return doc

    async def _take_any(self) -> dict[str, Any] | None:
        """One take (a long-poll unless in burst mode) of what keeps the worker busy; of
        several queues, from the first that has jobs, starting at the next one in turn.
        The jobs beyond the first wait for a slot among the prefetched."""
        wait = 0.0 if self.burst else self.wait
        count = self.prefetch.ask_to_take()
        docs: list[dict[str, Any]] = []
        try:
            order = self.queues
            if len(self.queues) > 1 and not self.strict_order:
                start = self._next_queue
                self._next_queue = (start + 1) % len(self.queues)
                order = self.queues[start:] + self.queues[:start]
            docs = await self._take_docs(order, count, wait)
        finally:
            self.prefetch.received(count, len(docs), docs[1:])
        return docs[0] if docs else None

    async def _take_docs(
        self, queues: Sequence[str], count: int, wait: float
    ) -> list[dict[str, Any]]:
        """One take of ``queues`` (in that order): on the take stream, or over HTTP when
        the dispatcher has none."""
        if self.stream is not None:
            try:
                return await self.stream.take(queues, count, wait=wait, worker=self.worker_id)
            except NotFound as exc:
                if isinstance(exc, QueueNotFound):
                    raise
                log.info(
                    "the dispatcher has no take stream; taking over HTTP",
                    extra={"action": "take_stream_missing"},
                )
                self.stream = None
        if len(queues) == 1:
            return await self.client.take_many(queues[0], count, wait=wait, worker=self.worker_id)
        return await self.client.take_any(queues, count, wait=wait, worker=self.worker_id)


__all__ = ["TakeLoop"]
