"""W4, deep queue: what a take and a finish cost with 1,000 and with 1,000,000 jobs queued.

Fills a fresh embedded store (in a temporary directory) with N pending jobs, then times
``take`` + ``finish`` cycles through the store boundary, the same calls the dispatcher
makes. The ratio of the per-call medians at the largest and the smallest N shows how cost
grows with the queue (1.0: not at all).

    .venv/bin/python -m benchmarks.deep_queue                 # 1,000 and 1,000,000
    .venv/bin/python -m benchmarks.deep_queue --sizes 400,5000 --cycles 200   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.sqlite import SQLiteStore

BATCH = 20_000


async def measure(size: int, cycles: int, directory: Path, synchronous: str) -> dict[str, Any]:
    """Fill a store with ``size`` jobs; time ``cycles`` take+finish pairs (seconds per call)."""
    store = SQLiteStore(directory, synchronous=synchronous)
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


async def main(sizes: list[int], cycles: int, synchronous: str) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="tqueues-bench-") as tmp:
            rows.append(await measure(size, cycles, Path(tmp), synchronous))
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
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args()
    results = asyncio.run(
        main([int(s) for s in options.sizes.split(",")], options.cycles, options.sync)
    )
    print(report(results))
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
