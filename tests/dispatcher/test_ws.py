"""The WebSocket change stream, in process: snapshot, changes, cleanup on close, and the
budget of bytes a client may leave unread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType

from tests.dispatcher.conftest import Client
from tests.silent_websocket import SilentWebSocket
from tqueues.dispatcher import create_app
from tqueues.dispatcher.keys import store_key
from tqueues.settings import DispatcherSettings


async def receive(ws: Any) -> dict[str, Any]:
    message: dict[str, Any] = await ws.receive_json(timeout=10)
    return message


async def test_stream_sends_snapshot_then_changes_to_each_client(client: Client) -> None:
    first = await (await client.post("/", json={"queue": "q", "method": "a:b"})).json()
    a = await client.ws_connect("/ws?queue=q")
    b = await client.ws_connect("/ws?queue=q")
    for ws in (a, b):
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["job"]["id"]) == ("initial", first["id"])
        assert (await receive(ws))["type"] == "synced"
    put = await (await client.post("/", json={"queue": "q", "method": "c:d"})).json()
    taken = await (await client.get("/?queue=q")).json()  # the older job first
    assert taken["id"] == first["id"]
    for ws in (a, b):
        changes = [await receive(ws) for _ in range(2)]
        assert [(c["kind"], c["job"]["id"]) for c in changes] == [
            ("put", put["id"]),
            ("taken", first["id"]),
        ]
        assert changes[1]["old_status"] == "pending" and "lease" not in changes[1]["job"]
    await a.close()
    await b.close()


async def test_start_now_sends_no_snapshot_and_every_change_after_synced(client: Client) -> None:
    """``start=now``: ``synced`` at once, whatever the queue holds, then every change; what
    a client reads through the REST API after ``synced`` misses nothing."""
    old = [
        await (await client.post("/", json={"queue": "q", "method": "a:b"})).json()
        for _ in range(3)
    ]
    ws = await client.ws_connect("/ws?queue=q&start=now")
    assert await receive(ws) == {"type": "synced"}
    put = await (await client.post("/", json={"queue": "q", "method": "c:d"})).json()
    taken = await (await client.get("/?queue=q")).json()
    changes = [await receive(ws) for _ in range(2)]
    assert [(c["kind"], c["job"]["id"]) for c in changes] == [
        ("put", put["id"]),
        ("taken", old[0]["id"]),
    ]
    assert taken["id"] == old[0]["id"]
    await ws.close()
    # The default is the original API's snapshot; anything else is a 400 naming `start`.
    ws = await client.ws_connect("/ws?queue=q&start=snapshot")
    assert (await receive(ws))["type"] == "initial"
    await ws.close()
    refused = await client.get("/ws?queue=q&start=later")
    assert refused.status == 400
    assert (await refused.json())["field"] == "start"


async def test_a_page_of_the_dispatchers_own_origin_may_open_the_stream(client: Client) -> None:
    """The dashboard's WebSocket carries the dispatcher's own origin; another is refused."""
    host = f"{client.server.host}:{client.server.port}"
    ws = await client.ws_connect("/ws?queue=q&start=now", headers={"Origin": f"http://{host}"})
    assert (await receive(ws))["type"] == "synced"
    await ws.close()
    refused = await client.get("/ws?queue=q", headers={"Origin": "http://evil.example"})
    assert refused.status == 403
    assert (await refused.json())["error"] == "origin_not_allowed"


async def test_closing_a_client_frees_its_subscription(client: Client) -> None:
    hub = client.app[store_key].hub
    ws = await client.ws_connect("/ws?queue=q")
    assert (await receive(ws))["type"] == "synced"
    assert hub.subscriber_count("q") == 1
    await ws.close()
    deadline = asyncio.get_running_loop().time() + 10
    while hub.subscriber_count("q") and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert hub.subscriber_count("q") == 0


async def test_stream_of_missing_queue_is_a_json_error(client: Client) -> None:
    response = await client.get("/ws?queue=nope")
    assert response.status == 501
    assert (await response.json())["error"] == "queue_not_found"
    response = await client.get("/ws?queue=bad-name")
    assert response.status == 400


async def test_a_client_that_may_have_missed_changes_is_closed_to_resync(client: Client) -> None:
    hub = client.app[store_key].hub
    ws = await client.ws_connect("/ws?queue=q")
    assert (await receive(ws))["type"] == "synced"
    put = await (await client.post("/", json={"queue": "q", "method": "a:b"})).json()
    # When the store reports that changes of the queue may have gone unseen
    hub.changes_missed("q", "its change feed broke")
    # Then the client gets what was already published, then a close asking it to come back
    assert (await receive(ws))["job"]["id"] == put["id"]
    closing = await ws.receive(timeout=10)
    assert closing.type is WSMsgType.CLOSE
    assert (closing.data, closing.extra) == (
        WSCloseCode.TRY_AGAIN_LATER,
        "changes of queue 'q' may have been missed: its change feed broke",
    )
    # And a new connection starts from a fresh snapshot
    again = await client.ws_connect("/ws?queue=q")
    assert (await receive(again))["job"]["id"] == put["id"]
    await again.close()


# -- what a client costs: a budget of bytes -------------------------------------------------

BUDGET = 64 * 1024  #: the smallest --ws_buffer


@pytest.fixture
async def budget_client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    """A dispatcher whose WebSocket clients may leave BUDGET bytes unread, with queue ``q``."""
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "data"), max_body=1024 * 1024, ws_buffer=BUDGET
    )
    test_client = await aiohttp_client(create_app(settings))
    assert (await test_client.put("/?queue=q")).status == 200
    return test_client


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def too_slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "tqueues.dispatcher.ws" and "left more than" in r.getMessage()
    ]


async def test_a_client_that_does_not_read_is_closed_and_the_others_get_every_change(
    budget_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tqueues.dispatcher.ws")
    hub = budget_client.app[store_key].hub
    count = 200

    async def read_puts(ws: Any) -> list[str]:
        ids = []
        while len(ids) < count:
            message = await receive(ws)
            assert message["type"] == "change" and message["kind"] == "put", message
            ids.append(message["job"]["id"])
        return ids

    # Given a client that reads and one that never reads, on the same queue
    reading = await budget_client.ws_connect("/ws?queue=q")
    assert (await receive(reading))["type"] == "synced"
    server = budget_client.server
    silent = await SilentWebSocket.connect(str(server.host), int(server.port or 0), "/ws?queue=q")

    async def read_once_closed() -> tuple[list[bytes], int | None, str]:
        # Once the dispatcher says it closed the client, the client reads (within the 10 s
        # the dispatcher gives it before it cuts the connection).
        await wait_until(lambda: bool(too_slow_records(caplog)), "the log line", 60)
        assert hub.subscriber_count("q") == 1
        return await silent.read_until_close(timeout=10)

    closing = asyncio.create_task(read_once_closed())
    try:
        await wait_until(lambda: hub.subscriber_count("q") == 2, "the silent client's stream")
        # When 200 jobs of 40 kB are put (8 MB of changes: more than the kernel's socket
        # buffers hold, and more than 100 times the budget)
        seen = asyncio.create_task(read_puts(reading))
        body = {"queue": "q", "method": "a:b", "args": ["x" * 40_000]}
        put = []
        for _ in range(count):
            put.append((await (await budget_client.post("/", json=body)).json())["id"])
        # Then the reading client got every change, in order
        assert await asyncio.wait_for(seen, 30) == put
        # And the silent one was dropped from the hub, logged once, and finds, once it
        # reads, a close asking it to come back later, with the reason
        texts, code, reason = await closing
        assert (code, reason) == (
            WSCloseCode.TRY_AGAIN_LATER,
            f"too slow: more than {BUDGET} bytes of changes unread; reconnect",
        )
        assert len(texts) < count, "the dispatcher sent it every change after all"
        assert [r.levelno for r in too_slow_records(caplog)] == [logging.WARNING]
    finally:
        closing.cancel()
        silent.close()
    # And the reading client goes on as before
    later = await (await budget_client.post("/", json={"queue": "q", "method": "c:d"})).json()
    assert (await receive(reading))["job"]["id"] == later["id"]
    await reading.close()


async def test_a_snapshot_larger_than_the_budget_arrives_whole_and_in_order(
    budget_client: Client,
) -> None:
    # Given 30 jobs of 20 kB: the snapshot is read in pages of about the budget (3-4 jobs)
    body = {"queue": "q", "method": "a:b", "args": ["y" * 20_000]}
    ids = [(await (await budget_client.post("/", json=body)).json())["id"] for _ in range(30)]
    # When a client connects, Then it gets every job once, in order, then "synced"
    ws = await budget_client.ws_connect("/ws?queue=q", max_msg_size=0)
    snapshot = []
    while (message := await receive(ws))["type"] != "synced":
        assert message["type"] == "initial"
        snapshot.append(message["job"]["id"])
    assert snapshot == ids
    # And changes follow
    put = await (await budget_client.post("/", json={"queue": "q", "method": "c:d"})).json()
    assert (await receive(ws))["job"]["id"] == put["id"]
    await ws.close()
