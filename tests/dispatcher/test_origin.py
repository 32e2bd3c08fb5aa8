"""Browsers on other sites cannot drive a dispatcher, token or not.

CORS only stops a page from *reading* answers: a form on any site can still *send* a
form-encoded (or text/plain) POST to http://127.0.0.1:8080/, an image can make it GET
(take) a job, and any page can open a WebSocket to it. On a dispatcher without a token
(the loopback default) that would let every web page the local user visits enqueue jobs
(run code on the workers), take jobs until they are buried, or stream every job.
Browsers label such requests with ``Origin`` or ``Sec-Fetch-Site``; only the origins in
``--allowed_domains`` get through. Clients that are not browsers send neither.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.dispatcher.keys import store_key
from tqueues.settings import DispatcherSettings

EVIL = "https://evil.example"
ALLOWED = "https://app.example"
FORM = {"queue": "q", "method": "os:system", "args": '["touch /tmp/pwned"]'}


async def stored(client: Client) -> int:
    return len((await client.app[store_key].list_jobs("q")).jobs)


@pytest.mark.parametrize("origin", [EVIL, "null", "http://127.0.0.1:8080"])
async def test_a_page_on_another_origin_cannot_enqueue(client: Client, origin: str) -> None:
    headers = {"Origin": origin}
    form = await client.post("/", data=FORM, headers=headers)
    plain = await client.post(
        "/",
        data='{"queue": "q", "method": "os:system", "args": ["id"]}',
        headers={**headers, "Content-Type": "text/plain"},
    )
    for response in (form, plain):
        assert response.status == 403, await response.text()
        assert (await response.json())["error"] == "origin_not_allowed"
    assert await stored(client) == 0


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_an_image_on_another_site_cannot_take_a_job(client: Client, site: str) -> None:
    # <img src="http://127.0.0.1:8080/?queue=q">: a GET without Origin, labelled by the browser
    job = await (await client.post("/", json={**FORM, "args": []})).json()
    response = await client.get("/?queue=q", headers={"Sec-Fetch-Site": site})
    assert response.status == 403
    assert (await response.json())["error"] == "origin_not_allowed"
    read = await client.get("/", params={"queue": "q", "id": job["id"]})
    assert (await read.json())["status"] == "pending"


async def test_a_user_typing_the_url_is_not_refused(client: Client) -> None:
    response = await client.get("/health", headers={"Sec-Fetch-Site": "none"})
    assert response.status == 200


async def test_a_page_on_another_origin_cannot_open_the_websocket(client: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws?queue=q", origin=EVIL)
    assert refused.value.status == 403


async def test_clients_without_an_origin_are_unaffected(client: Client) -> None:
    assert (await client.post("/", data=FORM)).status == 200
    assert await stored(client) == 1
    async with client.ws_connect("/ws?queue=q") as ws:
        assert (await ws.receive_json(timeout=5))["type"] == "initial"


async def test_an_allowed_origin_gets_through(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    settings = DispatcherSettings(data_dir=str(tmp_path / "d"), allowed_domains=(ALLOWED,))
    client = await aiohttp_client(create_app(settings))
    assert (await client.put("/?queue=q", headers={"Origin": ALLOWED})).status == 200
    response = await client.post("/", json={**FORM, "args": []}, headers={"Origin": ALLOWED})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert (await client.post("/", data=FORM, headers={"Origin": EVIL})).status == 403
