"""The WebSocket change stream, in process: snapshot, changes, and cleanup on close."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSCloseCode, WSMsgType

from tests.dispatcher.conftest import Client
from tqueues.dispatcher.keys import store_key


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
