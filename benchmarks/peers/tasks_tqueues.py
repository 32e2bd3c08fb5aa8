"""The no-op benchmark job for tqueues (``benchmarks.peers.tasks_tqueues:noop``)."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.peers import sink


async def noop(x: int, *, tq_parent_job: Any) -> None:
    """Record the start time; nothing else."""
    sink.record(x)


async def pause(seconds: float, *, tq_parent_job: Any) -> None:
    """Take ``seconds`` (asyncio sleep): a long job for :mod:`benchmarks.fairness`."""
    await asyncio.sleep(seconds)
