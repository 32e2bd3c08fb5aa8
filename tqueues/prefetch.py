"""How many jobs a :class:`~tqueues.worker.Worker` holds, and the ones it holds ready.

:class:`Prefetch` is the worker's account of its jobs: those running their method, those
taken and waiting for a slot (ready to start the moment one frees), and those asked for
by requests still in flight. From it and two running averages (how long a job's method
runs, how long a take along a report takes) it says how many more jobs a take should ask
for. It does no I/O: the take loop (:mod:`tqueues.take_loop`) and the reporter
(:class:`~tqueues.reporting.Reporter`, through the worker) tell it what they asked for
and what came, and the worker's run loop which jobs are in their method.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Sequence
from typing import Any

from tqueues.limits import MAX_TAKE

#: Seconds a take is assumed to take (for the prefetch) until one has been measured.
ASSUMED_ROUND_TRIP = 0.005


def average(average: float | None, sample: float, weight: float = 0.2) -> float:
    """An exponentially weighted running average (the first sample starts it)."""
    return sample if average is None else average + weight * (sample - average)


def loop_time() -> float:
    """The running event loop's clock, in seconds."""
    return asyncio.get_running_loop().time()


class Prefetch:
    """The jobs of a worker of ``concurrency`` slots that holds at most ``prefetch`` taken
    jobs beyond its running ones (see :meth:`target`).

    Until :attr:`feeding` is set (by :meth:`Worker.run <tqueues.worker.Worker.run>`), a
    take asks for one job and a report for none: a worker iterated by hand holds only
    what it is given.
    """

    def __init__(self, concurrency: int, prefetch: int) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch  #: the most jobs held ready beyond the running ones.
        self.feeding = False  #: run() is on: takes ask for what keeps the worker busy.
        self.in_method: set[asyncio.Task[None]] = set()  #: run()'s jobs in their method.
        #: Jobs taken and not started: (document, loop time it arrived).
        self.ready: collections.deque[tuple[dict[str, Any], float]] = collections.deque()
        self.asking = 0  #: jobs asked for by requests in flight.
        self._arrived = asyncio.Event()  #: set whenever such a request ends.
        self._job_seconds: float | None = None  #: running average of a method's run time.
        self._round_trip: float | None = None  #: running average of a take along a report.
        self._along_since: float | None = None  #: when the report taking jobs along left.
        self._ran_dry = False  #: the last take got fewer jobs than it asked for.

    def target(self) -> int:
        """How many taken jobs are worth holding ready to start: enough to keep the slots
        busy for one round trip to the dispatcher (``concurrency * round trip / run
        time``, both running averages; the round trip taken as ASSUMED_ROUND_TRIP until
        measured, rounded to the nearest), at most ``prefetch``. Short jobs get the whole
        prefetch; jobs that outlast ``concurrency`` round trips get none, so that they do
        not wait in this worker while another is idle (a freed slot then waits one round
        trip for its next job). None until a job's run time is known: a worker that has
        not seen a job end holds no more jobs than it has slots."""
        if self._job_seconds is None:
            return 0
        round_trip = ASSUMED_ROUND_TRIP if self._round_trip is None else self._round_trip
        enough = self.concurrency * round_trip / max(self._job_seconds, 1e-6)
        return min(self.prefetch, math.floor(enough + 0.5))

    def wanted(self) -> int:
        """How many more jobs the worker can hold: ``concurrency`` plus the :meth:`target`,
        less those running their method, waiting to start, or asked for by a request in
        flight; at most MAX_TAKE (what one take may ask for)."""
        held = len(self.in_method) + len(self.ready) + self.asking
        return max(0, min(self.concurrency + self.target() - held, MAX_TAKE))

    def ran(self, seconds: float) -> None:
        """A job's method returned after ``seconds``."""
        self._job_seconds = average(self._job_seconds, seconds)

    # -- what requests ask for, and what they bring ----------------------------------------

    def ask_to_take(self) -> int:
        """How many jobs a take should ask for (at least one), counted as asked."""
        count = max(self.wanted(), 1) if self.feeding else 1
        self.asking += count
        return count

    def ask_along(self, *, stopping: bool) -> int:
        """How many jobs an outcome report should take along (counted as asked): none
        while ``stopping``, before :attr:`feeding`, or once a take came back short (the
        queue ran dry: a long-poll take waits for the next job, so that a job put
        meanwhile is handed straight to it)."""
        along = self.feeding and not stopping and not self._ran_dry
        count = self.wanted() if along else 0
        self.asking += count
        if count:
            self._along_since = loop_time()
        return count

    def taken_along(self, asked: int, docs: Sequence[dict[str, Any]]) -> None:
        """The report that asked for ``asked`` jobs ended with ``docs`` (maybe none); they
        all wait for a slot."""
        since, self._along_since = self._along_since, None
        if since is not None and docs:
            self._round_trip = average(self._round_trip, loop_time() - since)
        self.received(asked, len(docs), docs)

    def received(self, asked: int, got: int, ready: Sequence[dict[str, Any]]) -> None:
        """A request that asked for ``asked`` jobs ended with ``got``; ``ready`` of them
        wait for a slot (the rest start at once)."""
        self.asking -= asked
        if asked:
            self._ran_dry = got < asked
        now = loop_time()
        self.ready.extend((doc, now) for doc in ready)
        self._arrived.set()

    def next_arrival(self) -> Awaitable[bool]:
        """What ends when the next request in flight ends (with jobs or without)."""
        self._arrived.clear()
        return self._arrived.wait()

    def pop_ready(self) -> tuple[dict[str, Any], float] | None:
        """The job that has waited longest for a slot and the loop time it arrived, or
        None if none waits."""
        return self.ready.popleft() if self.ready else None

    def drain(self) -> list[dict[str, Any]]:
        """Every job waiting for a slot, in the order taken; none waits afterwards."""
        docs = [doc for doc, _ in self.ready]
        self.ready.clear()
        return docs


__all__ = ["ASSUMED_ROUND_TRIP", "Prefetch", "average", "loop_time"]
