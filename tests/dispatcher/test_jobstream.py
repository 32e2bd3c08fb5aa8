"""The job stream (/queues/{name}/jobs/stream), in process on a real SQLite store: the
protocol over a raw WebSocket, its errors and roles, and the client's JobStream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType

from tests.dispatcher.conftest import Client
from tqueues.client import Client as TqClient
from tqueues.dispatcher import create_app, ws
from tqueues.errors import (
    DispatcherUnavailable,
    Forbidden,
    QueueNotFound,
    Unauthorized,
    ValidationError,
)
from tqueues.settings import DispatcherSettings

STREAM = "/queues/q/jobs/stream"
PRODUCER, WORKER = "p" * 32, "w" * 32


async def answer(ws: Any) -> dict[str, Any]:
    message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT, message
    decoded: dict[str, Any] = json.loads(message.data)
    return decoded


async def ids_in_queue(client: Client) -> list[str]:
    listing = await (await client.get("/queues/q/jobs", params={"limit": "1000"})).json()
    return [job["id"] for job in listing["jobs"]]


async def test_each_message_is_stored_and_answered_with_its_ref(client: Client) -> None:
    async with client.ws_connect(STREAM) as stream:
        await stream.send_json({"ref": 7, "method": "pkg.mod:f", "args": [1], "priority": 3})
        one = await answer(stream)
        await stream.send_json({"ref": "b", "jobs": [{"method": "a:b"}, {"method": "c:d"}]})
        two = await answer(stream)
        await stream.send_bytes(json.dumps({"method": "e:f"}).encode())  # binary frames too
        three = await answer(stream)
    assert (one["ref"], one["status"], one["job"]["args"], one["job"]["priority"]) == (
        7,
        201,
        [1],
        3,
    )
    assert (two["ref"], two["status"]) == ("b", 201)
    assert [job["method"] for job in two["jobs"]] == ["a:b", "c:d"]
    assert (three["ref"], three["status"], three["job"]["method"]) == (None, 201, "e:f")
    # What was answered is stored, as the HTTP route would have stored it
    stored = await (await client.get(f"/queues/q/jobs/{one['job']['id']}")).json()
    assert stored == one["job"]
    expected = [one["job"]["id"], *(job["id"] for job in two["jobs"]), three["job"]["id"]]
    assert await ids_in_queue(client) == expected


async def test_messages_sent_together_are_stored_and_answered_in_order(client: Client) -> None:
    async with client.ws_connect(STREAM) as stream:
        for i in range(200):
            await stream.send_json({"ref": i, "method": "pkg.mod:f", "args": [i]})
        answers = [await answer(stream) for _ in range(200)]
    assert [a["ref"] for a in answers] == list(range(200))
    assert [a["job"]["args"] for a in answers] == [[i] for i in range(200)]
    assert await ids_in_queue(client) == [a["job"]["id"] for a in answers]


@pytest.mark.parametrize(
    ("message", "ref", "expected"),
    [
        (b"{not json", None, {"message": "the message is not valid JSON"}),
        (b"[1, 2]", None, {"message": "the message must be a JSON object"}),
        (b'{"ref": [1], "method": "a:b"}', None, {"field": "ref"}),
        (b'{"ref": true, "method": "a:b"}', None, {"field": "ref"}),
        (b'{"ref": "' + b"x" * 129 + b'", "method": "a:b"}', None, {"field": "ref"}),
        (b'{"ref": 1, "args": []}', 1, {"fields": ["method"]}),
        (b'{"ref": 2, "method": "a:b", "bogus": 1}', 2, {"fields": ["bogus"]}),
        (b'{"ref": 3, "method": "a:b", "priority": -5}', 3, {"field": "priority"}),
        (b'{"ref": 4, "method": "a:b", "queue": "other"}', 4, {"field": "queue"}),
        (b'{"ref": 5, "jobs": [{"method": "a:b"}, {"args": 1}]}', 5, {"index": "jobs[1]"}),
        (b'{"ref": 6, "jobs": []}', 6, {"field": "jobs"}),
    ],
)
async def test_a_bad_message_gets_a_400_naming_the_problem_and_stores_nothing(
    client: Client, message: bytes, ref: Any, expected: dict[str, Any]
) -> None:
    async with client.ws_connect(STREAM) as stream:
        await stream.send_str(message.decode())
        refused = await answer(stream)
        # and the socket stays open for the next message
        await stream.send_json({"ref": "next", "method": "a:b"})
        accepted = await answer(stream)
    assert (refused["status"], refused["error"], refused["ref"]) == (400, "bad_request", ref)
    for key, value in expected.items():
        assert value in refused[key] if key == "message" else refused[key] == value, refused
    assert (accepted["ref"], accepted["status"]) == ("next", 201)
    assert await ids_in_queue(client) == [accepted["job"]["id"]]


async def test_a_missing_queue_is_refused_before_the_upgrade(client: Client) -> None:
    response = await client.get("/queues/nope/jobs/stream")
    assert response.status == 404
    assert (await response.json())["error"] == "queue_not_found"
    response = await client.get("/queues/bad-name/jobs/stream")
    assert response.status == 400
    assert (await response.json())["field"] == "queue"


async def test_a_queue_dropped_meanwhile_is_a_404_answer(client: Client) -> None:
    async with client.ws_connect(STREAM) as stream:
        assert (await client.delete("/queues/q")).status == 200
        await stream.send_json({"ref": 1, "method": "a:b"})
        gone = await answer(stream)
    assert (gone["status"], gone["error"], gone["ref"]) == (404, "queue_not_found", 1)


async def test_a_message_over_the_body_limit_closes_the_socket_with_1009(client: Client) -> None:
    async with client.ws_connect(STREAM) as stream:
        await stream.send_json({"method": "a:b", "args": ["x" * 70_000]})  # limit: 64 KiB
        closed = await stream.receive(timeout=10)
        assert closed.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        assert stream.close_code == WSCloseCode.MESSAGE_TOO_BIG
    assert await ids_in_queue(client) == []


@pytest.fixture
async def secured(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "secured"), tokens={PRODUCER: "producer", WORKER: "worker"}
    )
    client = await aiohttp_client(create_app(settings))
    created = await client.put("/queues/q", headers={"Authorization": f"Bearer {PRODUCER}"})
    assert created.status == 201
    return client


async def test_the_stream_is_a_producers_and_needs_a_token(secured: Client) -> None:
    anonymous = await secured.get(STREAM)
    assert (anonymous.status, (await anonymous.json())["error"]) == (401, "unauthorized")
    worker = await secured.get(STREAM, headers={"Authorization": f"Bearer {WORKER}"})
    assert (worker.status, (await worker.json())["error"]) == (403, "forbidden")
    by_header = {"Authorization": f"Bearer {PRODUCER}"}
    by_query = {"access_token": PRODUCER}  # as a browser must send it
    for options in ({"headers": by_header}, {"params": by_query}):
        async with secured.ws_connect(STREAM, **options) as stream:  # type: ignore[arg-type]
            await stream.send_json({"method": "a:b"})
            assert (await answer(stream))["status"] == 201


# -- the client's JobStream --------------------------------------------------------------------


async def test_client_stream_puts_with_the_answers_and_errors_of_put(client: Client) -> None:
    async with TqClient(str(client.make_url("/"))) as tq, tq.job_stream("q") as stream:
        job = await stream.put("pkg.mod:f", [1], {"k": "v"}, ttr=10)
        assert (job["args"], job["kwargs"], job["ttr"], job["status"]) == (
            [1],
            {"k": "v"},
            10,
            "pending",
        )
        batch = await stream.put_many([{"method": "a:b", "args": [i]} for i in range(3)])
        assert [j["args"] for j in batch] == [[0], [1], [2]]
        with pytest.raises(ValidationError) as bad:
            await stream.put("pkg.mod:f", priority="high")
        assert bad.value.details["field"] == "priority"
        # Many tasks at once on one stream: each gets its own job
        jobs = await asyncio.gather(*(stream.put("pkg.mod:f", [i]) for i in range(100)))
        assert [j["args"] for j in jobs] == [[i] for i in range(100)]
        assert (await tq.get("q", job["id"])) == job
    assert len(await ids_in_queue(client)) == 104


async def test_client_stream_refusals_are_typed_errors(client: Client, secured: Client) -> None:
    async with TqClient(str(client.make_url("/"))) as tq:
        with pytest.raises(QueueNotFound):
            await tq.job_stream("nope").connect()
    async with TqClient(str(secured.make_url("/"))) as tq:
        with pytest.raises(Unauthorized):
            await tq.job_stream("q").put("a:b")
    async with TqClient(str(secured.make_url("/")), token=WORKER) as tq:
        with pytest.raises(Forbidden):
            await tq.job_stream("q").put("a:b")
    async with TqClient(str(secured.make_url("/")), token=PRODUCER) as tq:
        assert (await tq.job_stream("q").put("a:b"))["status"] == "pending"


async def test_client_stream_reconnects_after_the_dispatcher_closed_it(client: Client) -> None:
    async with TqClient(str(client.make_url("/"))) as tq, tq.job_stream("q") as stream:
        first = await stream.put("a:b")
        assert stream.connected
        await ws.close_all(client.app)  # what the dispatcher does when it shuts down
        deadline = asyncio.get_running_loop().time() + 10
        while stream.connected and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert not stream.connected
        second = await stream.put("a:b")
        assert stream.connected
    assert await ids_in_queue(client) == [first["id"], second["id"]]


async def test_client_stream_calls_waiting_when_it_drops_are_unavailable(
    client: Client, tmp_path: Path
) -> None:
    # A "dispatcher" that accepts the socket and never answers, then drops it
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    received = asyncio.Event()

    async def mute(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.receive()
        received.set()
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get(STREAM, mute)
    async with TestServer(app) as server, TqClient(str(server.make_url("/"))) as tq:
        stream = tq.job_stream("q")
        with pytest.raises(DispatcherUnavailable) as dropped:
            await stream.put("a:b")
        assert received.is_set()
        assert "may or may not have been stored" in dropped.value.message
        await stream.close()
