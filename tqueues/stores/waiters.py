"""The line of long-poll takers of one process waiting for jobs, per queue.

A take that found nothing stands in line (:meth:`WaitLine.wait`) until the hub says a job
became pending, a put hands it jobs, or its time is up. A put whose store can claim in
the same write as its insert takes the longest-waiting taker off the line
(:meth:`WaitLine.choose`) and hands it what it claimed (:meth:`Waiter.hand`). Everything
here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
from collections.abc import Callable, Sequence

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
    taker got but will not run (it was cancelled just after they were handed over)."""

    def __init__(self, give_back: Callable[[Sequence[Job]], None]) -> None:
        self._give_back = give_back
        self._line: dict[str, collections.deque[Waiter]] = collections.defaultdict(
            collections.deque
        )

    def __getitem__(self, queue: str) -> collections.deque[Waiter]:
        """The takers of ``queue`` in line (for inspection)."""
        return self._line[queue]

    def choose(self, queue: str) -> Waiter | None:
        """The longest-waiting taker of ``queue`` still waiting, taken off the line."""
        waiters = self._line.get(queue)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.jobs.done():
                waiter.chosen = True
                return waiter
        return None

    async def wait(
        self, queue: str, count: int, worker: str | None, ready: asyncio.Event, timeout: float
    ) -> list[Job]:
        """Wait up to ``timeout`` seconds for a put to hand over jobs (those jobs) or for
        ``ready`` (an empty list: look again); a cancelled caller gives back what it got."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = Waiter(count, worker, loop.create_future())
        self._line[queue].append(waiter)
        woken = asyncio.ensure_future(ready.wait())
        try:
            await asyncio.wait((waiter.jobs, woken), timeout=timeout, return_when="FIRST_COMPLETED")
            if waiter.chosen and not waiter.jobs.done():
                # A put is claiming for this taker: its answer, not a wake-up, ends the wait
                # (giving up now would have it claim for nobody and release the jobs again).
                await asyncio.wait((waiter.jobs,), timeout=max(deadline - loop.time(), 0))
        except asyncio.CancelledError:
            if waiter.jobs.done() and not waiter.jobs.cancelled():
                self._give_back(waiter.jobs.result())
            raise
        finally:
            woken.cancel()
            if not waiter.jobs.done():
                waiter.jobs.cancel()  # a put still claiming for it gives its jobs back
            with contextlib.suppress(ValueError):
                self._line[queue].remove(waiter)
        return [] if waiter.jobs.cancelled() else waiter.jobs.result()
