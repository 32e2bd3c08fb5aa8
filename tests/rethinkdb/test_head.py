"""Claims on a watched RethinkDB queue take their candidates from its pending head (the most
urgent pending jobs, kept from the changefeed: tqueues/stores/rethinkdb/head.py) instead
of an index read each, on a real server: the reads saved are counted, and the jobs still
come in take order and exactly once, with several stores (dispatchers) on one database
and more pending jobs than a head holds.

Runs when TQUEUES_TEST_RETHINKDB=host:port names a server, and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from tests.conftest import rethinkdb_settings
from tests.contract.test_store import new, until
from tqueues import clock
from tqueues.errors import JobNotFound
from tqueues.jobs import JobRecord, JobStatus, QueueConfig
from tqueues.stores.rethinkdb import RethinkDBStore
from tqueues.stores.rethinkdb.head import Heads

pytestmark = pytest.mark.rethinkdb

Stores = Callable[..., RethinkDBStore]


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    """Open stores on one fresh database (``size``: the pending jobs a head holds)."""
    settings = rethinkdb_settings(f"tqueues_head_{uuid.uuid4().hex[:12]}")
    opened: list[RethinkDBStore] = []

    def make(size: int = 512) -> RethinkDBStore:
        store = RethinkDBStore(settings)
        store.heads = Heads(size=size)
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    async with RethinkDBStore(settings) as cleaner:
        await cleaner.drop_database()


async def watched(store: RethinkDBStore) -> RethinkDBStore:
    await store.open()
    await store.create_queue(QueueConfig("q"))
    await store.watch("q")
    return store


def reads(store: RethinkDBStore) -> tuple[int, int]:
    """(index reads of candidates, claims the head answered) so far."""
    return store.batches["candidate_reads"], store.batches["head_answers"]


async def test_takes_of_a_watched_queue_read_the_index_once_for_many(stores: Stores) -> None:
    a = await watched(stores())
    b = await watched(stores())
    # Given forty jobs put through another store (dispatcher) on the database
    put = [await b.put(new(args=[n])) for n in range(40)]
    before = reads(a)
    # When one store takes them one at a time
    taken = [job for _ in range(40) for job in await a.take_many("q", 1, worker="w")]
    # Then it got each once, in the order put, and read the index once: the other
    # thirty-nine claims took their candidate from memory
    assert [job.id for job in taken] == [job.id for job in put]
    index_reads, answered = (now - then for now, then in zip(reads(a), before, strict=True))
    assert index_reads == 1 and answered >= 39, (index_reads, answered)
    assert await a.take_many("q", 1, worker="w") == []
    assert reads(a)[0] == before[0] + 1  # an empty queue it knows of: no read either


async def test_a_job_another_dispatcher_puts_goes_to_its_place_in_the_take_order(
    stores: Stores,
) -> None:
    a = await watched(stores())
    b = await watched(stores())
    # Given a store whose head holds three jobs of priority 10
    low = [await a.put(new(args=[n], priority=10)) for n in range(3)]
    (first,) = await a.take_many("q", 1, worker="w")
    assert first.id == low[0].id
    index_reads = reads(a)[0]
    # When another store puts a job of priority 0, and this one's feed brings it
    with a.hub.subscribe("q") as subscription:
        urgent = await b.put(new(args=["urgent"], priority=0))
        while (await asyncio.wait_for(anext(subscription), 10)).job.id != urgent.id:
            pass
    # Then this store's next takes get it first, then the rest, without reading the index
    taken = [job for _ in range(3) for job in await a.take_many("q", 1, worker="w")]
    assert [job.id for job in taken] == [urgent.id, low[1].id, low[2].id]
    assert reads(a)[0] == index_reads


async def test_more_pending_jobs_than_a_head_holds_are_taken_in_order(stores: Stores) -> None:
    a = await watched(stores(size=8))
    # Given fifty pending jobs of five priorities, more than the eight its head holds
    put = [await a.put(new(args=[n], priority=n % 5)) for n in range(50)]
    # When they are taken one at a time
    taken: list[JobRecord] = []
    while got := await a.take_many("q", 1, worker="w"):
        taken += got
    # Then each came once, in take order (priority, then as put), and the index was read
    # about once per head's worth, not once per take
    assert [job.id for job in taken] == [job.id for job in sorted(put, key=lambda j: j.priority)]
    assert 50 / 8 <= reads(a)[0] <= 10, reads(a)


async def test_three_dispatchers_taking_at_once_take_every_job_once(stores: Stores) -> None:
    dispatchers = [await watched(stores(size=16)) for _ in range(3)]
    # Given 300 jobs put through all three
    put = await asyncio.gather(
        *(dispatchers[n % 3].put(new(args=[n], priority=n % 3)) for n in range(300))
    )
    # When forty takers spread over them take until the queue is empty
    runs: collections.Counter[str] = collections.Counter()

    async def taker(store: RethinkDBStore) -> None:
        while got := await store.take_many("q", 2, worker="w"):
            runs.update(job.id for job in got)

    await asyncio.gather(*(taker(dispatchers[n % 3]) for n in range(40)))
    # Then every job was taken exactly once
    assert runs == collections.Counter(job.id for job in put)
    assert sum(reads(d)[1] for d in dispatchers) > 0  # (and heads answered some)


async def test_a_watched_queue_is_swept_only_when_something_comes_due(stores: Stores) -> None:
    a = await watched(stores())
    b = await watched(stores())
    await a.update_queue(QueueConfig("q", ttr=5))
    now = clock.now()
    # Given a queue the reaper swept once, with nothing in it
    assert await a.reap(now) == 0
    sweeps = a.heads.counts["sweeps"]
    assert sweeps >= 1
    await sweeps_only_when_a_lease_runs_out(a, b, now, sweeps)


async def sweeps_only_when_a_lease_runs_out(
    a: RethinkDBStore, b: RethinkDBStore, now: float, sweeps: int
) -> None:
    """``a``'s reaper, which swept queue ``q`` ``sweeps`` times by ``now``, sweeps it no more
    round after round, nor once ``b`` (another dispatcher) takes a job under a 5 s lease,
    until that lease runs out: then it expires the job."""
    # When the reaper comes round again and again: no sweep (no read of the index)
    for step in range(5):
        assert await a.reap(now + step) == 0
    assert a.heads.counts["sweeps"] == sweeps
    # When another dispatcher takes a job under a 5 s lease, and this one's feed brings it
    with a.hub.subscribe("q") as subscription:
        put = await b.put(new(ttr=5))
        (taken,) = await b.take_many("q", 1, worker="w")
        while (await asyncio.wait_for(anext(subscription), 10)).kind != "taken":
            pass
    assert taken.id == put.id and taken.lease_expires is not None
    # Then the reaper leaves it be until its lease runs out, and expires it then
    assert await a.reap(taken.lease_expires - 1) == 0
    assert a.heads.counts["sweeps"] == sweeps
    assert await a.reap(taken.lease_expires + 0.01) == 1
    assert (await b.get("q", put.id)).status is JobStatus.PENDING


async def test_the_reaper_follows_a_queue_no_taker_follows_and_sweeps_it_only_when_due(
    stores: Stores,
) -> None:
    a = stores()
    await a.open()  # no taker, no WebSocket client: nothing here follows the queue
    b = await watched(stores())
    await b.update_queue(QueueConfig("q", ttr=5))
    now = clock.now()
    # Given a queue another dispatcher made, which this one's reaper has come round to:
    # its first rounds start the queue's feed, and sweep it until the feed is up
    deadline = asyncio.get_running_loop().time() + 20
    while a.heads.counts["sweeps"] == 0:  # counted once the queue has a head (a feed)
        assert asyncio.get_running_loop().time() < deadline, "the reaper never followed q"
        assert await a.reap(now) == 0
        await asyncio.sleep(0.01)
    await sweeps_only_when_a_lease_runs_out(a, b, now, a.heads.counts["sweeps"])


async def test_the_reaper_lists_queues_from_the_catalogs_feed(stores: Stores) -> None:
    a = await watched(stores())
    b = await watched(stores())
    catalog = a._parts()[1]
    await until(lambda: catalog.complete)
    # Given a catalog this store follows, read once
    await a.reap(clock.now())
    reads = catalog.reads
    # When the reaper comes round again and again: the catalog is not read again
    for _ in range(5):
        await a.reap(clock.now())
    assert catalog.reads == reads
    # And a queue another dispatcher creates, then drops, appears in the list, then goes
    await b.create_queue(QueueConfig("other"))
    await until(lambda: "other" in catalog.configs)
    assert [c.name for c in await catalog.listed()] == ["other", "q"]
    await b.drop_queue("other")
    await until(lambda: "other" not in catalog.configs)
    assert [c.name for c in await catalog.listed()] == ["q"]
    assert catalog.reads == reads


async def test_a_followed_queue_is_purged_only_once_a_retention_has_passed(
    stores: Stores,
) -> None:
    a = await watched(stores())
    await a.update_queue(QueueConfig("q", retention=60))
    # Given a queue whose one job finished
    await a.put(new())
    (job,) = await a.take_many("q", 1, worker="w")
    done = await a.finish("q", job.id, lease=job.lease)
    assert done.finished_at is not None
    now = clock.now()
    await a.reap(now)  # the first purge reads when the earliest ended job ended
    purges = a.heads.counts["purges"]
    assert purges >= 1
    # When the reaper comes round every 6 s (the purge's interval is 5 s) for 30 s
    for step in range(6, 36, 6):
        assert await a.reap(now + step) == 0
    # Then it did not purge (read) until the job's retention has passed, and then did
    assert a.heads.counts["purges"] == purges
    assert await a.reap(done.finished_at + 60.5) == 1
    with pytest.raises(JobNotFound):
        await a.get("q", job.id)


async def documents_read(store: RethinkDBStore, queue: str) -> int:
    """Documents of ``queue``'s table the server has read so far (its own statistics; a
    conditional write reads the document it writes)."""
    from tqueues.stores.rethinkdb.documents import r

    settings = store.settings
    conn = await r.connect(host=settings.host, port=settings.port)
    try:
        table_id = await r.db(settings.db).table(queue).info()["id"].run(conn)
        rows = await (
            r.db("rethinkdb").table("stats")
            .filter(lambda row: (row["id"].nth(0) == "table_server")
                    & (row["id"].nth(1) == table_id))
            .coerce_to("array").run(conn)
        )  # fmt: skip
    finally:
        await conn.close()
    return sum(int(row["query_engine"]["read_docs_total"]) for row in rows)


async def test_a_claim_writes_what_a_claim_changes_and_hands_out_the_whole_job(
    stores: Stores,
) -> None:
    a = await watched(stores())
    b = await watched(stores())
    assert await a.take_many("q", 1, worker="w") == []  # its head is filled: empty
    # Given a job that carries arguments, fields set by an update, and the worker and
    # error of an attempt that failed, pending again
    job = await b.put(new(args=[1, {"deep": [2, 3]}], kwargs={"k": "v"}, max_attempts=3))
    [first] = await b.take_many("q", 1, worker="old-worker")
    await b.update("q", job.id, {"progress": {"done": 1}}, lease=first.lease)
    await b.fail("q", job.id, lease=first.lease, error="boom")  # delayed: its retry's backoff
    assert await b.promote_due("q", clock.now() + 3600) == 1
    failed = await b.get("q", job.id)
    assert failed.status is JobStatus.PENDING and failed.worker == "old-worker"
    await until(lambda: a.heads.any_pending("q") is True)
    read_before = await documents_read(a, "q")
    # When another store claims it from its head, for no named worker
    [claimed] = await a.take_many("q", 1, worker=None)
    # Then it read no document before its write (the write reads the one it writes)...
    assert await documents_read(a, "q") - read_before == 1
    # ...and what it handed out is the whole job as stored: arguments, the update's
    # field and the last error kept, the claim's own fields set (the old worker gone)
    stored = await b.get("q", job.id)
    assert claimed == stored
    assert claimed.args == [1, {"deep": [2, 3]}] and claimed.kwargs == {"k": "v"}
    assert claimed.extra == {"progress": {"done": 1}} and claimed.error == "boom"
    assert claimed.worker is None and claimed.attempts == 2 and claimed.lease != first.lease
    assert claimed.status is JobStatus.STARTED and claimed.rev == failed.rev + 1
    finished = await a.finish("q", job.id, lease=claimed.lease, result={"ok": True})
    assert finished.extra == {"progress": {"done": 1}} and finished.result == {"ok": True}
