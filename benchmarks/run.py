"""The side-by-side benchmark: tqueues and the Python job queues, on this machine, in one run.

    .venv/bin/python -m benchmarks.run                       # everything (installs peers)
    .venv/bin/python -m benchmarks.run --systems tqueues,rq --jobs 2000
    .venv/bin/python -m benchmarks.run --quick               # tqueues only, small, no installs

Each peer gets its own virtualenv under ``benchmarks/.venvs/`` (installed on first use);
Redis, beanstalkd and PostgreSQL come from the Debian packages (apt-get installs them when
missing and the benchmark runs as root) and are started on free loopback ports, a fresh
server per workload, and always stopped. Every job is a no-op that takes one small int
and records its start time (:mod:`benchmarks.peers.sink`).

W1 enqueue
    One producer enqueues ``--jobs`` jobs one call at a time (jobs/s; tqueues with its
    blocking client, as the RQ, Celery and Dramatiq producers call theirs); then, after a
    reset, in bulk calls of 1,000 where the system has a bulk enqueue; then (tqueues)
    one call at a time again on a job stream (one WebSocket; each call still waits for
    its job to be durable), and with its asyncio client (a note under the table).
W2 drain
    ``--jobs`` jobs already queued; 2 worker processes start (10 jobs at once each where
    the system runs jobs concurrently in a process); jobs/s from the first job's start to
    the last one's, and start-up: from launching the workers to the first job's start.
W3 pickup latency
    One idle worker; enqueue one job and wait until it has started, ``--samples`` times
    (after 5 warm-up jobs); p50/p95/p99 of enqueue-to-start in ms; then (tqueues) as many
    with each job put on a job stream.
W4 deep queue (tqueues only)
    :mod:`benchmarks.deep_queue`: store take and finish cost at 1,000 vs 1,000,000 queued.

tqueues on RethinkDB (``tqueues-rethinkdb``, and W4 on its store) runs too when a server
is named: ``--rethinkdb HOST:PORT`` or ``TQUEUES_BENCH_RETHINKDB=HOST:PORT`` (each
dispatcher gets a database of its own there, dropped when it stops). No RethinkDB server
can be installed by this script. Its variants, asked for by ``--systems``:
``tqueues-rethinkdb-soft``, the dispatcher started with ``--durability soft``;
``tqueues-rethinkdb-3``, three dispatchers on one database.

The workloads run in ``--repeat`` rounds (3), each round every system in turn, so that
a slow spell of the machine weighs on every system alike: W1 and W2 keep the median of
the rounds, W3 pools their samples (``--samples`` in all). Prints a Markdown table and
writes everything (with versions and the machine) as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import deep_queue
from benchmarks.peers import sink
from benchmarks.services import (
    ROOT,
    Beanstalkd,
    Dispatcher,
    Postgres,
    Processes,
    Redis,
    RethinkDBDispatcher,
    RethinkDBDispatchers,
    Server,
    ServiceError,
    ensure_debian_packages,
    ensure_venv,
    rethinkdb_counts,
    rethinkdb_settings,
    rethinkdb_version,
    store_work,
)
from tqueues.errors import TqueuesError
from tqueues.stores.base import Store
from tqueues.stores.rethinkdb import RethinkDBStore
from tqueues.stores.sqlite import SQLiteStore

VENVS = ROOT / "benchmarks" / ".venvs"
RESULTS = ROOT / "benchmarks" / ".results"
QUEUE = "bench"
#: Upper bounds, in seconds, of each step (every loop in the benchmark is bounded).
PRODUCE_TIMEOUT = 600.0
DRAIN_TIMEOUT = 300.0
WORKER_READY_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class System:
    """One row of the table: a system, how to install it, serve it and run its workers."""

    name: str
    label: str
    producer: str
    server: str  # "redis", "beanstalkd", "postgresql" or "tqueues"
    requirements: tuple[str, ...] = ()  # empty: the benchmark's own virtualenv (tqueues)
    dispatcher_args: tuple[str, ...] = ()
    bulk_note: str = "n/a"
    model: str = ""  # how its workers run jobs, for the docs ({concurrency}: --concurrency)
    store: str = "sqlite"  # tqueues: the dispatcher's store, "sqlite" or "rethinkdb"
    #: tqueues on RethinkDB: dispatcher processes on the one database; with more than one,
    #: W2 runs one worker per dispatcher and W3's worker takes from the second one.
    dispatchers: int = 1

    def bin(self) -> Path:
        return VENVS / self.name / "bin" if self.requirements else Path(sys.executable).parent

    def workers(self, server: Server, count: int, concurrency: int = 10) -> list[list[str]]:
        """The commands that start ``count`` worker processes, each running up to
        ``concurrency`` jobs at once where the system's worker takes such a setting."""
        b = self.bin()
        py = str(b / "python")
        one: dict[str, list[str]] = {
            "tqueues": [str(b / "tqueues_worker"), "--endpoint_url", server.url, "--queue", QUEUE,
                        "--allow", "benchmarks.peers", "--concurrency", str(concurrency),
                        "--loglevel", "WARNING"],
            "rq": [str(b / "rq"), "worker", "--url", server.url, "--worker-class",
                   "rq.worker.SimpleWorker", "--logging_level", "WARNING", QUEUE],
            "arq": [py, "-m", "benchmarks.peers.run_arq"],
            "celery": [str(b / "celery"), "-A", "benchmarks.peers.tasks_celery", "worker",
                       "--pool", "solo", "--loglevel", "WARNING"],
            "beanstalkd": [py, "-m", "benchmarks.peers.beanstalk_worker", str(server.port)],
            "procrastinate": [str(b / "procrastinate"),
                              "--app=benchmarks.peers.tasks_procrastinate.app", "worker",
                              "--queues", QUEUE, "--concurrency", str(concurrency)],
        }  # fmt: skip
        if self.producer == "dramatiq":  # one command; it forks the worker processes itself
            return [[str(b / "dramatiq"), "benchmarks.peers.tasks_dramatiq",
                     "--processes", str(count), "--threads", str(concurrency)]]  # fmt: skip
        commands = []
        urls = getattr(server, "urls", None) or [server.url]
        for index in range(count):
            argv = list(one[self.producer])
            if self.producer == "tqueues" and len(urls) > 1:  # spread over the dispatchers
                argv[argv.index("--endpoint_url") + 1] = urls[(index + 1) % len(urls)]
            if self.producer == "celery":
                argv += ["--hostname", f"bench{index}@%h"]
            commands.append(argv)
        return commands


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        System("tqueues", "tqueues (SQLite, sync FULL)", "tqueues", "tqueues",
               bulk_note="n/a (no HTTP bulk enqueue yet)",
               model="asyncio, --concurrency {concurrency}"),
        System("tqueues-normal", "tqueues (SQLite, --sync NORMAL)", "tqueues", "tqueues",
               dispatcher_args=("--sync", "NORMAL"),
               bulk_note="n/a (no HTTP bulk enqueue yet)",
               model="asyncio, --concurrency {concurrency}"),
        System("tqueues-rethinkdb", "tqueues (RethinkDB, durability hard)", "tqueues",
               "tqueues", model="asyncio, --concurrency {concurrency}", store="rethinkdb"),
        System("tqueues-rethinkdb-soft", "tqueues (RethinkDB, durability soft)", "tqueues",
               "tqueues", dispatcher_args=("--durability", "soft"),
               model="asyncio, --concurrency {concurrency}", store="rethinkdb"),
        System("tqueues-rethinkdb-3", "tqueues (RethinkDB, 3 dispatchers, durability hard)",
               "tqueues", "tqueues", model="asyncio, --concurrency {concurrency}; W2: 3 workers, "
               "one per dispatcher; W3: put through one dispatcher, taken through another",
               store="rethinkdb", dispatchers=3),
        System("rq", "RQ (Redis)", "rq", "redis", ("rq", "redis"),
               model="SimpleWorker (no fork per job), 1 at a time"),
        System("arq", "arq (Redis)", "arq", "redis", ("arq",), model="asyncio, max_jobs 10"),
        System("celery", "Celery (Redis)", "celery", "redis", ("celery[redis]",),
               model="--pool solo, 1 at a time"),
        System("dramatiq", "Dramatiq (Redis)", "dramatiq", "redis", ("dramatiq[redis]",),
               model="--processes 2 --threads {concurrency}"),
        System("beanstalkd", "beanstalkd + greenstalk", "beanstalkd", "beanstalkd",
               ("greenstalk",), model="reserve/run/delete loop, 1 at a time"),
        System("procrastinate", "procrastinate (PostgreSQL)", "procrastinate", "postgresql",
               ("procrastinate", "psycopg[binary,pool]"),
               model="asyncio, --concurrency {concurrency}"),
    )
}  # fmt: skip
#: Every system but tqueues on RethinkDB, which runs only where a server is named.
DEFAULT_SYSTEMS = tuple(name for name, s in SYSTEMS.items() if s.store != "rethinkdb")
RETHINKDB_ENV = "TQUEUES_BENCH_RETHINKDB"
SERVERS: dict[str, Callable[[Processes, Path], Server]] = {
    "redis": Redis,
    "beanstalkd": Beanstalkd,
    "postgresql": Postgres,
}
DEBIAN_FOR = {"redis": "redis-server", "beanstalkd": "beanstalkd", "postgresql": "postgresql"}


