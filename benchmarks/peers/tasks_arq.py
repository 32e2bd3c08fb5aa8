"""The no-op benchmark job for arq and the worker settings (``arq ...tasks_arq.WorkerSettings``)."""

from __future__ import annotations

import os
from typing import Any

from arq.connections import RedisSettings

from benchmarks.peers import sink


async def noop(ctx: dict[str, Any], x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)


class WorkerSettings:
    """arq's defaults, but 10 jobs at once and no result kept (a no-op returns nothing)."""

    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ.get("TQBENCH_REDIS", "redis://127.0.0.1"))
    max_jobs = 10
    keep_result = 0
