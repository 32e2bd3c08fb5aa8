"""An in-process dispatcher on a real SQLite store, driven through aiohttp's test client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tqueues.dispatcher import create_app
from tqueues.settings import DispatcherSettings

Client = TestClient  # type: ignore[type-arg]


@pytest.fixture
async def client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    """A test client of a dispatcher with queue ``q`` created."""
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "data"), reap_interval=0.05, max_body=64 * 1024, max_wait=30
    )
    test_client = await aiohttp_client(create_app(settings))
    response = await test_client.put("/?queue=q")
    assert response.status == 200
    return test_client
