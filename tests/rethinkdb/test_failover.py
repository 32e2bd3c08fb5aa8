"""Fail-over on a real 3-server RethinkDB cluster (issue #22, 3, 4, 6c).

The tests share the session's cluster (``tests/rethinkdb/conftest.py``: started with
``../shared/rethinkdb/up``, or skipped saying why). Each test uses its own database. Servers are
killed with SIGKILL and brought back by ``up``. Synchronisation is by deadlines and
answers, never by fixed sleeps; jobs are counted by id: every acknowledged job is found
again, and each job runs exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.jobs import method, read_runs
from tests.rethinkdb.conftest import BIN, DEADLINE, SERVERS, Cluster, Proc, query
from tqueues.client import Client
from tqueues.errors import TqueuesError
from tqueues.settings import RethinkDBSettings
from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.rethinkdb.pool import Pool

#: The tables every database has beside the queues' (sorted): the edges of dependencies,
#: the history, the keys of unique jobs, the catalog, the schedules, the worker registry.
SYSTEM_TABLES = (
    "tqueues_edges", "tqueues_history", "tqueues_keys", "tqueues_queues", "tqueues_schedules",
    "tqueues_workers",
)  # fmt: skip

pytestmark = pytest.mark.rethinkdb


async def dispatcher(procs: list[Proc], hosts: str, db: str, *extra: str) -> Proc:
    proc = await Proc.start(
        "tqueues_dispatcher",
        "--listen", "127.0.0.1:0", "--host", hosts, "--db", db, "--reap_interval", "0.2",
        *extra,
    )  # fmt: skip
    procs.append(proc)
    return proc


async def table_config(settings: RethinkDBSettings, db: str) -> dict[str, dict[str, Any]]:
    """The config of each table of ``db``, by name."""
    rows = await query(settings, r.db("rethinkdb").table("table_config").coerce_to("array"))
    return {row["name"]: row for row in rows if row["db"] == db}


# -- the dispatcher moves to another server ------------------------------------------------


async def test_a_dispatcher_moves_to_another_server_when_its_server_dies(
    cluster: Cluster, db: str, procs: list[Proc]
) -> None:
    # The dispatcher uses server 1 first (the others joined server 0).
    proc = await dispatcher(procs, cluster.hosts(1, 0, 2), db, "--replicas", "3")
    acknowledged: set[str] = set()
    async with Client(proc.url, timeout=10) as client:
        await client.create_queue("jobs", ttr=30)
        for job in await client.put_many(
            "jobs", [{"method": "m:f", "args": [i]} for i in range(20)]
        ):
            acknowledged.add(job["id"])

        cluster.kill(1)
        killed = time.monotonic()
        first_put: float | None = None
        while len(acknowledged) < 40:
            assert time.monotonic() - killed < DEADLINE, (
                f"puts did not succeed again within {DEADLINE}s of the kill:\n"
                + "\n".join(proc.log[-20:])
            )
            try:
                job = await client.put("jobs", "m:f", [len(acknowledged)])
            except TqueuesError:
                await asyncio.sleep(0.05)  # polling under the deadline above
                continue
            first_put = first_put or time.monotonic() - killed
            acknowledged.add(job["id"])
        print(f"first put acknowledged {first_put:.2f}s after the kill of the server in use")

        taken: list[str] = []
        while True:
            jobs = await client.take_many("jobs", 100)
            if not jobs:
                break
            taken += [job["id"] for job in jobs]
    assert sorted(taken) == sorted(acknowledged)  # every acknowledged job, each once
    assert any("connecting to" in line for line in proc.log), proc.log


async def test_the_pool_returns_to_its_first_server_without_breaking_a_feed(
    cluster: Cluster, db: str
) -> None:
    # Given a database with a table on all three servers, its primary on server 0 (so that
    # the home server's death and return do not move the primary, which aborts feeds:
    # "Changefeed aborted (unavailable)"), and a pool whose home is server 1
    shared = cluster.settings(db)
    await query(shared, r.db_create(db))
    await query(shared, r.db(db).table_create("t", replicas=SERVERS))
    statuses = await query(shared, r.db("rethinkdb").table("server_status").coerce_to("array"))
    names = sorted(status["name"] for status in statuses)
    (first,) = [s["name"] for s in statuses if s["network"]["reql_port"] == cluster.base]
    shards = [{"primary_replica": first, "replicas": names}]
    await query(shared, r.db(db).table("t").config().update({"shards": shards}))
    await query(shared, r.db(db).wait(wait_for="all_replicas_ready"))
    settings = RethinkDBSettings.from_url(f"rethinkdb://{cluster.hosts(1, 0, 2)}/{db}")
    pool = Pool(settings, home_check=0.2)

    async def server_of(conn: Any) -> str:
        return str((await conn.server())["name"])

    async def run_until(what: str, check: Any) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                await pool.run(r.expr(1), timeout=5)
                if await check():
                    return
            except TqueuesError:
                pass
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)  # polling under the deadline above

    try:
        home = await server_of(await pool.get())
        # When its home server dies, the pool moves on
        cluster.kill(1)

        async def away() -> bool:
            return pool.address == cluster.address(0)

        await run_until("the pool did not leave its dead server", away)
        # And a changefeed runs on a connection away from home (opened once the table has
        # a primary again: "primary replica not available" while the cluster elects one)
        cursor: Any = None
        feed_conn: Any = None

        async def subscribed() -> bool:
            nonlocal cursor, feed_conn
            feed_conn = await pool.get()
            assert await server_of(feed_conn) != home
            cursor = await pool.run(r.db(db).table("t").changes(), conn=feed_conn)
            return True

        await run_until("no changefeed could be opened away from home", subscribed)

        # When the home server is back, new connections go home within seconds
        cluster.up()

        async def at_home() -> bool:
            return pool.address == cluster.address(1)

        await run_until("the pool did not return to its first server", at_home)
        for _ in range(settings.pool_size):
            assert await server_of(await pool.get()) == home

        # And the feed on the retired connection was not broken by the move (the insert
        # is retried while the returning server's replica settles: "primary replica not
        # available" for a moment)
        async def inserted() -> bool:
            await pool.run(r.db(db).table("t").insert({"id": "after"}, conflict="replace"))
            return True

        await run_until("the insert after the return did not succeed", inserted)
        change = await asyncio.wait_for(cursor.next(), DEADLINE)
        assert change["new_val"] == {"id": "after"}

        # And once the feed is closed, its connection is closed too
        await cursor.close()

        async def retired_closed() -> bool:
            return not feed_conn.is_open()

        await run_until("the retired connection was not closed once idle", retired_closed)
    finally:
        await pool.close()


# -- a worker moves to another dispatcher ----------------------------------------------------


async def test_a_worker_moves_to_another_dispatcher_when_its_dispatcher_dies(
    cluster: Cluster, db: str, procs: list[Proc], tmp_path: Path
) -> None:
    first = await dispatcher(procs, cluster.hosts(), db)
    second = await dispatcher(procs, cluster.hosts(1, 2, 0), db)
    runs = tmp_path / "runs"
    jobs = [{"method": method("record_run"), "args": [str(runs), i]} for i in range(20)]
    async with Client(second.url, timeout=10) as client:
        await client.create_queue("work", ttr=5)
        put = {job["id"] for job in await client.put_many("work", jobs)}
        worker = await Proc.start(
            "tqueues_worker",
            "--endpoint_url", first.url, "--endpoint_url", second.url, "--queue", "work",
            "--allow", "tests.acceptance.jobs", "--wait", "2", "--loglevel", "DEBUG",
            listening=False,
        )  # fmt: skip
        procs.append(worker)
        await until(lambda: len(read_runs(runs)) == 20, "the first jobs ran", worker)

        first.kill()  # the worker's dispatcher dies
        killed = time.monotonic()
        put |= {job["id"] for job in await client.put_many("work", jobs)}

        async def all_finished() -> bool:
            return (await client.stats("work"))["jobs"]["finished"] == 40

        await until(all_finished, "every job finished through the other dispatcher", worker)
        print(f"40 jobs finished {time.monotonic() - killed:.2f}s after the dispatcher's kill")
    ran = read_runs(runs)
    assert set(ran) == put
    assert {job_id: len(tokens) for job_id, tokens in ran.items() if len(tokens) != 1} == {}
    assert any("cannot be reached; using" in line for line in worker.log), worker.log


async def until(check: Any, what: str, proc: Proc) -> None:
    """Wait (polling, under DEADLINE) until ``check()`` (maybe async) is true."""
    deadline = time.monotonic() + DEADLINE
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"not within {DEADLINE}s: {what}\n" + "\n".join(
            proc.log[-20:]
        )
        await asyncio.sleep(0.05)


# -- dispatchers started at the same instant on an empty database -----------------------------


@pytest.mark.parametrize("round_", range(3))
async def test_dispatchers_started_at_once_on_an_empty_database_make_one(
    cluster: Cluster, db: str, procs: list[Proc], round_: int
) -> None:
    one, two = await asyncio.gather(
        dispatcher(procs, cluster.address(round_ % SERVERS), db),
        dispatcher(procs, cluster.address((round_ + 1) % SERVERS), db),
    )
    settings = cluster.settings(db)
    assert (await query(settings, r.db_list())).count(db) == 1
    assert sorted(await table_config(settings, db)) == list(SYSTEM_TABLES)
    async with Client(one.url, timeout=10) as first, Client(two.url, timeout=10) as second:
        await first.create_queue("seen")
        job = await first.put("seen", "m:f")
        assert (await second.get("seen", job["id"]))["id"] == job["id"]


# -- replicas and write acknowledgements ------------------------------------------------------


async def test_replicas_and_write_acks_are_set_and_reconfigured(
    cluster: Cluster, db: str, procs: list[Proc]
) -> None:
    proc = await dispatcher(procs, cluster.hosts(), db, "--replicas", "3", "--write_acks", "single")
    async with Client(proc.url, timeout=10) as client:
        await client.create_queue("replicated")
    settings = cluster.settings(db)
    configs = await table_config(settings, db)
    assert sorted(configs) == ["replicated", *SYSTEM_TABLES]
    for config in configs.values():
        assert [len(shard["replicas"]) for shard in config["shards"]] == [3]
        assert config["write_acks"] == "single"

    admin = await asyncio.create_subprocess_exec(
        str(BIN / "tqueues"), "rethinkdb", "reconfigure", "--rethinkdb", cluster.url(db),
        "--replicas", "2", "--write_acks", "majority",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(admin.communicate(), 90)
    assert admin.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        f"{db}.{table}: 2 replica(s), write_acks majority"
        for table in ("replicated", *SYSTEM_TABLES)
    ]
    for config in (await table_config(settings, db)).values():
        assert [len(shard["replicas"]) for shard in config["shards"]] == [2]
        assert config["write_acks"] == "majority"


async def test_reconfigure_returns_once_the_new_replicas_hold_a_full_copy(
    cluster: Cluster, db: str
) -> None:
    # Given a table of one replica holding some data (20 MB)
    settings = cluster.settings(db)
    await query(settings, r.db_create(db))
    await query(settings, r.db(db).table_create("big", replicas=1))
    blob = "x" * 1000
    for start in range(0, 20_000, 5_000):
        rows = r.range(start, start + 5_000).map(lambda i: {"id": i, "blob": blob})
        await query(settings, r.db(db).table("big").insert(rows))

    # When it is given three replicas
    admin = await asyncio.create_subprocess_exec(
        str(BIN / "tqueues"), "rethinkdb", "reconfigure", "--rethinkdb", cluster.url(db),
        "--replicas", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(admin.communicate(), 120)
    assert admin.returncode == 0, err.decode()
    assert out.decode().splitlines() == [f"{db}.big: 3 replica(s), write_acks majority"]

    # Then, as soon as the command has returned, every replica is a full one
    status = await query(settings, r.db(db).table("big").status())
    states = [replica["state"] for shard in status["shards"] for replica in shard["replicas"]]
    assert states == ["ready"] * 3, status
    assert status["status"]["all_replicas_ready"], status


async def test_more_replicas_than_servers_is_refused_in_one_line(cluster: Cluster, db: str) -> None:
    admin = await asyncio.create_subprocess_exec(
        str(BIN / "tqueues_dispatcher"), "--listen", "127.0.0.1:0", "--host", cluster.hosts(),
        "--db", db, "--replicas", "4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(admin.communicate(), 90)
    assert admin.returncode == 2
    last = err.decode().strip().splitlines()[-1]
    assert last.startswith("tqueues_dispatcher: ") and "replicas" in last, err.decode()
