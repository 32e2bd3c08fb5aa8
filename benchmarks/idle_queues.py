"""What idle queues cost a RethinkDB server: the CPU it spends while a dispatcher follows
``--queues`` queues with nothing to do.

Starts a real ``tqueues_dispatcher`` on a fresh database of the server at ``--rethinkdb
HOST:PORT`` (dropped afterwards), creates the queues, and parks one long-poll take on each
(``GET /?queue=NAME&wait=240``), so that the dispatcher follows each queue's changefeed
as it does for a worker; with ``--unwatched`` it parks none (the queues are then followed
by the reaper alone, which opens each queue's feed itself since 2026-12-07; before, it
swept each of them every round). After ``--warmup`` seconds it reads the server's and
the dispatcher's CPU time (Linux ``/proc``; the server must run on this machine) over
``--seconds`` and prints them as a percentage of one core, with the queries the server
ran per second (its ``stats`` table, all clients: run it on a server of its own). The
reaper sweeps every ``--reap_interval`` (0.5 s, the dispatcher's default).

    .venv/bin/python -m benchmarks.idle_queues --rethinkdb 127.0.0.1:28015
    .venv/bin/python -m benchmarks.idle_queues --rethinkdb 127.0.0.1:28015 --unwatched
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from benchmarks.longpoll_takers import start_dispatcher
from benchmarks.run import cpu_seconds, rethinkdb_pids
from benchmarks.services import (
    create_queue,
    drop_rethinkdb_database,
    rethinkdb_counts,
    rethinkdb_settings,
)

WAIT = 240.0  #: the parked takes' wait= (seconds; the dispatcher allows up to 300)


async def measure(args: argparse.Namespace, store_args: list[str], log: Path) -> dict[str, float]:
    """Start the dispatcher, create and watch the queues, measure; CPU % of one core."""
    process, url = await start_dispatcher(
        [*store_args, "--reap_interval", str(args.reap_interval)], log
    )
    try:
        names = [f"idle{n}" for n in range(args.queues)]
        for name in names:
            await asyncio.to_thread(create_queue, url, name)
        async with aiohttp.ClientSession() as session:
            parked = [] if args.unwatched else [
                asyncio.ensure_future(session.get(f"{url}?queue={name}&wait={WAIT:g}"))
                for name in names
            ]  # fmt: skip
            await asyncio.sleep(args.warmup)
            if any(take.done() for take in parked):
                raise RuntimeError("a long-poll take was answered: the queue is not idle")
            server = rethinkdb_pids(args.rethinkdb)
            if not server:
                raise RuntimeError(f"no RethinkDB server process listens at {args.rethinkdb}")
            counts = await asyncio.to_thread(rethinkdb_counts, args.rethinkdb)
            before = cpu_seconds(server), cpu_seconds([process.pid])
            started = time.monotonic()
            await asyncio.sleep(args.seconds)
            wall = time.monotonic() - started
            after = cpu_seconds(server), cpu_seconds([process.pid])
            counted = await asyncio.to_thread(rethinkdb_counts, args.rethinkdb)
            if any(take.done() for take in parked):
                raise RuntimeError("a long-poll take was answered: the queue is not idle")
            for take in parked:
                take.cancel()
        return {
            "server_pct": 100 * (after[0] - before[0]) / wall,
            "dispatcher_pct": 100 * (after[1] - before[1]) / wall,
            "queries_per_s": (counted.get("queries", 0) - counts.get("queries", 0)) / wall,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rethinkdb", metavar="HOST:PORT", required=True)
    parser.add_argument("--queues", type=int, default=20, help="idle queues")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--reap_interval", type=float, default=0.5)
    parser.add_argument("--unwatched", action="store_true", help="park no take on the queues")
    args = parser.parse_args(argv)
    settings = rethinkdb_settings(args.rethinkdb, f"tq_idle_{uuid.uuid4().hex[:12]}")
    store_args = ["--host", settings.host, "--port", str(settings.port), "--db", settings.db]
    with tempfile.TemporaryDirectory(prefix="tq-idle-") as tmp:
        try:
            row = asyncio.run(measure(args, store_args, Path(tmp) / "dispatcher.log"))
        finally:
            drop_rethinkdb_database(settings)
    how = "unwatched" if args.unwatched else "each followed (a long-poll take parked)"
    print(
        f"{args.queues} idle queues, {how}, --reap_interval {args.reap_interval:g}: "
        f"server {row['server_pct']:.1f} % of a core ({row['queries_per_s']:.0f} queries/s), "
        f"dispatcher {row['dispatcher_pct']:.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
