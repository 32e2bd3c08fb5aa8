"""Fixtures of the acceptance suite: real ``tqueues_dispatcher`` / ``tqueues_worker`` processes.

Every process is started through its console script, logs to a file under ``tmp_path``
(attached to the report when a test fails) and is always stopped at teardown: SIGTERM,
then SIGKILL if it does not exit in time. Readiness is awaited with deadlines, never with
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DISPATCHER = str(BIN / "tqueues_dispatcher")
WORKER = str(BIN / "tqueues_worker")
ALLOW = "tests.acceptance.jobs"
LISTENING = re.compile(r"listening on (http://[^\s/]+/)")
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
DROP_TIMEOUT = 60.0  #: seconds a test's RethinkDB database may take to drop at teardown
PROCESSES = pytest.StashKey[list["Proc"]]()


def child_env() -> dict[str, str]:
    """The environment of the subprocesses: the repo root importable (for the job module)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TQUEUES_URL", None)
    env.pop("TQUEUES_ALLOW", None)
    return env


async def wait_for(
    predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``predicate`` (plain or async) until it gives something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclasses.dataclass
class Proc:
    """One subprocess and its log file."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, argv: list[str], log_dir: Path) -> Proc:
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=child_env(),
            )
        return cls(name, argv, log_path, popen)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.running():
            self.popen.send_signal(signum)

    def kill(self) -> int:
        """SIGKILL and reap; the exit status."""
        self.signal(signal.SIGKILL)
        return self.popen.wait()

    async def wait_exit(self, timeout: float) -> int:
        """Wait (without blocking the loop) for the process to exit; its status."""
        await wait_for(lambda: not self.running(), timeout=timeout, what=f"{self.name} to exit")
        return self.popen.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still running after STOP_TIMEOUT; always reaped."""
        if self.running():
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait()


@dataclasses.dataclass
class DispatcherProc:
    proc: Proc
    url: str
    data: Path


class Cluster:
    """Starts dispatchers and workers for one test; stops them all at teardown."""

    def __init__(self, tmp_path: Path, registry: list[Proc]) -> None:
        self.tmp_path = tmp_path
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.procs = registry
        self._counts: dict[str, int] = {}

    def _name(self, kind: str) -> str:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return f"{kind}-{self._counts[kind]}"

    def spawn(self, kind: str, argv: list[str]) -> Proc:
        proc = Proc.start(self._name(kind), argv, self.logs)
        self.procs.append(proc)
        return proc

    async def dispatcher(self, data: Path | None = None, *extra: str) -> DispatcherProc:
        """A dispatcher on a free port; returns once GET /health answers 200.

        ``--token T`` in ``extra`` is also used for the health check.
        """
        data = data or self.tmp_path / "data"
        listen = [] if "--listen" in extra else ["--listen", "127.0.0.1:0"]
        reap = [] if "--reap_interval" in extra else ["--reap_interval", "0.1"]
        retry = [] if "--retry_base" in extra else ["--retry_base", "0"]
        argv = [DISPATCHER, *listen, "--data", str(data), *reap, *retry, *extra]
        proc = self.spawn("dispatcher", argv)

        async def listening() -> str | None:
            if not proc.running():
                pytest.fail(f"{proc.name} exited with {proc.popen.wait()}:\n{proc.log()}")
            match = LISTENING.search(proc.log())
            return match.group(1) if match else None

        url = await wait_for(listening, timeout=STARTUP_TIMEOUT, what=f"{proc.name} to listen")
        token = extra[extra.index("--token") + 1] if "--token" in extra else None
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with aiohttp.ClientSession(headers=headers) as session:

            async def healthy() -> bool:
                try:
                    async with session.get(url + "health") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout=STARTUP_TIMEOUT, what=f"{proc.name} /health")
        return DispatcherProc(proc, url, data)

    def worker_argv(
        self, url: str, queue: str, *extra: str, concurrency: int = 4, grace: float = 2.0
    ) -> list[str]:
        """The command line of a worker taking from ``queue``."""
        return [
            WORKER,
            "--endpoint_url",
            url,
            "--queue",
            queue,
            "--concurrency",
            str(concurrency),
            "--wait",
            "1",
            "--grace",
            str(grace),
            "--allow",
            ALLOW,
            *extra,
        ]

    async def worker(
        self, url: str, queue: str, *extra: str, concurrency: int = 4, grace: float = 2.0
    ) -> Proc:
        """A worker taking from ``queue``; returns once it logged that it started."""
        argv = self.worker_argv(url, queue, *extra, concurrency=concurrency, grace=grace)
        proc = self.spawn("worker", argv)

        async def started() -> bool:
            if not proc.running():
                pytest.fail(f"{proc.name} exited with {proc.popen.wait()}:\n{proc.log()}")
            return " taking from " in proc.log()

        await wait_for(started, timeout=STARTUP_TIMEOUT, what=f"{proc.name} to start")
        return proc


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Attach the subprocesses' logs to the report of a failed test."""
    report = yield
    if report.failed:
        for proc in item.stash.get(PROCESSES, []):
            report.sections.append((f"log of {proc.name} (pid {proc.pid})", proc.log()))
    return report


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Start processes with ``await cluster.dispatcher()`` / ``await cluster.worker(url, q)``."""
    registry: list[Proc] = []
    request.node.stash[PROCESSES] = registry
    yield Cluster(tmp_path, registry)
    for proc in reversed(registry):  # workers first, then their dispatcher
        proc.stop()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """The directory where ``marked_sleep`` leaves its start and finish markers."""
    directory = tmp_path / "markers"
    directory.mkdir()
    return directory


class Api:
    """The documented ``/`` API over one aiohttp session; every call returns (status, body)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self, method: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> tuple[int, Any]:
        async with self.session.request(
            method,
            self.url,
            params={k: str(v) for k, v in (params or {}).items()},
            json=body,
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def create_queue(self, queue: str, **config: Any) -> None:
        status, body = await self.call("PUT", {"queue": queue}, config or None)
        assert (status, body) == (200, "ok")

    async def put(self, queue: str, name: str, *args: Any, **options: Any) -> dict[str, Any]:
        """Enqueue job function ``name`` of tests.acceptance.jobs; the stored job (200)."""
        from tests.acceptance.jobs import method

        kwargs = options.pop("kwargs", {})
        body = {"queue": queue, "method": method(name), "args": list(args), "kwargs": kwargs}
        status, job = await self.call("POST", None, {**body, **options})
        assert status == 200, job
        return job

    async def take(self, queue: str, wait: float = 0.0) -> tuple[int, Any]:
        return await self.call("GET", {"queue": queue, "wait": wait})

    async def get(self, queue: str, job_id: str) -> dict[str, Any]:
        status, job = await self.call("GET", {"queue": queue, "id": job_id})
        assert status == 200, job
        return job

    async def delete(
        self, queue: str, job_id: str, body: Any = None, lease: str | None = None
    ) -> tuple[int, Any]:
        params = {"queue": queue, "id": job_id}
        if lease is not None:
            params["lease"] = lease
        return await self.call("DELETE", params, body)

    async def wait_final(
        self, queue: str, ids: list[str], *, timeout: float
    ) -> dict[str, dict[str, Any]]:
        """Poll until every job in ``ids`` is finished, failed or buried; those jobs by id."""
        final: dict[str, dict[str, Any]] = {}

        async def all_final() -> bool:
            todo = [i for i in ids if i not in final]
            for job in await asyncio.gather(*(self.get(queue, i) for i in todo)):
                if job["status"] in ("finished", "failed", "buried"):
                    final[job["id"]] = job
            return len(final) == len(ids)

        await wait_for(
            all_final, timeout=timeout, interval=0.1, what=f"{len(ids)} jobs to be final"
        )
        return final


@contextlib.asynccontextmanager
async def long_poll(url: str, queue: str, wait: float) -> AsyncIterator[asyncio.Task[Any]]:
    """A take with ``wait=`` on its own session, yielded as a task once its request is sent."""
    sent = asyncio.Event()

    async def headers_sent(*_: Any) -> None:
        sent.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)
    async with aiohttp.ClientSession(trace_configs=[trace]) as own:
        poll = asyncio.create_task(Api(own, url).take(queue, wait=wait))
        try:
            await asyncio.wait_for(sent.wait(), STARTUP_TIMEOUT)
            yield poll
        finally:
            if not poll.done():
                poll.cancel()
            await asyncio.gather(poll, return_exceptions=True)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One HTTP session for the test, closed at teardown."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
        yield http


