"""Start an arq worker for the benchmark with Python's default logging (warnings only).

The ``arq`` command sets up INFO logging that prints every job; the other systems run
at warning level, so arq does too. ``python -m benchmarks.peers.run_arq``.
"""

from __future__ import annotations

from arq.worker import run_worker

from benchmarks.peers.tasks_arq import WorkerSettings

if __name__ == "__main__":
    run_worker(WorkerSettings)  # type: ignore[arg-type]
