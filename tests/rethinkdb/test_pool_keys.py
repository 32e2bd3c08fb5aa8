"""The RethinkDB pool tells a key the server cannot hold from an outage, on a real server.

Runs when TQUEUES_TEST_RETHINKDB=host:port names a server, and is skipped otherwise.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.conftest import rethinkdb_settings
from tqueues.errors import StoreUnavailable
from tqueues.stores.rethinkdb import r
from tqueues.stores.rethinkdb.pool import KeyRefused, Missing, Pool

pytestmark = pytest.mark.rethinkdb


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """A pool on a fresh database with one table ``t``, dropped afterwards."""
    settings = rethinkdb_settings(f"tqueues_keys_{uuid.uuid4().hex[:12]}")
    opened = Pool(settings)
    await opened.run(r.db_create(settings.db))
    await opened.run(r.db(settings.db).table_create("t"))
    yield opened
    await opened.run(r.db_drop(settings.db))
    await opened.close()


@pytest.mark.parametrize("key", ["\x00", "a\x00b", "x" * 128, "é" * 64], ids=str.__len__)
async def test_a_key_the_server_cannot_hold_is_key_refused(pool: Pool, key: str) -> None:
    table = r.db(pool.settings.db).table("t")
    # When a read or a write names a key with a NUL, or one over 127 bytes
    for query in (table.get(key), table.get(key).delete(return_changes=True)):
        # Then the pool says so (KeyRefused), not that the server cannot serve
        with pytest.raises(KeyRefused):
            await pool.run(query)
    # And keys up to the limit are plain reads of no document
    assert await pool.run(table.get("x" * 127)) is None


async def test_other_refusals_are_not_key_refused(pool: Pool) -> None:
    db = r.db(pool.settings.db)
    # A missing table is Missing; a query the server refuses for another reason (even one
    # quoting the words of a key error) is an outage-like StoreUnavailable
    with pytest.raises(Missing):
        await pool.run(db.table("nope").get("a"))
    with pytest.raises(StoreUnavailable) as refused:
        await pool.run(r.error("Primary key too long (max 127 characters): quoted"))
    assert not isinstance(refused.value, KeyRefused | Missing)


async def queries_run(pool: Pool) -> int:
    """Queries the server has run since it started (its ``stats`` table), this one too."""
    rows = await pool.run(r.db("rethinkdb").table("stats").coerce_to("array"))
    return sum(
        int(row["query_engine"]["queries_total"]) for row in rows if row["id"][0] == "server"
    )


async def test_the_feeds_of_one_connection_share_a_ping(pool: Pool) -> None:
    import asyncio

    conn = await pool.get()
    before = await queries_run(pool)
    # When twenty quiet feeds of one connection check it at once, then again soon after
    await asyncio.gather(*(pool.ping(conn) for _ in range(20)))
    for _ in range(20):
        await pool.ping(conn)
    # Then the server ran one ping for them all (and the read of its statistics)
    assert await queries_run(pool) - before == 2
    # And a connection that no longer answers fails the ping of every feed on it
    await conn.close()
    pool._pings.clear()  # as once the last answer is older than half a heartbeat
    outcomes = await asyncio.gather(*(pool.ping(conn) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes), outcomes


async def test_a_burst_of_changes_arrives_whole(pool: Pool) -> None:
    import asyncio
    import contextlib

    table = r.db(pool.settings.db).table("t")
    conn = await pool.get()
    cursor = await pool.run(table.changes(include_types=True, squash=False), conn=conn)
    changes = pool.changes(cursor, conn)
    # When one write adds 500 documents and another changes every one of them (the feed
    # brings them in batches, read from the cursor without a wait each)
    await pool.run(table.insert([{"id": n, "v": 0} for n in range(500)]))
    await pool.run(table.update({"v": 1}))
    seen: list[tuple[str, int, int]] = []
    async with contextlib.aclosing(changes):
        async with asyncio.timeout(30):
            async for change in changes:
                seen.append((change["type"], change["new_val"]["id"], change["new_val"]["v"]))
                if len(seen) == 1000:
                    break
    # Then every change came, each once, and each document's add before its change (the
    # server orders the changes of a document, not those of different ones)
    assert sorted(seen) == sorted(
        [("add", n, 0) for n in range(500)] + [("change", n, 1) for n in range(500)]
    )
    assert all(seen.index(("add", n, 0)) < seen.index(("change", n, 1)) for n in range(500))
    # And the feed, still open, brings the next change when it comes (a wait, this time)
    changes = pool.changes(cursor, conn)
    async with contextlib.aclosing(changes):
        await pool.run(table.get(7).update({"v": 2}))
        async with asyncio.timeout(30):
            change = await anext(changes)
    assert (change["type"], change["new_val"]) == ("change", {"id": 7, "v": 2})
    await cursor.close()
