"""The line of long-poll takers of one process waiting for jobs, per queue.

A take that found nothing stands in the line of each queue it takes from
(:meth:`WaitLine.wait`) until the hub says a job became pending in one of them, a put
hands it jobs, or its time is up. A put whose store can claim in the same write as its
insert takes the longest-waiting taker of its queue off the line (:meth:`WaitLine.choose`)
and hands it what it claimed (:meth:`Waiter.hand`); a taker of several queues is chosen
by one put at most. Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence

from tqueues.jobs import Job


@dataclasses.dataclass(eq=False)
class Waiter:
    """A long-poll taker waiting for jobs: a put hands jobs claimed for it to ``jobs``."""

    count: int
    worker: str | None
    jobs: asyncio.Future[list[Job]]
    chosen: bool = False  #: a put took it off the line and is claiming for it

    def hand(self, jobs: list[Job]) -> bool:
        """Give ``jobs`` to the taker (an empty list wakes it to look for itself); False
        when it went away."""
        if self.jobs.done():
            return False
        self.jobs.set_result(jobs)
        return True


class WaitLine:
    """The waiting takers of every queue, oldest first. ``give_back`` releases jobs a
    taker got but will not run (it was cancelled just after they were handed over);
    ``counters`` (per queue) count ``woken``: takers woken to look again because a job
    of the queue became pending."""

    def __init__(
        self,
        give_back: Callable[[Sequence[Job]], None],
        counters: Mapping[str, collections.Counter[str]],
    ) -> None:
        self._give_back = give_back
        self._counters = counters
        self._line: dict[str, collections.deque[Waiter]] = collections.defaultdict(
            collections.deque
        )

    def __getitem__(self, queue: str) -> collections.deque[Waiter]:
        """The takers of ``queue`` in line (for inspection)."""
        return self._line[queue]

    def choose(self, queue: str) -> Waiter | None:
        """The longest-waiting taker of ``queue`` still waiting and not chosen by another
        put (it may wait on other queues too), taken off the line."""
        waiters = self._line.get(queue)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.jobs.done() and not waiter.chosen:
                waiter.chosen = True
                return waiter
        return None

    async def wait(
        self,
        queues: Sequence[str],
        count: int,
        worker: str | None,
        readies: Sequence[asyncio.Event],
        timeout: float,
    ) -> list[Job]:
        """Wait up to ``timeout`` seconds for a put to one of ``queues`` to hand over jobs
        (those jobs) or for one of ``readies`` (an empty list: look again); a cancelled
        caller gives back what it got."""
        loop = asyncio.get_running_loop()
        jobs: asyncio.Future[list[Job]] = loop.create_future()
        waiter = Waiter(count, worker, jobs)
        for queue in queues:
            self._line[queue].append(waiter)

        def look_again(queue: str) -> None:
            # A job became pending: look for it. Unless a put is claiming for this taker:
            # its answer, not a wake-up, ends the wait (giving up now would have it claim
            # for nobody and release the jobs again).
            if not jobs.done() and not waiter.chosen:
                jobs.set_result([])
                self._counters[queue]["woken"] += 1

        def time_up() -> None:
            if not jobs.done():
                jobs.set_result([])  # a put claiming for it now gives its jobs back

        # One future ends the wait, whoever settles it: the put's hand-over wakes this
        # taker at once, with no waiting on several things in between.
        wakers = [asyncio.ensure_future(ready.wait()) for ready in readies]
        wake_ups = [lambda _, queue=queue: look_again(queue) for queue in queues]
        for woken, wake_up in zip(wakers, wake_ups, strict=True):
            woken.add_done_callback(wake_up)
        timer = loop.call_later(timeout, time_up)
        try:
            return await jobs
        except asyncio.CancelledError:
            if jobs.done() and not jobs.cancelled():
                self._give_back(jobs.result())
            raise
        finally:
            timer.cancel()
            for woken, wake_up in zip(wakers, wake_ups, strict=True):
                woken.remove_done_callback(wake_up)
                woken.cancel()
            if not jobs.done():
                jobs.cancel()  # a put still claiming for it gives its jobs back
            for queue in queues:
                with contextlib.suppress(ValueError):
                    self._line[queue].remove(waiter)
