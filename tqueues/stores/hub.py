"""In-process fan-out of job changes: one publisher (the store), many subscribers.

Every store publishes each change it makes (or, for RethinkDB, each change its one
changefeed per queue reports) here; long-poll takes wait on :meth:`ChangeHub.ready_event`,
WebSocket clients read a :class:`FrameSubscription` (each change encoded once, as the bytes
every client of the queue is sent) and in-process readers a :class:`Subscription` (the
:class:`~tqueues.jobs.ChangeEvent` objects). Everything here runs on the event loop's
thread.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from types import TracebackType

from tqueues import codec
from tqueues.errors import TqueuesError
from tqueues.jobs import ChangeEvent, JobRecord, JobStatus


class ChangesMissed(TqueuesError):
    """Changes of the queue may not have reached the subscriber, which was ended: read the
    queue again (a WebSocket client reconnects and gets a new snapshot)."""

    status = 503
    code = "changes_missed"


class SubscriberTooSlow(ChangesMissed):
    """The subscriber fell too far behind the change stream and was dropped."""

    code = "subscriber_too_slow"


def encode_change(event: ChangeEvent) -> bytes:
    """``event`` as the WebSocket stream's message: compact UTF-8 JSON (a text frame's
    payload). Raises JSONEncodeError for a job JSON cannot hold (none the stores keep)."""
    return codec.dumps(event.to_dict())


class _Subscriber(abc.ABC):
    """What both kinds of subscription share: the queue, the end, leaving the hub."""

    def __init__(self, hub: ChangeHub, queue: str) -> None:
        self._hub = hub
        self.queue = queue
        self.overflowed = False  #: ended by :class:`SubscriberTooSlow`.
        self._ended: ChangesMissed | None = None

    @abc.abstractmethod
    def _end(self, error: ChangesMissed) -> None:
        """Deliver what is queued, then raise ``error`` from iteration."""

    def __enter__(self) -> _Subscriber:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop receiving changes; idempotent."""
        self._hub._subscribers[self.queue].discard(self)


class Subscription(_Subscriber):
    """The changes of one queue, in order, for one in-process subscriber, as
    :class:`~tqueues.jobs.ChangeEvent` objects.

    Use as ``with hub.subscribe(queue) as sub: async for event in sub: ...``.
    Holds at most ``maxsize`` undelivered events; past that the subscription is closed and
    iteration raises :class:`SubscriberTooSlow`, so a stuck reader cannot grow memory
    without bound (each event holds its job: WebSocket clients use
    :class:`FrameSubscription`, bounded in bytes).
    """

    def __init__(self, hub: ChangeHub, queue: str, maxsize: int) -> None:
        super().__init__(hub, queue)
        self._events: asyncio.Queue[ChangeEvent | None] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize

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
        if self._ended is None:
            self._ended = error
            self._events.put_nowait(None)

    def __enter__(self) -> Subscription:
        return self

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        event = await self._events.get()
        if event is None:
            assert self._ended is not None
            raise self._ended
        return event


class FrameSubscription(_Subscriber):
    """The changes of one queue, in order, for one WebSocket client: each change as the
    encoded message (:func:`encode_change`), the same ``bytes`` object for every client of
    the queue, held within a budget of ``max_bytes``.

    Use as ``with hub.subscribe_frames(queue, max_bytes) as sub: frame = await sub.get()``.
    The budget counts the frames waiting to be taken *and* the one :meth:`get` handed out
    last, until the next call (a client's sender asks for the next frame once the last is
    written, so a frame stuck in a full socket still counts). A change that does not fit
    ends the subscription at once: what it held is dropped (the client has missed a change
    and must read the queue again anyway), :attr:`overflowed` is set, :attr:`too_slow` is
    resolved (to wake a sender stuck writing to a client that does not read) and
    :meth:`get` raises :class:`SubscriberTooSlow`. A frame larger than the whole budget is
    taken when nothing else is held, so no change is too large to be sent on its own.

    Create it on the event loop's thread (:meth:`ChangeHub.subscribe_frames`).
    """

    def __init__(self, hub: ChangeHub, queue: str, max_bytes: int) -> None:
        super().__init__(hub, queue)
        self.max_bytes = max_bytes
        self._frames: collections.deque[bytes] = collections.deque()
        self._held = 0  #: bytes of the queued frames and of the frame handed out last.
        self._out = 0  #: bytes of the frame handed out last.
        self._waiter: asyncio.Future[None] | None = None
        #: Resolved (to None) when the subscription overflows; never raises.
        self.too_slow: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def held(self) -> int:
        """Bytes held for the subscriber: frames queued, and the one being written."""
        return self._held

    def _offer(self, frame: bytes) -> None:
        if self._ended is not None:
            return
        if self._held and self._held + len(frame) > self.max_bytes:
            self._frames.clear()
            self._held = self._out = 0
            self.overflowed = True
            self._end(
                SubscriberTooSlow(
                    f"more than {self.max_bytes} bytes of changes of queue {self.queue!r} "
                    "were not read in time"
                )
            )
            self.too_slow.set_result(None)
            return
        self._frames.append(frame)
        self._held += len(frame)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, error: ChangesMissed) -> None:
        if self._ended is None:
            self._ended = error
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def __enter__(self) -> FrameSubscription:
        return self

    async def get(self) -> bytes:
        """The next change's frame (the one handed out before no longer counts against the
        budget). Waits for one; raises :class:`ChangesMissed` (:class:`SubscriberTooSlow`
        on an overflow) once the subscription has ended and what it held is delivered."""
        self._held -= self._out
        self._out = 0
        while not self._frames:
            if self._ended is not None:
                raise self._ended
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        self._out = len(frame)
        return frame


