"""The ReQL of the worker registry (:mod:`tqueues.stores.workers`): the
``tqueues_workers`` table, one document per worker (its id the worker's), with a
``last_seen`` index for dropping the workers gone silent. The table is small (one document
per worker), so listing it reads it whole."""

from __future__ import annotations

from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.workers import Command, WorkerRecord

WORKERS_TABLE = "tqueues_workers"
#: The secondary indexes of the table: name -> index function.
WORKER_INDEXES = {"last_seen": lambda row: row["last_seen"]}


def save(table: Any, record: WorkerRecord, *, durability: str) -> RqlQuery:
    """Insert the heartbeat, or update the stored worker with it (``conflict="update"``
    keeps the fields the heartbeat lacks: ``command``); the stored document is in the
    answer's ``changes``."""
    doc = {"id": record.id, **record.fields()}
    return table.insert(
        r.expr(doc), conflict="update", return_changes="always", durability=durability
    )


def command(table: Any, worker_id: str, command: Command, *, durability: str) -> RqlQuery:
    """Leave ``command`` for the worker (a "stop" stays a "stop"); ``skipped`` 1 if there
    is no such worker, else the document in ``changes``."""
    return table.get(worker_id).update(
        lambda row: {"command": r.branch(row["command"].default(None).eq("stop"), "stop", command)},
        return_changes="always",
        durability=durability,
    )


def forget_before(table: Any, before: float, *, durability: str) -> RqlQuery:
    """Delete the workers last seen before ``before``."""
    return table.between(r.minval, before, index="last_seen").delete(durability=durability)


__all__ = ["WORKERS_TABLE", "WORKER_INDEXES", "command", "forget_before", "save"]
