"""Unique jobs over HTTP (#25, part 3): a put with a key a live job holds answers 200 with
that job and ``duplicate`` (201 and ``duplicate: false`` when stored), on every enqueue
route (REST, batch, job stream, the documented ``/``); a bad key is a 400 naming it; a
kick refused because another job holds the key is a 409 naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dispatcher.conftest import Client

JOBS = "/queues/q/jobs"


async def post(client: Client, body: Any, path: str = JOBS) -> tuple[int, Any]:
    response = await client.post(path, json=body)
    return response.status, await response.json()


async def test_a_put_of_a_held_key_is_200_with_the_live_job(client: Client) -> None:
    status, first = await post(client, {"method": "m:f", "args": [1], "key": "k"})
    assert (status, first["duplicate"], first["key"]) == (201, False, "k")
    status, again = await post(client, {"method": "m:f", "args": [2], "key": "k"})
    assert status == 200 and again == {**first, "duplicate": True}
    # a job without a key says nothing of duplicates, and has key null
    status, plain = await post(client, {"method": "m:f"})
    assert status == 201 and "duplicate" not in plain and plain["key"] is None
    # a batch: 201 when anything was stored, each keyed job marked; 200 when nothing was
    status, batch = await post(client, {"jobs": [{"method": "m:f", "key": "k"},
                                                 {"method": "m:f", "key": "k2"}]})  # fmt: skip
    assert status == 201
    assert [(j["id"] == first["id"], j["duplicate"]) for j in batch["jobs"]] == [
        (True, True), (False, False),
    ]  # fmt: skip
    status, batch = await post(client, {"jobs": [{"method": "m:f", "key": "k2"}]})
    assert status == 200 and batch["jobs"][0]["duplicate"] is True
    # the documented / API: its 200 answer says so too
    status, legacy = await post(client, {"queue": "q", "method": "m:f", "key": "k"}, "/")
    assert status == 200 and legacy["id"] == first["id"] and legacy["duplicate"] is True
    # the job stream: the same statuses
    async with client.ws_connect(f"{JOBS}/stream") as ws:
        await ws.send_json({"method": "m:f", "key": "k", "ref": 1})
        assert (await ws.receive_json())["status"] == 200
        await ws.send_json({"method": "m:f", "key": "k3", "ref": 2})
        answer = await ws.receive_json()
        assert (answer["status"], answer["job"]["duplicate"]) == (201, False)


@pytest.mark.parametrize(
    ("key", "where"),
    [(1, ""), ("", ""), ("x" * 257, ""), ("a\x00b", ""), (["k"], ""), (True, "jobs[1]")],
)
async def test_a_bad_key_is_400_naming_it(client: Client, key: Any, where: str) -> None:
    body: Any = {"method": "m:f", "key": key}
    if where:
        body = {"jobs": [{"method": "m:f", "key": "fine"}, body]}
    status, error = await post(client, body)
    assert status == 400 and error["field"] == "key" and "'key'" in error["message"]
    assert error.get("index", "") == where
    page = await (await client.get(JOBS)).json()
    assert page["jobs"] == []  # nothing stored, not even the good job of the batch
    assert (await post(client, {"method": "m:f", "key": "x" * 256}))[0] == 201


async def test_a_kick_back_to_life_while_another_holds_the_key_is_409(client: Client) -> None:
    _, buried = await post(client, {"method": "m:f", "key": "k"})
    response = await client.post(f"{JOBS}/{buried['id']}/bury")
    assert response.status == 200
    _, holder = await post(client, {"method": "m:f", "key": "k"})
    assert holder["duplicate"] is False
    response = await client.post(f"{JOBS}/{buried['id']}/kick")
    error = await response.json()
    assert response.status == 409 and error["error"] == "key_taken"
    assert (error["key"], error["holder"]) == ("k", holder["id"])
    assert holder["id"] in error["message"] and "'k'" in error["message"]
    # the queue's kick skips it; once the holder is deleted, the kick works
    response = await client.post("/queues/q/kick", json={"bound": 10})
    assert (await response.json())["kicked"] == 0
    assert (await client.delete(f"{JOBS}/{holder['id']}")).status == 200
    response = await client.post(f"{JOBS}/{buried['id']}/kick")
    assert response.status == 200 and (await response.json())["status"] == "pending"


async def test_a_job_with_a_key_and_after_waits_holding_its_key(client: Client) -> None:
    _, first = await post(client, {"method": "m:f"})
    status, waiting = await post(client, {"method": "m:f", "key": "k", "after": [first["id"]]})
    assert status == 201 and waiting["status"] == "waiting" and waiting["duplicate"] is False
    status, again = await post(client, {"method": "m:f", "key": "k", "after": [first["id"]]})
    assert status == 200 and again["id"] == waiting["id"] and again["duplicate"] is True
    assert len((await (await client.get(JOBS)).json())["jobs"]) == 2