class ChangeHub:
    """Fans job changes out to subscribers and wakes long-poll takers of a queue."""

    def __init__(self, *, subscriber_buffer: int = 10_000) -> None:
        self._subscribers: dict[str, set[_Subscriber]] = collections.defaultdict(set)
        self._ready: dict[str, asyncio.Event] = {}
        self._buffer = subscriber_buffer
        #: Told ``(queue, jobs)`` when ``jobs`` jobs of the queue became pending (None: any
        #: number may have, unseen), to wake that many long-poll takers (the store's line).
        self.on_pending: collections.abc.Callable[[str, int | None], object] | None = None
        #: Told ``(queue, ready_at)`` of each delayed job a change reports (epoch seconds),
        #: to time its promotion (the store's delay timers).
        self.on_delayed: collections.abc.Callable[[str, float], object] | None = None

    def publish(self, event: ChangeEvent, *, wake: bool = True) -> None:
        """Deliver ``event`` to the queue's subscribers; wake takers if a job became pending
        (unless ``wake`` is false: a job that was pending only on its way to a taker).

        The frame of :class:`FrameSubscription` subscribers is encoded once, here, for all.
        """
        subscribers = self._subscribers.get(event.queue)
        if subscribers:
            frame: bytes | None = None
            for subscriber in tuple(subscribers):
                if type(subscriber) is FrameSubscription:
                    if frame is None:
                        frame = encode_change(event)
                    subscriber._offer(frame)
                else:
                    assert isinstance(subscriber, Subscription)
                    subscriber._offer(event)
        if wake and event.job.status is JobStatus.PENDING:
            self.notify_ready(event.queue, 1)
        elif event.job.status is JobStatus.DELAYED and self.on_delayed is not None:
            self.on_delayed(event.queue, event.job.ready_at)

    def publish_job(self, job: JobRecord, old_status: JobStatus | None) -> None:
        """:meth:`publish` the change that made ``job`` (its ``event``), the event built
        only when the queue has subscribers (most changes have none to tell)."""
        if self._subscribers.get(job.queue):
            self.publish(ChangeEvent(job.event, job.queue, job, old_status))
        elif job.status is JobStatus.PENDING:
            self.notify_ready(job.queue, 1)

    def changes_missed(self, queue: str, reason: str) -> None:
        """Changes of ``queue`` may have happened unseen (a change feed broke or dropped
        changes): end every subscription of the queue with :class:`ChangesMissed` (after
        what it already holds), and wake its takers, which read the store itself."""
        for subscription in tuple(self._subscribers.get(queue, ())):
            subscription._end(
                ChangesMissed(f"changes of queue {queue!r} may have been missed: {reason}")
            )
        self.notify_ready(queue)

    def notify_ready(self, queue: str, jobs: int | None = None) -> None:
        """``jobs`` jobs of ``queue`` became pending (None: any number may have, e.g. while
        a change feed was down): wake as many long-poll takers (see :attr:`on_pending`;
        None: all of them), and everyone waiting on :meth:`ready_event`."""
        event = self._ready.pop(queue, None)
        if event is not None:
            event.set()
        if self.on_pending is not None:
            self.on_pending(queue, jobs)

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
        """A new subscription to the changes of ``queue`` as events, starting now."""
        subscription = Subscription(self, queue, self._buffer)
        self._subscribers[queue].add(subscription)
        return subscription

    def subscribe_frames(self, queue: str, max_bytes: int) -> FrameSubscription:
        """A new subscription to the changes of ``queue`` as encoded frames, starting now,
        holding at most ``max_bytes`` (bytes; see :class:`FrameSubscription`). Call it on
        the event loop's thread. Raises ValueError for a budget below 1."""
        if max_bytes < 1:
            raise ValueError(f"a subscription's budget must be at least 1 byte, not {max_bytes}")
        subscription = FrameSubscription(self, queue, max_bytes)
        self._subscribers[queue].add(subscription)
        return subscription

    def subscriber_count(self, queue: str | None = None) -> int:
        """How many subscriptions are open (for one queue, or in all)."""
        if queue is not None:
            return len(self._subscribers.get(queue, ()))
        return sum(len(s) for s in self._subscribers.values())
