"""CORS: only the origins given by --allowed_domains, never a wildcard."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.settings import DispatcherSettings

ALLOWED = "https://foo.com"


@pytest.fixture
async def cors_client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    settings = DispatcherSettings(data_dir=str(tmp_path / "d"), allowed_domains=(ALLOWED,))
    client = await aiohttp_client(create_app(settings))
    assert (await client.put("/?queue=q")).status == 200
    return client


async def test_allowed_origin_gets_cors_headers(cors_client: Client) -> None:
    preflight = await cors_client.options(
        "/", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED
    response = await cors_client.get("/?queue=q", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_other_origins_get_none(cors_client: Client) -> None:
    preflight = await cors_client.options(
        "/", headers={"Origin": "https://evil.com", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 403
    assert "Access-Control-Allow-Origin" not in preflight.headers
    response = await cors_client.get("/?queue=q", headers={"Origin": "https://evil.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_without_allowed_domains_there_is_no_cors(client: Client) -> None:
    response = await client.get("/?queue=q", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in response.headers
