"""What WebSocket clients that never read, and one listing of large jobs, cost the dispatcher.

Starts a real ``tqueues_dispatcher`` (embedded store, ``--sync NORMAL``, in a temporary
directory; or the RethinkDB store with ``--rethinkdb HOST:PORT``, in a fresh database
dropped afterwards), opens ``--clients`` WebSocket clients on ``/ws?queue=bench`` that
never read (raw sockets with a receive buffer of 4 KiB, so the kernel holds next to
nothing for them), then puts ``--jobs`` jobs of ``--size`` bytes one after another (each
put is a change every client is sent). It reports the dispatcher's resident memory
(``VmRSS`` of ``/proc/PID/status``) before, at its highest while the jobs change (sampled
every 20 ms, and ``VmHWM``), and after them with the clients still connected; whether the
clients were closed, with which code and reason; and the slowest ``GET /health`` during
the puts. Then one ``GET /queues/bench/jobs?limit=1000``: the bytes of its answer, the
memory at its highest while it is built, and the slowest ``/health`` meanwhile. Then the
snapshot: ``--clients`` new silent clients connect to the queue, which now holds the jobs,
and one more reads its whole snapshot; the memory at its highest meanwhile, and after.

    .venv/bin/python -m benchmarks.ws_memory                        # 1,000 jobs of 900 kB
    .venv/bin/python -m benchmarks.ws_memory --jobs 200 --size 500000 --clients 20
    .venv/bin/python -m benchmarks.ws_memory --rethinkdb localhost:28015
    .venv/bin/python -m benchmarks.ws_memory -- --ws_buffer 1048576   # dispatcher options

Linux only (``/proc``). Everything is on loopback.

Measured on the 2-core test machine, embedded store, before (4217603) and after the
budget in bytes of issue #21, 5 (RSS in MiB)::

    1 silent client, 1,000 puts of 900 kB   before: 44.7 -> 982.6, never closed
                                            after:  45.3 -> 129.7, closed with 1013
    GET .../jobs?limit=1000                 before: 859 MiB answer, RSS peak 4,318,
                                                    /health 6.7 s behind it
                                            after:  4.3 MiB (5 jobs), 145, 3 ms
    20 silent clients connect to a queue    before: 1,446 -> 10,466
    of 500 jobs of 900 kB                   after:  144 -> 318

Of the 130 MiB after, up to 64 MiB is SQLite's page cache (``cache_size``): 200 puts of
500 kB with no client at all take the dispatcher from 45 to 118 MiB. On RethinkDB, before:
45.6 -> 913 MiB, the listing a 503 after the store's 10 s timeout (/health 8.2 s behind
it), the snapshot ended after 10 s without a job; after: 46.8 -> 71.9 MiB, the listing
0.56 s (the server reads 16 documents for a page of 5), the snapshot whole.

The silent clients are read only once the puts are done: a client the dispatcher closed
more than 10 s before finds the end of the stream, not the close frame (the dispatcher
cuts off a client that does not take its close in that time).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from benchmarks.services import ROOT, ServiceError, drop_rethinkdb_database, rethinkdb_settings

DISPATCHER = str(Path(sys.executable).parent / "tqueues_dispatcher")
LISTENING = re.compile(r"listening on (http://[^\s/]+/)")
QUEUE = "bench"
MIB = 1024 * 1024


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """``field`` (VmRSS, VmHWM) of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} in /proc/{pid}/status")