class BenchError(RuntimeError):
    """A workload could not be run; the message goes into the table."""


class Bench:
    """One run: the options, the processes it started, and where they write."""

    def __init__(self, options: argparse.Namespace, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.processes = Processes(self.logs)
        self._counter = 0

    def fresh_dir(self, prefix: str) -> Path:
        self._counter += 1
        path = self.workdir / f"{prefix}-{self._counter}"
        path.mkdir()
        return path

    def env(self, system: System, server: Server, sink_spec: str = "") -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQBENCH_SINK": sink_spec}
        env.pop("VIRTUAL_ENV", None)
        if server.name == "redis":
            env["TQBENCH_REDIS"] = server.url
        if server.name == "postgresql":
            env["TQBENCH_PG"] = server.url
        return env

    def server(self, system: System, prefill: int = 0) -> Server:
        """A started server (for tqueues, a dispatcher on a fresh store of ``prefill`` jobs)."""
        workdir = self.fresh_dir(system.name)
        if system.server == "tqueues":
            dispatcher: Dispatcher
            if system.store == "rethinkdb" and system.dispatchers > 1:
                db = f"tqbench_{os.getpid()}_{self._counter}"
                several = RethinkDBDispatchers(
                    self.processes, workdir, self.options.rethinkdb, db, system.dispatchers,
                    system.dispatcher_args, [QUEUE],
                )  # fmt: skip
                if prefill:
                    try:
                        asyncio.run(prefill_store(RethinkDBStore(several.settings), prefill))
                    except TqueuesError as exc:
                        with contextlib.suppress(ServiceError):
                            several.stop()
                        raise ServiceError(f"cannot fill the store: {exc}") from exc
                return several.start()
            if system.store == "rethinkdb":
                db = f"tqbench_{os.getpid()}_{self._counter}"
                dispatcher = RethinkDBDispatcher(
                    self.processes, workdir, self.options.rethinkdb, db,
                    system.dispatcher_args, [QUEUE],
                )  # fmt: skip
                store: Store = RethinkDBStore(dispatcher.settings)
            else:
                dispatcher = Dispatcher(self.processes, workdir, system.dispatcher_args, [QUEUE])
                store = SQLiteStore(dispatcher.data)
            if prefill:
                try:
                    asyncio.run(prefill_store(store, prefill))
                except TqueuesError as exc:  # StoreUnavailable: e.g. RethinkDB unreachable
                    with contextlib.suppress(ServiceError):
                        dispatcher.stop()  # drops the RethinkDB database it may have made
                    raise ServiceError(f"cannot fill the store: {exc}") from exc
            return dispatcher.start()
        server = SERVERS[system.server](self.processes, workdir).start()
        if system.server == "postgresql":
            self.produce(system, server, "reset")  # procrastinate's schema
        return server

    def produce(self, system: System, server: Server, action: str, **args: Any) -> dict[str, Any]:
        """Run one action of :mod:`benchmarks.peers.produce` in the system's virtualenv."""
        argv = [str(system.bin() / "python"), "-m", "benchmarks.peers.produce", system.producer,
                action, "--url", server.url]  # fmt: skip
        for key, value in args.items():
            argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
        try:
            done = subprocess.run(
                argv, env=self.env(system, server), cwd=ROOT, capture_output=True,
                text=True, timeout=PRODUCE_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{action} did not finish within {PRODUCE_TIMEOUT:g}s") from exc
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise BenchError(f"{action} failed: {tail}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def start_workers(self, system: System, server: Server, count: int, spec: str) -> list[Any]:
        env = self.env(system, server, spec)
        return [
            self.processes.start(argv, log=f"{system.name}-worker-{n}.log", env=env)
            for n, argv in enumerate(system.workers(server, count, self.options.concurrency))
        ]

    # -- workloads ---------------------------------------------------------------------------

    def w1(self, system: System) -> dict[str, Any]:
        """Enqueue ``--jobs`` jobs one call at a time, then (fresh server) in bulk, then
        (fresh server) one call at a time on the producer stream where there is one."""
        n = self.options.jobs
        with self.server(system) as server:
            single = self.produce(system, server, "enqueue", jobs=n)
        result: dict[str, Any] = {"single_per_s": n / single["seconds"]}
        with self.server(system) as server:
            bulk = self.produce(system, server, "bulk", jobs=n)
        if bulk.get("unsupported"):
            result["bulk"] = system.bulk_note
        else:
            result["bulk_per_s"] = n / bulk["seconds"]
        if system.server == "tqueues":
            with self.server(system) as server:
                streamed = self.produce(system, server, "stream", jobs=n)
            if not streamed.get("unsupported"):
                result["stream_per_s"] = n / streamed["seconds"]
            with self.server(system) as server:
                single_async = self.produce(system, server, "enqueue_async", jobs=n)
            if not single_async.get("unsupported"):
                result["single_async_per_s"] = n / single_async["seconds"]
        return result

    def w2(self, system: System) -> dict[str, Any]:
        """``--jobs`` jobs queued; 2 worker processes drain them (one per dispatcher where
        there are several). Also the CPU seconds each kind of process used meanwhile
        (tqueues: dispatchers, workers, and the RethinkDB server where it runs here)."""
        n = self.options.jobs
        with self.server(system, prefill=n if system.server == "tqueues" else 0) as server:
            if system.server != "tqueues":
                self.produce(system, server, "fill", jobs=n)
            times_dir = self.fresh_dir(f"{system.name}-w2-times")
            launched = time.time()
            count = system.dispatchers if system.dispatchers > 1 else 2
            workers = self.start_workers(system, server, count, f"file:{times_dir}")
            roles = {
                "dispatchers": dispatcher_pids(server),
                "workers": [worker.pid for worker in workers],
                "rethinkdb": rethinkdb_pids(self.options.rethinkdb)
                if system.store == "rethinkdb"
                else [],
            }
            server_address = self.options.rethinkdb if system.store == "rethinkdb" else None
            counts_before = rethinkdb_counts(server_address)
            cpu_before = {role: cpu_seconds(pids) for role, pids in roles.items()}
            wall = time.monotonic()
            try:
                done = self._wait_for_records(times_dir, n, workers, system)
                cpu = {
                    role: cpu_seconds(pids) - cpu_before[role]
                    for role, pids in roles.items()
                    if pids
                }
                counts_after = rethinkdb_counts(server_address)
                wall = time.monotonic() - wall
                urls = getattr(server, "urls", None) or [server.url]
                work = store_work(urls) if system.server == "tqueues" else {}
            finally:
                for worker in workers:
                    self.processes.stop(worker)
        times = read_times(times_dir)
        if done < n:
            raise BenchError(f"only {done} of {n} jobs ran within {DRAIN_TIMEOUT:g}s")
        first, last = min(times), max(times)
        return {
            "per_s": (len(times) - 1) / (last - first) if last > first else None,
            "startup_s": first - launched,
            "jobs": len(times),
            "cpu_s": {role: round(seconds, 2) for role, seconds in cpu.items()},
            "wall_s": round(wall, 2),
            # the dispatchers' stores' own counts since they started (tqueues_store_work)
            "store_work": work,
            # the RethinkDB server's work meanwhile: queries run (its change feeds'
            # continuations included), documents read and written
            "server": {
                key: counts_after[key] - value
                for key, value in counts_before.items()
                if key in counts_after
            },
        }

    def _wait_for_records(self, directory: Path, n: int, workers: list[Any], system: System) -> int:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        done = 0
        while time.monotonic() < deadline:
            done = sum(p.stat().st_size // sink.LINE for p in directory.iterdir())
            if done >= n:
                return done
            if any(worker.poll() is not None for worker in workers):
                raise BenchError(
                    f"a worker exited: {self.processes.tail(f'{system.name}-worker-0.log')}"
                )
            time.sleep(0.05)
        return done

    def w3(self, system: System) -> dict[str, Any]:
        """One idle worker; one job at a time; enqueue-to-start latency: this round's
        share of ``--samples`` (the rounds' samples are pooled, see :func:`pooled`); then
        (tqueues) as many with each job put on the job stream, under ``"stream"``."""
        samples = max(1, round(self.options.samples / self.options.repeat))
        with self.server(system) as server:
            port = free_port_udp()
            workers = self.start_workers(system, server, 1, f"udp:{port}")
            try:
                server_address = self.options.rethinkdb if system.store == "rethinkdb" else None
                counts_before = rethinkdb_counts(server_address)
                ms = self.produce(system, server, "latency", jobs=samples, udp=port)["ms"]
                counts_after = rethinkdb_counts(server_address)
                result = latencies(ms)
                if counts_before and counts_after:  # the server's work for these samples
                    result["server"] = {
                        key: counts_after[key] - value for key, value in counts_before.items()
                    }
                if system.server == "tqueues":
                    streamed = self.produce(
                        system, server, "latency", jobs=samples, udp=port, stream=True
                    )
                    if not streamed.get("unsupported"):
                        result["stream"] = latencies(streamed["ms"])
            finally:
                for worker in workers:
                    self.processes.stop(worker)
        return result

    def w4(self, rethinkdb: str | None = None) -> dict[str, Any]:
        """The deep-queue benchmark of the embedded store (sync FULL), or of the RethinkDB
        store on the server at ``rethinkdb`` (host:port), in this process."""
        sizes = [200, 2000] if self.options.quick else [1000, 1_000_000]
        cycles = 50 if self.options.quick else 500
        rows = asyncio.run(deep_queue.main(sizes, cycles, "FULL", rethinkdb=rethinkdb))
        first, last = rows[0], rows[-1]
        return {
            "rows": rows,
            "take_ratio": last["take_us_p50"] / first["take_us_p50"],
            "finish_ratio": last["finish_us_p50"] / first["finish_us_p50"],
            "report": deep_queue.report(rows),
        }

    # -- one system ----------------------------------------------------------------------------

    def versions(self, system: System) -> dict[str, str]:
        found = {}
        if system.server != "tqueues":
            found[f"{system.server} server"] = SERVERS[system.server](
                self.processes, self.workdir
            ).version()
        dummy = Server(self.processes, self.workdir)
        found.update(self.produce(system, dummy, "versions"))
        if system.server == "tqueues":
            found["tqueues commit"] = git_commit()
        if system.store == "rethinkdb":
            settings = rethinkdb_settings(self.options.rethinkdb, "rethinkdb")
            found["rethinkdb server"] = rethinkdb_version(settings)
            found["rethinkdb driver"] = metadata.version("rethinkdb")
        return found

    def prepare(self, system: System, unavailable: dict[str, str]) -> dict[str, Any]:
        """Install one system; its row (versions, or the error that rules it out)."""
        model = system.model.format(concurrency=self.options.concurrency)
        row: dict[str, Any] = {"label": system.label, "model": model}
        reason = unavailable.get(DEBIAN_FOR.get(system.server, ""))
        if reason:
            return {**row, "error": reason}
        if system.requirements and not self.options.quick:
            try:
                ensure_venv(system.name, system.requirements, VENVS, self.logs / "pip.log")
            except ServiceError as exc:
                return {**row, "error": str(exc)}
        try:
            row["versions"] = self.versions(system)
        except (BenchError, ServiceError, OSError) as exc:
            return {**row, "error": f"cannot run its client: {exc}"}
        return row

    def run_round(self, system: System, runs: dict[str, list[dict[str, Any]]], turn: int) -> None:
        """One round of W1-W3 for one system, added to its ``runs`` per workload; a failed
        workload is recorded (and not run again), never fatal."""
        for name, workload in (("W1", self.w1), ("W2", self.w2), ("W3", self.w3)):
            done = runs.setdefault(name, [])
            if done and "error" in done[0]:
                continue
            started = time.monotonic()
            try:
                done.append(workload(system))
            except (BenchError, ServiceError, OSError, ValueError, KeyError) as exc:
                runs[name] = [{"error": f"{type(exc).__name__}: {exc}"}]
                say(f"  {system.name} {name} #{turn + 1}: {runs[name][0]['error']}")
                continue
            finally:
                self.processes.stop_all()
            brief = {k: v for k, v in done[-1].items() if k not in ("runs", "ms")}
            say(f"  {system.name} {name} #{turn + 1}: {brief} "
                f"({time.monotonic() - started:.1f}s)")  # fmt: skip


def latencies(ms: list[float]) -> dict[str, Any]:
    """W3's numbers of enqueue-to-start latencies ``ms`` (milliseconds), which it keeps."""
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {
        "p50_ms": statistics.median(ms),
        "p95_ms": cuts[94],
        "p99_ms": cuts[98],
        "max_ms": max(ms),
        "samples": len(ms),
        "ms": ms,
    }


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """W3 of several rounds: the numbers of all their samples together (and of their
    samples on the job stream, where every round has them)."""
    if "error" in runs[0]:
        return runs[0]
    result = latencies([sample for run in runs for sample in run["ms"]])
    if all("stream" in run for run in runs):
        result["stream"] = latencies([sample for run in runs for sample in run["stream"]["ms"]])
    return result


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from repeated runs: the median of each number, with every run kept."""
    if len(runs) == 1:
        return runs[0]
    merged: dict[str, Any] = {}
    for key, value in runs[0].items():
        values = [run.get(key) for run in runs]
        numbers = [v for v in values if isinstance(v, int | float)]
        merged[key] = statistics.median(numbers) if len(numbers) == len(values) else value
    merged["runs"] = runs
    return merged


def git_commit() -> str:
    """The checkout's commit, marked when tqueues/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tqueues"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return f"{head} (with uncommitted changes in tqueues/)" if dirty else head or "?"


def free_port_udp() -> int:
    """A UDP port on 127.0.0.1 that nothing is bound to right now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def prefill_store(store: Store, n: int, queues: Sequence[str] = (QUEUE,)) -> None:
    """Queue ``n`` no-op jobs in ``store`` (unopened, fresh) before its dispatcher starts,
    in turns over ``queues``."""
    from tqueues.jobs import NewJob, QueueConfig

    async with store:
        for queue in queues:
            await store.create_queue(QueueConfig(queue))
        for start in range(0, n, 5000):
            await store.put_many(
                [
                    NewJob(
                        queue=queues[x % len(queues)],
                        method="benchmarks.peers.tasks_tqueues:noop",
                        args=[x],
                    )
                    for x in range(start, min(n, start + 5000))
                ]
            )


def dispatcher_pids(server: Server) -> list[int]:
    """The process ids of a tqueues server's dispatchers (none for other servers)."""
    pids = getattr(server, "pids", None)
    if callable(pids):
        return list(pids())
    process = getattr(server, "process", None)
    return [process.pid] if server.name == "tqueues" and process is not None else []


def rethinkdb_pids(address: str | None) -> list[int]:
    """The process that listens on ``address``'s port here (a RethinkDB server started on
    this machine), found with ``ss``; none if it runs elsewhere or ``ss`` is missing."""
    if not address:
        return []
    port = address.rpartition(":")[2]
    try:
        listing = subprocess.run(
            ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", listing)})


def cpu_seconds(pids: Sequence[int]) -> float:
    """The CPU seconds (user and system) the processes ``pids`` have used so far (Linux
    ``/proc``; a process that is gone counts 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def read_times(directory: Path) -> list[float]:
    """Every start time the jobs recorded in ``directory``."""
    times = []
    for path in directory.iterdir():
        times += [float(line) for line in path.read_text().split()]
    return times


def say(message: str) -> None:
    """Progress, on stderr (the table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "os": _os_name(),
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


# -- the table --------------------------------------------------------------------------------


def _cell(workload: dict[str, Any] | None, key: str, fmt: str) -> str:
    if workload is None:
        return ""
    if "error" in workload:
        return "error"
    value = workload.get(key)
    if isinstance(value, str):
        return value
    return "" if value is None else format(value, fmt)


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The results as a Markdown table, then the errors and versions under it."""
    lines = [
        "| system | W1 enqueue (jobs/s) | W1 stream (jobs/s) | W1 bulk (jobs/s) "
        "| W2 drain (jobs/s) | W2 start-up (s) | W3 p50 (ms) | W3 p95 (ms) | W3 p99 (ms) "
        "| W3 stream p50 (ms) | W3 stream p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for row in rows.values():
        if "error" in row:
            lines.append(f"| {row['label']} | not run: {row['error']} | | | | | | | | | |")
            continue
        w1, w2, w3 = row.get("W1"), row.get("W2"), row.get("W3")
        bulk = _cell(w1, "bulk_per_s", ",.0f") or _cell(w1, "bulk", "")
        streamed = _cell(w1, "stream_per_s", ",.0f") or ("n/a" if w1 and "error" not in w1 else "")
        w3s = (w3 or {}).get("stream")
        na = "n/a" if w3 and "error" not in w3 else ""
        lines.append(
            f"| {row['label']} | {_cell(w1, 'single_per_s', ',.0f')} | {streamed} | {bulk} "
            f"| {_cell(w2, 'per_s', ',.0f')} | {_cell(w2, 'startup_s', '.2f')} "
            f"| {_cell(w3, 'p50_ms', '.2f')} | {_cell(w3, 'p95_ms', '.2f')} "
            f"| {_cell(w3, 'p99_ms', '.2f')} "
            f"| {_cell(w3s, 'p50_ms', '.2f') or na} | {_cell(w3s, 'p99_ms', '.2f') or na} |"
        )
        if w1 and "single_async_per_s" in w1:
            notes.append(
                f"* {row['label']} W1 enqueue with the asyncio client: "
                f"{w1['single_async_per_s']:,.0f} jobs/s"
            )
        for workload in ("W1", "W2", "W3"):
            if "error" in (row.get(workload) or {}):
                notes.append(f"* {row['label']} {workload}: {row[workload]['error']}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def versions_lines(rows: dict[str, dict[str, Any]]) -> str:
    """One line per system: its server's and its packages' versions."""
    return "\n".join(
        f"* {row['label']}: "
        + ", ".join(f"{k} {v}" for k, v in (row.get("versions") or {}).items())
        for row in rows.values()
        if row.get("versions")
    )


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in W1 and W2")
    parser.add_argument("--samples", type=int, default=300, help="jobs timed in W3")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of every system (W1, W2: medians kept; W3: samples pooled)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=10,
        help="jobs each worker process runs at once, for the systems whose workers take "
        "such a setting (tqueues, procrastinate, dramatiq's threads); default 10",
    )
    parser.add_argument("--no-w4", action="store_true", help="skip the deep-queue benchmark")
    parser.add_argument("--json", type=Path, help="where to write the results (default: "
                        "benchmarks/.results/<date>.json)")  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="tqueues only, 300 jobs, 50 samples, no installs"
    )
    parser.add_argument(
        "--rethinkdb",
        metavar="HOST:PORT",
        default=os.environ.get(RETHINKDB_ENV) or None,
        help=f"a RethinkDB server for tqueues-rethinkdb (default: ${RETHINKDB_ENV}); "
        "with it, the default systems include tqueues-rethinkdb",
    )
    options = parser.parse_args(argv)
    if options.rethinkdb:
        try:
            rethinkdb_settings(options.rethinkdb, "rethinkdb")
        except ValueError as exc:
            parser.error(f"--rethinkdb: {exc}")
    if options.quick:
        options.jobs, options.samples = min(options.jobs, 300), min(options.samples, 50)
        options.repeat = 1
        if options.systems == ",".join(DEFAULT_SYSTEMS):
            options.systems = "tqueues"
    elif options.rethinkdb and options.systems == ",".join(DEFAULT_SYSTEMS):
        options.systems += ",tqueues-rethinkdb"
    names = [s.strip() for s in options.systems.split(",") if s.strip()]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    if options.quick and any(SYSTEMS[n].requirements for n in names):
        parser.error("--quick runs tqueues only (no installs)")
    on_rethinkdb = [n for n in names if SYSTEMS[n].store == "rethinkdb"]
    if on_rethinkdb and not options.rethinkdb:
        parser.error(f"{on_rethinkdb[0]} needs a server: --rethinkdb HOST:PORT or ${RETHINKDB_ENV}")
    options.names = names
    return options


def run(options: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``options``; the results (also written as JSON)."""
    started = datetime.datetime.now(datetime.UTC)
    systems = [SYSTEMS[n] for n in options.names]
    with tempfile.TemporaryDirectory(prefix="tqbench-") as tmp:
        bench = Bench(options, Path(tmp))
        unavailable: dict[str, str] = {}
        try:
            wanted = sorted({DEBIAN_FOR[s.server] for s in systems if s.server in DEBIAN_FOR})
            if wanted:
                say(f"checking Debian packages: {', '.join(wanted)}")
                unavailable = ensure_debian_packages(wanted, bench.logs / "apt.log")
            rows = {system.name: bench.prepare(system, unavailable) for system in systems}
            # Round after round of every system, so that a slow spell of the machine (they
            # last minutes on a shared one) weighs on all of them alike.
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in systems}
            for turn in range(options.repeat):
                for system in systems:
                    if "error" not in rows[system.name]:
                        say(f"{system.label}, round {turn + 1} of {options.repeat}:")
                        bench.run_round(system, runs[system.name], turn)
            for system in systems:
                if runs[system.name]:
                    found = runs[system.name]
                    rows[system.name].update(W1=medians(found["W1"]), W2=medians(found["W2"]),
                                             W3=pooled(found["W3"]))  # fmt: skip
            w4 = w4_rethinkdb = None
            if not options.no_w4 and any(
                s.store == "sqlite" for s in systems if s.server == "tqueues"
            ):
                say("W4 deep queue ...")
                w4 = bench.w4()
            if not options.no_w4 and any(s.store == "rethinkdb" for s in systems):
                say("W4 deep queue, RethinkDB store ...")
                try:
                    w4_rethinkdb = bench.w4(options.rethinkdb)
                except Exception as exc:  # recorded, never fatal, like the workloads
                    w4_rethinkdb = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            bench.processes.stop_all()
    results = {
        "date": started.isoformat(timespec="seconds"),
        "seconds": (datetime.datetime.now(datetime.UTC) - started).total_seconds(),
        "machine": machine(),
        "options": {
            "jobs": options.jobs,
            "samples": options.samples,
            "repeat": options.repeat,
            "concurrency": options.concurrency,
            "quick": options.quick,
        },
        "systems": rows,
        "W4": w4,
        "W4_rethinkdb": w4_rethinkdb,
    }
    results["table"] = table(rows)
    return results


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``: every process is stopped


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.run``: run, print the table, write the JSON; the exit status."""
    options = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    results = run(options)
    m = results["machine"]
    print(f"\n{results['date']} on {m['nproc']} x {m['cpu']}, {m['memory']}, "
          f"Python {m['python']}, {m['os']}\n")  # fmt: skip
    print(results["table"])
    print(f"\nVersions:\n\n{versions_lines(results['systems'])}")
    if results["W4"]:
        print(f"\nW4 deep queue (tqueues embedded store, sync FULL):\n\n{results['W4']['report']}")
    if results["W4_rethinkdb"]:
        w4 = results["W4_rethinkdb"]
        print(f"\nW4 deep queue (tqueues RethinkDB store):\n\n{w4.get('report') or w4['error']}")
    out = options.json or RESULTS / f"{results['date'].replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults written to {out}")
    failed = [n for n, row in results["systems"].items() if "error" in row] + [
        f"{n} {w}" for n, row in results["systems"].items() for w in ("W1", "W2", "W3")
        if "error" in (row.get(w) or {})
    ]  # fmt: skip
    return 1 if failed and options.quick else 0


if __name__ == "__main__":
    sys.exit(main())
