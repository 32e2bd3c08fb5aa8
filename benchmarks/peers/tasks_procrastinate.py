"""The no-op benchmark task for procrastinate on PostgreSQL.

``procrastinate --app=benchmarks.peers.tasks_procrastinate.app worker``
"""

from __future__ import annotations

import os

import procrastinate

from benchmarks.peers import sink

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get("TQBENCH_PG", "")),
)


@app.task(name="noop", queue="bench")
async def noop(x: int) -> None:
    """Record the start time; nothing else."""
    sink.record(x)
