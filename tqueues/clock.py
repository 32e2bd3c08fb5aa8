"""Time in tqueues: epoch seconds as floats, strictly increasing within a process.

Stores order jobs of equal priority by the time they became ready; a clock that never
returns the same value twice keeps that order FIFO even for jobs put in the same
microsecond.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_last = 0.0


def now() -> float:
    """Return the current time in epoch seconds, greater than any value returned before."""
    global _last
    with _lock:
        t = time.time()
        if t <= _last:
            t = _last + 1e-6
        _last = t
        return t
