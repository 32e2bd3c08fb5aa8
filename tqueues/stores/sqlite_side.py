"""The embedded store's tables beside its jobs: the throughput history, the worker
registry, the periodic jobs' schedules and the dependencies' edges (created by
:data:`~tqueues.stores.sqlite_rows.SCHEMA`).

Each function runs its statements on ``conn``, on the store's thread, inside the
operation's savepoint (see :class:`~tqueues.stores.groupcommit.GroupCommit`): a write is
durable once the store's next commit is.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from tqueues import codec
from tqueues.dependencies import key
from tqueues.errors import ScheduleExists, WorkerNotFound
from tqueues.jobs import JobRecord
from tqueues.stores.history import Bucket, Counts, buckets_of
from tqueues.stores.schedules import ScheduleRecord
from tqueues.stores.workers import Command, WorkerRecord, command_of

# -- the throughput history ------------------------------------------------------------------


def add_history(conn: sqlite3.Connection, counts: Counts) -> None:
    """One upsert per count (atomic as a whole: one operation)."""
    conn.executemany(
        "INSERT INTO history VALUES (?, ?, ?, ?) ON CONFLICT (queue, at, event) "
        "DO UPDATE SET count = count + excluded.count",
        [(queue, at, event, n) for (queue, at, event), n in counts.items()],
    )


def read_history(conn: sqlite3.Connection, queue: str, since: int, until: int) -> list[Bucket]:
    return buckets_of(
        conn.execute(
            "SELECT at, event, count FROM history WHERE queue = ? AND at BETWEEN ? AND ?",
            (queue, since, until),
        )
    )


def purge_history(conn: sqlite3.Connection, before: int) -> int:
    return int(conn.execute("DELETE FROM history WHERE at < ?", (before,)).rowcount)


# -- the worker registry ---------------------------------------------------------------------


def _worker(doc: str, command: str | None) -> WorkerRecord:
    return dataclasses.replace(
        WorkerRecord.from_fields(codec.loads(doc)), command=command_of(command)
    )


def save_worker(conn: sqlite3.Connection, record: WorkerRecord) -> WorkerRecord:
    """Store the worker's heartbeat; the record with the command waiting for it, if any."""
    (command,) = conn.execute(
        "INSERT INTO workers (id, doc, last_seen) VALUES (?, ?, ?) ON CONFLICT (id) "
        "DO UPDATE SET doc = excluded.doc, last_seen = excluded.last_seen "
        "RETURNING command",
        (record.id, codec.dumps_str(record.fields()), record.last_seen),
    ).fetchone()
    return dataclasses.replace(record, command=command_of(command))


def list_workers(conn: sqlite3.Connection) -> list[WorkerRecord]:
    rows = conn.execute("SELECT doc, command FROM workers ORDER BY id")
    return [_worker(doc, command) for doc, command in rows]


def command_worker(conn: sqlite3.Connection, worker_id: str, command: Command) -> WorkerRecord:
    """Leave ``command`` for the worker (a ``stop`` already left stays). Raises
    WorkerNotFound."""
    row = conn.execute(
        "UPDATE workers SET command = CASE WHEN command = 'stop' THEN 'stop' "
        "ELSE ? END WHERE id = ? RETURNING doc, command",
        (command, worker_id),
    ).fetchone()
    if row is None:
        raise WorkerNotFound(f"no worker {worker_id!r} is known", id=worker_id)
    return _worker(*row)


def forget_workers(conn: sqlite3.Connection, before: float | None, id: str | None) -> int:
    """Delete the worker ``id``, else those last seen before ``before``; how many went."""
    if id is not None:
        return int(conn.execute("DELETE FROM workers WHERE id = ?", (id,)).rowcount)
    return int(conn.execute("DELETE FROM workers WHERE last_seen < ?", (before,)).rowcount)


# -- periodic jobs ---------------------------------------------------------------------------


def create_schedule(conn: sqlite3.Connection, schedule: ScheduleRecord) -> None:
    """Raises ScheduleExists."""
    cursor = conn.execute(
        "INSERT INTO schedules (queue, name, doc, rev) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (schedule.queue, schedule.name, codec.dumps_str(schedule.fields()), schedule.rev),
    )
    if cursor.rowcount != 1:
        raise ScheduleExists(
            f"schedule {schedule.name!r} exists in queue {schedule.queue!r}",
            queue=schedule.queue, name=schedule.name,
        )  # fmt: skip


def list_schedules(conn: sqlite3.Connection, queue: str | None) -> list[ScheduleRecord]:
    if queue is None:
        rows = conn.execute("SELECT doc FROM schedules ORDER BY queue, name")
    else:
        rows = conn.execute("SELECT doc FROM schedules WHERE queue = ? ORDER BY name", (queue,))
    return [ScheduleRecord.from_fields(codec.loads(doc)) for (doc,) in rows]


def swap_schedule(conn: sqlite3.Connection, before: ScheduleRecord, after: ScheduleRecord) -> bool:
    """Write ``after`` if the schedule is still at ``before.rev``; whether it was."""
    cursor = conn.execute(
        "UPDATE schedules SET doc = ?, rev = ? WHERE queue = ? AND name = ? AND rev = ?",
        (codec.dumps_str(after.fields()), after.rev, before.queue, before.name, before.rev),
    )
    return cursor.rowcount == 1


def delete_schedule(conn: sqlite3.Connection, queue: str, name: str) -> bool:
    cursor = conn.execute("DELETE FROM schedules WHERE queue = ? AND name = ?", (queue, name))
    return cursor.rowcount == 1


# -- dependencies ----------------------------------------------------------------------------


def add_edges(conn: sqlite3.Connection, job: JobRecord) -> None:
    dependent = key(job.queue, job.id)
    conn.executemany(
        "INSERT OR IGNORE INTO edges VALUES (?, ?)",
        [(prerequisite, dependent) for prerequisite in job.after],
    )


def dependents_of(conn: sqlite3.Connection, queue: str, job_id: str) -> list[str]:
    rows = conn.execute("SELECT dependent FROM edges WHERE prerequisite = ?", (key(queue, job_id),))
    return [dependent for (dependent,) in rows]


def drop_edges(conn: sqlite3.Connection, queue: str, job_id: str) -> None:
    conn.execute("DELETE FROM edges WHERE prerequisite = ?", (key(queue, job_id),))


__all__ = [
    "add_edges",
    "add_history",
    "command_worker",
    "create_schedule",
    "delete_schedule",
    "dependents_of",
    "drop_edges",
    "forget_workers",
    "list_schedules",
    "list_workers",
    "purge_history",
    "read_history",
    "save_worker",
    "swap_schedule",
]
