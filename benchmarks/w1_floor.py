"""W1's floor: how fast an aiohttp server answers one caller at a time, with a thread hop
and a disk sync per answer and without, beside tqueues' dispatcher.

``python -m benchmarks.w1_floor [--calls N]`` posts ``N`` small JSON jobs one at a time
(an aiohttp client session, as the tqueues client uses) to each server below, in turn,
and prints calls/s and the server's event-loop CPU per call (Linux: from /proc):

=================  ====================================================================
``answer``         an aiohttp server (uvloop) that reads the body and answers at once
``thread``         the same, answered once a thread has seen the request and handed it
                   back (what running a store off the event loop costs)
``sync``           the same, answered once that thread has written the body to a file
                   and ``fdatasync``-ed it: the least a server that answers only once
                   a job is on disk does, with its store off the event loop
``tqueues``        ``tqueues_dispatcher`` on the embedded store, ``--sync NORMAL`` and
                   ``FULL`` (the default)
=================  ====================================================================

It also prints the rate of bare TCP round trips between two processes (100 bytes each
way over loopback, no HTTP: what any one-call-at-a-time producer pays on this machine
before either side does any work) and the latency of a bare 4 KiB overwrite and
``fdatasync`` in this process.
``--serve MODE --port P --directory D`` is the server side (started by this module).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.services import Dispatcher, Processes, free_port, wait_for_tcp

QUEUE = "bench"
METHOD = "benchmarks.peers.tasks_tqueues:noop"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = 4096
MODES = ("answer", "thread", "sync")


def loop_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``'s main thread (its event loop)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# -- the server side ---------------------------------------------------------------------------


def echo(port: int) -> None:
    """Send back whatever each connection to 127.0.0.1:``port`` sends (one connection at
    a time), until killed."""
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while data := conn.recv(65536):
                    conn.sendall(data)


def serve(mode: str, port: int, directory: Path) -> None:
    """Run the ``mode`` server on 127.0.0.1:``port`` until killed."""
    if mode == "echo":
        echo(port)
        return
    import uvloop
    from aiohttp import web

    requests: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[None], bytes]]
    requests = queue.SimpleQueue()
    fd = os.open(directory / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    os.ftruncate(fd, 1024 * PAGE)  # overwritten in turn, as SQLite reuses its WAL

    def store() -> None:
        slot = 0
        while True:
            loop, future, body = requests.get()
            if mode == "sync":
                os.pwrite(fd, body.ljust(PAGE)[:PAGE], slot * PAGE)
                os.fdatasync(fd)
                slot = (slot + 1) % 1024
            loop.call_soon_threadsafe(future.set_result, None)

    threading.Thread(target=store, daemon=True).start()

    async def put(request: web.Request) -> web.Response:
        body = await request.read()
        if mode != "answer":
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            requests.put((loop, future, body))
            await future
        return web.json_response({"id": "0", "status": "pending"}, status=201)

    app = web.Application()
    app.router.add_post(f"/queues/{QUEUE}/jobs", put)
    web.run_app(app, host="127.0.0.1", port=port, loop=uvloop.new_event_loop(), print=None)


# -- the caller side ---------------------------------------------------------------------------


async def call(url: str, calls: int, pid: int) -> dict[str, float]:
    """Post ``calls`` jobs one at a time: calls/s and the server's loop CPU (µs) per call."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        target = f"{url}queues/{QUEUE}/jobs"
        for x in range(20):  # warm up: connection, caches
            async with session.post(target, json={"method": METHOD, "args": [x]}) as answer:
                await answer.read()
        cpu, started = loop_cpu(pid), time.perf_counter()
        for x in range(calls):
            async with session.post(target, json={"method": METHOD, "args": [x]}) as answer:
                await answer.read()
                if answer.status != 201:
                    raise RuntimeError(f"{target} answered {answer.status}")
        seconds = time.perf_counter() - started
        return {"calls_per_s": calls / seconds, "loop_us": (loop_cpu(pid) - cpu) / calls * 1e6}


def round_trips(port: int, calls: int) -> float:
    """Round trips per second of 100 bytes each way to the echo server on ``port``."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        message = b"x" * 100
        for _ in range(20):
            conn.sendall(message)
            conn.recv(65536)
        started = time.perf_counter()
        for _ in range(calls):
            conn.sendall(message)
            received = len(conn.recv(65536))
            while received < len(message):
                received += len(conn.recv(65536))
        return calls / (time.perf_counter() - started)


def sync_latency(directory: Path, n: int = 2000) -> float:
    """Microseconds for one 4 KiB overwrite + ``fdatasync`` of a file, back to back."""
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 64 * PAGE)
        started = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, b"x" * PAGE, (i % 64) * PAGE)
            os.fdatasync(fd)
        return (time.perf_counter() - started) / n * 1e6
    finally:
        os.close(fd)


def measure(calls: int) -> list[tuple[str, dict[str, float]]]:
    """Every server in turn; (name, result) rows."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="tqueues-w1-floor-") as tmp:
        work = Path(tmp)
        processes = Processes(work)
        try:
            for mode in MODES:
                port = free_port()
                server = processes.start(
                    [sys.executable, "-m", "benchmarks.w1_floor", "--serve", mode,
                     "--port", str(port), "--directory", str(work)],
                    log=f"{mode}.log",
                )  # fmt: skip
                wait_for_tcp(port, 30)
                rows.append(
                    (
                        f"aiohttp, {mode}",
                        asyncio.run(call(f"http://127.0.0.1:{port}/", calls, server.pid)),
                    )
                )
                processes.stop(server)
            for sync in ("NORMAL", "FULL"):
                dispatcher = Dispatcher(
                    processes, work / sync, ["--sync", sync], queues=[QUEUE]
                ).start()
                assert dispatcher.process is not None
                with dispatcher:
                    result = asyncio.run(call(dispatcher.url, calls, dispatcher.process.pid))
                rows.append((f"tqueues_dispatcher --sync {sync}", result))
            port = free_port()
            server = processes.start(
                [sys.executable, "-m", "benchmarks.w1_floor", "--serve", "echo",
                 "--port", str(port), "--directory", str(work)],
                log="echo.log",
            )  # fmt: skip
            wait_for_tcp(port, 30, probe=b"?", expect=b"?")
            rows.append(("(TCP round trip, no HTTP)", {"trips_per_s": round_trips(port, calls)}))
            processes.stop(server)
            rows.append(
                ("(4 KiB overwrite + fdatasync, no server)", {"sync_us": sync_latency(work)})
            )
        finally:
            processes.stop_all()
    return rows


def report(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| server | calls/s | server event loop CPU (µs/call) |", "|---|---:|---:|"]
    for name, row in rows:
        if "trips_per_s" in row:
            trips = row["trips_per_s"]
            lines.append(f"| {name} | {trips:,.0f} | ({1e6 / trips:.0f} µs each) |")
        elif "sync_us" in row:
            lines.append(
                f"| {name} | {1e6 / row['sync_us']:,.0f} | ({row['sync_us']:.0f} µs each) |"
            )
        else:
            lines.append(f"| {name} | {row['calls_per_s']:,.0f} | {row['loop_us']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--serve", choices=(*MODES, "echo"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--directory", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options.serve, options.port, options.directory)
        return
    print(report(measure(options.calls)))


if __name__ == "__main__":
    main()
