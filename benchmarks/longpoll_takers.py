"""Puts per second while many long-poll takers wait: does a put cost more with 10,000 idle
workers parked on the queue than with none?

Starts a real ``tqueues_dispatcher`` on loopback (a fresh temporary data directory, or a
fresh database on ``--rethinkdb HOST:PORT``, dropped afterwards), parks ``--takers``
long-poll takes (``GET /?queue=bench&wait=...``) on one aiohttp session, then times
``--puts`` single puts (``POST /``) one after the other, each answered before the next is
sent, and as many again as one batch (``POST /queues/bench/jobs``, which wakes takers
instead of handing jobs over). It checks that every job put went to exactly one taker and
prints puts/s and the dispatcher's counters: ``woken`` (takers woken to look again by a
job that became pending), ``handed`` (jobs a put claimed for a waiting taker) and
``taken``. Bounded: at most ``--seconds`` for the timed part, and ``--takers`` is capped
by the open-files limit (raised to its hard limit here; the dispatcher raises its own).

    .venv/bin/python -m benchmarks.longpoll_takers                     # 10,000 takers
    .venv/bin/python -m benchmarks.longpoll_takers --takers 0          # the baseline
    .venv/bin/python -m benchmarks.longpoll_takers --takers 500 --puts 20   # smoke
    .venv/bin/python -m benchmarks.longpoll_takers --rethinkdb localhost:28015
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.services import ROOT, drop_rethinkdb_database, rethinkdb_settings

DISPATCHER = str(Path(sys.executable).parent / "tqueues_dispatcher")
QUEUE = "bench"
METHOD = "benchmarks.noop:run"
PARK_BATCH = 500  #: takes sent at once while parking (the listen backlog is 128)
TTR = 3600.0  #: the jobs' ttr: longer than any run (nobody finishes them)
STARTUP = 30.0  #: seconds the dispatcher may take to listen and answer /health


def raise_open_files(wanted: int) -> int:
    """Raise this process's soft open-files limit towards ``wanted`` (up to the hard
    limit); the limit now. Child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def start_dispatcher(argv: list[str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``tqueues_dispatcher`` with ``argv`` on a free loopback port; it and its URL
    once ``/health`` answers. Raises RuntimeError if it exits or does not answer in time."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [DISPATCHER, "--listen", "127.0.0.1:0", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )
    deadline = time.monotonic() + STARTUP
    url = ""
    while not url:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the dispatcher did not start: {log.read_text()[-2000:]}")
        for line in log.read_text(errors="replace").splitlines():
            if "listening on http://" in line:
                url = line.split("listening on ", 1)[1].split()[0]
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url + "health") as response:
                    if response.status == 200:
                        return process, url
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("the dispatcher's /health did not answer 200 in time")
            await asyncio.sleep(0.05)


async def counters(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    """The dispatcher's event counters of the benchmark's queue."""
    async with session.get(f"{url}queues/{QUEUE}/stats") as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return {str(k): int(v) for k, v in body["counters"].items()}


async def wait_counter(
    session: aiohttp.ClientSession, url: str, name: str, at_least: int, seconds: float
) -> None:
    """Poll the counters until ``name`` reaches ``at_least``; RuntimeError after
    ``seconds``."""
    deadline = time.monotonic() + seconds
    while (await counters(session, url)).get(name, 0) < at_least:
        if time.monotonic() > deadline:
            raise RuntimeError(f"counter {name!r} did not reach {at_least} in {seconds:g} s")
        await asyncio.sleep(0.1)


async def run(
    takers: int, puts: int, seconds: float, wait: float, store_args: list[str], log: Path
) -> dict[str, Any]:
    """Park ``takers``, time ``puts`` single puts and a batch of ``puts``; the numbers.

    Raises RuntimeError when the dispatcher does not start or park the takers in
    ``seconds``, or when a job put did not reach exactly one taker."""
    process, url = await start_dispatcher(store_args, log)
    connector = aiohttp.TCPConnector(limit=takers + 16)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    parked: list[asyncio.Task[None]] = []
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            async with session.put(url, params={"queue": QUEUE}) as response:
                response.raise_for_status()
            got: list[str] = []  #: the job each answered take got
            answered = asyncio.Condition()

            async def take() -> None:
                params = {"queue": QUEUE, "wait": str(wait)}
                async with session.get(url, params=params) as response:
                    if response.status == 200:
                        got.append((await response.json())["id"])
                        async with answered:
                            answered.notify_all()

            park_started = time.perf_counter()
            for start in range(0, takers, PARK_BATCH):
                parked += [
                    asyncio.create_task(take()) for _ in range(min(PARK_BATCH, takers - start))
                ]
                await wait_counter(session, url, "take_waited", len(parked), seconds=seconds)
            park_seconds = time.perf_counter() - park_started
            before = await counters(session, url)
            # Single puts, one after the other: each hands its job to a waiting taker (on
            # a store that hands jobs over) or wakes one. (A ttr longer than the run:
            # nobody finishes these jobs, and none may come back to be taken again.)
            body = {"queue": QUEUE, "method": METHOD, "args": [0], "ttr": TTR}
            put_ids: list[str] = []
            started = time.perf_counter()
            while len(put_ids) < puts and time.perf_counter() - started < seconds:
                async with session.post(url, json=body) as response:
                    response.raise_for_status()
                    put_ids.append((await response.json())["id"])
            single = time.perf_counter() - started
            singles = len(put_ids)
            # One batch of as many: every job becomes pending in one write and wakes takers.
            jobs = [{"method": METHOD, "args": [i], "ttr": TTR} for i in range(singles)]
            started = time.perf_counter()
            async with session.post(f"{url}queues/{QUEUE}/jobs", json={"jobs": jobs}) as response:
                response.raise_for_status()
                put_ids += [job["id"] for job in (await response.json())["jobs"]]
            batched = time.perf_counter() - started
            if takers >= len(put_ids):  # enough takers for every job: each gets one
                async with answered:
                    await asyncio.wait_for(
                        answered.wait_for(lambda: len(got) >= len(put_ids)), seconds
                    )
                if sorted(got) != sorted(put_ids):
                    raise RuntimeError(
                        f"{len(put_ids)} jobs put, takers got {len(got)} ({len(set(got))} distinct)"
                    )
            after = await counters(session, url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"{exc!r}; the dispatcher's log ends: {tail}") from exc
    finally:
        for task in parked:
            task.cancel()
        await asyncio.gather(*parked, return_exceptions=True)
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    counted = ("woken", "handed", "taken", "take_timeout")
    return {
        "takers": takers,
        "park_s": round(park_seconds, 2),
        "single_puts": singles,
        "single_puts_per_s": round(singles / single, 1),
        "batch_ms": round(batched * 1000, 1),
        **{name: after.get(name, 0) - before.get(name, 0) for name in counted},
    }


def report(row: dict[str, Any]) -> str:
    """One line of results."""
    return (
        f"{row['takers']:,} waiting takers (parked in {row['park_s']} s): "
        f"{row['single_puts_per_s']:,} single puts/s ({row['single_puts']} puts), "
        f"a batch of {row['single_puts']} in {row['batch_ms']} ms; "
        f"takers woken {row['woken']}, jobs handed over {row['handed']}, taken {row['taken']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--takers", type=int, default=10_000, help="long-poll takers parked")
    parser.add_argument(
        "--puts", type=int, default=100, help="single puts timed (and a batch of as many)"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="bound of the timed part")
    parser.add_argument("--wait", type=float, default=300.0, help="the takers' wait= (seconds)")
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--rethinkdb", metavar="HOST:PORT", help="use the RethinkDB store")
    args = parser.parse_args(argv)
    limit = raise_open_files(2 * args.takers + 256)
    if args.takers + 128 > limit:
        parser.error(f"the open-files limit ({limit}) is too low for {args.takers} takers")
    settings = None
    with tempfile.TemporaryDirectory(prefix="tq-longpoll-") as tmp:
        if args.rethinkdb:
            settings = rethinkdb_settings(args.rethinkdb, f"tq_bench_{uuid.uuid4().hex[:12]}")
            store_args = [
                "--host",
                settings.host,
                "--port",
                str(settings.port),
                "--db",
                settings.db,
            ]
        else:
            store_args = ["--data", str(Path(tmp) / "data"), "--sync", args.sync]
        try:
            row = asyncio.run(
                run(
                    args.takers,
                    args.puts,
                    args.seconds,
                    args.wait,
                    store_args,
                    Path(tmp) / "dispatcher.log",
                )
            )
        finally:
            if settings is not None:
                drop_rethinkdb_database(settings)
    store = "RethinkDB" if args.rethinkdb else f"SQLite --sync {args.sync}"
    print(f"{store}: {report(row)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
