"""The documented ``/`` API: every status code, and a JSON error for every client mistake."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.dispatcher.conftest import Client


async def enqueue(client: Client, **fields: Any) -> dict[str, Any]:
    body = {"queue": "q", "method": "pkg.mod:func", **fields}
    response = await client.post("/", json=body)
    assert response.status == 200, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def take(client: Client, queue: str = "q", **params: Any) -> dict[str, Any]:
    response = await client.get("/", params={"queue": queue, **params})
    assert response.status == 200, await response.text()
    job: dict[str, Any] = await response.json()
    return job


async def error_of(response: Any, status: int) -> dict[str, Any]:
    """Assert the answer is a JSON error with ``status``; return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"] and body["message"]
    assert "Traceback" not in json.dumps(body)
    return body


# -- PUT ---------------------------------------------------------------------------------------


async def test_put_creates_a_queue_and_is_idempotent(client: Client) -> None:
    for _ in range(2):
        response = await client.put("/", params={"queue": "other"})
        assert response.status == 200 and await response.text() == "ok"
    assert (await client.post("/", json={"queue": "other", "method": "a:b"})).status == 200


async def test_put_takes_queue_defaults(client: Client) -> None:
    response = await client.put("/?queue=fast", json={"ttr": 2.5, "max_attempts": 5})
    assert response.status == 200
    job = await enqueue(client, queue="fast")
    assert (job["ttr"], job["max_attempts"]) == (2.5, 5)


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        ("", None, "queue"),
        ("?queue=", None, "queue"),
        ("?queue=bad-name!", None, "queue"),
        ("?queue=x", {"ttr": "fast"}, "ttr"),
        ("?queue=x", {"max_attempts": 0}, "max_attempts"),
    ],
)
async def test_put_rejects_bad_input(client: Client, query: str, body: Any, field: str) -> None:
    error = await error_of(await client.put("/" + query, json=body), 400)
    assert field in error["message"] or error.get("field") == field


# -- POST --------------------------------------------------------------------------------------


async def test_post_returns_the_stored_job(client: Client) -> None:
    job = await enqueue(client, args=[1, 2], kwargs={"x": "y"}, priority=3, ttr=9)
    assert len(job["id"]) == 32 and job["status"] == "pending"
    assert (job["args"], job["kwargs"], job["priority"], job["ttr"]) == ([1, 2], {"x": "y"}, 3, 9)
    assert "lease" not in job


async def test_post_accepts_form_bodies(client: Client) -> None:
    response = await client.post(
        "/", data={"queue": "q", "method": "a:b", "args": "[1]", "kwargs": '{"k": 2}'}
    )
    assert response.status == 200
    job = await response.json()
    assert (job["args"], job["kwargs"]) == ([1], {"k": 2})


async def test_post_to_missing_queue_is_501(client: Client) -> None:
    error = await error_of(await client.post("/", json={"queue": "nope", "method": "a:b"}), 501)
    assert error["error"] == "queue_not_found" and "nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"method": "a:b"}, "queue"),
        ({"queue": "q"}, "method"),
        ({"queue": "q", "method": 5}, "method"),
        ({"queue": "q", "method": "a:b", "args": {"a": 1}}, "args"),
        ({"queue": "q", "method": "a:b", "kwargs": [1]}, "kwargs"),
        ({"queue": "q", "method": "a:b", "priority": -1}, "priority"),
        ({"queue": "q", "method": "a:b", "priority": 2**32}, "priority"),
        ({"queue": "q", "method": "a:b", "priority": True}, "priority"),
        ({"queue": "q", "method": "a:b", "ttr": "soon"}, "ttr"),
        ({"queue": "q", "method": "a:b", "color": "red"}, "color"),
        ({"queue": 7, "method": "a:b"}, "queue"),
    ],
)
async def test_post_names_the_bad_field(client: Client, body: Any, named: str) -> None:
    error = await error_of(await client.post("/", json=body), 400)
    assert named in error["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{bad",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
        b"null",
        b'{"queue": "q", "method": "a:b", "args": [NaN]}',
        b"[" * 50_000,
    ],
)
async def test_post_rejects_malformed_json(client: Client, raw: bytes) -> None:
    response = await client.post("/", data=raw, headers={"Content-Type": "application/json"})
    await error_of(response, 400)


