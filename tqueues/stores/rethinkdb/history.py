"""The ReQL of the throughput history (:mod:`tqueues.stores.history`): the
``tqueues_history`` table, one document per queue, minute and event.

A document is ``{"id": "QUEUE AT EVENT", "queue", "at", "event", "n"}``, its id the queue
name, the minute's start (11 digits) and the event, space-separated: queue names are
letters, digits and underscores, which all sort after a space, so one queue's documents
are one range of the primary key, in time order, and the table needs no secondary index.
A count is added by an insert whose conflict function sums (one atomic write per
document, whichever dispatcher adds at the same instant).
"""

from __future__ import annotations

from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.stores.history import Counts

HISTORY_TABLE = "tqueues_history"


def history_id(queue: str, at: int, event: str) -> str:
    """The id of the count of ``event`` in ``queue`` in the minute starting at ``at``."""
    return f"{queue} {at:011d} {event}"


def _bounds(queue: str, since: int, until: int) -> tuple[str, str]:
    return f"{queue} {since:011d}", f"{queue} {until:011d}~"  # "~" sorts after every event


def add(table: Any, counts: Counts, *, durability: str) -> RqlQuery:
    """Add each count to its document (inserted if missing), in one query."""
    docs = [
        {"id": history_id(queue, at, event), "queue": queue, "at": at, "event": event, "n": n}
        for (queue, at, event), n in counts.items()
    ]
    return table.insert(
        docs,
        conflict=lambda _id, old, new: old.merge({"n": old["n"] + new["n"]}),
        durability=durability,
    )


def read(table: Any, queue: str, since: int, until: int) -> RqlQuery:
    """The documents of ``queue`` whose minute starts in ``[since, until]``, in time order."""
    low, high = _bounds(queue, since, until)
    return table.between(low, high, right_bound="closed").coerce_to("array")


def delete(table: Any, queue: str, before: int | None, *, durability: str) -> RqlQuery:
    """Delete the documents of ``queue`` whose minute starts before ``before`` (all of them
    if None); the answer counts them in ``deleted``."""
    low = f"{queue} "
    high = f"{queue} {before:011d}" if before is not None else f"{queue}!"  # "!": after " "
    return table.between(low, high).delete(durability=durability)


__all__ = ["HISTORY_TABLE", "add", "delete", "history_id", "read"]
