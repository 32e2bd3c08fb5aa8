"""The embedded store's tables, and a job as a row of ``jobs`` and back.

:data:`SCHEMA` creates the tables and the indexes every hot statement uses (each a
partial index of one status where it can be); :func:`to_row` and :func:`job_of` convert,
with the JSON columns encoded by :mod:`tqueues.codec`; :data:`INSERT`, :data:`UPDATE`
(every column but ``id`` and ``queue``, guarded by the row's revision) and
:data:`SELECT_JOBS` are the statements that move whole jobs.
"""

from __future__ import annotations

import dataclasses
import operator
import sqlite3
from typing import Any

from tqueues import codec
from tqueues.jobs import KEY_HOLDING, JobRecord, JobStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL  -- QueueConfig as JSON
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL REFERENCES queues(name),
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    ready_at REAL NOT NULL,
    created_at REAL NOT NULL,
    ttr REAL NOT NULL,
    max_attempts INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    lease TEXT,
    lease_expires REAL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    method TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    result TEXT,
    error TEXT,
    traceback TEXT,
    extra TEXT NOT NULL,
    rev INTEGER NOT NULL,
    event TEXT NOT NULL,
    expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    after TEXT,  -- the jobs it waits for, as a JSON list of "queue/id"; NULL: none
    has_dependents INTEGER NOT NULL DEFAULT 0,
    key TEXT  -- unique jobs: see KEY_INDEX
);
-- The take index: only pending jobs, in the order they are handed out.
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(queue, priority, ready_at, seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs(lease_expires) WHERE status = 'started';
CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs(ready_at) WHERE status = 'delayed';
CREATE INDEX IF NOT EXISTS jobs_by_queue ON jobs(queue, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(queue, status, seq);
CREATE INDEX IF NOT EXISTS jobs_ttl ON jobs(expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('pending', 'delayed');
-- Retention: the jobs that ended (jobs_done of earlier versions left cancelled jobs out).
DROP INDEX IF EXISTS jobs_done;
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(queue, finished_at)
    WHERE status IN ('finished', 'failed', 'cancelled');
-- Throughput history (tqueues.stores.history): one count per queue, minute and event.
CREATE TABLE IF NOT EXISTS history (
    queue TEXT NOT NULL,
    at INTEGER NOT NULL,  -- the minute's start, epoch seconds
    event TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (queue, at, event)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS history_at ON history(at);
-- The worker registry (tqueues.stores.workers): a worker's last heartbeat, as JSON.
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    last_seen REAL NOT NULL,
    command TEXT
);
-- Dependencies (tqueues.stores.dependents): an edge from a prerequisite to a job waiting
-- for it, both as "queue/id"; found by the prerequisite through the primary key.
CREATE TABLE IF NOT EXISTS edges (
    prerequisite TEXT NOT NULL,
    dependent TEXT NOT NULL,
    PRIMARY KEY (prerequisite, dependent)
) WITHOUT ROWID;
-- Periodic jobs (tqueues.stores.schedules): a schedule as JSON, keyed by queue and name.
CREATE TABLE IF NOT EXISTS schedules (
    queue TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
"""

#: The statuses of KEY_HOLDING as an SQL list.
HOLDING = ", ".join(f"'{status.value}'" for status in KEY_HOLDING)
#: Unique jobs (#25): a live job's key is unique in its queue; jobs without a key (the
#: usual case) have no entry, so they cost no index write. A put hits it when the key is
#: taken; so does any change that would make an ended job live again while another holds
#: its key. Made by :func:`upgrade` (it needs the ``key`` column), and made again when
#: KEY_HOLDING changes (its text then differs from the one stored).
KEY_INDEX = (
    "CREATE UNIQUE INDEX jobs_key ON jobs(queue, key) "
    f"WHERE key IS NOT NULL AND status IN ({HOLDING})"
)
#: The live job of a queue (``?``) that holds a key (``?``), through KEY_INDEX.
SELECT_HOLDER = f"WHERE queue = ? AND key = ? AND status IN ({HOLDING})"

#: Every field of a job, ``id`` and ``queue`` first (the UPDATE sets all the others).
COLUMNS = tuple(field.name for field in dataclasses.fields(JobRecord))
JSON_COLUMNS = frozenset({"args", "kwargs", "result", "extra"})
#: Reads a job row: COLUMNS in order (for :func:`job_of`), then ``seq`` (for cursors).
SELECT_JOBS = f"SELECT {', '.join(COLUMNS)}, seq FROM jobs"
_JSON_POSITIONS = tuple(i for i, name in enumerate(COLUMNS) if name in JSON_COLUMNS)
_STATUS_POSITION = COLUMNS.index("status")
_CANCEL_POSITION = COLUMNS.index("cancel_requested")
_AFTER_POSITION = COLUMNS.index("after")
_DEPENDENTS_POSITION = COLUMNS.index("has_dependents")
json_texts = operator.itemgetter(*_JSON_POSITIONS)
_STATUSES = {status.value: status for status in JobStatus}  #: faster than JobStatus(value)
INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
UPDATE = f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in COLUMNS[2:])} WHERE id = ? AND rev = ?"


def dumps(value: Any) -> str:
    """A JSON column's text."""
    return codec.dumps_str(value)


_job_values = operator.attrgetter(*COLUMNS)


def to_row(job: JobRecord) -> list[Any]:
    """The job's column values, in COLUMNS order (JSON columns encoded)."""
    values = list(_job_values(job))
    for i in _JSON_POSITIONS:
        values[i] = dumps(values[i])
    values[_STATUS_POSITION] = values[_STATUS_POSITION].value
    after = values[_AFTER_POSITION]
    values[_AFTER_POSITION] = dumps(after) if after else None
    return values


def job_of(read: sqlite3.Row) -> JobRecord:
    """The job of a row read with SELECT_JOBS."""
    values = list(read)[: len(COLUMNS)]
    for i in _JSON_POSITIONS:
        if values[i] is not None:
            values[i] = codec.loads(values[i])
    values[_STATUS_POSITION] = _STATUSES[values[_STATUS_POSITION]]
    values[_CANCEL_POSITION] = values[_CANCEL_POSITION] == 1  # (stored as 0 or 1)
    values[_DEPENDENTS_POSITION] = values[_DEPENDENTS_POSITION] == 1
    after = values[_AFTER_POSITION]
    values[_AFTER_POSITION] = codec.loads(after) if after is not None else []
    return JobRecord.from_values(values)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring the tables of a database an earlier version made up to :data:`SCHEMA` (run
    after it): add the columns it lacks (``cancel_requested``, ``after``,
    ``has_dependents``, ``key``), and make :data:`KEY_INDEX` unless it is there as
    written."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "cancel_requested" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")
    if "after" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN after TEXT")
    if "has_dependents" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN has_dependents INTEGER NOT NULL DEFAULT 0")
    if "key" not in columns:
        conn.execute("ALTER TABLE jobs ADD COLUMN key TEXT")
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs_key'").fetchone()
    if row is None or row[0] != KEY_INDEX:
        conn.execute("DROP INDEX IF EXISTS jobs_key")
        conn.execute(KEY_INDEX)
