"""The two command lines, run through their installed console scripts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

import tqueues
from tests.acceptance.conftest import (
    DISPATCHER,
    ROOT,
    WORKER,
    Api,
    Cluster,
    child_env,
    long_poll,
    wait_for,
)
from tests.acceptance.jobs import finished_ids, start_markers
from tqueues.cli import dispatcher as dispatcher_cli
from tqueues.cli import worker as worker_cli

SCRIPTS = {"tqueues_dispatcher": DISPATCHER, "tqueues_worker": WORKER}
DOCS = {"tqueues_dispatcher": dispatcher_cli.__doc__, "tqueues_worker": worker_cli.__doc__}


def run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_docopt_usage_and_exits_0(name: str, flag: str) -> None:
    done = run(SCRIPTS[name], flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == DOCS[name].strip()
    assert f"Usage:\n  {name} " in done.stdout


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_version_prints_the_version(name: str) -> None:
    done = run(SCRIPTS[name], "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == tqueues.__version__


@pytest.mark.parametrize(
    "argv",
    [
        [DISPATCHER, "--no-such-option"],
        [DISPATCHER, "stray-argument"],
        [WORKER, "--queue", "q", "--no-such-option"],
    ],
    ids=["dispatcher-option", "dispatcher-argument", "worker-option"],
)
def test_a_bad_option_prints_the_usage_and_fails(argv: list[str]) -> None:
    done = run(*argv)
    assert done.returncode != 0
    name = Path(argv[0]).name
    assert f"Usage:\n  {name}" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args", [[], ["--endpoint_url", "http://127.0.0.1:1/"]], ids=["no-args", "no-queue"]
)
def test_worker_without_a_queue_fails(args: list[str]) -> None:
    done = run(WORKER, *args)
    assert done.returncode != 0
    assert "Usage:" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([DISPATCHER, "--listen", "nonsense"], "--listen"),
        ([DISPATCHER, "--listen", "127.0.0.1:99999"], "--listen"),
        ([DISPATCHER, "--listen", "127.0.0.1:0", "--loglevel", "LOUD"], "--loglevel"),
        ([WORKER, "--queue", "q", "--endpoint_url", "ftp://x"], "--endpoint_url"),
        ([WORKER, "--queue", "q", "--concurrency", "zero"], "--concurrency"),
        (
            [DISPATCHER, "--listen", "127.0.0.1:0", "--rethinkdb", "rethinkdb://127.0.0.1:1/t"],
            "cannot reach RethinkDB at 127.0.0.1:1",
        ),
    ],
    ids=["listen", "listen-port", "loglevel", "endpoint", "concurrency", "rethinkdb-down"],
)
def test_a_bad_value_fails_with_a_one_line_message(argv: list[str], names: str) -> None:
    done = run(*argv)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(Path(argv[0]).name + ": ") and names in lines[0], lines
    assert done.stdout == ""


async def test_sigterm_stops_the_dispatcher_cleanly(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a dispatcher with an open WebSocket and a long-poll waiting
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("stopping")
    ws = await session.ws_connect(dispatcher.url + "ws?queue=stopping")
    try:
        assert (await ws.receive_json(timeout=10))["type"] == "synced"
        async with long_poll(dispatcher.url, "stopping", wait=20) as poll:
            # When it gets SIGTERM
            started = time.monotonic()
            dispatcher.proc.signal(signal.SIGTERM)

            # Then it closes the WebSocket, answers the long-poll, exits 0 soon, no traceback
            closing = await ws.receive(timeout=10)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
            assert await dispatcher.proc.wait_exit(timeout=10) == 0
            assert time.monotonic() - started < 10
            with contextlib.suppress(aiohttp.ClientError):
                await asyncio.wait_for(poll, 5)
    finally:
        await ws.close()
    log = dispatcher.proc.log()
    assert "shutting down" in log and "Traceback" not in log, log


async def test_sigterm_lets_a_worker_finish_its_job_and_exit_0(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given a worker (one job at a time) running a 1 s job, and another job waiting
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("graceful")
    worker = await cluster.worker(dispatcher.url, "graceful", concurrency=1, grace=20)
    running = await api.put("graceful", "marked_sleep", str(markers), 1.0)
    await wait_for(lambda: start_markers(markers), timeout=10, what="the job to start")
    waiting = await api.put("graceful", "coro_add", 1, 1)

    # When it gets SIGTERM
    worker.signal(signal.SIGTERM)

    # Then it finishes the running job, takes no other, and exits 0
    assert await worker.wait_exit(timeout=15) == 0
    assert (await api.get("graceful", running["id"]))["status"] == "finished"
    assert finished_ids(markers) == [running["id"]]
    assert (await api.get("graceful", waiting["id"]))["status"] == "pending"
    assert "Traceback" not in worker.log()


async def test_sigterm_gives_back_a_job_that_outlives_the_grace_period(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given a worker with a short grace period running a long job
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("grace")
    worker = await cluster.worker(dispatcher.url, "grace", concurrency=1, grace=0.5)
    job = await api.put("grace", "marked_sleep", str(markers), 60.0)
    await wait_for(lambda: start_markers(markers), timeout=10, what="the job to start")

    # When it gets SIGTERM
    worker.signal(signal.SIGTERM)

    # Then it exits 0 soon after the grace period, having given the job back untried
    assert await worker.wait_exit(timeout=10) == 0
    back = await api.get("grace", job["id"])
    assert (back["status"], back["attempts"], back["result"]) == ("pending", 0, None), back
    assert finished_ids(markers) == []
