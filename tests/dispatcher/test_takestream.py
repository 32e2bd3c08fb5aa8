"""The take stream (/take/stream), in process on a real SQLite store: the protocol over a
raw WebSocket, its errors and roles, what becomes of jobs when the socket goes, the
client's TakeStream, and a worker whose dispatcher has no take stream."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType

from tests.acceptance.jobs import method
from tests.contract.test_store import hold_insert_and_claim
from tests.dispatcher.conftest import Client
from tqueues.client import Client as TqClient
from tqueues.client.stream import TakeStream
from tqueues.dispatcher import create_app
from tqueues.dispatcher.keys import store_key
from tqueues.errors import Forbidden, QueueNotFound, Unauthorized, ValidationError
from tqueues.settings import DispatcherSettings
from tqueues.worker import Worker

STREAM = "/take/stream"
PRODUCER, WORKER = "p" * 32, "w" * 32


async def answer(ws: Any) -> dict[str, Any]:
    message = await ws.receive(timeout=10)
    assert message.type is WSMsgType.TEXT, message
    decoded: dict[str, Any] = json.loads(message.data)
    return decoded


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def put(client: Client, queue: str = "q", **fields: Any) -> dict[str, Any]:
    response = await client.post(f"/queues/{queue}/jobs", json={"method": "a:b", **fields})
    assert response.status == 201
    job: dict[str, Any] = await response.json()
    return job


async def status_of(client: Client, job_id: str, queue: str = "q") -> str:
    job = await (await client.get(f"/queues/{queue}/jobs/{job_id}")).json()
    return str(job["status"])


def waiting(client: Client, queue: str = "q") -> int:
    """Takers of ``queue`` waiting in the in-process dispatcher."""
    return len(client.app[store_key]._waiters[queue])


async def test_a_waiting_take_gets_the_job_a_put_hands_it(client: Client) -> None:
    async with client.ws_connect(STREAM) as stream:
        # Given a take waiting on an empty queue
        await stream.send_json({"ref": 7, "queues": ["q"], "wait": 20, "worker": "w1"})
        await until(lambda: waiting(client) == 1)
        # When a job is put
        job = await put(client, args=[1])
        # Then the take is answered with it, under a lease, and the store says the same
        taken = await answer(stream)
    assert (taken["ref"], taken["status"], len(taken["jobs"])) == (7, 200, 1)
    (got,) = taken["jobs"]
    assert (got["id"], got["args"], got["worker"], got["status"]) == (
        job["id"],
        [1],
        "w1",
        "started",
    )
    stored = await (await client.get(f"/queues/q/jobs/{job['id']}")).json()
    assert stored["status"] == "started"
    finished = await client.post(
        f"/queues/q/jobs/{job['id']}/finish", params={"lease": got["lease"]}
    )
    assert finished.status == 200


async def test_takes_answer_as_they_end_and_an_empty_one_at_once(client: Client) -> None:
    assert (await client.put("/queues/q2")).status == 201
    queued = [await put(client, "q2", args=[i]) for i in range(3)]
    async with client.ws_connect(STREAM) as stream:
        # A long-poll take of q waits; a take of two of q2 (asked after it) answers first
        await stream.send_json({"ref": "long", "queues": ["q"], "wait": 20})
        await stream.send_json({"ref": "two", "queues": ["q", "q2"], "count": 2})
        two = await answer(stream)
        assert (two["ref"], [j["args"] for j in two["jobs"]]) == ("two", [[0], [1]])
        # A take that finds nothing and may not wait is an empty list at once
        await stream.send_json({"ref": "none", "queues": ["q"], "wait": 0})
        none = await answer(stream)
        assert (none["ref"], none["status"], none["jobs"]) == ("none", 200, [])
        # And the waiting one still gets the next job of its queue
        job = await put(client)
        long = await answer(stream)
        assert (long["ref"], [j["id"] for j in long["jobs"]]) == ("long", [job["id"]])
    assert await status_of(client, queued[2]["id"], "q2") == "pending"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"{not json", {"status": 400, "error": "bad_request"}),
        (b"[1]", {"status": 400, "message": "the message must be a JSON object"}),
        ({"ref": 1}, {"status": 400, "field": "queues", "ref": 1}),
        ({"ref": 2, "queues": "q"}, {"status": 400, "field": "queues", "ref": 2}),
        ({"queues": ["q", "q"]}, {"status": 400, "message": "a queue is named twice"}),
        ({"queues": ["no such!"]}, {"status": 400, "field": "queues"}),
        ({"queues": ["q"], "count": 0}, {"status": 400, "field": "count"}),
        ({"queues": ["q"], "count": True}, {"status": 400, "field": "count"}),
        ({"queues": ["q"], "wait": 31}, {"status": 400, "field": "wait"}),
        ({"queues": ["q"], "wait": "1"}, {"status": 400, "field": "wait"}),
        ({"queues": ["q"], "worker": 5}, {"status": 400, "field": "worker"}),
        ({"queues": ["q"], "ref": [1]}, {"status": 400, "field": "ref"}),
        ({"queues": ["q"], "lease": "x"}, {"status": 400, "fields": ["lease"]}),
        ({"ref": 3, "queues": ["q", "nope"]}, {"status": 404, "error": "queue_not_found"}),
    ],
)
async def test_a_bad_take_gets_an_answer_naming_the_problem_and_takes_nothing(
    client: Client, message: Any, expected: dict[str, Any]
) -> None:
    job = await put(client)
    async with client.ws_connect(STREAM) as stream:
        if isinstance(message, bytes):
            await stream.send_bytes(message)
        else:
            await stream.send_json(message)
        refused = await answer(stream)
        assert expected.items() <= refused.items(), refused
        assert "jobs" not in refused and refused["message"]
        # The socket stays open for the next take
        await stream.send_json({"queues": ["q"]})
        assert [j["id"] for j in (await answer(stream))["jobs"]] == [job["id"]]


async def test_a_closed_socket_leaves_no_taker_behind_and_loses_no_job(client: Client) -> None:
    # Given a take waiting on the socket
    async with client.ws_connect(STREAM) as stream:
        await stream.send_json({"queues": ["q"], "wait": 20})
        await until(lambda: waiting(client) == 1)
    # When the socket closes, the take stops waiting
    await until(lambda: waiting(client) == 0)
    # Then a job put afterwards is for the next taker, at once
    job = await put(client)
    assert await status_of(client, job["id"]) == "pending"


async def test_jobs_claimed_for_a_socket_that_went_away_are_given_back(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.app[store_key]
    claiming, go_on = hold_insert_and_claim(store, monkeypatch)
    async with client.ws_connect(STREAM) as stream:
        # Given a waiting take, and a put that chose it and is about to claim for it
        await stream.send_json({"queues": ["q"], "wait": 20})
        await until(lambda: waiting(client) == 1)
        putting = asyncio.ensure_future(put(client))
        await asyncio.wait_for(claiming.wait(), 10)
    # When the socket closes before the claim is done
    go_on.set()
    job = await putting
    # Then what was claimed for it is given back at once (not after its ttr)
    await until(lambda: store.counters["q"]["released"] == 1)
    assert store.counters["q"]["taken"] == 1
    assert await status_of(client, job["id"]) == "pending"
    again = await (await client.post("/queues/q/take")).json()
    assert [doc["id"] for doc in again["jobs"]] == [job["id"]]


@pytest.fixture
async def secured(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "secured"), tokens={PRODUCER: "producer", WORKER: "worker"}
    )
    client = await aiohttp_client(create_app(settings))
    created = await client.put("/queues/q", headers={"Authorization": f"Bearer {PRODUCER}"})
    assert created.status == 201
    return client


async def test_the_take_stream_is_a_workers_and_needs_a_token(secured: Client) -> None:
    anonymous = await secured.get(STREAM)
    assert (anonymous.status, (await anonymous.json())["error"]) == (401, "unauthorized")
    producer = await secured.get(STREAM, headers={"Authorization": f"Bearer {PRODUCER}"})
    assert (producer.status, (await producer.json())["error"]) == (403, "forbidden")
    headers = {"Authorization": f"Bearer {WORKER}"}
    async with secured.ws_connect(STREAM, headers=headers) as stream:
        await stream.send_json({"queues": ["q"]})
        assert (await answer(stream))["status"] == 200


# -- the client's TakeStream -------------------------------------------------------------------


async def test_client_take_stream_takes_with_the_answers_and_errors_of_take_any(
    client: Client,
) -> None:
    job = await put(client, args=[1])
    async with TqClient(str(client.make_url("/"))) as tq, tq.take_stream() as stream:
        (got,) = await stream.take(["q"], 5, worker="w")
        assert (got["id"], got["worker"], got["status"]) == (job["id"], "w", "started")
        assert got["lease"]
        assert await stream.take(["q"], wait=0.05) == []
        with pytest.raises(QueueNotFound):
            await stream.take(["q", "nope"])
        with pytest.raises(ValidationError) as bad:
            await stream.take(["q"], 0)
        assert bad.value.details["field"] == "count"
        # Takes of several tasks at once share the socket
        for i in range(4):
            await put(client, args=[i])
        batches = await asyncio.gather(*(stream.take(["q"], wait=5) for _ in range(4)))
        assert sorted(doc["args"][0] for docs in batches for doc in docs) == [0, 1, 2, 3]


async def test_client_take_stream_refusals_are_typed_errors(secured: Client) -> None:
    async with TqClient(str(secured.make_url("/"))) as tq:
        with pytest.raises(Unauthorized):
            await tq.take_stream().take(["q"])
    async with TqClient(str(secured.make_url("/")), token=PRODUCER) as tq:
        with pytest.raises(Forbidden):
            await tq.take_stream().take(["q"])


async def test_a_cancelled_client_take_gives_its_job_back(client: Client) -> None:
    async with TqClient(str(client.make_url("/"))) as tq:
        stream = tq.take_stream()
        # Given a take waiting, cancelled (the socket closes with it)
        taking = asyncio.create_task(stream.take(["q"], wait=20))
        await until(lambda: waiting(client) == 1)
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        await until(lambda: waiting(client) == 0)
        # Then the next job is nobody's but the next taker's, and the stream opens again
        job = await put(client)
        assert await status_of(client, job["id"]) == "pending"
        assert [doc["id"] for doc in await stream.take(["q"])] == [job["id"]]
        await stream.close()


# -- a worker and its take stream --------------------------------------------------------------


class NoTakeStreamClient(TqClient):
    """A client whose dispatcher (as far as it knows) has no take stream: an older one."""

    def take_stream(self) -> TakeStream:
        stream = super().take_stream()
        stream.path = ["take", "no-such-stream"]
        return stream


async def test_a_worker_takes_over_http_when_the_dispatcher_has_no_take_stream(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "tqueues.worker")
    jobs = [{"method": method("coro_add"), "args": [i, 1]} for i in range(20)]
    assert (await client.post("/queues/q/jobs", json={"jobs": jobs})).status == 201
    tq = NoTakeStreamClient(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=4, burst=True, client=tq)
    counts = await worker.run()
    assert counts["finished"] == 20
    assert worker._takes is None
    assert any(r.__dict__.get("action") == "take_stream_missing" for r in caplog.records)


async def test_a_take_on_a_paused_queue_waits_until_it_is_resumed(client: Client) -> None:
    assert (await client.post("/queues/q/pause")).status == 200
    job = await put(client)
    async with client.ws_connect(STREAM) as stream:
        # Given a take waiting on the paused queue, a job pending in it
        await stream.send_json({"ref": 1, "queues": ["q"], "wait": 20})
        await until(lambda: waiting(client) == 1)
        with pytest.raises(TimeoutError):
            await stream.receive(timeout=0.2)  # a while paused: no answer
        # When the queue is resumed
        assert (await client.post("/queues/q/resume")).status == 200
        # Then the take is answered with the job
        taken = await answer(stream)
    assert (taken["ref"], [got["id"] for got in taken["jobs"]]) == (1, [job["id"]])
