"""The no-op benchmark job for Celery on Redis (``celery -A benchmarks.peers.tasks_celery``)."""

from __future__ import annotations

import os

from celery import Celery

from benchmarks.peers import sink

app = Celery("tqbench", broker=os.environ.get("TQBENCH_REDIS", "redis://127.0.0.1"))
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)


@app.task(name="noop")
def noop(x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)
