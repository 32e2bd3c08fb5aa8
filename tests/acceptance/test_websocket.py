"""The change stream at /ws?queue=Q with two real clients against a real dispatcher."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from tests.acceptance.conftest import Api, Cluster

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
