"""Exponential backoff with jitter, the one policy of every wait between attempts.

:class:`RetryPolicy` says how long the n-th attempt waits (pure; the stores apply it to
failed jobs). :class:`Backoff` counts the consecutive failures of one loop and gives the
policy's wait for each: the worker's takes and deliveries while the dispatcher cannot be
reached, and the RethinkDB store's reconnections, changefeeds, catalog set-up and undone
claims. Imports nothing of tqueues, so every install has it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between the attempts of a failed job.

    The n-th retry (n = 1, 2, ...) waits ``min(cap, base * 2 ** (n - 1))`` seconds, scaled by
    a random factor in ``[1 - jitter, 1]`` so that jobs that failed together do not come
    back together.
    """

    base: float = 1.0  #: seconds before the first retry.
    cap: float = 300.0  #: the longest wait, in seconds.
    jitter: float = 0.5  #: fraction of the wait that is random, 0 to 1.

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before running a job again after its ``attempt``-th run failed."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        wait = min(self.cap, self.base * 2 ** min(attempt - 1, 64))
        factor = 1.0 - self.jitter * (rng or random).random()
        return wait * factor


class Backoff:
    """The waits of one loop's consecutive failures, after a :class:`RetryPolicy`.

    The n-th consecutive failure waits ``min(cap, base * 2 ** (n - 1))`` seconds (``base``
    and ``cap`` in seconds) scaled by a random factor in ``[1 - jitter, 1]``: 0.1 s to 5 s
    by default, halved at random. :meth:`reset` after a success starts over. ``rng`` makes
    the jitter repeatable (tests); by default the ``random`` module's.
    """

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 5.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = RetryPolicy(base=base, cap=cap, jitter=jitter)
        self.failures = 0  #: consecutive failures since the start or the last reset.
        self._rng = rng

    def next(self) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        self.failures += 1
        return self.policy.delay(self.failures, rng=self._rng)

    def reset(self) -> None:
        """Forget the failures (the last attempt succeeded)."""
        self.failures = 0

    async def sleep(self, delay: float | None = None) -> None:
        """Wait ``delay`` seconds (default: :meth:`next`'s), unless the current task was
        asked to stop: then raise CancelledError at once.

        Code a retry loop awaits may swallow its task's cancellation, leaving only the
        request on the task (:meth:`asyncio.Task.cancelling`): ``asyncio.wait_for`` of
        Python 3.11 returns the result of what it waited for when that ends at the moment
        it is cancelled, and a driver may turn the cancellation into its own error. A loop
        that retried on that error would never end, and whoever cancelled it (a store
        closing) would wait for it for good.
        """
        raise_if_cancelling()
        await asyncio.sleep(self.next() if delay is None else delay)


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task is being cancelled: something it awaited
    swallowed the cancellation (see :meth:`Backoff.sleep`). For loops that go on after an
    error, before their next round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


__all__ = ["Backoff", "RetryPolicy", "raise_if_cancelling"]
