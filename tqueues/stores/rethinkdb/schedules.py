"""The ReQL of periodic jobs (:mod:`tqueues.stores.schedules`): the ``tqueues_schedules``
table, one document per schedule, its id ``queue/name`` (queue names have no ``/``), so
a queue's schedules are one range of the primary key. The table is small (one document
per schedule): every dispatcher reads it whole every few seconds."""

from __future__ import annotations

from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.stores.rethinkdb.documents import r
from tqueues.stores.schedules import ScheduleRecord

SCHEDULES_TABLE = "tqueues_schedules"


def document(schedule: ScheduleRecord) -> dict[str, Any]:
    """The schedule's document."""
    return {"id": schedule.key, **schedule.fields()}


def of_queue(table: Any, queue: str) -> RqlQuery:
    """The schedules of ``queue``, by name (the ids ``queue/...``: '0' follows '/')."""
    return table.between(f"{queue}/", f"{queue}0")


def create(table: Any, schedule: ScheduleRecord, *, durability: str) -> RqlQuery:
    """Insert the schedule; a taken id is an error (``inserted`` 0)."""
    return table.insert(r.expr(document(schedule)), conflict="error", durability=durability)


def swap(table: Any, before: ScheduleRecord, after: ScheduleRecord, *, durability: str) -> RqlQuery:
    """Replace the schedule by ``after`` if its ``rev`` is still ``before``'s, in one
    atomic write of the document; ``replaced`` 1 if it was."""
    new = document(after)
    return table.get(before.key).replace(
        lambda row: r.branch(
            row.eq(None), None, r.branch(row["rev"].eq(before.rev), r.expr(new), row)
        ),
        durability=durability,
    )


__all__ = ["SCHEDULES_TABLE", "create", "document", "of_queue", "swap"]
