"""What checking the embedded store's file at start costs: SQLite's ``quick_check`` (and,
for comparison, its ``integrity_check``) on a store of N small jobs, and the store's
whole ``open``, which runs the check.

Fills a fresh store in a temporary directory with ``--jobs`` pending jobs (through the
store itself, 10,000 a write), closes it, then times each check on a new connection
(the file is in the page cache by then: a cold start from disk reads the file once
more). Bounded by ``--jobs``.

    .venv/bin/python -m benchmarks.startup_check                 # 1,000,000 jobs
    .venv/bin/python -m benchmarks.startup_check --jobs 20000    # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.sqlite import SQLiteStore

BATCH = 10_000


async def fill(data: Path, jobs: int) -> float:
    """A store of ``jobs`` pending jobs in ``data``, closed; the seconds it took."""
    started = time.perf_counter()
    async with SQLiteStore(data, synchronous="NORMAL") as store:
        await store.create_queue(QueueConfig("bench"))
        for start in range(0, jobs, BATCH):
            batch = [
                NewJob(queue="bench", method="benchmarks.noop:run", args=[i])
                for i in range(start, min(jobs, start + BATCH))
            ]
            await store.put_many(batch)
    return time.perf_counter() - started


def timed_pragma(path: Path, pragma: str) -> tuple[float, str]:
    """Seconds ``PRAGMA <pragma>`` took on a new connection, and its first row."""
    conn = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        first = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
        return time.perf_counter() - started, str(first)
    finally:
        conn.close()


async def timed_open(data: Path) -> float:
    """Seconds the store's ``open`` (with its check) took."""
    started = time.perf_counter()
    store = SQLiteStore(data)
    await store.open()
    elapsed = time.perf_counter() - started
    await store.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the store")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tq-check-") as tmp:
        data = Path(tmp) / "data"
        filled = asyncio.run(fill(data, args.jobs))
        path = data / "tqueues.sqlite3"
        size = path.stat().st_size
        print(f"{args.jobs:,} jobs: {size / 2**20:,.1f} MiB, filled in {filled:.1f} s")
        for pragma in ("quick_check", "integrity_check"):
            seconds, first = timed_pragma(path, pragma)
            print(f"PRAGMA {pragma}: {seconds:.2f} s ({first})")
        print(f"SQLiteStore.open, its check included: {asyncio.run(timed_open(data)):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
