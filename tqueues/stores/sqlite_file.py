"""The embedded store's data file: telling a missing file from a damaged one, creating a
fresh one whole or not at all, and checking an existing one's structure at start.

Every function here raises :class:`~tqueues.errors.StoreUnavailable` with a message that
names the file, what is wrong with it and what to do (:func:`damaged`), never a bare
SQLite error for a damaged file.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from tqueues.errors import StoreUnavailable
from tqueues.stores.sqlite_rows import SCHEMA

SQLITE_HEADER = b"SQLite format 3\x00"  #: the first bytes of every SQLite database file
#: The longest the check of the database at start may take (seconds): about 10,000,000
#: small jobs' worth. A bigger store starts after that much of it was checked.
QUICK_CHECK_SECONDS = 10.0


def check_file(path: Path) -> bool:
    """Whether the database file at ``path`` exists (False: a fresh store is created).

    Raises StoreUnavailable if it exists but cannot hold a database: empty (0 bytes: it
    was truncated, since :func:`create_database` never leaves an empty one) or not
    starting with SQLite's header.
    """
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StoreUnavailable(f"cannot read {path}: {exc}") from exc
    if not header:
        raise StoreUnavailable(
            damaged(path, "it is empty (0 bytes): it was truncated, and the jobs it held are gone")
        )
    if header != SQLITE_HEADER:
        raise StoreUnavailable(damaged(path, "it does not start as an SQLite database does"))
    return True


def create_database(path: Path) -> None:
    """Create an empty database at ``path`` (mode 0600), whole or not at all.

    It is built beside it as ``<name>.new``, synced and renamed into place, so a first
    start killed midway leaves no empty or partial file that the next start would take
    for a damaged store (what such a start left is removed). Raises OSError,
    sqlite3.Error."""
    fresh = path.with_name(path.name + ".new")
    for leftover in (fresh, path.with_name(fresh.name + "-journal")):
        leftover.unlink(missing_ok=True)
    os.close(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    conn = sqlite3.connect(fresh, isolation_level=None)
    try:  # (a rollback journal: all of it is in the one file once committed)
        conn.executescript(SCHEMA)
    finally:
        conn.close()
    fd = os.open(fresh, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(fresh, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the rename
    finally:
        os.close(fd)


def check_database(conn: sqlite3.Connection, path: Path, budget: float | None = None) -> bool:
    """Check the structure of the open database with SQLite's ``quick_check``: every page
    of every table and index read once, so about a second per 250 MiB (1,000,000 small
    jobs) from the page cache (``benchmarks/startup_check.py``). It stops after
    ``budget`` seconds (default QUICK_CHECK_SECONDS): True if it read everything, False
    if it was cut short (what it read was sound; damage past it shows later as 503s).

    Raises StoreUnavailable (damaged) naming the first problem found, sqlite3.Error."""
    budget = QUICK_CHECK_SECONDS if budget is None else budget
    deadline = time.monotonic() + budget
    conn.set_progress_handler(lambda: time.monotonic() > deadline, 100_000)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(1)")]
    except sqlite3.OperationalError as exc:
        if time.monotonic() <= deadline or "interrupt" not in str(exc):
            raise
        return False
    finally:
        conn.set_progress_handler(None, 0)
    if problems != ["ok"]:
        first = " ".join(problems[0].replace("*** in database main ***", "").split())
        raise StoreUnavailable(damaged(path, f"SQLite's quick_check found: {first}"))
    return True


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the database file is damaged (not, say, locked)."""
    name = getattr(exc, "sqlite_errorname", "")
    return name.startswith("SQLITE_CORRUPT") or name == "SQLITE_NOTADB"


def damaged(path: Path, what: str) -> str:
    """The one-line message of a damaged data file, with what to do about it."""
    what = " ".join(what.split())
    return (
        f"the data file {path} is damaged: {what}; restore it from a backup, or move it "
        "away to start over with an empty store (its jobs lost)"
    )


__all__ = [
    "QUICK_CHECK_SECONDS",
    "SQLITE_HEADER",
    "check_database",
    "check_file",
    "create_database",
    "damaged",
    "is_damage",
]
