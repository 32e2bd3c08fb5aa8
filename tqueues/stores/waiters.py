"""The line of long-poll takers of one process waiting for jobs, per queue.

A take that found nothing stands in the line of each queue it takes from
(:meth:`WaitLine.wait`) until a job it may claim becomes pending, a put hands it jobs, or
its time is up. A put whose store can claim in the same write as its insert takes the
longest-waiting taker of its queue off the line (:meth:`WaitLine.choose`) and hands it
what it claimed (:meth:`Waiter.hand`); a taker of several queues is chosen by one put at
most. Any other job that becomes pending (a batch put, a release, a retry, an expired
lease, a job another process put) wakes *one* taker, the longest-waiting, to look for it
(:meth:`WaitLine.wake`, which the store's hub calls): a put of n jobs wakes at most n
takers, whatever the length of the line; only changes that may have gone unseen (a change
feed that broke) wake them all.

Each line is an insertion-ordered mapping, so a taker joins, is chosen or woken, and
leaves (its time up, its client gone) in O(1). A taker that was woken but found nothing
(another taker got there first) goes back to the head of the line if it waited longer
than the taker there, else to its end. Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

from tqueues.jobs import JobRecord


@dataclasses.dataclass(eq=False)
class Waiter:
    """A long-poll taker waiting for jobs: a put hands jobs claimed for it to ``jobs``."""

    count: int
    worker: str | None
    jobs: asyncio.Future[list[JobRecord]]
    ticket: int = 0  #: when its take first waited (smaller: earlier), kept while it waits on
    chosen: bool = False  #: a put took it off the line and is claiming for it
    woken_by: str | None = None  #: the queue whose pending job woke it to look again
    #: it looks for jobs nobody was woken for (the safety net's poll, or the wake-up of a
    #: taker that found some that way): should it find any, it wakes the next taker
    searching: bool = False

    def hand(self, jobs: list[JobRecord]) -> bool:
        """Give ``jobs`` to the taker (an empty list wakes it to look for itself); False
        when it went away."""
        if self.jobs.done():
            return False
        self.jobs.set_result(jobs)
        return True


#: The takers of one queue in line, oldest first (the values mean nothing).
Line = collections.OrderedDict[Waiter, None]


class Waited(NamedTuple):
    """How a :meth:`WaitLine.wait` ended."""

    jobs: list[JobRecord]  #: what a put handed over; empty: look again (or the time is up)
    #: the look is a search (see :attr:`Waiter.searching`): if it finds jobs, call
    #: :meth:`WaitLine.wake` with ``search=True`` for the queue they came from
    searching: bool = False


class WaitLine:
    """The waiting takers of every queue, oldest first. ``give_back`` releases jobs a
    taker got but will not run (it was cancelled just after they were handed over);
    ``counters`` (per queue) count ``woken``, the takers woken to look for a job of the
    queue that became pending (at most one per job), and ``woken_to_search``, those
    woken to look for jobs nobody was told of (changes that went unseen, or more of the
    jobs a search found)."""

    def __init__(
        self,
        give_back: Callable[[Sequence[JobRecord]], None],
        counters: Mapping[str, collections.Counter[str]],
    ) -> None:
        self._give_back = give_back
        self._counters = counters
        self._line: dict[str, Line] = collections.defaultdict(collections.OrderedDict)
        #: wake-ups of each queue so far (whether anyone was in line or not): see signals
        self._signals: collections.Counter[str] = collections.Counter()
        self._tickets = itertools.count(1)
        self._quiet: set[str] = set()  #: queues whose wake-ups wake nobody (see quiet)

    def __getitem__(self, queue: str) -> Line:
        """The takers of ``queue`` in line (for inspection)."""
        return self._line[queue]

    def ticket(self) -> int:
        """A new taker's place in time: pass it to every :meth:`wait` of its take."""
        return next(self._tickets)

    def signals(self, queues: Sequence[str]) -> tuple[int, ...]:
        """How many wake-ups ``queues`` have had so far. Take it *before* looking for a
        job and pass it to :meth:`wait`: a job that became pending in between makes the
        wait end at once, so no wake-up is lost."""
        return tuple(self._signals[queue] for queue in queues)

    def _first(self, queue: str) -> Waiter | None:
        """The longest-waiting taker of ``queue`` that still waits and that no put has
        chosen, taken off the queue's line (with whoever left the line before it)."""
        line = self._line.get(queue)
        while line:
            waiter, _ = line.popitem(last=False)
            if not waiter.jobs.done() and not waiter.chosen:
                return waiter
        return None

    def choose(self, queue: str) -> Waiter | None:
        """The longest-waiting taker of ``queue`` still waiting and not chosen by another
        put (it may wait on other queues too), taken off the line; a put claims for it."""
        waiter = self._first(queue)
        if waiter is not None:
            waiter.chosen = True
        return waiter

    def wake(self, queue: str, jobs: int | None = 1, *, search: bool = False) -> int:
        """``jobs`` jobs of ``queue`` became pending (None: any number may have, unseen):
        wake as many of its longest-waiting takers to look for them (None: every one);
        how many were woken. A taker a put is claiming for is not woken. ``search``: the
        takers look for jobs nobody was woken for (see :attr:`Waiter.searching`)."""
        if queue in self._quiet:
            return 0
        self._signals[queue] += 1
        woken = 0
        while jobs is None or woken < jobs:
            waiter = self._first(queue)
            if waiter is None:
                break
            waiter.woken_by = queue
            waiter.searching = search
            waiter.jobs.set_result([])
            woken += 1
        if woken:
            counter = "woken_to_search" if search or jobs is None else "woken"
            self._counters[queue][counter] += woken
        return woken

    @contextlib.contextmanager
    def quiet(self, queue: str) -> Iterator[None]:
        """While inside (on this thread, with no ``await`` in between), wake-ups of
        ``queue`` wake nobody: for a change that tells of a job pending that is not any
        more (the "put" of a job its put claimed for a waiting taker in the same write)."""
        self._quiet.add(queue)
        try:
            yield
        finally:
            self._quiet.discard(queue)

    def _heads(self, waiter: Waiter, queues: Sequence[str]) -> bool:
        """Whether ``waiter`` is the longest-waiting taker in line of one of ``queues``."""
        for queue in queues:
            line = self._line.get(queue)
            while line:
                head = next(iter(line))
                if head is waiter:
                    return True
                if not head.jobs.done() and not head.chosen:
                    break
                del line[head]  # it left (its wait ends on the loop's next turn)
        return False

    def _join(self, queue: str, waiter: Waiter) -> None:
        """Put ``waiter`` in the queue's line: at its head if it waited longer than the
        taker there (it is back from a look that found nothing), else at its end."""
        line = self._line[queue]
        head = next(iter(line), None)
        line[waiter] = None
        if head is not None and waiter.ticket < head.ticket:
            line.move_to_end(waiter, last=False)

    async def wait(
        self,
        queues: Sequence[str],
        count: int,
        worker: str | None,
        *,
        since: tuple[int, ...],
        timeout: float,
        ticket: int,
        poll: float,
    ) -> Waited:
        """Wait up to ``timeout`` seconds in the lines of ``queues`` (at the place of
        ``ticket``, see :meth:`ticket`) for a put to one of them to hand over jobs (those
        jobs) or for a wake-up (none: look again); at once if any of them had a wake-up
        since ``since`` (see :meth:`signals`). As a safety net, the longest-waiting taker
        of a line looks again every ``poll`` seconds (a search: see :class:`Waited`); the
        others stay in line, so what the net costs does not grow with the line. A
        cancelled caller gives back what it got, and passes a wake-up it got on to the
        next taker."""
        if self.signals(queues) != since:
            return Waited([])  # a job became pending while the caller looked: look again
        loop = asyncio.get_running_loop()
        jobs: asyncio.Future[list[JobRecord]] = loop.create_future()
        waiter = Waiter(count, worker, jobs, ticket)
        for queue in queues:
            self._join(queue, waiter)
        deadline = loop.time() + timeout

        def tick() -> None:
            if jobs.done():
                return
            if loop.time() >= deadline:
                jobs.set_result([])  # time up (a put claiming for it now gives its jobs back)
            elif self._heads(waiter, queues):
                waiter.searching = True
                jobs.set_result([])  # the safety net: look for jobs nobody was woken for
            else:
                timer[0] = loop.call_at(min(deadline, loop.time() + poll), tick)

        timer = [loop.call_at(min(deadline, loop.time() + poll), tick)]  # the one armed
        try:
            return Waited(await jobs, waiter.searching)
        except asyncio.CancelledError:
            self._went_away(waiter)
            raise
        finally:
            timer[0].cancel()
            if not jobs.done():
                jobs.cancel()  # a put still claiming for it gives its jobs back
            for queue in queues:
                line = self._line.get(queue)
                if line is not None:
                    line.pop(waiter, None)

    def _went_away(self, waiter: Waiter) -> None:
        """``waiter``'s caller was cancelled: give back what a put handed it, or pass the
        wake-up it got on to the next taker, who looks instead."""
        if waiter.jobs.done() and not waiter.jobs.cancelled():
            if got := waiter.jobs.result():
                self._give_back(got)
            elif waiter.woken_by is not None:
                self.wake(waiter.woken_by, search=waiter.searching)