@pytest.fixture(params=["sqlite", "rethinkdb"])
def store_args(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """The dispatcher options of each store: none for the embedded one, the RethinkDB server
    of TQUEUES_TEST_RETHINKDB (a fresh database, dropped afterwards) for the other."""
    if request.param == "sqlite":
        yield []
        return
    import uuid

    from tests.conftest import rethinkdb_settings

    settings = rethinkdb_settings(f"tqueues_e2e_{uuid.uuid4().hex[:12]}")
    yield ["--host", settings.host, "--port", str(settings.port), "--db", settings.db]
    from tqueues.stores.rethinkdb import RethinkDBStore

    async def drop() -> None:
        async with RethinkDBStore(settings) as store:
            await store.drop_database()

    # The test's processes first (the cluster's teardown may come after this one): a
    # dispatcher still running would see its database vanish under it.
    for proc in reversed(request.node.stash.get(PROCESSES, [])):
        proc.stop()
    # In a thread of its own: this fixture's teardown may run while a loop is current. A
    # daemon thread, waited for DROP_TIMEOUT seconds at most: a drop that hangs fails the
    # test instead of holding up the suite (one hung once under load, and the executor
    # this used to run in then waited for it for good; the cause, the store's close
    # waiting for a catalog feed whose cancellation was swallowed, is fixed: see
    # Backoff.sleep).
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(drop())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name=f"drop {settings.db}", daemon=True)
    thread.start()
    thread.join(DROP_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"dropping database {settings.db} did not end in {DROP_TIMEOUT:g} s")
    if failed:
        raise failed[0]
