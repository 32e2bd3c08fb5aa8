"""Example job functions for the demo: a worker runs them by name (``examples.tasks:add``)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any


async def add(a: float, b: float, *, tq_parent_job: Any) -> float:
    """A coroutine job: awaited on the worker's event loop."""
    await asyncio.sleep(0.01)
    return a + b


def checksum(text: str, rounds: int = 1000, *, tq_parent_job: Any) -> str:
    """A plain (blocking) job: run in a thread; reports progress with a blocking update."""
    digest = text.encode()
    for done in range(1, rounds + 1):
        digest = hashlib.sha256(digest).digest()
        if done % (rounds // 4 or 1) == 0:
            tq_parent_job.update({"progress": round(done / rounds, 2)})
    return digest.hex()


async def resize(image: str, sizes: list[int], *, tq_parent_job: Any) -> dict[str, str]:
    """A coroutine job that records its progress on the job with ``await update``."""
    out = {}
    for size in sizes:
        await asyncio.sleep(0.01)
        out[str(size)] = f"{image}@{size}px"
        await tq_parent_job.update({"done_sizes": len(out)})
    return out


def flaky(*, tq_parent_job: Any) -> None:
    """A job that always raises: retried with backoff, then failed with its traceback."""
    raise RuntimeError("the example service is down")