async def test_body_over_the_limit_is_413(client: Client) -> None:
    huge = {"queue": "q", "method": "a:b", "args": ["x" * 100_000]}
    error = await error_of(await client.post("/", json=huge), 413)
    assert "bytes" in error["message"]


# -- GET ---------------------------------------------------------------------------------------


async def test_get_takes_the_next_job_with_its_lease(client: Client) -> None:
    put = await enqueue(client)
    job = await take(client, worker="w-1")
    assert job["id"] == put["id"] and job["status"] == "started"
    assert job["lease"] and job["attempts"] == 1 and job["worker"] == "w-1"


async def test_get_on_empty_queue_is_404_and_missing_queue_is_501(client: Client) -> None:
    assert (await error_of(await client.get("/?queue=q"), 404))["error"] == "queue_empty"
    assert (await error_of(await client.get("/?queue=none"), 501))["error"] == "queue_not_found"
    await error_of(await client.get("/"), 400)


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf", "31"])
async def test_get_rejects_bad_wait(client: Client, wait: str) -> None:
    error = await error_of(await client.get("/", params={"queue": "q", "wait": wait}), 400)
    assert "wait" in error["message"]


async def test_long_poll_is_answered_when_a_job_arrives(client: Client) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting = asyncio.create_task(client.get("/", params={"queue": "q", "wait": "20"}))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    put = await enqueue(client)
    response = await asyncio.wait_for(waiting, 20)
    assert response.status == 200 and (await response.json())["id"] == put["id"]
    assert loop.time() - started < 5


async def test_long_poll_times_out_with_404(client: Client) -> None:
    await error_of(await client.get("/", params={"queue": "q", "wait": "0.2"}), 404)


async def test_get_by_id_reads_a_job(client: Client) -> None:
    put = await enqueue(client)
    response = await client.get("/", params={"queue": "q", "id": put["id"]})
    assert response.status == 200 and (await response.json())["id"] == put["id"]
    await error_of(await client.get("/", params={"queue": "q", "id": "f" * 32}), 404)


# -- PATCH -------------------------------------------------------------------------------------


async def test_patch_merges_fields_into_the_job(client: Client) -> None:
    put = await enqueue(client)
    job = await take(client)
    params = {"queue": "q", "id": put["id"], "lease": job["lease"]}
    response = await client.patch("/", params=params, json={"progress": 50, "stage": "a"})
    assert response.status == 200
    response = await client.patch("/", params=params, json={"progress": 100})
    body = await response.json()
    assert (body["progress"], body["stage"], body["status"]) == (100, "a", "started")
    assert body["lease_expires"] >= job["lease_expires"]


async def test_patch_errors(client: Client) -> None:
    put = await enqueue(client)
    await error_of(await client.patch("/", params={"queue": "q", "id": "x" * 32}, json={}), 404)
    error = await error_of(
        await client.patch("/", params={"queue": "q", "id": put["id"]}, json={"status": "x"}),
        400,
    )
    assert "status" in error["message"]
    await error_of(await client.patch("/", params={"queue": "q"}, json={}), 400)
    await error_of(
        await client.patch("/", params={"queue": "q", "id": put["id"]}, data=b"[1]"), 400
    )
    await take(client)
    await error_of(
        await client.patch("/", params={"queue": "q", "id": put["id"], "lease": "no"}, json={}),
        409,
    )


# -- DELETE ------------------------------------------------------------------------------------


async def test_delete_finishes_with_the_result(client: Client) -> None:
    put = await enqueue(client)
    job = await take(client)
    params = {"queue": "q", "id": put["id"], "lease": job["lease"]}
    response = await client.delete("/", params=params, json={"result": {"answer": 42}})
    assert response.status == 200
    done = await response.json()
    assert (done["status"], done["result"]) == ("finished", {"answer": 42})
    # A duplicate acknowledgement is refused and changes nothing.
    again = await error_of(await client.delete("/", params=params, json={"result": 0}), 409)
    assert again["error"] == "invalid_transition"
    read = await (await client.get("/", params={"queue": "q", "id": put["id"]})).json()
    assert read["result"] == {"answer": 42}


