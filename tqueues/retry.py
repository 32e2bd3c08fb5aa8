"""When a failed job runs again: exponential backoff with jitter (pure; stores apply it)."""

from __future__ import annotations

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
