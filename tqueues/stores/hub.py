"""In-process fan-out of job changes: one publisher (the store), many subscribers.

Every store publishes each change it makes (or, for RethinkDB, each change its one
changefeed per queue reports) here; long-poll takes wait on :meth:`ChangeHub.ready_event`
and WebSocket clients read a :class:`Subscription`. Everything here runs on the event
loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
from types import TracebackType

from tqueues.errors import TqueuesError
from tqueues.jobs import ChangeEvent, Job, JobStatus


class ChangesMissed(TqueuesError):
    """Changes of the queue may not have reached the subscriber, which was ended: read the
    queue again (a WebSocket client reconnects and gets a new snapshot)."""

    status = 503
    code = "changes_missed"


class SubscriberTooSlow(ChangesMissed):
    """The subscriber fell too far behind the change stream and was dropped."""

    code = "subscriber_too_slow"


class Subscription:
    """The changes of one queue, in order, for one subscriber.

    Use as ``with hub.subscribe(queue) as sub: async for event in sub: ...``.
    Holds at most ``maxsize`` undelivered events; past that the subscription is closed and
    iteration raises :class:`SubscriberTooSlow`, so a stuck client cannot grow memory.
    """

    def __init__(self, hub: ChangeHub, queue: str, maxsize: int) -> None:
        self._hub = hub
        self.queue = queue
        self._events: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self.overflowed = False
        self._ended: ChangesMissed | None = None

    def _offer(self, event: ChangeEvent) -> None:
        if self._ended is not None:
            return
        if self._events.qsize() >= self._maxsize:
            self.overflowed = True
            self._end(
                SubscriberTooSlow(
                    f"more than {self._maxsize} changes of queue {self.queue!r} were not read "
                    "in time"
                )
            )
            return
        self._events.put_nowait(event)

    def _end(self, error: ChangesMissed) -> None:
        """Deliver what is queued, then raise ``error`` from iteration."""
        if self._ended is None:
            self._ended = error
            self._events.put_nowait(None)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving events; idempotent."""
        self._hub._subscribers[self.queue].discard(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        event = await self._events.get()
        if event is None:
            assert self._ended is not None
            raise self._ended
        return event


class ChangeHub:
    """Fans job changes out to subscribers and wakes long-poll takers of a queue."""

    def __init__(self, *, subscriber_buffer: int = 10_000) -> None:
        self._subscribers: dict[str, set[Subscription]] = collections.defaultdict(set)
        self._ready: dict[str, asyncio.Event] = {}
        self._buffer = subscriber_buffer

    def publish(self, event: ChangeEvent) -> None:
        """Deliver ``event`` to the queue's subscribers; wake takers if a job became pending."""
        for subscription in tuple(self._subscribers.get(event.queue, ())):
            subscription._offer(event)
        if event.job.status is JobStatus.PENDING:
            self.notify_ready(event.queue)

    def publish_job(self, job: Job, old_status: JobStatus | None) -> None:
        """:meth:`publish` the change that made ``job`` (its ``event``), the event built
        only when the queue has subscribers (most changes have none to tell)."""
        if self._subscribers.get(job.queue):
            self.publish(ChangeEvent(job.event, job.queue, job, old_status))
        elif job.status is JobStatus.PENDING:
            self.notify_ready(job.queue)

    def changes_missed(self, queue: str, reason: str) -> None:
        """Changes of ``queue`` may have happened unseen (a change feed broke or dropped
        changes): end every subscription of the queue with :class:`ChangesMissed` (after
        what it already holds), and wake its takers, which read the store itself."""
        for subscription in tuple(self._subscribers.get(queue, ())):
            subscription._end(
                ChangesMissed(f"changes of queue {queue!r} may have been missed: {reason}")
            )
        self.notify_ready(queue)

    def notify_ready(self, queue: str) -> None:
        """Wake everyone waiting for a pending job in ``queue``."""
        event = self._ready.pop(queue, None)
        if event is not None:
            event.set()

    def ready_event(self, queue: str) -> asyncio.Event:
        """The event set when a job of ``queue`` next becomes pending.

        Take it *before* looking for a job, then wait on it: a job that arrives in between
        has already set it, so no wake-up is lost.
        """
        event = self._ready.get(queue)
        if event is None:
            event = self._ready[queue] = asyncio.Event()
        return event

    def subscribe(self, queue: str) -> Subscription:
        """A new subscription to the changes of ``queue``, starting now."""
        subscription = Subscription(self, queue, self._buffer)
        self._subscribers[queue].add(subscription)
        return subscription

    def subscriber_count(self, queue: str | None = None) -> int:
        """How many subscriptions are open (for one queue, or in all)."""
        if queue is not None:
            return len(self._subscribers.get(queue, ()))
        return sum(len(s) for s in self._subscribers.values())