class RawWebSocket:
    """A WebSocket client on a plain socket that reads nothing after the handshake until
    told to (:meth:`read_until_closed`): its receive buffer is made small before it
    connects, so the kernel holds little for it and the dispatcher holds the rest."""

    def __init__(self, host: str, port: int, path: str, *, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)  # byte by byte: nothing past the headers is read
            if not chunk:
                raise ConnectionError("the dispatcher closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {head!r}")

    def read_until_closed(self, timeout: float) -> tuple[int, int | None, str]:
        """Read every frame until a close frame or the end of the stream (``timeout``
        seconds at most): (text frames read, close code or None, close reason)."""
        self.sock.settimeout(timeout)
        buffer, frames = b"", 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(1 << 20)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= 2:
                opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
                start = 2
                if length == 126:
                    if len(buffer) < 4:
                        break
                    (length,), start = struct.unpack("!H", buffer[2:4]), 4
                elif length == 127:
                    if len(buffer) < 10:
                        break
                    (length,), start = struct.unpack("!Q", buffer[2:10]), 10
                if len(buffer) < start + length:
                    break
                payload, buffer = buffer[start : start + length], buffer[start + length :]
                if opcode == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return frames, code, payload[2:].decode(errors="replace")
                frames += opcode == 0x1
        return frames, None, ""

    def close(self) -> None:
        self.sock.close()


