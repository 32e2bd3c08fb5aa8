"""Timers on the earliest due time of each queue: what makes delays exact.

A delayed job (put with a delay, retried after a backoff, released with a delay) becomes
takeable at its ``ready_at``. Each process keeps, per queue, one timer
(:meth:`asyncio.loop.call_at`) on the earliest due time it knows of: from its own writes,
and on RethinkDB from the changefeed it follows, so another dispatcher's delayed put arms
it too. When the timer fires, :class:`DueTimers` runs the store's action for the queue
(promote the jobs now due, by the same compare-and-set the reaper uses, so several
dispatchers firing at once change each job once), which answers the next due time, and
the timer is armed again on it. The reaper's sweep stays as the safety net (a due time
this process never heard of).

The same class ends pauses (:meth:`tqueues.stores.base.Store.pause`): there the action
wakes the queue's takers.

Times are epoch seconds (:func:`tqueues.clock.now`), turned into the loop's clock when a
timer is set. Everything here runs on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable

from tqueues import clock
from tqueues.errors import TqueuesError

log = logging.getLogger(__name__)

#: Seconds a timer fires after its due time: the loop's clock and the wall clock round
#: apart, and an action run a hair early finds nothing due.
SLACK = 0.001
#: An action: given the queue, do what is due and answer the next due time (None: none).
Action = Callable[[str], Awaitable[float | None]]


@dataclasses.dataclass(eq=False)
class _Timer:
    at: float  #: the due time it is set on (epoch seconds)
    handle: asyncio.TimerHandle | None = None
    #: the action under way, and the earliest time noted meanwhile (armed after it)
    running: asyncio.Task[None] | None = None
    noted: float | None = None


class DueTimers:
    """One timer per queue on the earliest due time :meth:`arm` was told of; ``action``
    runs when it comes (see the module's docstring). ``name`` names it in logs."""

    def __init__(self, action: Action, name: str) -> None:
        self._action = action
        self._name = name
        self._timers: dict[str, _Timer] = {}
        self._closed = False

    def arm(self, queue: str, at: float) -> None:
        """Make sure the action runs for ``queue`` at ``at`` (epoch seconds) or earlier:
        nothing to do when its timer is set on that time or before."""
        if self._closed:
            return
        timer = self._timers.get(queue)
        if timer is not None:
            if timer.running is not None:  # its answer may not cover ``at``: after it
                timer.noted = at if timer.noted is None else min(timer.noted, at)
                return
            if timer.at <= at:
                return
            if timer.handle is not None:
                timer.handle.cancel()
        loop = asyncio.get_running_loop()
        timer = self._timers[queue] = _Timer(at)
        delay = at - clock.now() + SLACK
        timer.handle = loop.call_at(loop.time() + delay, self._fire, queue)

    def due(self, queue: str) -> bool:
        """Whether the action of ``queue`` is under way, or its time has come."""
        timer = self._timers.get(queue)
        return timer is not None and (timer.running is not None or timer.at <= clock.now())

    async def settle(self, queues: Iterable[str]) -> bool:
        """For a take about to give up: run at once the action of each of ``queues``
        whose time has come, and wait for those under way to end. True if it waited for
        any (the caller looks again: a job may have become takeable)."""
        waited = False
        for queue in queues:
            timer = self._timers.get(queue)
            if timer is None or not self.due(queue):
                continue
            if timer.running is None:
                if timer.handle is not None:
                    timer.handle.cancel()
                self._fire(queue)
            if timer.running is not None:
                await asyncio.shield(timer.running)
                waited = True
        return waited

    def _fire(self, queue: str) -> None:
        timer = self._timers.get(queue)
        if timer is None or self._closed:
            return
        timer.handle = None
        timer.running = asyncio.ensure_future(self._run(queue, timer))

    async def _run(self, queue: str, timer: _Timer) -> None:
        next_at: float | None = None
        try:
            next_at = await self._action(queue)
        except TqueuesError as exc:  # the sweep does it later (a queue dropped: nothing)
            log.debug("%s of queue %r: %s", self._name, queue, exc.message)
        except Exception:
            log.exception("%s of queue %r failed", self._name, queue)
        finally:
            timer.running = None
            if self._timers.get(queue) is timer:
                del self._timers[queue]
        for at in (next_at, timer.noted):
            if at is not None:
                self.arm(queue, at)

    def forget(self, queue: str) -> None:
        """Drop the timer of ``queue`` (its state changed, or it is gone)."""
        timer = self._timers.pop(queue, None)
        if timer is not None and timer.handle is not None:
            timer.handle.cancel()

    def close(self) -> None:
        """Cancel every timer and action; idempotent. Arms do nothing afterwards."""
        self._closed = True
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.handle is not None:
                timer.handle.cancel()
            if timer.running is not None:
                timer.running.cancel()
