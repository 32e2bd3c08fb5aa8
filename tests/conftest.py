"""Fixtures shared by every layer: the stores (SQLite always, RethinkDB when a server is named)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tqueues.settings import RethinkDBSettings
from tqueues.stores.base import Store
from tqueues.stores.sqlite import SQLiteStore

RETHINKDB = os.environ.get("TQUEUES_TEST_RETHINKDB", "")
STORE_KINDS = ["sqlite", "rethinkdb"]


def rethinkdb_settings(db: str) -> RethinkDBSettings:
    """Settings for the test server named by TQUEUES_TEST_RETHINKDB (host:port); skip if unset."""
    if not RETHINKDB:
        pytest.skip("the RethinkDB leg runs when TQUEUES_TEST_RETHINKDB=host:port is set")
    host, _, port = RETHINKDB.rpartition(":")
    return RethinkDBSettings(host=host or "localhost", port=int(port), db=db)


StoreFactory = Callable[[], Store]


@pytest.fixture(params=STORE_KINDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A factory of unopened stores that all see the same data (to test reopening)."""
    if request.param == "sqlite":
        yield lambda: SQLiteStore(tmp_path / "data")
        return
    settings = rethinkdb_settings(f"tqueues_test_{uuid.uuid4().hex[:12]}")
    from tqueues.stores.rethinkdb import RethinkDBStore

    yield lambda: RethinkDBStore(settings)
    async with RethinkDBStore(settings) as cleaner:
        await cleaner.drop_database()


@pytest.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """An open store of each kind."""
    async with make_store() as opened:
        yield opened
