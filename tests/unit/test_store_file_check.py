"""The embedded store's check of its file at start (issue #21, finding 3), on real files:
the time-bounded ``quick_check``, what a fresh store is created as, and the refusals in
the store's own terms (``tests/acceptance/test_damaged_store.py`` starts the dispatcher).
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from tqueues.errors import StoreUnavailable
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.sqlite import SQLiteStore
from tqueues.stores.sqlite_file import check_database, check_file, create_database

JOBS = 20_000


async def filled(data: Path) -> Path:
    """A closed store of JOBS jobs in ``data``; its file."""
    async with SQLiteStore(data, synchronous="NORMAL") as store:
        await store.create_queue(QueueConfig("q"))
        jobs = [NewJob(queue="q", method="m:f", args=[i]) for i in range(JOBS)]
        for start in range(0, JOBS, 1000):
            await store.put_many(jobs[start : start + 1000])
    return data / "tqueues.sqlite3"


async def test_the_check_reads_a_sound_store_whole_within_its_budget(tmp_path: Path) -> None:
    path = await filled(tmp_path / "data")
    conn = sqlite3.connect(path)
    try:
        assert check_database(conn, path, budget=60) is True
    finally:
        conn.close()


async def test_the_check_of_a_store_too_big_for_its_budget_is_cut_short(tmp_path: Path) -> None:
    # Given a store whose check takes longer than its budget (none at all here)
    path = await filled(tmp_path / "data")
    conn = sqlite3.connect(path)
    try:
        # Then the check stops, says so, and leaves the connection usable
        assert check_database(conn, path, budget=0) is False
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (JOBS,)
    finally:
        conn.close()


async def test_a_damaged_page_is_named_in_one_line(tmp_path: Path) -> None:
    path = await filled(tmp_path / "data")
    page_size = 4096
    with path.open("r+b") as file:  # 0xff over a whole page past page 1 (a b-tree's)
        file.seek(page_size * 3)
        file.write(b"\xff" * page_size)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            check_database(conn, path, budget=60)
    finally:
        conn.close()
    message = raised.value.message
    assert "\n" not in message and str(path) in message and "quick_check" in message
    assert "restore it from a backup" in message


def test_a_missing_file_is_a_fresh_store_and_an_empty_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tqueues.sqlite3"
    assert check_file(path) is False
    path.write_bytes(b"")
    with pytest.raises(StoreUnavailable, match=r"empty \(0 bytes\)"):
        check_file(path)


def test_a_fresh_database_is_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "tqueues.sqlite3"
    (tmp_path / "tqueues.sqlite3.new").write_bytes(b"left by a start killed midway")
    create_database(path)
    assert check_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tqueues.sqlite3"]
    conn = sqlite3.connect(path)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_schema")}
        assert {"jobs", "queues"} <= tables
    finally:
        conn.close()
