"""A real ``tqueues_dispatcher`` against hostile clients (issue #21): malformed requests
that carry the token and a burst of them (answered, never logged), slow and idle
connections (a deadline for request heads), more connections than it may serve (a cap,
idle ones making room) and its open-files limit. Everything on 127.0.0.1, bounded in count
and time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.acceptance.conftest import (
    DISPATCHER,
    LISTENING,
    STARTUP_TIMEOUT,
    Api,
    Cluster,
    DispatcherProc,
    wait_for,
)
from tqueues.dispatcher import server

TOKEN = "hardening-" + "Zq7" * 9  # what must never reach the log


def port_of(dispatcher: DispatcherProc) -> int:
    port = urlsplit(dispatcher.url).port
    assert port is not None
    return port


async def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a new connection; everything the dispatcher sends back until it
    closes the connection (it closes after refusing a malformed request)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert match, answer[:200]
    return int(match.group(1)), body


#: Malformed requests with the token where aiohttp quotes what it cannot parse.
MALFORMED = {
    "query-ctl": b"GET /ws?queue=q&access_token=" + TOKEN.encode() + b"\x01 HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    "auth-del": b"GET /?queue=q HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\x7f\r\n\r\n",
    "auth-nul": b"GET /?queue=q HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\x00\r\n\r\n",
    "header-nul": b"GET /?queue=q HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nX: a\x00b\r\n\r\n",
    "line-nul": b"GET /?access_token=" + TOKEN.encode() + b" HTTP/1.1\x00\r\nHost: x\r\n\r\n",
    "method": TOKEN.encode() + b" / HTTP/1.1\r\nHost: x\r\n\r\n",
    "line-too-long": b"GET /" + b"a" * 9000 + TOKEN.encode() + b" HTTP/1.1\r\n\r\n",
    "header-too-long": b"GET / HTTP/1.1\r\nX-Token: " + TOKEN.encode() * 400 + b"\r\n\r\n",
    "chunk-size": b"POST /?queue=q HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz"
    + TOKEN.encode()
    + b"\r\n0\r\n\r\n",
}


async def test_malformed_requests_never_log_the_token_nor_a_traceback(cluster: Cluster) -> None:
    # Given a dispatcher with a token
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN)
    port = port_of(dispatcher)
    # When malformed requests carry the token where aiohttp would quote it
    for name, request in MALFORMED.items():
        status, body = status_and_body(await exchange(port, request))
        # Then each is answered 400 in JSON, without quoting the request
        assert status == 400, (name, body)
        assert json.loads(body)["error"] == "bad_http_request", (name, body)
        assert TOKEN.encode() not in body, name
    # And requests whose body cannot be read, with a valid token, are 400 as well
    gzip_garbage = (
        b"POST /queues/q/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 20\r\n\r\n" + TOKEN.encode()[:20]
    )
    status, body = status_and_body(await exchange(port, gzip_garbage))
    assert status == 400 and b"cannot be read" in body, body
    # (a GET whose broken body the dispatcher never reads)
    status, _ = status_and_body(await exchange(port, gzip_garbage.replace(b"POST", b"GET", 1)))
    assert status in (400, 401, 404, 405)
    # And a client that sends half a body and goes away
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(gzip_garbage.replace(b"Content-Length: 20", b"Content-Length: 900")[:-5])
    await writer.drain()
    writer.close()
    # And a WebSocket handshake with a wrong token as a (well-formed) query parameter
    ws = f"GET /ws?queue=q&access_token={TOKEN}%01 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, _ = status_and_body(await exchange(port, ws.encode()))
    assert status == 401
    # Then, once the dispatcher has stopped (and logged what it refused), its log holds
    # neither the token nor a traceback
    dispatcher.proc.signal(signal.SIGTERM)
    assert await dispatcher.proc.wait_exit(timeout=15) == 0
    log = dispatcher.proc.log()
    assert TOKEN not in log and TOKEN[:16] not in log, log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert refused_counts(log).get("malformed", 0) >= len(MALFORMED), log


def refused_counts(log: str) -> dict[str, int]:
    """What the dispatcher's summary lines say it refused: kind (first word) -> count."""
    counts: dict[str, int] = {}
    for line in log.splitlines():
        if " refused " not in line:
            continue
        for number, kind in re.findall(r"(\d+) ([a-z-]+)", line.split(" refused ", 1)[1]):
            counts[kind] = counts.get(kind, 0) + int(number)
    return counts


