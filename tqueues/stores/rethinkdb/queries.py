"""The ReQL of a queue table: its secondary indexes, the reads through them and the
conditional single-document writes. Builders only (no I/O), so the queries can be checked
as the driver serialises them.

Every read is a ``get``, a ``between`` on a secondary index (ordered by the same index) or
a ``group`` on an index; no query the dispatcher runs repeatedly uses ``filter``.
Index functions return null for the documents an index leaves out (a top-level null key
is not indexed, and would sort after every array bound anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.jobs import Job, JobStatus
from tqueues.stores.rethinkdb.documents import (
    dumps,
    job_literal,
    parse_cursor,
    r,
    stored_documents,
)

Row = Any
Index = Callable[[Row], Any]

PENDING, DELAYED = JobStatus.PENDING.value, JobStatus.DELAYED.value
FINISHED, FAILED = JobStatus.FINISHED.value, JobStatus.FAILED.value


def _pending(row: Row) -> Any:
    return r.branch(row["status"] == PENDING, [row["priority"], row["ready_at"]], None)


def _ttl(row: Row) -> Any:
    waiting = (row["status"] == PENDING) | (row["status"] == DELAYED)
    return r.branch(
        row["expires_at"].eq(None),
        None,
        r.branch(waiting, [row["status"], row["expires_at"]], None),
    )


def _finished(row: Row) -> Any:
    final = (row["status"] == FINISHED) | (row["status"] == FAILED)
    return r.branch(
        row["finished_at"].eq(None),
        None,
        r.branch(final, [row["status"], row["finished_at"]], None),
    )


#: The secondary indexes of every queue table: name -> index function.
INDEXES: dict[str, Index] = {
    # the take order: [priority, ready_at] of pending jobs only (ties: by id)
    "pending": _pending,
    # expiring leases: ["started", lease_expires]
    "leases": lambda row: [row["status"], row["lease_expires"]],
    # promoting due jobs, peeking delayed ones: ["delayed", ready_at]
    "delayed": lambda row: [row["status"], row["ready_at"]],
    # listing every job in creation order
    "created": lambda row: [row["created_at"], row["id"]],
    # counting jobs by status (group on the index)
    "status": lambda row: row["status"],
    # listing and peeking one status in creation order
    "status_created": lambda row: [row["status"], row["created_at"], row["id"]],
    # the ttl: [status, expires_at] of pending and delayed jobs that have one
    "ttl": _ttl,
    # retention: [status, finished_at] of finished and failed jobs
    "finished": _finished,
}


def claim_candidates(table: Any, limit: int) -> RqlQuery:
    """The ``limit`` most urgent pending jobs, in take order (``pending`` index)."""
    return (
        table.between([r.minval, r.minval], [r.maxval, r.maxval], index="pending")
        .order_by(index="pending")
        .limit(limit)
        .coerce_to("array")
    )


def due(table: Any, index: str, status: JobStatus, until: float, limit: int) -> RqlQuery:
    """Up to ``limit`` jobs of ``status`` whose key under a ``[status, time]`` index
    (``leases``, ``delayed``, ``ttl``, ``finished``) is at most ``until``, earliest first;
    a selection (``coerce_to("array")`` reads it, ``delete()`` purges it)."""
    return (
        table.between(
            [status.value, r.minval], [status.value, until], index=index, right_bound="closed"
        )
        .order_by(index=index)
        .limit(limit)
    )


def peek(table: Any, status: JobStatus) -> RqlQuery:
    """The next job of ``status`` (as a one-element array): the take order for pending
    jobs, the earliest ``ready_at`` for delayed ones, the oldest for the others."""
    if status is JobStatus.PENDING:
        return claim_candidates(table, 1)
    if status is JobStatus.DELAYED:
        selection = table.between(
            [DELAYED, r.minval], [DELAYED, r.maxval], index="delayed"
        ).order_by(index="delayed")
    else:
        selection = table.between(
            [status.value, r.minval, r.minval],
            [status.value, r.maxval, r.maxval],
            index="status_created",
        ).order_by(index="status_created")
    return selection.limit(1).coerce_to("array")


def page(
    table: Any,
    cursor: str | None,
    limit: int,
    status: JobStatus | None = None,
    max_bytes: int | None = None,
    used: int = 0,
) -> RqlQuery:
    """One page of the listing in creation order, after ``cursor`` (``CREATED_AT:ID``):
    every job through ``created``, or one status through ``status_created``; with
    ``max_bytes``, cut by :func:`within_bytes` (``used`` bytes of the page already read)."""
    after = parse_cursor(cursor)
    if status is None:
        if after is None:
            selection = table
        else:
            selection = table.between(
                list(after), [r.maxval, r.maxval], index="created", left_bound="open"
            )
        ordered = selection.order_by(index="created").limit(limit)
        return within_bytes(ordered, max_bytes, used).coerce_to("array")
    low = [status.value, r.minval, r.minval] if after is None else [status.value, *after]
    ordered = (
        table.between(
            low, [status.value, r.maxval, r.maxval], index="status_created", left_bound="open"
        )
        .order_by(index="status_created")
        .limit(limit)
    )
    return within_bytes(ordered, max_bytes, used).coerce_to("array")


def within_bytes(sequence: Any, max_bytes: int | None, used: int = 0) -> Any:
    """``sequence`` (in order) cut on the server once its documents' JSON, counted in
    characters after ``used``, has reached ``max_bytes``: each document while the count
    before it is lower, a null for each further one (which says that more follow; the
    reader drops them), and last the count (a number). None keeps the whole sequence."""
    if max_bytes is None:
        return sequence
    return sequence.fold(
        used,
        lambda size, doc: r.branch(
            size.lt(max_bytes), size.add(doc.to_json_string().count()), size
        ),
        emit=lambda size, doc, _: r.branch(size.lt(max_bytes), [doc], [None]),
        final_emit=lambda size: [size],
    )


def count_by_status(table: Any) -> RqlQuery:
    """``{status: count}`` for the statuses present (``group`` on the ``status`` index;
    the driver returns grouped data as a dict)."""
    return table.group(index="status").count()


def compare_and_set(
    table: Any, before: Job, after: Job, *, durability: str, status: JobStatus | None = None
) -> RqlQuery:
    """Replace the job by ``after`` if it is still at ``before.rev`` (and ``status``).

    One atomic, deterministic single-document write: ``replaced`` 1 if written,
    ``unchanged`` if the job moved on, ``skipped`` if it is gone.
    """
    new_doc = job_literal(after)

    def expected(row: Row) -> Any:
        same = row["rev"] == before.rev
        return same if status is None else same & (row["status"] == status.value)

    return table.get(before.id).replace(
        lambda row: r.branch(row.eq(None), None, r.branch(expected(row), new_doc, row)),
        durability=durability,
    )


def get_many(table: Any, ids: Sequence[str]) -> RqlQuery:
    """The jobs of ``ids`` that exist (one ``get_all`` on the primary key), as an array in
    no particular order; ``ids`` must be distinct."""
    return table.get_all(*ids).coerce_to("array")


def compare_and_set_many(
    table: Any,
    pairs: Sequence[tuple[Job, Job]],
    *,
    durability: str,
    status: JobStatus | None = None,
) -> RqlQuery:
    """Replace each job ``before`` by its ``after`` if it is still at ``before.rev`` (and
    ``status``), all in one write (``get_all`` of the distinct ids, then one conditional
    replace per document): each document's write is atomic and deterministic on its own
    (the new documents and the expected revisions are one JSON literal, parsed once and
    looked up by the row's id), the batch as a whole is not. ``return_changes``: the
    ``changes`` of the result hold the documents written (``new_val``); the others count
    ``unchanged`` (they moved on) or are absent (deleted). Ids must be distinct and keys
    the server keeps as sent (:func:`~tqueues.stores.rethinkdb.documents.escape_key`
    leaves them alone).
    """
    docs = stored_documents([after for _, after in pairs])
    plan = {
        "new": {doc["id"]: doc for doc in docs},
        "rev": {before.id: before.rev for before, _ in pairs},
    }

    def write(planned: Any) -> Any:
        def expected(row: Row) -> Any:
            same = row["rev"] == planned["rev"][row["id"]]
            return same if status is None else same & (row["status"] == status.value)

        return table.get_all(*(before.id for before, _ in pairs)).replace(
            lambda row: r.branch(
                row.eq(None), None, r.branch(expected(row), planned["new"][row["id"]], row)
            ),
            durability=durability,
            return_changes=True,
        )

    # The plan is parsed once (r.json, bound by do), not once per document written.
    return r.json(dumps(plan)).do(write)


def delete_if_unchanged(table: Any, job: Job, *, durability: str) -> RqlQuery:
    """Delete the job if it is still at ``job.rev``: ``deleted`` 1 if so (a replace by
    null, which deletes, so the check and the delete are one atomic write)."""
    return table.get(job.id).replace(
        lambda row: r.branch(row.eq(None), None, r.branch(row["rev"] == job.rev, None, row)),
        durability=durability,
    )


def remove(table: Any, job_id: str, *, durability: str) -> RqlQuery:
    """Delete one job, returning it (``changes[0].old_val``); ``deleted`` 0 if absent."""
    return table.get(job_id).delete(durability=durability, return_changes=True)


def insert(table: Any, jobs: list[Job], *, durability: str) -> RqlQuery:
    """Insert new jobs (one document, or an array of them); a taken id is an error."""
    docs = stored_documents(jobs)
    payload = r.json(dumps(docs[0] if len(docs) == 1 else docs))
    return table.insert(payload, conflict="error", durability=durability)


__all__ = [
    "INDEXES",
    "claim_candidates",
    "compare_and_set",
    "compare_and_set_many",
    "count_by_status",
    "delete_if_unchanged",
    "due",
    "get_many",
    "insert",
    "page",
    "peek",
    "remove",
]
