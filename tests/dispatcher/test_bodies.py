"""Every route that reads a body answers any content type with the job or a 4xx JSON error
naming the problem, never a 5xx: JSON, urlencoded and multipart forms (``curl -d``,
``curl -F``), files, broken multipart, unknown types, broken compression."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.dispatcher.conftest import Client
from tqueues.dispatcher.actions import ACTION_FUNCTIONS

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Assert the answer is a JSON error with ``status``; return its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"] and body["message"]
    return body


def multipart(*parts: tuple[str, str | bytes, str | None]) -> aiohttp.FormData:
    """A multipart/form-data body of (name, value, filename) parts."""
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value, filename in parts:
        if filename is None:
            form.add_field(name, value)
        else:
            form.add_field(name, value, filename=filename, content_type="text/plain")
    return form


async def test_a_multipart_form_enqueues_a_job(client: Client) -> None:
    # curl -F method=m:f -F 'args=[1]' 'http://.../?queue=q'
    form = multipart(("method", "m:f", None), ("args", "[1]", None), ("kwargs", '{"k": 2}', None))
    response = await client.post("/?queue=q", data=form)
    assert response.status == 200, await response.text()
    job = await response.json()
    assert (job["queue"], job["method"], job["args"], job["kwargs"]) == ("q", "m:f", [1], {"k": 2})


async def test_a_multipart_form_creates_a_queue_with_its_settings(client: Client) -> None:
    response = await client.put("/?queue=formed", data=multipart(("ttl_action", "delete", None)))
    assert response.status == 200, await response.text()
    queues = {q["name"]: q for q in (await (await client.get("/queues")).json())["queues"]}
    assert queues["formed"]["ttl_action"] == "delete"


@pytest.mark.parametrize(
    ("form", "named"),
    [
        (multipart(("method", "m:f", None), ("args", "[1", None)), "args"),
        (multipart(("method", "m:f", None), ("args", "[1]", "args.json")), "args"),
        (multipart(("method", "m:f", None), ("method", "os:system", None)), "method"),
        (multipart(("method", "m:f", None), ("args", "[9007199254740993]", None)), "args"),
    ],
    ids=["bad-json", "file", "twice", "big-int"],
)
async def test_a_bad_multipart_field_is_named(
    client: Client, form: aiohttp.FormData, named: str
) -> None:
    error = await error_of(await client.post("/?queue=q", data=form), 400)
    assert error["field"] == named and named in error["message"]
    assert (await (await client.get("/queues/q/stats")).json())["total"] == 0


async def test_urlencoded_fields_given_twice_are_refused(client: Client) -> None:
    body = "method=m:f&method=os:system&args=[1]"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    error = await error_of(await client.post("/?queue=q", data=body, headers=headers), 400)
    assert error["field"] == "method"


#: (content type, body) pairs no route may answer with a 5xx.
BODIES: dict[str, tuple[str | None, bytes | aiohttp.FormData, dict[str, str]]] = {
    "json": ("application/json", b'{"result": 1}', {}),
    "urlencoded": ("application/x-www-form-urlencoded", b"a=1&b=%5B1%5D", {}),
    "urlencoded-broken": ("application/x-www-form-urlencoded", b"a=1&&=&%zz", {}),
    "multipart": (None, multipart(("a", "1", None)), {}),
    "multipart-file": (None, multipart(("a", "1", "a.txt")), {}),
    "multipart-no-boundary": ("multipart/form-data", b"a=1", {}),
    "multipart-garbage": ("multipart/form-data; boundary=xyz", b"\x00garbage--xyz", {}),
    "multipart-no-name": (
        "multipart/form-data; boundary=b",
        b"--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--\r\n",
        {},
    ),
    "multipart-bad-charset": (
        "multipart/form-data; boundary=b",
        b"--b\r\nContent-Disposition: form-data; name=a\r\n"
        b"Content-Type: text/plain; charset=nope\r\n\r\nv\r\n--b--\r\n",
        {},
    ),
    "multipart-nested": (
        "multipart/form-data; boundary=b",
        b"--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n"
        b"--b--\r\n",
        {},
    ),
    "garbage-type": ("application/x-garbage", b"\x01\x02 not json", {}),
    "malformed-type": (";;; =", b"a=1", {}),
    "text": ("text/plain", b"hello", {}),
    "gzip-garbage": ("application/json", b"not gzip at all", {"Content-Encoding": "gzip"}),
    "gzip-json": ("application/json", gzip.compress(b'{"bound": 1}'), {"Content-Encoding": "gzip"}),
}


def body_routes(app: web.Application, job_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route and verb whose view takes a body."""
    routes: list[tuple[str, str]] = []
    params = {"name": "q", "id": job_id, "worker": "w:1", "schedule": "s"}
    for resource in app.router.resources():
        info = resource.get_info()
        pattern = info.get("formatter") or info.get("path")
        if not pattern:
            continue
        for route in resource:
            handler = route.handler
            for method in BODY_METHODS:
                if not (route.method == method or hasattr(handler, method.lower())):
                    continue
                if "{action}" in pattern:
                    paths = [pattern.format(action=a, **params) for a in ACTION_FUNCTIONS]
                elif pattern == "/":
                    paths = [f"/?queue=q&id={job_id}"]
                else:
                    paths = [pattern.format(**params)]
                routes.extend((method, path) for path in paths)
    return sorted(set(routes))


async def test_every_body_route_answers_every_content_type_without_a_5xx(client: Client) -> None:
    put = await client.post("/", json={"queue": "q", "method": "m:f"})
    job_id = (await put.json())["id"]
    routes = body_routes(client.app, job_id)
    # /, the queue, its jobs, a job, the job actions, take, outcomes, kick, truncate, /take
    assert len(routes) >= 15, routes
    failures = []
    for method, path in routes:
        for name, (content_type, data, extra) in BODIES.items():
            headers = dict(extra)
            if content_type is not None:
                headers["Content-Type"] = content_type
            async with client.request(method, path, data=data, headers=headers) as response:
                text = await response.text()
                ok = response.status < 500 and (
                    response.status < 400
                    or (
                        response.content_type == "application/json"
                        and bool(json.loads(text).get("error"))
                    )
                )
                if not ok:
                    failures.append(f"{method} {path} {name}: {response.status} {text[:200]}")
            if path.endswith("/truncate") or (method == "DELETE" and path == "/queues/q"):
                await client.put("/?queue=q")
    assert not failures, "\n".join(failures)


async def test_an_unreadable_compressed_body_is_400_naming_it(client: Client) -> None:
    response = await client.post(
        "/queues/q/jobs",
        data=b"not gzip at all",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    error = await error_of(response, 400)
    assert "cannot be read" in error["message"] and "gzip" in error["message"]
