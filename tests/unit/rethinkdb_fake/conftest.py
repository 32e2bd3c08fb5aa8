"""The store contract run on the RethinkDB store against the in-memory fake server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.conftest import StoreFactory
from tests.unit.fake_rethinkdb import FakeServer, patch_store
from tqueues.settings import RethinkDBSettings


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    """One fake RethinkDB server that every store of the test connects to."""
    server = FakeServer()
    patch_store(monkeypatch, server)
    return server


@pytest.fixture
async def make_store(fake_server: FakeServer) -> AsyncIterator[StoreFactory]:
    """Unopened RethinkDB stores on one fake database (overrides the contract's fixture)."""
    from tqueues.stores.rethinkdb import RethinkDBStore

    settings = RethinkDBSettings(host="fake", db=f"tqueues_test_{uuid.uuid4().hex[:12]}")
    yield lambda: RethinkDBStore(settings)
    async with RethinkDBStore(settings) as cleaner:
        await cleaner.drop_database()