async def test_a_burst_of_malformed_requests_grows_the_log_by_a_few_lines(
    cluster: Cluster,
) -> None:
    # Given a dispatcher with a token
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN)
    port = port_of(dispatcher)
    lines_before = len(dispatcher.proc.log().splitlines())
    # When 2,000 requests with a NUL in a header arrive, 20 connections at a time
    request = MALFORMED["header-nul"]
    statuses: list[int] = []

    async def send(count: int) -> None:
        for _ in range(count):
            statuses.append(status_and_body(await exchange(port, request))[0])

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(send(100) for _ in range(20))), 120)
    elapsed = time.monotonic() - started
    # Then every one is answered 400, and the log grew by a few lines at most
    assert statuses == [400] * 2000
    grown = dispatcher.proc.log().splitlines()[lines_before:]
    assert len(grown) <= 3, grown
    # And, once stopped, its summary counts every one of them
    dispatcher.proc.signal(signal.SIGTERM)
    assert await dispatcher.proc.wait_exit(timeout=15) == 0
    log = dispatcher.proc.log()
    assert refused_counts(log).get("malformed") == 2000, log
    assert len(log.splitlines()) - lines_before <= 4, log
    assert TOKEN not in log and "Traceback" not in log
    print(f"2,000 malformed requests in {elapsed:.1f} s")


async def trickle(writer: asyncio.StreamWriter, started: float) -> float:
    """Send a byte of a header every 2 ms until the connection is closed; the seconds
    from ``started`` (``time.monotonic()``) until it was.

    Bytes are then nearly always on their way when the head's deadline passes, and a
    server that closes at once resets the connection: its 408 would be lost."""
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(100))
    with contextlib.suppress(ConnectionError):
        for i in itertools.count():
            writer.write(headers[i % len(headers) :][:1])
            await writer.drain()
            await asyncio.sleep(0.002)  # the attack's pace, not a synchronisation
    return time.monotonic() - started


