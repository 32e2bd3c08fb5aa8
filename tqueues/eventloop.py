"""Running the command lines' event loop: uvloop where it is installed, asyncio otherwise,
with the cyclic garbage collector tuned for a long-running server.

Why the collector: a dispatcher allocates a few dozen container objects per request
(parsed bodies, job records, futures), nearly all freed at once by reference counting.
Python's default thresholds (700, 10, 10) still run a young collection every 700 net
allocations, and up to one in a hundred is a full collection, which walks every live
object (a dispatcher's heads, caches and connections: tens of milliseconds each, a pause
of every request in flight). Measured on a RethinkDB drain of 20,000 jobs (docs/benchmarks.rst,
"the dispatcher's CPU on RethinkDB"): about 1,000 young and 8 full collections, 0.5-0.7 s
of CPU, 6-8 % of the dispatcher's; with :data:`GC_THRESHOLDS`, 114 young collections and
one full one, 0.04 s (start-up included). Garbage in reference cycles waits longer for
its collection (at most 10,000 allocations' worth between young collections), which is
what is traded.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: ``gc.set_threshold`` while a command line's loop runs: a young collection every 10,000
#: net allocations of tracked objects (Python's default: 700); older generations as
#: Python does (every 10 collections of the generation below).
GC_THRESHOLDS = (10_000, 10, 10)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop (uvloop's when available) and return
    its result, as :func:`asyncio.run` does, with the collector's thresholds at
    :data:`GC_THRESHOLDS` until it returns (then as they were)."""
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(main)
        return uvloop.run(main)
    finally:
        gc.set_threshold(*before)
