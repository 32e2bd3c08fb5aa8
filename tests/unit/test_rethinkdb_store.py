"""The RethinkDB store without a server: its pure parts, its queries, its failure handling.

The queries are checked as the driver serialises them (the wire JSON), the store's logic
end to end against the in-memory fake of tests/unit/fake_rethinkdb.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rethinkdb import ql2_pb2
from rethinkdb.ast import ReQLEncoder
from rethinkdb.errors import (
    ReqlDriverCompileError,
    ReqlDriverError,
    ReqlOpFailedError,
    ReqlQueryLogicError,
    ReqlServerCompileError,
)

from tests.unit import fake_rethinkdb
from tests.unit.fake_rethinkdb import FakeServer, patch_store
from tqueues import clock, lifecycle
from tqueues.errors import (
    InvalidTransition,
    LeaseMismatch,
    QueueNotFound,
    StoreUnavailable,
    ValidationError,
)
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig
from tqueues.settings import DispatcherSettings, RethinkDBSettings, SettingsError
from tqueues.stores.hub import ChangesMissed
from tqueues.stores.rethinkdb import (
    RethinkDBStore,
    change_kind,
    doc_to_config,
    doc_to_job,
    job_to_doc,
    parse_cursor,
    queries,
    r,
    reql_literal,
)

T = ql2_pb2.Term.TermType
NOW = 1_700_000_000.123456


def pending(**options: object) -> JobRecord:
    new = NewJob.from_request({"queue": "q", "method": "m:f", **options})
    return lifecycle.create(new, QueueConfig("q", ttr=10, max_attempts=2), now=NOW)


def started(job: JobRecord | None = None) -> JobRecord:
    return lifecycle.claim(job or pending(), lease="L", worker="w", now=NOW + 1)


def wire(query: Any) -> Any:
    """The query as the driver sends it."""
    return json.loads(ReQLEncoder().encode(query))


def term_types(built: Any) -> set[int]:
    """Every term type in a serialised query."""
    found: set[int] = set()
    if isinstance(built, list) and built and isinstance(built[0], int):
        found.add(built[0])
        for part in built[1:]:
            found |= term_types(part)
    elif isinstance(built, list):
        for part in built:
            found |= term_types(part)
    elif isinstance(built, dict):
        for part in built.values():
            found |= term_types(part)
    return found


# -- change kinds: the same as the base store publishes for each operation -------------------


def no_backoff(attempt: int) -> float:
    return 0.0


def some_backoff(attempt: int) -> float:
    return 4.0


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (None, pending(), "put"),
        (pending(), None, "deleted"),
        (pending(), started(), "taken"),
        (started(), lifecycle.finish(started(), lease="L", result=1, now=NOW + 2), "finished"),
        (pending(), lifecycle.finish(pending(), lease=None, result=1, now=NOW + 2), "finished"),
        (
            started(),
            lifecycle.update(started(), {"progress": 1}, lease="L", now=NOW + 2),
            "updated",
        ),
        (pending(), lifecycle.update(pending(), {"x": 1}, lease=None, now=NOW), "updated"),
        (
            started(),
            lifecycle.fail(
                started(), lease="L", error="E", traceback="T", now=NOW + 2, backoff=some_backoff
            ),
            "failed",
        ),
        (
            started(),
            lifecycle.fail(
                started(), lease="L", error="E", traceback="T", now=NOW + 2, backoff=no_backoff
            ),
            "failed",
        ),
        (started(), lifecycle.release(started(), lease="L", delay=0, now=NOW + 2), "released"),
        (started(), lifecycle.release(started(), lease="L", delay=9, now=NOW + 2), "released"),
        (started(), lifecycle.expire(started(), now=NOW + 100), "expired"),
        (
            pending(delay=5),
            lifecycle.promote(pending(delay=5), now=NOW + 5),
            "promoted",
        ),
    ],
)
def test_change_kind_matches_what_the_base_store_publishes(
    before: JobRecord | None, after: JobRecord | None, kind: str
) -> None:
    assert change_kind(before, after) == kind


def test_change_kind_is_the_revision_event() -> None:
    last = started(lifecycle.expire(started(), now=NOW + 100))  # attempt 2 of 2
    assert change_kind(last, lifecycle.expire(last, now=NOW + 200)) == "expired"
    buried = lifecycle.fail(
        last, lease="L", error="E: boom", traceback="tb", now=NOW + 3, backoff=some_backoff
    )
    assert (buried.status, change_kind(last, buried)) == (JobStatus.BURIED, "buried")
    assert change_kind(buried, None) == "deleted"


# -- documents -----------------------------------------------------------------------------


def test_doc_round_trip_keeps_every_field() -> None:
    job = lifecycle.update(started(pending(args=[1, {"a": [None]}])), {"p": 1}, lease="L", now=NOW)
    doc = job_to_doc(job)
    assert doc["status"] == "started" and doc["extra"] == {"p": 1} and doc["id"] == job.id
    assert doc_to_job(doc) == job


def test_doc_to_job_normalises_numbers_the_server_returns_as_integers() -> None:
    doc = job_to_doc(started()) | {"ttr": 60, "ready_at": 1700000000, "lease_expires": 7}
    job = doc_to_job(doc)
    assert isinstance(job.ttr, float) and isinstance(job.ready_at, float)
    assert isinstance(job.lease_expires, float) and job.lease_expires == 7.0


def test_reql_literal_has_no_nesting_limit() -> None:
    deep: Any = "bottom"
    for _ in range(30):
        deep = {"k": [deep]}
    with pytest.raises(ReqlDriverCompileError):
        wire(r.expr(deep))
    assert wire(reql_literal(deep))["k"][0] == T.MAKE_ARRAY


# -- queries ---------------------------------------------------------------------------------


@pytest.fixture
def store() -> RethinkDBStore:
    return RethinkDBStore(RethinkDBSettings(db="d"))


def test_the_compare_and_set_write_is_deterministic_and_single_document(
    store: RethinkDBStore,
) -> None:
    before = pending()
    after = started(before).evolve(rev=1)
    new_doc = reql_literal(job_to_doc(after))
    query = (
        store._table("q")
        .get(before.id)
        .replace(
            lambda row: r.branch(
                row.eq(None),
                None,
                r.branch((row["rev"] == 0) & (row["status"] == "pending"), new_doc, row),
            ),
            durability="hard",
        )
    )
    built = wire(query)
    assert built[0] == T.REPLACE and built[1][0][0] == T.GET
    assert built[2] == {"durability": "hard"}
    function = built[1][1]
    assert function[0] == T.FUNC
    nondeterministic = {T.NOW, T.RANDOM, T.UUID, T.JAVASCRIPT, T.HTTP, T.TABLE, T.DB, T.GET}
    assert not term_types(function) & nondeterministic


def test_claim_candidates_are_read_through_the_state_index(store: RethinkDBStore) -> None:
    built = wire(queries.claim_candidates(store._table("q"), 8))
    assert built[0] == T.COERCE_TO
    limit = built[1][0]
    order = limit[1][0]
    between = order[1][0]
    assert (limit[0], limit[1][1]) == (T.LIMIT, 8)
    assert (order[0], order[2]) == (T.ORDER_BY, {"index": "state"})
    assert (between[0], between[2]) == (T.BETWEEN, {"index": "state"})
    assert between[1][1][1][0] == "pending"  # the range of pending jobs only
    assert T.FILTER not in term_types(built)


def test_list_query_resumes_after_the_cursor_through_the_primary_key(
    store: RethinkDBStore,
) -> None:
    first = wire(queries.page(store._table("q"), None, 3))
    assert T.BETWEEN not in term_types(first)
    job_id = "a" * 32
    for cursor in (job_id, f"{NOW!r}:{job_id}"):  # the cursors of earlier versions too
        built = wire(queries.page(store._table("q"), cursor, 3))
        between = built[1][0][1][0][1][0]
        assert between[0] == T.BETWEEN
        assert between[1][1] == job_id
        assert between[2] == {"index": "id", "left_bound": "open"}


def test_parse_cursor() -> None:
    assert parse_cursor("b" * 32) == "b" * 32
    assert parse_cursor(f"{NOW!r}:{'b' * 32}") == "b" * 32
    for bad in (None, "", "17", "x:" + "b" * 31, "1:nothex"):
        assert parse_cursor(bad) is None


# -- settings ----------------------------------------------------------------------------------


def test_dispatcher_options_select_and_tune_the_rethinkdb_store() -> None:
    settings = DispatcherSettings.from_docopt(
        {"--host": "db1", "--pool_size": "8", "--durability": "SOFT"}, environ={}
    )
    assert settings.rethinkdb == RethinkDBSettings(host="db1", pool_size=8, durability="soft")
    assert DispatcherSettings.from_docopt({}, environ={}).rethinkdb is None
    assert DispatcherSettings.from_docopt({"--pool_size": "8"}, environ={}).rethinkdb is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"--host": "h", "--pool_size": "0"}, "--pool_size"),
        ({"--host": "h", "--pool_size": "x"}, "--pool_size"),
        ({"--host": "h", "--durability": "maybe"}, "--durability"),
        ({"--db": "no-dashes"}, "--db"),
        ({"--rethinkdb": "mysql://h/db"}, "rethinkdb://"),
    ],
)
def test_bad_rethinkdb_options_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DispatcherSettings.from_docopt(options, environ={})


def test_the_store_url_names_every_part_and_options_override_it() -> None:
    url = "rethinkdb://bob:s%40cret@db.example:29015/jobs"
    settings = RethinkDBSettings.from_url(url)
    assert (settings.host, settings.port, settings.db) == ("db.example", 29015, "jobs")
    assert (settings.user, settings.password) == ("bob", "s@cret")
    assert RethinkDBSettings.from_url("rethinkdb://") == RethinkDBSettings()
    from_env = DispatcherSettings.from_docopt(
        {"--db": "other"}, environ={"TQUEUES_RETHINKDB": url}
    ).rethinkdb
    assert from_env is not None and (from_env.host, from_env.db) == ("db.example", "other")


# -- failures ------------------------------------------------------------------------------------


async def test_open_against_a_closed_port_fails_at_once_with_a_clear_message() -> None:
    store = RethinkDBStore(RethinkDBSettings(host="127.0.0.1", port=1, timeout=5))
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    with pytest.raises(StoreUnavailable, match=r"^cannot reach RethinkDB at 127\.0\.0\.1:1: "):
        await store.open()
    assert loop.time() - started_at < 5
    await store.close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    fake = FakeServer()
    patch_store(monkeypatch, fake)
    return fake


@pytest.fixture
async def fake_store(server: FakeServer) -> AsyncIterator[RethinkDBStore]:
    async with RethinkDBStore(RethinkDBSettings(db="d", timeout=2)) as opened:
        yield opened


async def test_a_queue_created_through_another_store_is_found_and_its_changes_seen(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    async with RethinkDBStore(RethinkDBSettings(db="d")) as other:
        assert await other.create_queue(QueueConfig("shared", ttr=7)) is True
        assert await fake_store.create_queue(QueueConfig("shared", ttr=9)) is False
        assert (await fake_store.get_queue("shared")).ttr == 7
        waiter = asyncio.create_task(fake_store.take("shared", wait=20, poll=20))
        await fake_store.watch("shared")
        put = await other.put(NewJob("shared", "m:f"))
        job = await asyncio.wait_for(waiter, 5)
        assert job is not None and job.id == put.id


async def test_publish_is_left_to_the_feed(fake_store: RethinkDBStore) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    with fake_store.hub.subscribe("q") as subscription:
        fake_store.publish(pending())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(subscription), 0.05)


async def test_while_the_server_is_down_calls_fail_fast_then_the_feed_comes_back(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    await fake_store.watch("q")
    loop = asyncio.get_running_loop()
    # When the server goes away
    server.crash()
    started_at = loop.time()
    for _ in range(3):
        with pytest.raises(StoreUnavailable):
            await fake_store.put(NewJob("q", "m:f"))
    with pytest.raises(StoreUnavailable):
        await fake_store.watch("q")
    assert loop.time() - started_at < 1  # fast, not after a timeout
    # Then once it is back, the feed reopens by itself and wakes a waiting taker
    server.up = True
    deadline = loop.time() + 15
    while True:
        try:
            await fake_store.watch("q")
            break
        except StoreUnavailable:
            assert loop.time() < deadline, "the feed did not come back"
            await asyncio.sleep(0.05)
    waiter = asyncio.create_task(fake_store.take("q", wait=20, poll=20))
    put = await fake_store.put(NewJob("q", "m:f"))
    job = await asyncio.wait_for(waiter, 5)
    assert job is not None and job.id == put.id


async def test_take_on_a_missing_queue_is_queue_not_found(fake_store: RethinkDBStore) -> None:
    with pytest.raises(QueueNotFound):
        await fake_store.take("nope")
    with pytest.raises(QueueNotFound):
        await fake_store.watch("nope")


async def test_reap_across_two_stores_changes_each_job_once(server: FakeServer) -> None:
    async with (
        RethinkDBStore(RethinkDBSettings(db="d")) as one,
        RethinkDBStore(RethinkDBSettings(db="d")) as two,
    ):
        await one.create_queue(QueueConfig("q"))
        for _ in range(20):
            await one.put(NewJob("q", "m:f"))
        while await one.take("q") is not None:
            pass
        later = clock.now() + 1000
        counts = await asyncio.gather(one.reap(later), two.reap(later), one.reap(later))
        assert sum(counts) == 20
        assert all(j.status is JobStatus.PENDING for j in (await two.list_jobs("q")).jobs)


# -- the full lifecycle: queries through indexes, upgrades, several dispatchers ---------------


def _index_reads(built: Any) -> list[tuple[int, Any]]:
    """Every (term type, optargs) of the index reads (BETWEEN, ORDER_BY, GROUP) in a query."""
    found: list[tuple[int, Any]] = []
    if isinstance(built, list) and built and isinstance(built[0], int):
        if built[0] in (T.BETWEEN, T.ORDER_BY, T.GROUP) and len(built) > 2:
            found.append((built[0], built[2].get("index")))
        for part in built[1:]:
            found += _index_reads(part)
    elif isinstance(built, list):
        for part in built:
            found += _index_reads(part)
    return found


@pytest.mark.parametrize(
    ("status", "index"),
    [
        (JobStatus.PENDING, "state"),
        (JobStatus.DELAYED, "state"),
        (JobStatus.BURIED, "status_id"),
        (JobStatus.STARTED, "status_id"),
    ],
)
def test_peek_reads_one_job_through_the_status_index(
    store: RethinkDBStore, status: JobStatus, index: str
) -> None:
    built = wire(queries.peek(store._table("q"), status))
    assert T.FILTER not in term_types(built)
    assert {found for _, found in _index_reads(built)} == {index}


def test_list_by_status_resumes_after_the_cursor_through_status_id(
    store: RethinkDBStore,
) -> None:
    job_id = "a" * 32
    built = wire(queries.page(store._table("q"), job_id, 3, JobStatus.BURIED))
    between = built[1][0][1][0][1][0]
    assert between[0] == T.BETWEEN
    assert between[1][1] == [T.MAKE_ARRAY, ["buried", job_id]]
    assert between[2] == {"index": "status_id", "left_bound": "open"}
    assert T.FILTER not in term_types(built)


def test_counts_count_each_status_range_of_status_id(store: RethinkDBStore) -> None:
    built = wire(queries.count_by_status(store._table("q")))
    counts = dict(built)  # an object of terms is sent as a JSON object
    assert set(counts) == {status.value for status in JobStatus}
    for status, term in counts.items():
        assert term[0] == T.COUNT and term[1][0][0] == T.BETWEEN
        assert term[1][0][2] == {"index": "status_id"}
        assert term[1][0][1][1][1][0] == status
    assert T.FILTER not in term_types(built) and T.GROUP not in term_types(built)


@pytest.mark.parametrize(
    ("index", "status"), [("ttl", "pending"), ("state", "finished"), ("state", "started")]
)
def test_reaper_reads_and_purges_through_time_indexes(
    store: RethinkDBStore, index: str, status: str
) -> None:
    due = queries.due(store._table("q"), JobStatus(status), NOW, 256, index=index)
    purge = wire(due.delete(durability="hard"))
    assert purge[0] == T.DELETE
    between = purge[1][0][1][0][1][0]
    assert between[0] == T.BETWEEN
    assert between[1][2] == [T.MAKE_ARRAY, [status, NOW]]
    assert between[2] == {"index": index, "right_bound": "closed"}
    assert T.FILTER not in term_types(purge)


def test_the_conditional_delete_is_one_deterministic_replace(store: RethinkDBStore) -> None:
    built = wire(queries.delete_if_unchanged(store._table("q"), pending(), durability="hard"))
    assert built[0] == T.REPLACE and built[1][0][0] == T.GET
    nondeterministic = {T.NOW, T.RANDOM, T.UUID, T.JAVASCRIPT, T.HTTP, T.TABLE, T.DB, T.GET}
    assert not term_types(built[1][1]) & nondeterministic


def test_index_functions_leave_out_what_they_do_not_order() -> None:
    fake = FakeServer()
    evaluate = fake_rethinkdb._Evaluator(fake_rethinkdb.FakeConnection(fake))
    functions = {
        name: evaluate.eval(r.ast.func_wrap(fn), {}) for name, fn in queries.INDEXES.items()
    }
    waiting = job_to_doc(pending(ttl=5))
    assert functions["ttl"](waiting) == ["pending", waiting["expires_at"]]
    assert functions["ttl"](job_to_doc(pending())) is None  # no ttl: not indexed
    assert functions["ttl"](job_to_doc(started(pending(ttl=5)))) is None
    done = job_to_doc(lifecycle.finish(started(), lease="L", result=1, now=NOW + 2))
    taken = started(pending())
    assert functions["state"](waiting) == ["pending", waiting["priority"], waiting["ready_at"]]
    assert functions["state"](job_to_doc(taken)) == ["started", taken.lease_expires]
    assert functions["state"](done) == ["finished", NOW + 2]
    assert functions["state"](job_to_doc(taken.evolve(status=JobStatus.BURIED))) is None
    assert functions["status_id"](waiting) == ["pending", waiting["id"]]


def test_documents_carry_ttl_and_event_and_old_documents_still_read() -> None:
    job = pending(ttl=5)
    assert doc_to_job(job_to_doc(job)) == job and job.expires_at == NOW + 5
    old = {k: v for k, v in job_to_doc(pending()).items() if k not in ("expires_at", "event")}
    assert (doc_to_job(old).expires_at, doc_to_job(old).event) == (None, "put")
    config = QueueConfig("q", ttl=3, ttl_action="delete", priority=2, retention=9)
    assert doc_to_config({**config.to_dict(), "ready": True}) == config
    assert doc_to_config({"name": "q", "ttr": 7, "max_attempts": 2, "ready": True}) == QueueConfig(
        "q", ttr=7.0, max_attempts=2
    )


async def test_tables_of_an_older_version_get_the_new_indexes_on_open(server: FakeServer) -> None:
    # Given a queue table with the indexes of an earlier version only, and its old document
    async with RethinkDBStore(RethinkDBSettings(db="d")) as first:
        await first.create_queue(QueueConfig("q"))
        await first.put(NewJob("q", "m:f"))
    table = server.dbs["d"]["q"]
    table.indexes = {name: lambda doc: doc["status"] for name in queries.OBSOLETE_INDEXES}
    server.dbs["d"]["tqueues_queues"].docs["q"] = {
        "name": "q", "ttr": 60, "max_attempts": 3, "ready": True
    }  # fmt: skip
    # When a store of this version opens the database
    async with RethinkDBStore(RethinkDBSettings(db="d")) as upgraded:
        # Then its indexes exist, the earlier ones are gone, and every primitive works
        assert set(table.indexes) == set(queries.INDEXES)
        assert (await upgraded.count_jobs("q")) == {JobStatus.PENDING: 1}
        assert (await upgraded.get_queue("q")).ttl_action == "bury"
        assert len(await upgraded.claim_many("q", 5, worker="w", now=clock.now())) == 1


async def test_settings_changed_through_one_store_reach_another(server: FakeServer) -> None:
    async with (
        RethinkDBStore(RethinkDBSettings(db="d")) as one,
        RethinkDBStore(RethinkDBSettings(db="d")) as two,
    ):
        await one.create_queue(QueueConfig("q"))
        assert (await two.get_queue("q")).ttl is None
        await one.update_queue((await one.get_queue("q")).changed({"ttl": 5}))
        await two.list_queues()  # the reaper's every round
        assert (await two.get_queue("q")).ttl == 5
        assert await one.drop_queue("q") == 0
        with pytest.raises(QueueNotFound):
            await two.put(NewJob("q", "m:f"))
        with pytest.raises(QueueNotFound):
            await two.get_queue("q")


async def test_concurrent_reapers_delete_and_bury_each_outlived_job_once(
    server: FakeServer,
) -> None:
    async with (
        RethinkDBStore(RethinkDBSettings(db="d")) as one,
        RethinkDBStore(RethinkDBSettings(db="d")) as two,
    ):
        await one.create_queue(QueueConfig("drop", ttl=1, ttl_action="delete"))
        await one.create_queue(QueueConfig("bury", ttl=1, retention=0))
        await one.put_many([NewJob("drop", "m:f") for _ in range(10)])
        await one.put_many([NewJob("bury", "m:f", delay=5) for _ in range(10)])
        later = clock.now() + 2
        counts = await asyncio.gather(one.reap(later), two.reap(later), one.reap(later))
        assert sum(counts) == 20
        assert await one.count_jobs("drop") == {}
        assert await one.count_jobs("bury") == {JobStatus.BURIED: 10}
        assert one.counters["bury"]["buried"] + two.counters["bury"]["buried"] == 10


# -- where a real server is stricter than a lenient stand-in would be ------------------------


async def test_the_fake_refuses_what_the_server_refuses(server: FakeServer) -> None:
    conn = await server.connect()
    await r.db_create("d").run(conn)
    await r.db("d").table_create("t").run(conn)
    table = r.db("d").table("t")
    await table.insert({"id": 1, "rev": 0}).run(conn)
    # a write function must be deterministic (no non_atomic in the store)
    with pytest.raises(ReqlQueryLogicError, match="deterministic"):
        await table.get(1).replace(lambda row: row.merge({"at": r.now()})).run(conn)
    # an index function too
    with pytest.raises(ReqlQueryLogicError, match="deterministic"):
        await table.index_create("x", lambda row: r.uuid()).run(conn)
    # a replacement keeps the primary key
    result = await table.get(1).replace({"id": 2}).run(conn)
    assert result["errors"] == 1 and "Primary key" in result["first_error"]
    # durability is hard or soft, and only where the server takes it
    with pytest.raises(ReqlQueryLogicError, match="Durability"):
        await table.get(1).delete(durability="maybe").run(conn)
    with pytest.raises(ReqlServerCompileError, match="durability"):
        await table.between(1, 2, durability="hard").coerce_to("array").run(conn)
    # a read through an index the table lacks is not "does not exist"
    with pytest.raises(ReqlOpFailedError, match=r"^Index `nope` was not found on table `d\.t`\.$"):
        await table.between(1, 2, index="nope").coerce_to("array").run(conn)
    # a stream not coerced to an array is a cursor; integral doubles come back as integers
    cursor = await table.order_by(index="id").limit(5).run(conn)
    assert not isinstance(cursor, list) and (await cursor.next()) == {"id": 1, "rev": 0}
    await table.get(1).update({"rev": 2.0}).run(conn)
    assert (await table.get(1).run(conn))["rev"] == 2


def test_index_keys_holding_null_are_not_indexed() -> None:
    fake = fake_rethinkdb.FakeTable("id")
    fake.indexes["leases"] = lambda doc: [doc["status"], doc["lease_expires"]]
    assert fake.index_key("leases", {"status": "started", "lease_expires": 5.0}) is not None
    # datum_t::array_to_str_key refuses null inside an array key: the row is left out
    assert fake.index_key("leases", {"status": "pending", "lease_expires": None}) is None


async def test_a_read_through_a_missing_index_is_unavailable_not_queue_not_found(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    del server.dbs["d"]["q"].indexes["status_id"]
    with pytest.raises(StoreUnavailable) as raised:
        await fake_store.count_jobs("q")
    assert not isinstance(raised.value, QueueNotFound)
    assert "was not found" in raised.value.message
    assert (await fake_store.get_queue("q")).name == "q"  # still known


async def test_an_overflowing_feed_wakes_the_takers(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    waiter = asyncio.create_task(fake_store.take("q", wait=20, poll=20))
    await fake_store.watch("q")
    await asyncio.sleep(0.05)  # the taker found nothing and waits
    # Given a job whose change the server dropped (its feed buffer overflowed)
    job = lifecycle.create(NewJob("q", "m:f"), QueueConfig("q"), now=clock.now())
    table = server.dbs["d"]["q"]
    table.docs[job.id] = job_to_doc(job)
    # When the feed reports the overflow, Then the taker looks again and finds the job
    with fake_store.hub.subscribe("q") as subscription:
        table.overflow(1)
        taken = await asyncio.wait_for(waiter, 5)
        assert taken is not None and taken.id == job.id
        # And a subscriber (a WebSocket) is told it missed changes, to re-read the queue
        with pytest.raises(ChangesMissed, match="may have been missed"):
            while True:
                await asyncio.wait_for(anext(subscription), 5)


def _written_ids(term: Any) -> set[str]:
    """The keys a conditional write names (``get`` or ``get_all``, at the top or inside
    ``r.json(...).do(...)``), or none."""
    if type(term).__name__ == "FunCall":
        return _written_ids(term._args[0]._args[1])
    if type(term).__name__ != "Replace":
        return set()
    selection = term._args[0]
    if type(selection).__name__ not in ("Get", "GetAll"):
        return set()
    return {arg.data for arg in selection._args[1:]}


def _steal_then_refuse(server: FakeServer, db: str, stolen: str, refused: str) -> Any:
    """A fault: just before the first write naming ``stolen``, another taker claims it;
    a write naming ``refused`` is refused (table unavailable)."""

    def fault(term: Any) -> Exception | None:
        ids = _written_ids(term)
        if stolen in ids:
            table = server.dbs[db]["q"]
            old = table.docs[stolen]
            table.write(old, {**old, "status": "started", "lease": "theirs", "rev": old["rev"] + 1})
        if refused in ids:
            return ReqlOpFailedError("Cannot perform write: primary replica not available.")
        return None

    return fault


async def test_claim_many_keeps_the_jobs_it_won_when_a_later_write_fails(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given four pending jobs; another taker wins the second while we claim three at once,
    # and the write that would claim the fourth instead is refused
    await fake_store.create_queue(QueueConfig("q"))
    jobs = await fake_store.put_many([NewJob("q", "m:f") for _ in range(4)])
    server.faults.append(_steal_then_refuse(server, fake_store.settings.db, jobs[1].id, jobs[3].id))
    claimed = await fake_store.claim_many("q", 3, worker="w", now=clock.now())
    # Then the two the first write won are handed out, not dropped
    assert {job.id for job in claimed} == {jobs[0].id, jobs[2].id}
    assert all(job.status is JobStatus.STARTED for job in claimed)
    assert (await fake_store.get("q", jobs[3].id)).status is JobStatus.PENDING
    # and when every write fails, the failure is raised
    server.faults[:] = [_steal_then_refuse(server, fake_store.settings.db, "", jobs[3].id)]
    with pytest.raises(StoreUnavailable, match="primary replica"):
        await fake_store.claim_many("q", 1, worker="w", now=clock.now())


async def test_a_take_of_many_is_one_read_and_one_write(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    jobs = await fake_store.put_many([NewJob("q", "m:f") for _ in range(10)])
    before = server.queries
    claimed = await fake_store.claim_many("q", 10, worker="w", now=clock.now())
    assert [job.id for job in claimed] == [job.id for job in jobs]
    assert server.queries - before == 2
    assert len({job.lease for job in claimed}) == 10
    for job in claimed:
        stored = await fake_store.get("q", job.id)
        assert (stored.status, stored.lease, stored.attempts) == (JobStatus.STARTED, job.lease, 1)


async def test_outcomes_of_jobs_taken_here_are_one_write_and_of_others_one_read_more(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given jobs taken through this store and jobs taken through another dispatcher's
    await fake_store.create_queue(QueueConfig("q"))
    await fake_store.put_many([NewJob("q", "m:f") for _ in range(6)])
    mine = await fake_store.claim_many("q", 3, worker="w", now=clock.now())
    patch = pytest.MonkeyPatch()
    patch_store(patch, server)
    async with RethinkDBStore(fake_store.settings) as other:
        theirs = await other.claim_many("q", 3, worker="w", now=clock.now())
    # When this store finishes its own: one write, no read
    before = server.queries
    done = await fake_store.mutate_many(
        "q", [(job.id, fake_store.finish_change(lease=job.lease, result=1)) for job in mine]
    )
    assert server.queries - before == 1
    assert [result[1].status for result in done if isinstance(result, tuple)] == [
        JobStatus.FINISHED
    ] * 3
    # and theirs (plus an unknown id and a wrong lease): one read, one write
    before = server.queries
    changes = [(job.id, fake_store.finish_change(lease=job.lease)) for job in theirs[:2]]
    changes += [
        ("0" * 32, fake_store.finish_change()),
        (theirs[2].id, fake_store.finish_change(lease="x")),
    ]
    results = await fake_store.mutate_many("q", changes)
    assert server.queries - before == 2
    assert [type(result).__name__ for result in results] == [
        "tuple", "tuple", "JobNotFound", "LeaseMismatch"
    ]  # fmt: skip
    for job in [*mine, *theirs[:2]]:
        assert (await fake_store.get("q", job.id)).status is JobStatus.FINISHED
    assert (await fake_store.get("q", theirs[2].id)).status is JobStatus.STARTED


async def test_a_stale_kept_job_is_read_again_and_never_trusted_to_refuse(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given a job this store claimed, whose lease then expired and which another
    # dispatcher claimed again: what this store keeps of it is stale
    await fake_store.create_queue(QueueConfig("q", ttr=600))
    await fake_store.put(NewJob("q", "m:f"))
    [mine] = await fake_store.claim_many("q", 1, worker="w", now=clock.now())
    table = server.dbs[fake_store.settings.db]["q"]
    old = table.docs[mine.id]
    table.write(old, {**old, "lease": "theirs", "rev": old["rev"] + 2, "event": "taken"})
    # Then the old lease is refused (the conditional write misses, the read says why)
    with pytest.raises(LeaseMismatch):
        await fake_store.finish("q", mine.id, lease=mine.lease)
    [refused] = await fake_store.mutate_many(
        "q", [(mine.id, fake_store.finish_change(lease=mine.lease))]
    )
    assert isinstance(refused, LeaseMismatch)
    # and the new holder's lease, which the stale job would refuse, is accepted
    [(_, after)] = await fake_store.mutate_many(  # type: ignore[misc]
        "q", [(mine.id, fake_store.finish_change(lease="theirs", result=2))]
    )
    assert after.status is JobStatus.FINISHED and after.result == 2


async def test_a_batch_of_changes_applies_two_changes_of_one_job_in_order(
    fake_store: RethinkDBStore,
) -> None:
    await fake_store.create_queue(QueueConfig("q"))
    await fake_store.put(NewJob("q", "m:f"))
    [job] = await fake_store.claim_many("q", 1, worker="w", now=clock.now())
    results = await fake_store.mutate_many(
        "q",
        [
            (job.id, fake_store.update_change({"step": 1}, lease=job.lease)),
            (job.id, fake_store.finish_change(lease=job.lease, result="ok")),
            (job.id, fake_store.finish_change(lease=job.lease)),
        ],
    )
    first, second, third = results
    assert isinstance(first, tuple) and first[1].extra == {"step": 1}
    assert isinstance(second, tuple) and second[1].status is JobStatus.FINISHED
    assert isinstance(third, InvalidTransition)


async def test_the_catalog_table_is_no_queue(fake_store: RethinkDBStore) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        await fake_store.create_queue(QueueConfig("tqueues_queues"))
    with pytest.raises(QueueNotFound):
        await fake_store.get_queue("tqueues_queues")
    with pytest.raises(QueueNotFound):
        await fake_store.drop_queue("tqueues_queues")
    assert await fake_store.list_queues() == []


def test_only_the_servers_own_texts_mean_missing_or_existing() -> None:
    from tqueues.stores.rethinkdb import pool

    assert pool._MISSING.match("Table `tq.emails` does not exist.")
    assert pool._MISSING.match("Database `tq` does not exist.")
    assert not pool._MISSING.match("Index `pending` was not found on table `tq.emails`.")
    assert not pool._MISSING.match("Cannot perform bracket: `x does not exist.`")
    assert pool._EXISTS.match("Table `tq.emails` already exists.")
    assert pool._EXISTS.match("Index `pending` already exists on table `tq.emails`.")
    assert pool._EXISTS.match("Database `tq` already exists.")


async def test_a_database_just_created_but_not_found_yet_is_looked_up_again(
    server: FakeServer,
) -> None:
    # Given a server whose metadata lags its db_create: the first two reads of the new
    # database's tables answer as if it did not exist (seen on a server just started)
    lagging = 2

    def fault(term: Any) -> Exception | None:
        nonlocal lagging
        if type(term).__name__ == "TableList" and "d" in server.dbs and lagging:
            lagging -= 1
            return ReqlOpFailedError("Database `d` does not exist.")
        return None

    server.faults.append(fault)
    # When a store opens that database
    async with RethinkDBStore(RethinkDBSettings(db="d")) as store:
        # Then it opened (no "Database `d` does not exist." at start) and works
        await store.create_queue(QueueConfig("q"))
        assert (await store.put(NewJob("q", "m:f"))).status is JobStatus.PENDING
    assert lagging == 0


def _apply_then_lose_the_answer(server: FakeServer, job_id: str) -> Any:
    """A fault: the claim write naming ``job_id`` is applied, then the connection
    drops before its answer (a server killed mid-query), once."""
    armed = True

    def fault(term: Any) -> Exception | None:
        nonlocal armed
        if armed and job_id in _written_ids(term):
            armed = False
            conn = fake_rethinkdb.FakeConnection(server)
            fake_rethinkdb._Evaluator(conn).eval(term, {})
            return ReqlDriverError("Connection is closed.")
        return None

    return fault


async def test_a_claim_applied_without_an_answer_is_undone_at_once(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given a pending job whose claim is written but never answered
    await fake_store.create_queue(QueueConfig("q", ttr=600))
    job = await fake_store.put(NewJob("q", "m:f"))
    server.faults.append(_apply_then_lose_the_answer(server, job.id))
    with pytest.raises(StoreUnavailable):
        await fake_store.claim_many("q", 1, worker="w", now=clock.now())
    # Then it does not sit started under a lease nobody holds until the lease expires (ten
    # minutes here): it is given back, its attempt not counted, and the next take gets it
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (back := await fake_store.get("q", job.id)).status is not JobStatus.PENDING:
        assert loop.time() < deadline, back
        await asyncio.sleep(0.05)
    assert back.attempts == 0
    [taken] = await fake_store.claim_many("q", 1, worker="w", now=clock.now())
    assert taken.id == job.id


async def test_a_batched_claim_applied_without_an_answer_undoes_each_job(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given three pending jobs claimed in one write that is applied but never answered
    await fake_store.create_queue(QueueConfig("q", ttr=600))
    jobs = await fake_store.put_many([NewJob("q", "m:f") for _ in range(3)])
    server.faults.append(_apply_then_lose_the_answer(server, jobs[0].id))
    with pytest.raises(StoreUnavailable):
        await fake_store.claim_many("q", 3, worker="w", now=clock.now())
    # Then each is given back (conditional on the lease this claim minted for it), its
    # attempt not counted, each once: three releases, no more
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        statuses = [(await fake_store.get("q", job.id)).status for job in jobs]
        if statuses == [JobStatus.PENDING] * 3:
            break
        assert loop.time() < deadline, statuses
        await asyncio.sleep(0.05)
    for job in jobs:
        back = await fake_store.get("q", job.id)
        assert (back.attempts, back.event, back.rev) == (0, "released", 2)
    assert len(await fake_store.claim_many("q", 3, worker="w", now=clock.now())) == 3


async def test_outcomes_and_claims_applied_without_an_answer_are_retried_and_undone(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given a started job and a pending one, and a report of the first that takes the
    # second along in one write, applied but never answered (a server killed mid-query)
    await fake_store.create_queue(QueueConfig("q", ttr=600))
    await fake_store.put_many([NewJob("q", "m:f") for _ in range(2)])
    (running,) = await fake_store.take_many("q", 1, worker="w")
    (pending,) = [job for job in (await fake_store.list_jobs("q")).jobs if job.id != running.id]
    server.faults.append(_apply_then_lose_the_answer(server, pending.id))
    finish = fake_store.finish_change(lease=running.lease, result="r")
    answers, taken = await fake_store.apply_and_take("q", [(running.id, finish)], 1, worker="w")
    # Then the outcome is answered 503 (the worker retries it) and nothing is handed out;
    # the finish stands, and the claim nobody received is given back, its attempt uncounted
    assert [type(answer) for answer in answers] == [StoreUnavailable] and taken == []
    assert (await fake_store.get("q", running.id)).status is JobStatus.FINISHED
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (back := await fake_store.get("q", pending.id)).status is not JobStatus.PENDING:
        assert loop.time() < deadline, back
        await asyncio.sleep(0.05)
    assert back.attempts == 0
    # and the retried outcome is refused as already applied: the job ran once
    with pytest.raises(InvalidTransition):
        await fake_store.finish("q", running.id, lease=running.lease, result="r")


async def test_outcomes_are_stored_when_the_feed_a_take_needs_is_down(
    server: FakeServer, fake_store: RethinkDBStore
) -> None:
    # Given a queue whose change feed the server refuses to open
    await fake_store.create_queue(QueueConfig("q"))
    await fake_store.put_many([NewJob("q", "m:f") for _ in range(2)])
    (running,) = await fake_store.claim_many("q", 1, worker="w", now=clock.now())

    def no_feeds(term: Any) -> Exception | None:
        if type(term).__name__ == "Changes":
            return ReqlOpFailedError("Cannot perform read: primary replica not available")
        return None

    server.faults.append(no_feeds)
    # When a report takes along
    finish = fake_store.finish_change(lease=running.lease)
    answers, taken = await fake_store.apply_and_take("q", [(running.id, finish)], 1, worker="w")
    # Then the outcome is stored and nothing is taken (the next take meets the outage)
    assert [answer.status for answer in answers if isinstance(answer, JobRecord)] == [
        JobStatus.FINISHED
    ]
    assert taken == []
