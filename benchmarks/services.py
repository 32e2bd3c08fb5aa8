"""Servers and processes for the side-by-side benchmark: started on loopback, always stopped.

Every process the benchmark starts goes through :class:`Processes`, which starts it in a
session of its own (so its children can be signalled with it) and, on :meth:`stop_all`,
sends SIGTERM, waits a bounded time, then SIGKILL. Redis, beanstalkd and PostgreSQL are
the Debian packages' binaries, run as the current user on free loopback ports (PostgreSQL
as the ``postgres`` user when the benchmark runs as root, since it refuses root).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqueues.settings import RethinkDBSettings

ROOT = Path(__file__).resolve().parent.parent
#: Debian package -> a binary it installs (or a glob of one).
DEBIAN = {
    "redis-server": "redis-server",
    "beanstalkd": "beanstalkd",
    "postgresql": "/usr/lib/postgresql/*/bin/postgres",
}


class ServiceError(RuntimeError):
    """A server or process could not be started or did not answer in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str | None:
    """The path of a binary (a name on PATH or a glob), or None."""
    if "*" in name:
        matches = sorted(glob.glob(name), key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
        return matches[-1] if matches else None
    return shutil.which(name)


def ensure_debian_packages(packages: Sequence[str], log: Path) -> dict[str, str]:
    """Install the missing ones with apt-get (as root); the reason for each still missing."""
    missing = [p for p in packages if find_binary(DEBIAN[p]) is None]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with log.open("ab") as out:
            for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *missing]):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900)
    reasons = {}
    for package in packages:
        if find_binary(DEBIAN[package]) is None:
            why = "apt-get failed" if os.geteuid() == 0 else "not root, cannot apt-get install"
            reasons[package] = f"Debian package {package} is not installed ({why}; see {log})"
    return reasons


def ensure_venv(name: str, requirements: Sequence[str], directory: Path, log: Path) -> Path:
    """A virtualenv ``directory/name`` with ``requirements`` installed; its ``bin``.

    Installs only when the requirements changed since the last successful install.
    Raises ServiceError with the tail of pip's output when it fails.
    """
    venv = directory / name
    stamp = venv / ".tqbench-requirements"
    wanted = "\n".join(requirements)
    if (venv / "bin" / "python").exists() and stamp.exists() and stamp.read_text() == wanted:
        return venv / "bin"
    directory.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", *requirements],
        ]  # fmt: skip
        for argv in steps:
            try:
                done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=900)
            except subprocess.TimeoutExpired as exc:
                raise ServiceError(f"{argv[2]} timed out installing {name}") from exc
            if done.returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise ServiceError(f"cannot install {' '.join(requirements)}: {' | '.join(tail)}")
    stamp.write_text(wanted)
    return venv / "bin"