async def get_health(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """``GET /health`` on a kept-alive connection; its status (the connection stays open)."""
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    assert length, head
    await asyncio.wait_for(reader.readexactly(int(length.group(1))), 10)
    return status_and_body(head)[0]


async def test_a_head_that_does_not_arrive_in_time_is_answered_408_and_closed(
    cluster: Cluster,
) -> None:
    # Given a dispatcher whose request heads must arrive within 1 s
    dispatcher = await cluster.dispatcher(None, "--header_timeout", "1")
    port = port_of(dispatcher)
    # When a client sends its headers a few bytes at a time (slowloris)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    trickling = asyncio.create_task(trickle(writer, started))
    try:
        # Then it is answered 408 about the deadline after it began
        answer = await asyncio.wait_for(reader.read(), 5)
        answered_after = time.monotonic() - started
        assert status_and_body(answer)[0] == 408
        assert 0.9 <= answered_after <= 4, answered_after
        # And what it still sends is dropped for LINGER seconds at most, then it is closed
        closed_after = await asyncio.wait_for(trickling, 10)
        linger = closed_after - answered_after
        assert server.LINGER - 0.5 <= linger <= server.LINGER + 2, linger
    finally:
        trickling.cancel()
        await asyncio.gather(trickling, return_exceptions=True)
        writer.close()
    # And a connection that sends nothing at all is closed too, without an answer
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_connection_lingering_after_its_408_counts_and_makes_room_first(
    cluster: Cluster,
) -> None:
    # Given a dispatcher of at most 3 connections whose heads must arrive within 1 s,
    dispatcher = await cluster.dispatcher(None, "--max_connections", "3", "--header_timeout", "1")
    port = port_of(dispatcher)
    # two idle keep-alive connections,
    kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    trickling: asyncio.Task[float] | None = None
    try:
        for connection in kept:
            assert await get_health(*connection) == 200
        # and a client answered 408 that still sends (its connection lingers)
        started = time.monotonic()
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        trickling = asyncio.create_task(trickle(writer, started))
        assert status_and_body(await asyncio.wait_for(reader.read(), 5))[0] == 408
        # When a fourth connection asks for /health
        asked = time.monotonic() - started
        answer = await exchange(
            port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        # Then it is answered, the lingering connection closing for it (at once, not
        # LINGER seconds after its 408: it counted against the cap)
        assert status_and_body(answer)[0] == 200
        closed_after = await asyncio.wait_for(trickling, 10)
        assert closed_after - asked < server.LINGER - 0.5, (asked, closed_after)
        # And the keep-alive connections are still served
        for connection in kept:
            assert await get_health(*connection) == 200
    finally:
        if trickling is not None:
            trickling.cancel()
            await asyncio.gather(trickling, return_exceptions=True)
        for _, kept_writer in [*kept, (reader, writer)]:
            kept_writer.close()


async def test_idle_keep_alives_and_long_polls_outlast_the_head_deadline(
    cluster: Cluster,
) -> None:
    # Given a dispatcher whose request heads must arrive within 1 s
    dispatcher = await cluster.dispatcher(None, "--header_timeout", "1")
    opened: list[object] = []

    async def connection_opened(*_: Any) -> None:
        opened.append(None)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(connection_opened)
    connector = aiohttp.TCPConnector(limit=1)  # one connection, kept alive
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        api = Api(session, dispatcher.url)
        await api.create_queue("patient")
        # When a long-poll waits 2.5 s (longer than the head deadline) on that connection
        started = time.monotonic()
        status, _ = await api.take("patient", wait=2.5)
        # Then it is answered when its wait is over, not cut
        assert status == 404 and time.monotonic() - started >= 2.4
        # And the same connection, idle for longer than the deadline, still serves
        await asyncio.sleep(1.5)  # the idle time under test
        status, _ = await api.take("patient")
        assert status == 404 and len(opened) == 1


@contextlib.asynccontextmanager
async def slow_heads(port: int, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """``count`` connections each holding an unfinished request head; their readers."""
    writers: list[asyncio.StreamWriter] = []
    readers: list[asyncio.StreamReader] = []
    try:
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            readers.append(reader)
            writers.append(writer)
        yield readers
    finally:
        for writer in writers:
            writer.close()


async def test_over_the_cap_idle_connections_make_room_and_health_gets_through(
    cluster: Cluster,
) -> None:
    # Given a dispatcher of at most 20 connections, with 20 half-sent heads open
    dispatcher = await cluster.dispatcher(None, "--max_connections", "20", "--header_timeout", "60")
    port = port_of(dispatcher)
    async with slow_heads(port, 20) as readers:
        # When an operator asks for /health
        async with aiohttp.ClientSession() as session:
            async with session.get(dispatcher.url + "health") as response:
                # Then it is answered, the oldest slow connection having made room
                assert response.status == 200
        closed = await asyncio.wait_for(readers[0].read(), 5)
        assert b"bad_http_request" not in closed
        assert readers[0].at_eof()


async def test_over_the_cap_with_every_connection_busy_new_ones_get_503_at_once(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a dispatcher of at most 20 connections, each held by a WebSocket client
    dispatcher = await cluster.dispatcher(None, "--max_connections", "20")
    port = port_of(dispatcher)
    await Api(session, dispatcher.url).create_queue("busy")
    url = dispatcher.url + "ws?queue=busy"
    sockets = [await session.ws_connect(url) for _ in range(20)]
    try:
        for ws in sockets:
            assert (await ws.receive_json(timeout=10))["type"] == "synced"
        # When one more connection comes
        started = time.monotonic()
        try:
            answer = await exchange(port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        except ConnectionResetError:  # closed before the request was read
            answer = b""
        # Then it is answered 503 (or closed) at once
        assert time.monotonic() - started < 2
        if answer:
            status, body = status_and_body(answer)
            assert status == 503 and b"too_many_connections" in body
        # And the clients already served are not affected: with one gone, a job put
        # reaches all the others
        await sockets.pop().close()

        async def put() -> bool:
            async with aiohttp.ClientSession() as fresh:
                try:
                    await Api(fresh, dispatcher.url).put("busy", "coro_add", 1, 2)
                except (aiohttp.ClientError, AssertionError):
                    return False
                return True

        await wait_for(put, timeout=10, what="a slot for the put")
        for ws in sockets:
            message = await ws.receive_json(timeout=10)
            assert (message["type"], message["kind"]) == ("change", "put")
    finally:
        for ws in sockets:
            await ws.close()
    dispatcher.proc.signal(signal.SIGTERM)
    assert await dispatcher.proc.wait_exit(timeout=15) == 0
    assert refused_counts(dispatcher.proc.log()).get("connections", 0) >= 1


def lowered_limit_argv(soft: int, *argv: str) -> list[str]:
    """``argv`` run with the soft limit of open files lowered to ``soft``."""
    code = (
        "import os, resource, sys; h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, h)); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", code, *argv]


async def test_the_open_files_limit_is_raised_to_the_hard_limit_and_sizes_the_cap(
    cluster: Cluster, tmp_path: Path
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip(f"the hard limit of open files ({hard}) leaves nothing to raise")
    # Given a dispatcher started with a soft limit of 1024 open files
    argv = [DISPATCHER, "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data")]
    proc = cluster.spawn("dispatcher", lowered_limit_argv(1024, *argv))
    await wait_for(lambda: LISTENING.search(proc.log()), timeout=STARTUP_TIMEOUT, what="listen")
    # Then it raised it to the hard limit, said so, and sized its connections from it
    limits = Path(f"/proc/{proc.pid}/limits").read_text()
    assert re.search(rf"Max open files\s+{hard}\s+{hard}\s", limits), limits
    expected = hard - max(64, hard // 8)
    assert f"open files limit {hard} (raised from 1024): at most {expected} connections" in (
        proc.log()
    )
