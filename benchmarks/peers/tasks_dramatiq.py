"""The no-op benchmark actor for Dramatiq on Redis (``dramatiq ...peers.tasks_dramatiq``)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from benchmarks.peers import sink

dramatiq.set_broker(RedisBroker(url=os.environ.get("TQBENCH_REDIS", "redis://127.0.0.1")))


@dramatiq.actor(max_retries=0)
def noop(x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)
