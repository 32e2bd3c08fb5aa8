"""W4, deep queue: what a take and a finish cost with 1,000 and with 1,000,000 jobs queued.

Fills a fresh embedded store (in a temporary directory) with N pending jobs, then times
``take`` + ``finish`` cycles through the store boundary, the same calls the dispatcher
makes. The ratio of the per-call medians at the largest and the smallest N shows how cost
grows with the queue (1.0: not at all). With ``--rethinkdb HOST:PORT`` the store is the
RethinkDB store, in a fresh database on that server, dropped afterwards.

    .venv/bin/python -m benchmarks.deep_queue                 # 1,000 and 1,000,000
    .venv/bin/python -m benchmarks.deep_queue --sizes 400,5000 --cycles 200   # smoke
    .venv/bin/python -m benchmarks.deep_queue --rethinkdb localhost:28015
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.services import ServiceError, drop_rethinkdb_database, rethinkdb_settings
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.base import Store
from tqueues.stores.rethinkdb import RethinkDBStore
from tqueues.stores.sqlite import SQLiteStore

BATCH = 10_000


async def measure(size: int, cycles: int, store: Store) -> dict[str, Any]:
    """Fill ``store`` (unopened, empty) with ``size`` jobs; time ``cycles`` take+finish
    pairs (microseconds per call)."""
    async with store:
        await store.create_queue(QueueConfig("bench"))
        fill_started = time.perf_counter()
        job = NewJob(queue="bench", method="benchmarks.noop:run", args=[0])
        for start in range(0, size, BATCH):
            await store.put_many([job] * min(BATCH, size - start))
        fill = time.perf_counter() - fill_started
        takes, finishes = [], []
        for _ in range(min(cycles, size // 2)):  # the queue stays at least half full
            t0 = time.perf_counter()
            taken = await store.take("bench")
            t1 = time.perf_counter()
            assert taken is not None
            await store.finish("bench", taken.id, lease=taken.lease, result=None)
            t2 = time.perf_counter()
            takes.append(t1 - t0)
            finishes.append(t2 - t1)
    return {
        "queued": size,
        "fill_jobs_per_s": round(size / fill) if fill else None,
        "take_us_p50": round(statistics.median(takes) * 1e6, 1),
        "finish_us_p50": round(statistics.median(finishes) * 1e6, 1),
    }


async def main(
    sizes: list[int], cycles: int, synchronous: str, *, rethinkdb: str | None = None
) -> list[dict[str, Any]]:
    """One row per size: the embedded store with ``synchronous``, or the RethinkDB store
    on the server at ``rethinkdb`` (host:port) when given."""
    rows = []
    for size in sizes:
        if rethinkdb:
            settings = rethinkdb_settings(rethinkdb, f"tqbench_w4_{os.getpid()}_{size}")
            try:
                rows.append(await measure(size, cycles, RethinkDBStore(settings)))
            except BaseException:
                with contextlib.suppress(ServiceError):  # the first error is the one to tell
                    await asyncio.to_thread(drop_rethinkdb_database, settings)
                raise
            await asyncio.to_thread(drop_rethinkdb_database, settings)
            continue
        with tempfile.TemporaryDirectory(prefix="tqueues-bench-") as tmp:
            rows.append(
                await measure(size, cycles, SQLiteStore(Path(tmp), synchronous=synchronous))
            )
    return rows


def report(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table with the growth ratios."""
    lines = [
        "| queued | take p50 (µs) | finish p50 (µs) | fill (jobs/s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['queued']:,} | {r['take_us_p50']} | {r['finish_us_p50']} "
        f"| {r['fill_jobs_per_s']:,} |"
        for r in rows
    ]
    first, last = rows[0], rows[-1]
    lines.append(
        f"\ntake ratio {last['take_us_p50'] / first['take_us_p50']:.2f}, "
        f"finish ratio {last['finish_us_p50'] / first['finish_us_p50']:.2f} "
        f"({last['queued']:,} vs {first['queued']:,} queued)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--rethinkdb", metavar="HOST:PORT", help="measure the RethinkDB store")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    results = asyncio.run(main(sizes, options.cycles, options.sync, rethinkdb=options.rethinkdb))
    print(report(results))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
