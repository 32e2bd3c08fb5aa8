"""The RethinkDB store's listing pages cut by bytes, read in parts (32 documents first),
where a part ends exactly at the cap: on the fake server, whose documents' sizes are
known to the character."""

from __future__ import annotations

import json

from tests.conftest import StoreFactory
from tests.unit.fake_rethinkdb import FakeServer
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.rethinkdb.listing import LIST_FIRST_READ


async def sizes(server: FakeServer, ids: list[str]) -> list[int]:
    """Each job's document size as the server counts it (its JSON's characters)."""
    (db,) = server.dbs.values()
    docs = db["q"].docs
    return [len(json.dumps(docs[i], ensure_ascii=False, separators=(",", ":"))) for i in ids]


async def test_a_first_read_that_ends_exactly_at_the_cap_ends_the_page(
    fake_server: FakeServer, make_store: StoreFactory
) -> None:
    async with make_store() as store:
        await store.create_queue(QueueConfig("q"))
        jobs = await store.put_many([NewJob("q", "m:f", args=[i]) for i in range(50)])
        ids = [job.id for job in jobs]
        cap = sum((await sizes(fake_server, ids))[:LIST_FIRST_READ])
        # The first read's documents reach the cap exactly; more jobs follow
        page = await store.list_jobs("q", limit=100, max_bytes=cap)
        assert [job.id for job in page.jobs] == ids[:LIST_FIRST_READ]
        assert page.next_cursor is not None
        rest = await store.list_jobs("q", cursor=page.next_cursor, limit=100, max_bytes=10**6)
        assert [job.id for job in rest.jobs] == ids[LIST_FIRST_READ:]
        assert rest.next_cursor is None


async def test_a_page_that_reaches_the_cap_at_the_last_job_is_the_last(
    fake_server: FakeServer, make_store: StoreFactory
) -> None:
    async with make_store() as store:
        await store.create_queue(QueueConfig("q"))
        jobs = await store.put_many([NewJob("q", "m:f", args=[i]) for i in range(32)])
        ids = [job.id for job in jobs]
        page = await store.list_jobs("q", limit=100, max_bytes=sum(await sizes(fake_server, ids)))
        assert ([job.id for job in page.jobs], page.next_cursor) == (ids, None)
