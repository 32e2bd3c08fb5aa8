"""The three-server RethinkDB cluster the fail-over and chaos tests share (issue #22).

``cluster`` starts one cluster per session with ``../shared/rethinkdb/up`` (or the launcher
named by ``TQUEUES_RETHINKDB_UP``) on free loopback ports, the first time a test asks for
it, and stops it at the end of the session; without the launcher the test is skipped,
saying why. ``db`` gives each test its own database on a cluster whose three servers run
(a test may kill some: they are restarted), and drops it afterwards. ``Proc`` starts the
real console scripts and keeps their stderr; ``procs`` stops them at the end of a test.
Synchronisation is by deadlines and answers, never by fixed sleeps.
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

from tqueues.errors import TqueuesError
from tqueues.settings import RethinkDBSettings
from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.rethinkdb.pool import Pool

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


@pytest.fixture(scope="session")
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
