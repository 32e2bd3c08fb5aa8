"""W2 alone, with the CPU each process and thread spent per job: where a drain's time goes.

``python -m benchmarks.drain_cpu [--jobs N] [--queues Q] [--concurrency N] [--prefetch N]
[-- dispatcher options...]`` queues N no-op jobs in a fresh embedded store (in turns over
Q queues, 1 by default), starts a dispatcher on it and two workers (each of every queue),
and prints the drain rate (first start to last, as W2 measures it) and the CPU time of the
dispatcher's threads (its event loop and its store thread) and of each worker, in
microseconds per job (Linux: read from /proc). The workers' figure includes their
start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.peers import sink
from benchmarks.run import QUEUE, prefill_store, read_times
from benchmarks.services import dispatcher_env
from tqueues.stores.sqlite import SQLiteStore

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by name and id."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds[f"{name} ({tid})"] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--queues", type=int, default=1, help="queues the jobs are spread over")
    parser.add_argument("--concurrency", default="10")
    parser.add_argument("--prefetch", default=None)
    parser.add_argument("dispatcher_args", nargs="*", help="after --: dispatcher options")
    options = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    env = dispatcher_env()
    with tempfile.TemporaryDirectory(prefix="tqueues-drain-") as tmp:
        work = Path(tmp)
        queues = [QUEUE] + [f"{QUEUE}{i}" for i in range(2, options.queues + 1)]
        asyncio.run(prefill_store(SQLiteStore(work / "data"), options.jobs, queues))
        log_path = work / "dispatcher.log"
        with log_path.open("w") as log:
            dispatcher = subprocess.Popen(
                [str(bin_dir / "tqueues_dispatcher"), "--listen", "127.0.0.1:0",
                 "--data", str(work / "data"), *options.dispatcher_args],
                stdout=log, stderr=log, env=env,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (found := re.search(r"listening on (http://\S+/)", log_path.read_text())):
                if time.monotonic() > deadline or dispatcher.poll() is not None:
                    sys.exit(f"the dispatcher did not start: {log_path.read_text()}")
                time.sleep(0.02)
            times = work / "times"
            times.mkdir()
            before = thread_cpu(dispatcher.pid)
            worker_argv = [str(bin_dir / "tqueues_worker"), "--endpoint_url", found.group(1),
                           *[arg for queue in queues for arg in ("--queue", queue)],
                           "--allow", "benchmarks.peers", "--loglevel",
                           "WARNING", "--concurrency", options.concurrency]  # fmt: skip
            if options.prefetch is not None:
                worker_argv += ["--prefetch", options.prefetch]
            workers = [
                subprocess.Popen(worker_argv, env={**env, "TQBENCH_SINK": f"file:{times}"})
                for _ in range(2)
            ]
            deadline = time.monotonic() + 300
            while sum(p.stat().st_size // sink.LINE for p in times.iterdir()) < options.jobs:
                if time.monotonic() > deadline:
                    sys.exit("the jobs did not all run within 300 s")
                time.sleep(0.02)
            after = thread_cpu(dispatcher.pid)
            worker_seconds = [sum(thread_cpu(w.pid).values()) for w in workers]
            for worker in workers:
                worker.terminate()
                worker.wait()
        finally:
            dispatcher.terminate()
            dispatcher.wait()
        started = read_times(times)
        shutil.rmtree(times)
    n = options.jobs
    print(f"W2 drain: {(len(started) - 1) / (max(started) - min(started)):,.0f} jobs/s")
    for name, seconds in after.items():
        spent = seconds - before.get(name, 0.0)
        # The dispatcher's own threads always (read in clock ticks, so a short drain may
        # show 0); uvloop's helper threads only when they did something.
        if spent > 0.005 or not name.startswith("libuv"):
            print(f"  dispatcher thread {name}: {spent / n * 1e6:.1f} µs of CPU per job")
    for i, seconds in enumerate(worker_seconds):
        print(f"  worker {i}: {seconds / n * 1e6:.1f} µs of CPU per job of the whole drain")


if __name__ == "__main__":
    main()
