"""The no-op benchmark job for RQ (``benchmarks.peers.tasks_rq.noop``)."""

from __future__ import annotations

from benchmarks.peers import sink


def noop(x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)