async def test_delete_without_body_or_lease_as_original_clients(client: Client) -> None:
    put = await enqueue(client)
    await take(client)
    response = await client.delete("/", params={"queue": "q", "id": put["id"]})
    assert response.status == 200 and (await response.json())["status"] == "finished"


async def test_delete_with_error_buries_the_job_out_of_attempts(client: Client) -> None:
    await client.put("/?queue=once", json={"max_attempts": 1})
    put = await enqueue(client, queue="once")
    job = await take(client, "once")
    params = {"queue": "once", "id": put["id"], "lease": job["lease"]}
    body = {"error": "ValueError: no", "traceback": "Traceback ...\nValueError: no"}
    response = await client.delete("/", params=params, json=body)
    done = await response.json()
    assert (done["status"], done["error"], done["traceback"]) == ("buried", *body.values())
    assert done["event"] == "buried"


async def test_delete_with_permanent_error_fails_at_once(client: Client) -> None:
    put = await enqueue(client)  # max_attempts 3
    job = await take(client)
    params = {"queue": "q", "id": put["id"], "lease": job["lease"]}
    body = {"error": "MethodNotAllowed: no", "traceback": None, "permanent": True}
    done = await (await client.delete("/", params=params, json=body)).json()
    assert (done["status"], done["attempts"], done["finished_at"] > 0) == ("failed", 1, True)


async def test_delete_with_bury_sets_the_job_aside(client: Client) -> None:
    put = await enqueue(client)
    job = await take(client)
    params = {"queue": "q", "id": put["id"], "lease": job["lease"]}
    body = {"bury": True, "reason": "needs a human"}
    done = await (await client.delete("/", params=params, json=body)).json()
    assert (done["status"], done["error"]) == ("buried", "needs a human")
    await error_of(await client.get("/?queue=q"), 404)  # a buried job is not handed out


async def test_delete_with_release_gives_the_job_back(client: Client) -> None:
    put = await enqueue(client)
    job = await take(client)
    params = {"queue": "q", "id": put["id"], "lease": job["lease"]}
    response = await client.delete("/", params=params, json={"release": True})
    assert (await response.json())["status"] == "pending"
    assert (await take(client))["id"] == put["id"]


async def test_late_delete_after_lease_loss_is_409(client: Client) -> None:
    await client.put("/?queue=short", json={"ttr": 0.1})
    put = await enqueue(client, queue="short")
    first = await take(client, "short")
    second = await take(client, "short", wait="10")  # the reaper expires the first lease
    assert second["lease"] != first["lease"]
    params = {"queue": "short", "id": put["id"], "lease": first["lease"]}
    error = await error_of(await client.delete("/", params=params, json={"result": 1}), 409)
    assert error["error"] == "lease_mismatch"


@pytest.mark.parametrize(
    "body",
    [
        {"result": 1, "error": "x"},
        {"error": 5},
        {"release": "yes"},
        {"release": True, "delay": -1},
        {"bury": True, "reason": 5},
        {"error": "x", "permanent": "yes"},
        {"what": 1},
    ],
)
async def test_delete_rejects_bad_bodies(client: Client, body: Any) -> None:
    put = await enqueue(client)
    await error_of(await client.delete("/", params={"queue": "q", "id": put["id"]}, json=body), 400)
    read = await (await client.get("/", params={"queue": "q", "id": put["id"]})).json()
    assert read["status"] == "pending"


async def test_delete_unknown_job_is_404(client: Client) -> None:
    response = await client.delete("/", params={"queue": "q", "id": "0" * 32})
    assert (await error_of(response, 404))["error"] == "job_not_found"


# -- other -------------------------------------------------------------------------------------


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    await error_of(await client.get("/nothing"), 404)
    response = await client.request("HEAD", "/")
    assert response.status == 405


async def test_health(client: Client) -> None:
    response = await client.get("/health")
    assert response.status == 200 and (await response.json())["status"] == "ok"