@contextlib.asynccontextmanager
async def dispatcher(extra: Sequence[str], log_path: Path) -> AsyncIterator[tuple[int, str]]:
    """A dispatcher process (pid, base URL); stopped (SIGTERM, then SIGKILL) on exit."""
    with tempfile.TemporaryDirectory(prefix="tq-wsmem-") as data, open(log_path, "wb") as log:
        argv = [DISPATCHER, "--listen", "127.0.0.1:0", "--data", data, "--sync", "NORMAL"]
        proc = subprocess.Popen([*argv, *extra], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            while not (match := LISTENING.search(log_path.read_text(errors="replace"))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ServiceError(f"the dispatcher did not start:\n{log_path.read_text()}")
                await asyncio.sleep(0.05)
            yield proc.pid, match.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def slowest_health(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> float:
    """Call ``GET /health`` one after another until ``stop``; the slowest answer, seconds."""
    slowest = 0.0
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url + "health") as response:
            await response.read()
        slowest = max(slowest, time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return slowest


async def highest_rss(pid: int, stop: asyncio.Event) -> int:
    """Sample VmRSS every 20 ms until ``stop``; the highest."""
    highest = rss_bytes(pid)
    while not stop.is_set():
        highest = max(highest, rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return max(highest, rss_bytes(pid))


async def measure(
    jobs: int, size: int, clients: int, extra: Sequence[str], log_path: Path
) -> dict[str, Any]:
    """Run the scenario once; the measurements (bytes, seconds) as a dict."""
    async with dispatcher(extra, log_path) as (pid, url), aiohttp.ClientSession() as session:
        async with session.put(url + f"queues/{QUEUE}") as response:
            assert response.status in (200, 201), await response.text()
        host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        sockets = [RawWebSocket(host, int(port), f"/ws?queue={QUEUE}") for _ in range(clients)]
        body = json.dumps(
            {"queue": QUEUE, "method": "benchmarks.noop:run", "args": ["x" * size]}
        ).encode()
        headers = {"Content-Type": "application/json"}
        before = rss_bytes(pid)
        stop = asyncio.Event()
        sampler = asyncio.create_task(highest_rss(pid, stop))
        health = asyncio.create_task(slowest_health(session, url, stop))
        started = time.perf_counter()
        for _ in range(jobs):
            async with session.post(url, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
        elapsed = time.perf_counter() - started
        stop.set()
        peak, health_put = await sampler, await health
        after = rss_bytes(pid)
        closes = [ws.read_until_closed(timeout=5) for ws in sockets]
        for ws in sockets:
            ws.close()
        # The listing: one page of up to 1,000 jobs, and /health meanwhile.
        stop = asyncio.Event()
        before_list = rss_bytes(pid)
        sampler = asyncio.create_task(highest_rss(pid, stop))
        health = asyncio.create_task(slowest_health(session, url, stop))
        list_started = time.perf_counter()
        async with session.get(url + f"queues/{QUEUE}/jobs", params={"limit": "1000"}) as response:
            list_status, page = response.status, await response.read()
        list_elapsed = time.perf_counter() - list_started
        stop.set()
        list_peak, health_list = await sampler, await health
        listed = json.loads(page) if list_status == 200 else {"jobs": [], "next_cursor": None}
        # The snapshot: as many silent clients connect to the queue that now holds the
        # jobs, then one client reads its whole snapshot (by then the silent clients'
        # handlers have read what they hold).
        stop = asyncio.Event()
        before_snapshot = rss_bytes(pid)
        sampler = asyncio.create_task(highest_rss(pid, stop))
        ws_url = url.replace("http://", "ws://", 1) + f"ws?queue={QUEUE}"
        snapshot_started = time.perf_counter()
        snapshot_jobs, snapshot_end, sockets = 0, "synced", []
        try:  # RethinkDB, before: the store's 10 s timeout ended the stream, or refused it
            sockets += [RawWebSocket(host, int(port), f"/ws?queue={QUEUE}") for _ in range(clients)]
            async with session.ws_connect(ws_url, max_msg_size=0) as reading:
                while (message := await reading.receive(timeout=600)).type is WSMsgType.TEXT:
                    if message.json()["type"] == "synced":
                        break
                    snapshot_jobs += 1
                else:
                    snapshot_end = f"{message.type.name} {message.data} {message.extra or ''}"
        except (ConnectionError, aiohttp.ClientError) as exc:
            snapshot_end = f"refused: {exc}"[:200]
        snapshot_elapsed = time.perf_counter() - snapshot_started
        stop.set()
        snapshot_peak = await sampler
        snapshot_after = rss_bytes(pid)
        for ws in sockets:
            ws.close()
        return {
            "jobs": jobs,
            "job_bytes": len(body),
            "clients": clients,
            "puts_s": round(elapsed, 2),
            "rss_before_mib": round(before / MIB, 1),
            "rss_peak_mib": round(peak / MIB, 1),
            "rss_after_mib": round(after / MIB, 1),
            "vmhwm_mib": round(rss_bytes(pid, "VmHWM") / MIB, 1),
            "slowest_health_during_puts_ms": round(health_put * 1000, 1),
            "clients_closed": [(code, reason) for _, code, reason in closes],
            "frames_read_after": [frames for frames, _, _ in closes],
            "list_status": list_status,  # RethinkDB, before: 503 after its 10 s timeout
            "list_page_jobs": len(listed["jobs"]),
            "list_page_mib": round(len(page) / MIB, 1),
            "list_next_cursor": listed["next_cursor"] is not None,
            "list_s": round(list_elapsed, 3),
            "rss_before_list_mib": round(before_list / MIB, 1),
            "rss_peak_list_mib": round(list_peak / MIB, 1),
            "slowest_health_during_list_ms": round(health_list * 1000, 1),
            "snapshot_jobs": snapshot_jobs,
            "snapshot_end": snapshot_end,
            "snapshot_s": round(snapshot_elapsed, 2),
            "rss_before_snapshot_mib": round(before_snapshot / MIB, 1),
            "rss_peak_snapshot_mib": round(snapshot_peak / MIB, 1),
            "rss_after_snapshot_mib": round(snapshot_after / MIB, 1),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs put (1,000)")
    parser.add_argument("--size", type=int, default=900_000, help="bytes of each job (900,000)")
    parser.add_argument("--clients", type=int, default=1, help="non-reading clients (1)")
    parser.add_argument("--rethinkdb", metavar="HOST:PORT", help="the RethinkDB store")
    parser.add_argument("extra", nargs="*", help="options for tqueues_dispatcher (after --)")
    args = parser.parse_args(argv)
    extra = list(args.extra)
    settings = None
    if args.rethinkdb:
        settings = rethinkdb_settings(args.rethinkdb, f"tqbench_wsmem_{os.getpid()}")
        extra += ["--host", settings.host, "--port", str(settings.port), "--db", settings.db]
    with tempfile.TemporaryDirectory(prefix="tq-wsmem-log-") as logs:
        try:
            row = asyncio.run(
                measure(args.jobs, args.size, args.clients, extra, Path(logs) / "dispatcher.log")
            )
        finally:
            if settings is not None:
                drop_rethinkdb_database(settings)
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
