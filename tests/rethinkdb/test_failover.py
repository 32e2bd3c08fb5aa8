"""Fail-over on a real 3-server RethinkDB cluster (issue #22, 3, 4, 6c).

The module starts its own cluster with ``../shared/rethinkdb/up`` (or the launcher named by
``TQUEUES_RETHINKDB_UP``) on free loopback ports, and stops it at the end; without the
launcher every test is skipped, saying why. Each test uses its own database. Servers are
killed with SIGKILL and brought back by ``up``. Synchronisation is by deadlines and
answers, never by fixed sleeps; jobs are counted by id: every acknowledged job is found
again, and each job runs exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.jobs import method, read_runs
from tqueues.client import Client
from tqueues.errors import TqueuesError
from tqueues.settings import RethinkDBSettings
from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.rethinkdb.pool import Pool

pytestmark = pytest.mark.rethinkdb

ROOT = Path(__file__).resolve().parents[2]
UP = Path(os.environ.get("TQUEUES_RETHINKDB_UP") or ROOT.parent / "shared/rethinkdb/up")
BIN = Path(sys.executable).parent
LISTENING = re.compile(r"listening on (http://[^\s/]+/)")
SERVERS = 3
DEADLINE = 30.0  #: seconds a fail-over may take before the test fails.


@dataclasses.dataclass
class Cluster:
    """The servers ``up`` started under ``directory``: driver ports ``base + i``."""

    directory: Path
    base: int

    def address(self, i: int) -> str:
        return f"127.0.0.1:{self.base + i}"

    def hosts(self, *order: int) -> str:
        """The ``--host`` list of the servers ``order`` (every server by default)."""
        return ",".join(self.address(i) for i in (order or range(SERVERS)))

    def url(self, db: str) -> str:
        return f"rethinkdb://{self.hosts()}/{db}"

    def kill(self, i: int) -> None:
        """SIGKILL server ``i`` and wait until it is gone."""
        pid = int((self.directory / f"node{i}" / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            status = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if status == "Z":
                break
            time.sleep(0.02)

    def up(self) -> None:
        """Start the servers that are not running (a no-op for running ones)."""
        subprocess.run(
            [str(UP), str(self.directory), str(self.base), str(SERVERS)],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def settings(self, db: str) -> RethinkDBSettings:
        return RethinkDBSettings.from_url(self.url(db))


def free_base() -> int:
    """A port P with P..P+2 (drivers) and P+1000..P+1002 (cluster) free on loopback."""
    for base in range(29100 + os.getpid() % 500 * 4, 39000, 7):
        ports = [base + i for i in range(SERVERS)] + [base + 1000 + i for i in range(SERVERS)]
        try:
            with contextlib.ExitStack() as stack:
                for port in ports:
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for a RethinkDB cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not UP.exists():
        pytest.skip(f"no RethinkDB launcher at {UP} (set TQUEUES_RETHINKDB_UP)")
    started = Cluster(tmp_path_factory.mktemp("cluster"), free_base())
    try:
        started.up()
        yield started
    finally:
        subprocess.run([str(UP), "--stop", str(started.directory)], timeout=60, check=False)


async def query(settings: RethinkDBSettings, term: Any, timeout: float = 30.0) -> Any:
    """Run one query on the cluster through the store's own pool."""
    pool = Pool(dataclasses.replace(settings, pool_size=1))
    try:
        return await pool.run(term, timeout=timeout)
    finally:
        await pool.close()


@pytest.fixture
async def db(cluster: Cluster) -> AsyncIterator[str]:
    """A fresh database name on a cluster whose three servers all run and see each other;
    the database is dropped afterwards (every server restarted first)."""
    cluster.up()
    await until_connected(cluster)
    name = f"failover_{uuid.uuid4().hex[:10]}"
    yield name
    cluster.up()
    await until_connected(cluster)
    settings = cluster.settings(name)
    for row in await query(settings, r.db("rethinkdb").table("db_config").coerce_to("array")):
        if row["name"] == name:
            await query(settings, r.db("rethinkdb").table("db_config").get(row["id"]).delete())


async def until_connected(cluster: Cluster) -> None:
    """Wait until the cluster's servers all see each other (a restarted one has joined)."""
    settings = cluster.settings("rethinkdb")
    deadline = time.monotonic() + DEADLINE
    while True:
        with contextlib.suppress(TqueuesError):
            count = await query(settings, r.db("rethinkdb").table("server_status").count(), 5)
            if count == SERVERS:
                return
        assert time.monotonic() < deadline, "the cluster's servers did not all connect"
        await asyncio.sleep(0.1)


class Proc:
    """A ``tqueues_dispatcher`` or ``tqueues_worker`` process and its stderr."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.url = ""
        self._drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, program: str, *argv: str, listening: bool = True) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TQUEUES_")}
        env["PYTHONPATH"] = str(ROOT)
        proc = cls(
            await asyncio.create_subprocess_exec(
                str(BIN / program),
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=ROOT,
            )
        )
        if listening:
            try:
                await asyncio.wait_for(proc._until_listening(), DEADLINE + 60)
            except BaseException:
                await proc.stop()
                raise AssertionError(f"{program} did not start:\n" + "\n".join(proc.log)) from None
        proc._drain = asyncio.create_task(proc._read())
        return proc

    async def _until_listening(self) -> None:
        assert self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode(errors="replace"):
            self.log.append(line.rstrip())
            if match := LISTENING.search(line):
                self.url = match.group(1)
                return
        raise EOFError("exited")

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())

    def kill(self) -> None:
        self.proc.kill()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._drain, 5)


@pytest.fixture
async def procs() -> AsyncIterator[list[Proc]]:
    """Processes a test starts, stopped at its end."""
    started: list[Proc] = []
    yield started
    await asyncio.gather(*(proc.stop() for proc in started))


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
    assert list((await table_config(settings, db)).keys()) == ["tqueues_queues"]
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
    assert sorted(configs) == ["replicated", "tqueues_queues"]
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
        f"{db}.replicated: 2 replica(s), write_acks majority",
        f"{db}.tqueues_queues: 2 replica(s), write_acks majority",
    ]
    for config in (await table_config(settings, db)).values():
        assert [len(shard["replicas"]) for shard in config["shards"]] == [2]
        assert config["write_acks"] == "majority"


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
