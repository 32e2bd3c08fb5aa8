"""Two dispatcher processes on one RethinkDB database: what one does, the other sees.

Runs when TQUEUES_TEST_RETHINKDB=host:port names a server (or a node of a cluster), and is
skipped otherwise. Each test starts two ``tqueues_dispatcher`` processes on a fresh
database, talks to them over HTTP and WebSocket, and drops the database at the end.
Synchronisation is by deadlines and answers, never by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import rethinkdb_settings
from tqueues.settings import RethinkDBSettings

pytestmark = pytest.mark.rethinkdb

DISPATCHER = str(Path(sys.executable).parent / "tqueues_dispatcher")
LISTENING = re.compile(r"listening on (http://\S+?/)")
STARTUP_TIMEOUT = 30.0
QUEUE = "jobs"


class Dispatcher:
    """One ``tqueues_dispatcher`` process and the URL it serves."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.url = ""
        self.log: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: RethinkDBSettings) -> Dispatcher:
        env = {k: v for k, v in os.environ.items() if k != "TQUEUES_RETHINKDB"}
        proc = await asyncio.create_subprocess_exec(
            DISPATCHER,
            "--listen",
            "127.0.0.1:0",
            "--host",
            settings.host,
            "--port",
            str(settings.port),
            "--db",
            settings.db,
            "--reap_interval",
            "0.2",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        dispatcher = cls(proc)
        try:
            await asyncio.wait_for(dispatcher._until_listening(), STARTUP_TIMEOUT)
        except BaseException:
            await dispatcher.stop()
            raise AssertionError(
                "the dispatcher did not start:\n" + "\n".join(dispatcher.log)
            ) from None
        dispatcher._drain = asyncio.create_task(dispatcher._read_log())
        return dispatcher

    async def _until_listening(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = (await self.proc.stderr.readline()).decode(errors="replace")
            if not line:
                raise EOFError("the dispatcher exited")
            self.log.append(line.rstrip())
            if match := LISTENING.search(line):
                self.url = match.group(1)
                return

    async def _read_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain


@pytest.fixture
async def settings() -> AsyncIterator[RethinkDBSettings]:
    """A fresh database on the test server, dropped afterwards."""
    settings = rethinkdb_settings(f"tqueues_test_{uuid.uuid4().hex[:12]}")
    yield settings
    from tqueues.stores.rethinkdb import RethinkDBStore

    async with RethinkDBStore(settings) as cleaner:
        await cleaner.drop_database()


@pytest.fixture
async def pair(settings: RethinkDBSettings) -> AsyncIterator[tuple[Dispatcher, Dispatcher]]:
    """Two dispatchers on the same database."""
    first = await Dispatcher.start(settings)
    try:
        second = await Dispatcher.start(settings)
    except BaseException:
        await first.stop()
        raise
    try:
        yield first, second
    finally:
        await asyncio.gather(first.stop(), second.stop())


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def create_queue(http: aiohttp.ClientSession, dispatcher: Dispatcher) -> None:
    async with http.put(dispatcher.url, params={"queue": QUEUE}) as answer:
        assert answer.status == 200, await answer.text()


async def put(http: aiohttp.ClientSession, dispatcher: Dispatcher, *args: Any) -> dict[str, Any]:
    body = {"queue": QUEUE, "method": "tests.jobs:noop", "args": list(args), "kwargs": {}}
    async with http.post(dispatcher.url, json=body) as answer:
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def take(
    http: aiohttp.ClientSession, dispatcher: Dispatcher, wait: float = 0
) -> dict[str, Any] | None:
    async with http.get(dispatcher.url, params={"queue": QUEUE, "wait": str(wait)}) as answer:
        if answer.status == 404:
            return None
        assert answer.status == 200, await answer.text()
        return await answer.json()


async def test_a_job_put_through_one_dispatcher_wakes_a_long_poll_on_the_other(
    pair: tuple[Dispatcher, Dispatcher], http: aiohttp.ClientSession
) -> None:
    first, second = pair
    await create_queue(http, first)
    assert await take(http, second) is None  # the queue is known there, its feed open
    waiter = asyncio.create_task(take(http, second, wait=30))
    loop = asyncio.get_running_loop()
    put_at = loop.time()
    job = await put(http, first, "wake")
    taken = await asyncio.wait_for(waiter, 30)
    assert taken is not None and taken["id"] == job["id"] and taken["lease"]
    # Woken by the changefeed, not by the 5 s safety poll of the take loop.
    assert loop.time() - put_at < 4


async def test_a_websocket_client_of_one_dispatcher_sees_changes_made_through_the_other(
    pair: tuple[Dispatcher, Dispatcher], http: aiohttp.ClientSession
) -> None:
    first, second = pair
    await create_queue(http, second)
    async with http.ws_connect(first.url + "ws", params={"queue": QUEUE}) as ws:
        while (await asyncio.wait_for(ws.receive_json(), 30))["type"] != "synced":
            pass
        job = await put(http, second, "seen")
        taken = await take(http, second)
        assert taken is not None and taken["id"] == job["id"]
        params = {"queue": QUEUE, "id": job["id"], "lease": taken["lease"]}
        async with http.delete(second.url, params=params, json={"result": 3}) as answer:
            assert answer.status == 200, await answer.text()
        kinds = []
        while len(kinds) < 3:
            message = await asyncio.wait_for(ws.receive_json(), 30)
            if message["type"] == "change" and message["job"]["id"] == job["id"]:
                kinds.append((message["kind"], message["job"]["status"]))
    assert kinds == [("put", "pending"), ("taken", "started"), ("finished", "finished")]


async def test_fifty_takers_across_two_dispatchers_take_every_job_exactly_once(
    pair: tuple[Dispatcher, Dispatcher], http: aiohttp.ClientSession
) -> None:
    first, second = pair
    await create_queue(http, first)
    ids = set()
    for i in range(200):
        ids.add((await put(http, pair[i % 2], i))["id"])

    async def taker(dispatcher: Dispatcher) -> list[str]:
        got = []
        while (job := await take(http, dispatcher)) is not None:
            got.append(job["id"])
        return got

    results = await asyncio.gather(*(taker(pair[n % 2]) for n in range(50)))
    counts = collections.Counter(job_id for got in results for job_id in got)
    assert set(counts) == ids
    assert max(counts.values()) == 1
    assert second.proc.returncode is None and first.proc.returncode is None
