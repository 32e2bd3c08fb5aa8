"""The change stream at /ws?queue=Q with real clients against a real dispatcher: two that
read, and one that never reads (what it costs the dispatcher, measured in its memory)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.acceptance.conftest import Api, Cluster, wait_for
from tests.silent_websocket import SilentWebSocket

TIMEOUT = 10.0


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next JSON message, failing after TIMEOUT seconds."""
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return message.json()


async def read_snapshot(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """The initial jobs, up to and including the "synced" message."""
    jobs = []
    while (message := await receive(ws))["type"] != "synced":
        assert message["type"] == "initial", message
        jobs.append(message["job"])
    return jobs


async def changes_of(
    ws: aiohttp.ClientWebSocketResponse, job_id: str, until: str
) -> list[dict[str, Any]]:
    """The change messages of ``job_id`` up to the first of kind ``until`` (others skipped)."""
    deadline = time.monotonic() + TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        message = await receive(ws)
        assert message["type"] == "change", message
        if message["job"]["id"] == job_id:
            seen.append(message)
            if message["kind"] == until:
                return seen
    raise AssertionError(f"no {until!r} change of {job_id} in {TIMEOUT}s; saw {seen}")


def ws_url(http_url: str, queue: str) -> str:
    return http_url.replace("http://", "ws://", 1) + f"ws?queue={queue}"


async def test_two_clients_get_the_jobs_then_every_change(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a queue holding three jobs
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("watched")
    before = [await api.put("watched", "coro_add", i, i) for i in range(3)]

    # When two clients connect
    url = ws_url(dispatcher.url, "watched")
    async with session.ws_connect(url) as one, session.ws_connect(url) as two:
        # Then each first receives the queue's jobs, then "synced"
        for ws in (one, two):
            assert sorted(job["id"] for job in await read_snapshot(ws)) == sorted(
                job["id"] for job in before
            )

        # And both see a new job put, taken and finished over HTTP, in that order
        job = await api.put("watched", "plain_mul", 6, 7)
        status, taken = await api.take("watched")
        assert status == 200
        while taken["id"] != job["id"]:  # the three older jobs come first
            await api.delete("watched", taken["id"], {"result": None}, lease=taken["lease"])
            status, taken = await api.take("watched")
            assert status == 200
        status, done = await api.delete("watched", job["id"], {"result": 42}, lease=taken["lease"])
        assert status == 200, done
        for ws in (one, two):
            seen = await changes_of(ws, job["id"], until="finished")
            assert [m["kind"] for m in seen] == ["put", "taken", "finished"]
            assert [m["job"]["status"] for m in seen] == ["pending", "started", "finished"]
            assert [m["old_status"] for m in seen] == [None, "pending", "started"]
            assert seen[-1]["job"]["result"] == 42
            assert all("lease" not in m["job"] for m in seen), "the stream leaked a lease"

        # When one client closes
        await one.close()

        # Then the other keeps receiving changes
        later = await api.put("watched", "coro_add", 0, 0)
        assert [m["kind"] for m in await changes_of(two, later["id"], until="put")] == ["put"]

    # And the dispatcher keeps serving: clients can connect and leave again and again
    for _ in range(10):
        async with session.ws_connect(url) as again:
            jobs = await read_snapshot(again)
            assert {j["id"] for j in jobs} >= {job["id"], later["id"]}
            assert {j["id"]: j for j in jobs}[job["id"]]["status"] == "finished"
    async with session.ws_connect(url) as last:
        await read_snapshot(last)
        fresh = await api.put("watched", "coro_add", 5, 5)
        assert [m["kind"] for m in await changes_of(last, fresh["id"], until="put")] == ["put"]
    async with session.get(dispatcher.url + "health") as response:
        assert response.status == 200


async def test_websocket_on_a_missing_queue_is_refused_with_json(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    dispatcher = await cluster.dispatcher()
    async with session.get(dispatcher.url + "ws", params={"queue": "nope"}) as response:
        assert response.status == 501
        body = await response.json()
    assert body["error"] == "queue_not_found"


# -- a client that never reads, against the real dispatcher process ---------------------------

JOBS = 200
JOB_BYTES = 500_000
MIB = 1024 * 1024
#: What the dispatcher may grow by while every job changes twice with a silent client
#: connected: its --ws_buffer (8 MiB) for the silent client, a page of its snapshot (8 MiB),
#: and what handling one request at a time costs (measured: 20 MiB on the embedded store,
#: 48 on RethinkDB, whose change feed brings each change's old and new job). Before the
#: budget in bytes, the silent client's 400 changes and its snapshot (a page of all 200
#: jobs) held 286 and 303 MiB.
GROWTH = 96 * MIB


def rss(pid: int) -> int:
    """The resident memory of process ``pid`` (VmRSS), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


async def highest_rss(pid: int, stop: asyncio.Event) -> int:
    """VmRSS of ``pid`` sampled every 20 ms until ``stop`` is set; the highest."""
    highest = rss(pid)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
        highest = max(highest, rss(pid))
    return highest


async def test_a_client_that_never_reads_is_closed_and_costs_the_dispatcher_little(
    cluster: Cluster, session: aiohttp.ClientSession, store_args: list[str]
) -> None:
    # Given a queue of 200 jobs of 500 kB, and a client that reads the whole stream
    dispatcher = await cluster.dispatcher(None, *store_args)
    api = Api(session, dispatcher.url)
    await api.create_queue("big")
    ids = []
    for _ in range(0, JOBS, 8):  # 8 at a time
        puts = [api.put("big", "coro_add", "x" * JOB_BYTES, "") for _ in range(8)]
        ids += [job["id"] for job in await asyncio.gather(*puts)]
    url = ws_url(dispatcher.url, "big")
    async with session.ws_connect(url, max_msg_size=0) as reading:
        assert sorted(job["id"] for job in await read_snapshot(reading)) == sorted(ids)
        pid = dispatcher.proc.pid
        before = rss(pid)
        # And a client that never reads (a receive buffer of 4 KiB)
        host, port = dispatcher.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        silent = await SilentWebSocket.connect(host, int(port), "/ws?queue=big")

        async def read_once_closed() -> tuple[list[bytes], int | None, str]:
            # Once the dispatcher says it closed the client, the client reads (within the
            # 10 s the dispatcher gives it before it cuts the connection).
            await wait_for(
                lambda: "left more than" in dispatcher.proc.log(),
                timeout=120,
                what="the dispatcher to log that it closed the silent client",
            )
            return await silent.read_until_close(timeout=TIMEOUT)

        closing = asyncio.create_task(read_once_closed())
        try:
            # When every job is taken and finished, four at a time (400 changes of 500 kB)
            seen = asyncio.create_task(changes(reading, 2 * JOBS))
            stop = asyncio.Event()
            sampler = asyncio.create_task(highest_rss(pid, stop))

            async def take_and_finish(count: int) -> None:
                for _ in range(count):
                    status, taken = await api.take("big")
                    assert status == 200, taken
                    status, done = await api.delete("big", taken["id"], {}, lease=taken["lease"])
                    assert status == 200, done

            await asyncio.gather(*(take_and_finish(JOBS // 4) for _ in range(4)))
            # Then the reading client got every change of every job
            got = await asyncio.wait_for(seen, 60)
            stop.set()
            peak = await sampler
            kinds: dict[str, list[str]] = {}
            for message in got:
                kinds.setdefault(message["job"]["id"], []).append(message["kind"])
            assert kinds == {job_id: ["taken", "finished"] for job_id in ids}
            # And the dispatcher held little for the client that did not read
            assert peak - before < GROWTH, (
                f"RSS grew by {(peak - before) / MIB:.0f} MiB (from {before / MIB:.0f})"
            )
            # And closed it, with one log line, and a close it finds once it reads
            texts, code, reason = await closing
            assert (code, reason) == (
                aiohttp.WSCloseCode.TRY_AGAIN_LATER,
                "too slow: more than 8388608 bytes of changes unread; reconnect",
            )
            assert len(texts) < JOBS, "it was sent the whole stream after all"
            assert dispatcher.proc.log().count("left more than") == 1
        finally:
            closing.cancel()
            silent.close()
        # And the dispatcher and the reading client go on
        fresh = await api.put("big", "coro_add", 1, 2)
        assert [m["kind"] for m in await changes_of(reading, fresh["id"], until="put")] == ["put"]
    async with session.get(dispatcher.url + "health") as response:
        assert response.status == 200


async def changes(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` change messages."""
    got = []
    while len(got) < count:
        message = await receive(ws)
        assert message["type"] == "change", message
        got.append(message)
    return got


async def test_a_client_that_never_reads_does_not_hold_the_dispatcher_at_shutdown(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a client that never reads its snapshot of 10 MB (more than the sockets hold)
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("big")
    for _ in range(20):
        await api.put("big", "coro_add", "x" * JOB_BYTES, "")
    host, port = dispatcher.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    silent = await SilentWebSocket.connect(host, int(port), "/ws?queue=big")
    try:
        # (a client connected after it that reads its whole snapshot: by then the silent
        # client's stream is stuck on its full socket)
        async with session.ws_connect(ws_url(dispatcher.url, "big"), max_msg_size=0) as reading:
            assert len(await read_snapshot(reading)) == 20
        # When the dispatcher is told to stop, Then it stops, in a few seconds
        dispatcher.proc.signal(signal.SIGTERM)
        assert await dispatcher.proc.wait_exit(timeout=TIMEOUT) == 0
    finally:
        silent.close()
