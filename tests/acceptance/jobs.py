"""Job functions the acceptance tests enqueue; the worker subprocesses import them.

Workers run with ``--allow tests.acceptance.jobs``, so only these may run. Every function
takes ``tq_parent_job`` (the worker's Job) as the worker passes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

MODULE = "tests.acceptance.jobs"


def method(name: str) -> str:
    """The ``method`` string that names job function ``name`` of this module."""
    return f"{MODULE}:{name}"


def _in_worker_thread() -> bool:
    return threading.current_thread() is not threading.main_thread()


async def coro_add(a: int, b: int, *, tq_parent_job: Any) -> dict[str, Any]:
    """A coroutine: the sum, and whether it ran on a thread other than the loop's."""
    await asyncio.sleep(0)
    return {"sum": a + b, "thread": _in_worker_thread()}


async def coro_power(base: int, exponent: int, *, tq_parent_job: Any) -> int:
    """``base ** exponent``: past 2**53 a result the dispatcher does not store."""
    return int(base**exponent)


def plain_mul(a: int, b: int, *, tq_parent_job: Any) -> dict[str, Any]:
    """A plain function: the product, and whether it ran on a worker thread."""
    return {"product": a * b, "thread": _in_worker_thread()}


async def coro_update(i: int, *, tq_parent_job: Any) -> list[Any]:
    """A coroutine that reports progress twice with ``await tq_parent_job.update``."""
    await tq_parent_job.update({"progress": 0, "by": "coro"})
    doc = await tq_parent_job.update({"progress": i})
    return ["coro", i, doc["progress"], doc["by"]]


def plain_update(i: int, *, tq_parent_job: Any) -> list[Any]:
    """A plain function that reports progress with ``tq_parent_job.update`` (no await)."""
    tq_parent_job.update({"progress": 0, "by": "plain"})
    doc = tq_parent_job.update({"progress": i, "tag": f"plain-{i}"})
    return ["plain", i, doc["progress"], doc["by"], _in_worker_thread()]


async def coro_raise(i: int, *, tq_parent_job: Any) -> None:
    """A coroutine that fails."""
    await asyncio.sleep(0)
    raise ValueError(f"coro boom {i}")


async def coro_time_out(i: int, *, tq_parent_job: Any) -> None:
    """A coroutine whose own call timed out (not the worker's --timeout)."""
    await asyncio.sleep(0)
    raise TimeoutError(f"upstream {i} did not answer")


def plain_raise(i: int, *, tq_parent_job: Any) -> None:
    """A plain function that fails."""
    raise RuntimeError(f"plain boom {i}")


def _record_start(marker_dir: Path, job_id: str) -> int:
    """Write one marker file for this start of ``job_id``; how many starts came before."""
    before = len(list(marker_dir.glob(f"start-{job_id}-*.json")))
    marker = {"job": job_id, "pid": os.getpid(), "time": time.time()}
    name = f"start-{job_id}-{uuid.uuid4().hex}.json"
    (marker_dir / f".{name}").write_text(json.dumps(marker))
    os.replace(marker_dir / f".{name}", marker_dir / name)  # appears whole or not at all
    return before


def _record_finish(marker_dir: Path, job_id: str) -> None:
    with open(marker_dir / "finished.txt", "a") as finished:
        finished.write(job_id + "\n")


async def marked_sleep(
    marker_dir: str, first: float, then: float = 0.0, *, tq_parent_job: Any
) -> str:
    """Sleep ``first`` seconds on the first run, ``then`` on later ones; leave markers.

    Each start writes ``start-<job id>-<uuid>.json`` (with the worker's pid and the time)
    in ``marker_dir``; a run that completes appends the job id to ``finished.txt`` there.
    """
    directory = Path(marker_dir)
    starts_before = _record_start(directory, tq_parent_job.id)
    await asyncio.sleep(first if starts_before == 0 else then)
    _record_finish(directory, tq_parent_job.id)
    return f"slept after {starts_before} earlier start(s)"


def start_markers(marker_dir: Path, job_id: str | None = None) -> list[dict[str, Any]]:
    """The start markers ``marked_sleep`` left (of one job, or of all), oldest first."""
    pattern = f"start-{job_id}-*.json" if job_id else "start-*.json"
    markers = [json.loads(p.read_text()) for p in marker_dir.glob(pattern)]
    return sorted(markers, key=lambda m: m["time"])


