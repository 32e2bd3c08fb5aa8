"""A damaged or truncated data file is refused at start, and a new data directory is
private (issue #21, finding 3).

The real ``tqueues_dispatcher`` console script on a real data file: one emptied (0
bytes), one with random bytes written over half of it. Each must exit non-zero at once
with a one-line message that says what to do, never serve the damaged store as if it
were empty or whole.
"""

from __future__ import annotations

import asyncio
import random
import stat
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.conftest import DISPATCHER, ROOT, Cluster, child_env
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.sqlite import SQLiteStore

JOBS = 5_000
STARTUP = 30.0  # seconds a dispatcher may take to refuse, or to listen


def start_on(data: Path, log: Path) -> tuple[int | None, str]:
    """Start the dispatcher on ``data``; its exit status and output once it has exited,
    or None and its output as soon as it listens (it was stopped then)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [DISPATCHER, "--listen", "127.0.0.1:0", "--data", str(data)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=child_env(),
        )
    try:
        deadline = time.monotonic() + STARTUP
        while process.poll() is None:
            if "listening on" in log.read_text(errors="replace"):
                return None, log.read_text(errors="replace")
            if time.monotonic() > deadline:
                pytest.fail(f"the dispatcher neither listened nor exited:\n{log.read_text()}")
            time.sleep(0.02)
        return process.returncode, log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def assert_refused(status: int | None, output: str, *words: str) -> None:
    """The dispatcher exited non-zero with one line naming the file and what to do."""
    assert status is not None, f"the dispatcher served a damaged store:\n{output}"
    assert status != 0, output
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    (line,) = lines
    assert line.startswith("tqueues_dispatcher: "), line
    assert "tqueues.sqlite3" in line and "restore it from a backup" in line, line
    for word in words:
        assert word in line, line


async def filled_store(data: Path) -> int:
    """A data directory holding JOBS jobs, written by the store itself and closed; the
    size of its file."""
    async with SQLiteStore(data, synchronous="NORMAL") as store:
        await store.create_queue(QueueConfig("q"))
        for start in range(0, JOBS, 1000):
            batch = [NewJob(queue="q", method="m:f", args=[i]) for i in range(start, start + 1000)]
            await store.put_many(batch)
    assert not (data / "tqueues.sqlite3-wal").exists()  # all of it in the one file
    return (data / "tqueues.sqlite3").stat().st_size


def test_an_empty_data_file_is_refused(tmp_path: Path) -> None:
    # Given a data file emptied to 0 bytes (truncated: its jobs are gone)
    data = tmp_path / "data"
    data.mkdir()
    (data / "tqueues.sqlite3").write_bytes(b"")
    # When the dispatcher starts on it
    status, output = start_on(data, tmp_path / "dispatcher.log")
    # Then it refuses, saying so, and leaves the file as it was
    assert_refused(status, output, "empty")
    assert (data / "tqueues.sqlite3").stat().st_size == 0


@pytest.mark.parametrize("half", ["first", "second"])
def test_a_data_file_with_garbage_over_half_of_it_is_refused(tmp_path: Path, half: str) -> None:
    # Given a store of 5,000 jobs whose file got random bytes over half of it
    data = tmp_path / "data"
    size = asyncio.run(filled_store(data))
    path = data / "tqueues.sqlite3"
    garbage = random.Random(21).randbytes(size // 2)
    with path.open("r+b") as file:
        file.seek(0 if half == "first" else size - len(garbage))
        file.write(garbage)
    damaged = path.read_bytes()
    # When the dispatcher starts on it
    status, output = start_on(data, tmp_path / "dispatcher.log")
    # Then it refuses, saying so, and has not written to the file
    assert_refused(status, output, "damaged")
    assert path.read_bytes() == damaged


async def test_a_new_data_directory_and_its_files_are_private(cluster: Cluster) -> None:
    # Given a data directory that does not exist yet
    data = cluster.tmp_path / "new" / "data"
    # When the dispatcher starts on it and stores a job
    dispatcher = await cluster.dispatcher(data)
    async with aiohttp.ClientSession() as session:
        async with session.put(dispatcher.url, params={"queue": "q"}) as response:
            assert response.status == 200
        async with session.post(dispatcher.url, json={"queue": "q", "method": "m:f"}) as response:
            assert response.status == 200
    # Then the directory is its owner's alone, and so is every file the store keeps there
    # (the write-ahead log too)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in data.iterdir()}
    assert {"tqueues.sqlite3", "tqueues.sqlite3-wal", "tqueues.lock"} <= set(files), files
    assert files == dict.fromkeys(files, 0o600), files


async def test_an_existing_empty_directory_or_a_creation_cut_short_starts_a_fresh_store(
    cluster: Cluster,
) -> None:
    # Given an empty data directory but for what a first start killed mid-creation left
    data = cluster.tmp_path / "data"
    data.mkdir()
    (data / "tqueues.sqlite3.new").write_bytes(b"")
    # When the dispatcher starts on it
    dispatcher = await cluster.dispatcher(data)
    # Then it serves a fresh, empty store
    async with aiohttp.ClientSession() as session:
        async with session.get(dispatcher.url + "queues") as response:
            assert response.status == 200
            assert (await response.json())["queues"] == []
    assert not (data / "tqueues.sqlite3.new").exists()
