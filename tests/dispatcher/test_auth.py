"""Bearer tokens: 401 without one, 403 outside the token's role, and safe listen defaults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from docopt import docopt

from tests.dispatcher.conftest import Client
from tqueues.cli import dispatcher as dispatcher_cli
from tqueues.dispatcher import create_app
from tqueues.settings import DispatcherSettings, SettingsError

ADMIN, PRODUCER, WORKER = "a" * 32, "p" * 32, "w" * 32


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "data"),
        tokens={ADMIN: "admin", PRODUCER: "producer", WORKER: "worker"},
    )
    client = await aiohttp_client(create_app(settings))
    assert (await client.put("/?queue=q", headers=bearer(ADMIN))).status == 200
    return client


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/?queue=q"), ("POST", "/"), ("PUT", "/?queue=x"), ("PATCH", "/?queue=q&id=1"),
     ("DELETE", "/?queue=q&id=1"), ("GET", "/health"), ("GET", "/ws?queue=q")],
)  # fmt: skip
@pytest.mark.parametrize("headers", [{}, bearer("wrong" * 8), {"Authorization": ADMIN}])
async def test_every_route_needs_a_valid_token(
    secured: Client, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await secured.request(method, path, headers=headers, json={})
    assert response.status == 401
    body = await response.json()
    assert body == {"error": "unauthorized", "message": "a valid bearer token is required"}
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_roles(secured: Client) -> None:
    job = {"queue": "q", "method": "a:b"}
    assert (await secured.post("/", json=job, headers=bearer(WORKER))).status == 403
    put = await secured.post("/", json=job, headers=bearer(PRODUCER))
    assert put.status == 200
    job_id = (await put.json())["id"]
    assert (await secured.get("/?queue=q", headers=bearer(PRODUCER))).status == 403
    read = await secured.get("/", params={"queue": "q", "id": job_id}, headers=bearer(PRODUCER))
    assert read.status == 200
    taken = await secured.get("/?queue=q", headers=bearer(WORKER))
    assert taken.status == 200
    params = {"queue": "q", "id": job_id}
    assert (await secured.delete("/", params=params, headers=bearer(PRODUCER))).status == 403
    assert (await secured.delete("/", params=params, headers=bearer(WORKER))).status == 200
    assert (await secured.put("/?queue=new", headers=bearer(WORKER))).status == 403


async def test_websocket_accepts_the_token_as_query_parameter(secured: Client) -> None:
    ws = await secured.ws_connect("/ws", params={"queue": "q", "access_token": WORKER})
    assert (await ws.receive_json(timeout=10))["type"] == "synced"
    await ws.close()
    # Only the WebSocket reads tokens from the query string.
    response = await secured.get("/", params={"queue": "q", "access_token": ADMIN})
    assert response.status == 401


def settings_from(argv: list[str], environ: dict[str, str] | None = None) -> DispatcherSettings:
    args: dict[str, Any] = dict(docopt(dispatcher_cli.__doc__, argv=argv))
    return DispatcherSettings.from_docopt(args, environ or {})


def test_listening_beyond_loopback_needs_a_token_or_insecure(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="without a token"):
        settings_from(["--listen", "0.0.0.0:8080"])
    assert settings_from(["--listen", "0.0.0.0:8080", "--insecure"]).insecure
    assert settings_from(["--listen", "0.0.0.0:8080"], {"TQUEUES_TOKEN": ADMIN}).tokens == {
        ADMIN: "admin"
    }
    token_file = tmp_path / "token"
    token_file.write_text(WORKER + "\n")
    settings = settings_from(["--listen", "[::1]:0", "--worker_token_file", str(token_file)])
    assert settings.tokens == {WORKER: "worker"}
    with pytest.raises(SettingsError, match="16 characters"):
        settings_from(["--token", "short"])
    with pytest.raises(SettingsError, match="same as"):
        settings_from(["--token", ADMIN, "--worker_token", ADMIN])