def finished_ids(marker_dir: Path) -> list[str]:
    """The job ids ``marked_sleep`` recorded as finished, one per completed run."""
    path = marker_dir / "finished.txt"
    return path.read_text().split() if path.exists() else []


def plain_marked_sleep(marker_dir: str, seconds: float, *, tq_parent_job: Any) -> str:
    """A blocking (thread) job that leaves a start marker, then sleeps ``seconds``."""
    _record_start(Path(marker_dir), tq_parent_job.id)
    time.sleep(seconds)
    _record_finish(Path(marker_dir), tq_parent_job.id)
    return "slept"


async def record_run(runs_file: str, n: int, *, tq_parent_job: Any) -> str:
    """Append ``<job id> <n> <run token>`` to ``runs_file`` once per completed run; the token.

    The token is new on every run, so the stored result tells which run was reported.
    """
    token = uuid.uuid4().hex
    with open(runs_file, "a") as runs:  # one short write per line: whole lines, even
        runs.write(f"{tq_parent_job.id} {n} {token}\n")  # from two processes (O_APPEND)
    return token


def read_runs(runs_file: Path) -> dict[str, list[str]]:
    """The run tokens ``record_run`` recorded, by job id, in the order they were written."""
    runs: dict[str, list[str]] = {}
    if runs_file.exists():
        for line in runs_file.read_text().splitlines():
            job_id, _, token = line.split()
            runs.setdefault(job_id, []).append(token)
    return runs


def crash_worker(marker_dir: str, *, tq_parent_job: Any) -> None:
    """A poison job: leaves a start marker, then ends the worker process at once (exit 1).

    No outcome is reported and nothing is cleaned up, as if the process segfaulted.
    """
    _record_start(Path(marker_dir), tq_parent_job.id)
    os._exit(1)


async def hang_worker(marker_dir: str, seconds: float = 600.0, *, tq_parent_job: Any) -> None:
    """A poison job: a coroutine that blocks the worker's event loop with ``time.sleep``.

    Nothing else in that worker runs meanwhile, its lease heartbeat included.
    """
    _record_start(Path(marker_dir), tq_parent_job.id)
    time.sleep(seconds)


async def gated_progress(gate: str, *, tq_parent_job: Any) -> str:
    """Report ``{"progress": 50}``, wait (up to 60 s) until the file ``gate`` exists, then
    report ``{"progress": 100}`` and finish: a job whose progress a test can watch."""
    await tq_parent_job.update({"progress": 50})
    deadline = time.monotonic() + 60.0
    while not Path(gate).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await tq_parent_job.update({"progress": 100})
    return "through the gate"


async def cancellable_sleep(marker_dir: str, seconds: float, *, tq_parent_job: Any) -> str:
    """Sleep ``seconds`` (leaving a start marker); if cancelled meanwhile, leave
    ``cancelled-<job id>`` saying ``CancelledError`` and stop."""
    directory = Path(marker_dir)
    _record_start(directory, tq_parent_job.id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        (directory / f"cancelled-{tq_parent_job.id}").write_text("CancelledError")
        raise
    _record_finish(directory, tq_parent_job.id)
    return "slept"


def plain_until_cancelled(marker_dir: str, seconds: float, *, tq_parent_job: Any) -> str:
    """A plain function that works in steps of 50 ms for up to ``seconds`` (leaving a start
    marker), and stops once ``tq_parent_job.cancelled`` is true, leaving
    ``cancelled-<job id>`` saying ``cancelled``."""
    directory = Path(marker_dir)
    _record_start(directory, tq_parent_job.id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if tq_parent_job.cancelled:
            (directory / f"cancelled-{tq_parent_job.id}").write_text("cancelled")
            return "stopped"
        time.sleep(0.05)  # a step of the job's work
    _record_finish(directory, tq_parent_job.id)
    return "ran to the end"


async def swallows_cancel(marker_dir: str, seconds: float, *, tq_parent_job: Any) -> str:
    """Sleep ``seconds`` (leaving a start marker), swallowing a cancellation: returns
    "swallowed" if cancelled."""
    _record_start(Path(marker_dir), tq_parent_job.id)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        return "swallowed"
    return "slept"