def wait_for_tcp(port: int, timeout: float, probe: bytes = b"", expect: bytes = b"") -> None:
    """Wait until 127.0.0.1:``port`` accepts (and answers ``probe`` with ``expect``)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if probe:
                    sock.sendall(probe)
                    if not sock.recv(100).startswith(expect):
                        raise ServiceError("unexpected answer")
                return
        except (OSError, ServiceError) as exc:
            last = exc
            time.sleep(0.05)
    raise ServiceError(f"nothing answered on 127.0.0.1:{port} within {timeout:g}s ({last!r})")


class Processes:
    """Every process the benchmark started; :meth:`stop_all` ends them, whatever happened."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        log: str,
        env: dict[str, str] | None = None,
        user: str | None = None,
        cwd: Path = ROOT,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a session of its own, output to ``logs/log``."""
        with (self.logs / log).open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
            )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """SIGTERM its process group, wait up to ``timeout``, then SIGKILL it."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children (forked workers, PostgreSQL backends) share the group: end any left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        """Stop every process still registered, the newest first."""
        for process in reversed(list(self.running)):
            self.stop(process)

    def tail(self, log: str, lines: int = 5) -> str:
        """The last lines of a log, for error messages."""
        path = self.logs / log
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])


class Server:
    """A server on a free loopback port; ``url`` is how clients reach it."""

    name = "server"

    def __init__(self, processes: Processes, workdir: Path) -> None:
        self.processes = processes
        self.workdir = workdir
        self.port = 0
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process)
            self.process = None

    def version(self) -> str:
        return ""

    def __enter__(self) -> Server:
        return self  # started already: ``with bench.server(...) as server`` stops it

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Redis(Server):
    """redis-server in memory (no RDB snapshots, no AOF: Redis' own default is snapshots)."""

    name = "redis"

    def start(self) -> Redis:
        self.port = free_port()
        self.process = self.processes.start(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            log=f"redis-{self.port}.log",
        )  # fmt: skip
        wait_for_tcp(self.port, 20, b"PING\r\n", b"+PONG")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        return self

    def version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        match = re.search(r"v=(\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()


class Beanstalkd(Server):
    """beanstalkd in memory (no binlog, its default)."""

    name = "beanstalkd"

    def start(self) -> Beanstalkd:
        self.port = free_port()
        self.process = self.processes.start(
            ["beanstalkd", "-l", "127.0.0.1", "-p", str(self.port)],
            log=f"beanstalkd-{self.port}.log",
        )
        wait_for_tcp(self.port, 20, b"stats\r\n", b"OK")
        self.url = f"beanstalk://127.0.0.1:{self.port}"
        return self

    def version(self) -> str:
        out = subprocess.run(["beanstalkd", "-v"], capture_output=True, text=True)
        return out.stdout.strip().split()[-1] if out.stdout.strip() else "?"


class Postgres(Server):
    """PostgreSQL with its defaults (fsync on), a fresh cluster in a temporary directory.

    Run as ``postgres`` when the benchmark is root (the server refuses to run as root).
    """

    name = "postgresql"

    def __init__(self, processes: Processes, workdir: Path) -> None:
        super().__init__(processes, workdir)
        postgres = find_binary(DEBIAN["postgresql"])
        if postgres is None:
            raise ServiceError("PostgreSQL is not installed")
        self.bin = Path(postgres).parent
        self.user = "postgres" if os.geteuid() == 0 else None

    def start(self) -> Postgres:
        data = self.workdir / "pgdata"
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)
            for parent in self.workdir.parents:  # let it reach its directory
                if parent == Path(tempfile.gettempdir()):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o711)
        init = self.processes.start(
            [str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"],
            log="initdb.log", user=self.user, cwd=self.workdir,
        )  # fmt: skip
        try:
            code = init.wait(120)
        except subprocess.TimeoutExpired:
            code = -1
        self.processes.stop(init)
        if code != 0:
            raise ServiceError(f"initdb failed: {self.processes.tail('initdb.log')}")
        self.port = free_port()
        self.process = self.processes.start(
            [str(self.bin / "postgres"), "-D", str(data), "-k", str(self.workdir),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1"],
            log="postgres.log", user=self.user, cwd=self.workdir,
        )  # fmt: skip
        wait_for_tcp(self.port, 60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise ServiceError(f"PostgreSQL did not start: {self.processes.tail('postgres.log')}")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self

    def version(self) -> str:
        out = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True)
        match = re.search(r"\) (\S+)", out.stdout.decode())
        return match.group(1) if match else out.stdout.decode().strip()


def create_queue(url: str, queue: str) -> None:
    """Create ``queue`` on the dispatcher at ``url`` (the REST API, else the ``/`` API)."""
    for target in (f"{url}queues/{queue}", f"{url}?queue={queue}"):
        request = urllib.request.Request(target, method="PUT")
        try:
            urllib.request.urlopen(request, timeout=10).close()
            return
        except urllib.error.HTTPError as exc:
            if exc.code not in (404, 405):
                raise
    raise ServiceError(f"cannot create queue {queue!r} on {url}")


def dispatcher_env() -> dict[str, str]:
    """The environment of a benchmark dispatcher: this one without ``TQUEUES_*`` (a
    ``TQUEUES_RETHINKDB`` or a token there would change the store or refuse the load);
    its command line alone configures it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQUEUES_")}
    return {**env, "PYTHONPATH": str(ROOT)}


class Dispatcher(Server):
    """``tqueues_dispatcher`` on the embedded store in ``workdir/data``, port 0.

    ``queues`` are created as soon as it listens (a worker refuses a missing queue).
    """

    name = "tqueues"

    def __init__(
        self,
        processes: Processes,
        workdir: Path,
        args: Sequence[str] = (),
        queues: Sequence[str] = (),
    ) -> None:
        super().__init__(processes, workdir)
        self.args = list(args)
        self.queues = list(queues)
        self.data = workdir / "data"

    def start(self) -> Dispatcher:
        log = f"dispatcher-{time.monotonic_ns()}.log"
        self.process = self.processes.start(
            [str(Path(sys.executable).parent / "tqueues_dispatcher"), "--listen", "127.0.0.1:0",
             "--data", str(self.data), *self.args],
            log=log, env=dispatcher_env(),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            match = re.search(r"listening on http://[^:]+:(\d+)/", self._read(log))
            if match:
                self.port = int(match.group(1))
                self.url = f"http://127.0.0.1:{self.port}/"
                for queue in self.queues:  # before any worker asks for it
                    create_queue(self.url, queue)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise ServiceError(f"the dispatcher did not start: {self.processes.tail(log)}")

    def _read(self, log: str) -> str:
        return (self.processes.logs / log).read_text(errors="replace")


class RethinkDBDispatcher(Dispatcher):
    """``tqueues_dispatcher`` on the RethinkDB store, in a database of its own (``db``) on
    the server at ``address`` (``host:port``); the database is dropped once it stops."""

    def __init__(
        self,
        processes: Processes,
        workdir: Path,
        address: str,
        db: str,
        args: Sequence[str] = (),
        queues: Sequence[str] = (),
    ) -> None:
        self.settings = rethinkdb_settings(address, db)
        where = ["--host", self.settings.host, "--port", str(self.settings.port), "--db", db]
        super().__init__(processes, workdir, [*where, *args], queues)

    def stop(self) -> None:
        super().stop()
        drop_rethinkdb_database(self.settings)


class RethinkDBDispatchers(Server):
    """``count`` ``tqueues_dispatcher`` processes on one RethinkDB database (``db``) of the
    server at ``address``: ``url`` is the first one's (it creates ``queues``), ``urls``
    every one's, in order. The database is dropped once they have all stopped."""

    name = "tqueues"

    def __init__(
        self,
        processes: Processes,
        workdir: Path,
        address: str,
        db: str,
        count: int,
        args: Sequence[str] = (),
        queues: Sequence[str] = (),
    ) -> None:
        super().__init__(processes, workdir)
        self.settings = rethinkdb_settings(address, db)
        self.members: list[RethinkDBDispatcher] = []
        for index in range(count):
            where = workdir / f"dispatcher-{index}"
            where.mkdir()
            self.members.append(
                RethinkDBDispatcher(
                    processes, where, address, db, args, queues if not index else ()
                )
            )
        self.urls: list[str] = []

    def start(self) -> RethinkDBDispatchers:
        try:
            for member in self.members:
                member.start()
        except BaseException:
            self.stop()
            raise
        self.urls = [member.url for member in self.members]
        self.url, self.port = self.members[0].url, self.members[0].port
        return self

    def pids(self) -> list[int]:
        """The process ids of the dispatchers that run."""
        return [m.process.pid for m in self.members if m.process is not None]

    def stop(self) -> None:
        for member in self.members:
            Server.stop(member)  # not RethinkDBDispatcher.stop: the database is shared
        drop_rethinkdb_database(self.settings)


def rethinkdb_settings(address: str, db: str) -> RethinkDBSettings:
    """The tqueues RethinkDB store's settings for database ``db`` at ``address``
    (``host:port``). Raises ValueError for an address without a numeric port."""
    from tqueues.settings import RethinkDBSettings

    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"a RethinkDB server is host:port, not {address!r}")
    return RethinkDBSettings(host=host or "localhost", port=int(port), db=db)


def drop_rethinkdb_database(settings: RethinkDBSettings) -> None:
    """Drop the database ``settings.db`` (idempotent). Raises ServiceError."""
    from tqueues.errors import TqueuesError
    from tqueues.stores.rethinkdb import RethinkDBStore

    async def drop() -> None:
        async with RethinkDBStore(settings) as store:
            await store.drop_database()

    try:
        asyncio.run(drop())
    except TqueuesError as exc:
        raise ServiceError(f"cannot drop RethinkDB database {settings.db}: {exc}") from exc


def rethinkdb_counts(address: str | None) -> dict[str, int]:
    """What the RethinkDB servers of the cluster at ``address`` (host:port) have done since
    they started, summed over the servers (their ``stats`` table): ``queries``,
    ``read_docs``, ``written_docs``. Empty when ``address`` is None or the server cannot be
    read (a benchmark goes on without the counts)."""
    from rethinkdb import RethinkDB
    from rethinkdb.errors import ReqlError

    if not address:
        return {}
    settings = rethinkdb_settings(address, "rethinkdb")
    r = RethinkDB()
    r.set_loop_type("asyncio")

    async def ask() -> dict[str, int]:
        conn = await r.connect(
            host=settings.host, port=settings.port, user=settings.user, password=settings.password
        )
        try:
            rows = await r.db("rethinkdb").table("stats").coerce_to("array").run(conn)
        finally:
            await conn.close()
        totals = {"queries": 0, "read_docs": 0, "written_docs": 0}
        for row in rows:
            if row["id"][0] == "server":
                for key in totals:
                    totals[key] += int(row["query_engine"][f"{key}_total"])
        return totals

    try:
        return asyncio.run(ask())
    except (ReqlError, OSError):
        return {}


def store_work(urls: Sequence[str]) -> dict[str, int]:
    """The store's own counts of the tqueues dispatchers at ``urls``
    (``tqueues_store_work_total`` of each ``/metrics``), summed by name: for RethinkDB,
    the write queries a dispatcher sent and the requests they carried, which the server's
    own query count mixes with its change feeds' continuations. Empty when a dispatcher
    cannot be read (a benchmark goes on without the counts)."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, int] = {}
    for url in urls:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as answer:
                text = answer.read().decode()
        except (urllib.error.URLError, OSError):
            return {}
        for family in text_string_to_metric_families(text):
            if family.name != "tqueues_store_work":
                continue
            for sample in family.samples:
                if sample.name == "tqueues_store_work_total":
                    what = sample.labels["what"]
                    totals[what] = totals.get(what, 0) + int(sample.value)
    return totals


def rethinkdb_version(settings: RethinkDBSettings) -> str:
    """The version string of the RethinkDB server ``settings`` names. Raises ServiceError."""
    from rethinkdb import RethinkDB
    from rethinkdb.errors import ReqlError

    r = RethinkDB()
    r.set_loop_type("asyncio")

    async def ask() -> str:
        conn = await r.connect(
            host=settings.host, port=settings.port, user=settings.user, password=settings.password
        )
        try:
            status = r.db("rethinkdb").table("server_status").nth(0)["process"]["version"]
            return str(await status.run(conn))
        finally:
            await conn.close()

    try:
        return asyncio.run(ask())
    except (ReqlError, OSError) as exc:
        raise ServiceError(
            f"cannot reach RethinkDB at {settings.host}:{settings.port}: {exc}"
        ) from exc
