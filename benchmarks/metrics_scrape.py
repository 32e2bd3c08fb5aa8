"""What a scrape of ``GET /metrics`` costs the dispatcher, with few and with many jobs queued.

Starts a real ``tqueues_dispatcher`` (embedded store, a fresh temporary data directory)
with a monitor token, fills queue ``bench`` with N pending jobs by bulk puts
(``POST /queues/bench/jobs``, 1,000 a request; plus a few started and finished ones in a
second queue), then scrapes ``/metrics`` ``--scrapes`` times, one at a time, and reports
the dispatcher's CPU time per scrape (user + system, from ``/proc/PID/stat``, read before
and after the scrapes; the dispatcher is otherwise idle) and the scrape's latency.

    .venv/bin/python -m benchmarks.metrics_scrape                       # 1,000 and 1,000,000
    .venv/bin/python -m benchmarks.metrics_scrape --sizes 100,20000 --scrapes 20   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.services import Dispatcher, Processes

TOKEN = "metrics-bench-monitor-token"
ADMIN = "metrics-bench-admin-token-xx"
BATCH = 1_000
PUTTERS = 4  #: bulk puts in flight at once


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pending(exposition: str) -> float:
    """The value of ``tqueues_jobs{queue="bench",state="pending"}`` in ``exposition``."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "tqueues_jobs" and sample.labels == {
                "queue": "bench",
                "state": "pending",
            }:
                return float(sample.value)
    raise LookupError("no tqueues_jobs series of queue bench")


async def fill(session: aiohttp.ClientSession, url: str, size: int) -> float:
    """Put ``size`` pending jobs in queue ``bench`` by bulk puts; jobs/s."""
    started = time.perf_counter()
    batches = [min(BATCH, size - start) for start in range(0, size, BATCH)]
    body = {"jobs": [{"method": "benchmarks.noop:run", "args": [0]}] * BATCH}

    async def putter(mine: list[int]) -> None:
        for count in mine:
            jobs = body if count == BATCH else {"jobs": body["jobs"][:count]}
            async with session.post(f"{url}queues/bench/jobs", json=jobs) as response:
                assert response.status == 201, await response.text()

    await asyncio.gather(*(putter(batches[i::PUTTERS]) for i in range(PUTTERS)))
    return size / (time.perf_counter() - started)


async def measure(size: int, scrapes: int, workdir: Path) -> dict[str, Any]:
    """One dispatcher with ``size`` jobs queued: CPU and latency per scrape."""
    processes = Processes(workdir)
    args = ["--token", ADMIN, "--monitor_token", TOKEN, "--sync", "NORMAL"]
    dispatcher = Dispatcher(processes, workdir, args)
    try:
        dispatcher.start()
        assert dispatcher.process is not None
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession(headers=admin) as session:
            for queue in ("bench", "other"):
                async with session.put(f"{dispatcher.url}queues/{queue}") as response:
                    assert response.status == 201
            fill_rate = await fill(session, dispatcher.url, size)
            # A few jobs in the other states, in another queue.
            await session.post(f"{dispatcher.url}queues/other/jobs", json={"jobs": [
                {"method": "benchmarks.noop:run"}] * 10})  # fmt: skip
            async with session.post(
                f"{dispatcher.url}queues/other/take?count=5&worker=bench"
            ) as response:
                taken = (await response.json())["jobs"]
            for job in taken[:3]:
                finish = f"{dispatcher.url}queues/other/jobs/{job['id']}/finish"
                await session.post(finish, params={"lease": job["lease"]})
        monitor = {"Authorization": f"Bearer {TOKEN}"}
        latencies = []
        async with aiohttp.ClientSession(headers=monitor) as session:
            for _ in range(3):  # warm-up: the first scrape builds each labelled series
                async with session.get(f"{dispatcher.url}metrics") as response:
                    text = await response.text()
            assert pending(text) == size, text
            await asyncio.sleep(0.5)  # let the reaper's turn and the puts' syncs pass
            before = cpu_seconds(dispatcher.process.pid)
            for _ in range(scrapes):
                started = time.perf_counter()
                async with session.get(f"{dispatcher.url}metrics") as response:
                    await response.read()
                    assert response.status == 200
                latencies.append(time.perf_counter() - started)
            cpu = cpu_seconds(dispatcher.process.pid) - before
        return {
            "queued": size,
            "fill_jobs_per_s": round(fill_rate),
            "scrapes": scrapes,
            "cpu_ms_per_scrape": round(cpu / scrapes * 1000, 2),
            "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
            "body_bytes": len(text),
        }
    finally:
        processes.stop_all()


def report(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| queued | dispatcher CPU per scrape (ms) | scrape p50 (ms) | fill (jobs/s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['queued']:,} | {r['cpu_ms_per_scrape']} | {r['latency_ms_p50']} "
        f"| {r['fill_jobs_per_s']:,} |"
        for r in rows
    ]
    return "\n".join(lines)


async def main(sizes: list[int], scrapes: int) -> list[dict[str, Any]]:
    """One row per size, each on a fresh dispatcher in a temporary directory."""
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="tqueues-metrics-bench-") as tmp:
            rows.append(await measure(size, scrapes, Path(tmp)))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000", help="jobs queued, comma-separated")
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes timed per size")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    options = parser.parse_args()
    found = asyncio.run(main([int(s) for s in options.sizes.split(",")], options.scrapes))
    print(report(found))
    if options.json:
        options.json.write_text(json.dumps(found, indent=2))
