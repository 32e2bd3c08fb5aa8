"""The ReQL of a queue table: its secondary indexes, the reads through them and the
conditional single-document writes. Builders only (no I/O), so the queries can be checked
as the driver serialises them.

Every read is a ``get``, a ``between`` on the primary key or a secondary index (ordered
by the same index) or a count of such a range; no query the dispatcher runs repeatedly
uses ``filter``. Index functions return null for the documents an index leaves out (a
top-level null key is not indexed, and would sort after every array bound anyway).

Every secondary index costs the server on every write of a document: it deletes the
document's old key and inserts its new one, even when the two are equal (measured on
RethinkDB 2.4.4: about 100 us of server CPU per index and write; see
``benchmarks/rethinkdb_indexes.py``). So a queue table has the fewest indexes its reads
need: ``state`` orders what the dispatcher acts on next in every status it acts on,
``status_id`` lists and counts one status, ``ttl`` holds only the jobs that have one; the
primary key (time-ordered ids, see :meth:`RethinkDBStore.new_id`) lists every job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.rethinkdb.documents import (
    dumps,
    job_literal,
    job_to_doc,
    parse_cursor,
    r,
    stored_documents,
)

Row = Any
Index = Callable[[Row], Any]

PENDING, DELAYED = JobStatus.PENDING.value, JobStatus.DELAYED.value
STARTED = JobStatus.STARTED.value
FINISHED, FAILED = JobStatus.FINISHED.value, JobStatus.FAILED.value
CANCELLED = JobStatus.CANCELLED.value


def _state(row: Row) -> Any:
    """What the dispatcher acts on next, by status: ``["pending", priority, ready_at]``
    (the take order), ``["started", lease_expires]`` (expiring leases), ``["delayed",
    ready_at]`` (promotions), ``[status, finished_at]`` for finished, failed and cancelled jobs
    (retention); null (not indexed) for buried jobs, and for a final job without
    ``finished_at`` (a document of an old version: the reaper leaves it be)."""
    status = row["status"]
    final = (status == FINISHED) | (status == FAILED) | (status == CANCELLED)
    return r.branch(
        status == PENDING,
        [PENDING, row["priority"], row["ready_at"]],
        r.branch(
            status == STARTED,
            [STARTED, row["lease_expires"]],
            r.branch(
                status == DELAYED,
                [DELAYED, row["ready_at"]],
                r.branch(final & row["finished_at"].ne(None), [status, row["finished_at"]], None),
            ),
        ),
    )


def _ttl(row: Row) -> Any:
    waiting = (row["status"] == PENDING) | (row["status"] == DELAYED)
    return r.branch(
        row["expires_at"].eq(None),
        None,
        r.branch(waiting, [row["status"], row["expires_at"]], None),
    )


#: The secondary indexes of every queue table: name -> index function.
INDEXES: dict[str, Index] = {
    # the take order, expiring leases, due delayed jobs, retention (see _state)
    "state": _state,
    # listing, counting and peeking one status in creation (id) order
    "status_id": lambda row: [row["status"], row["id"]],
    # the ttl: [status, expires_at] of pending and delayed jobs that have one
    "ttl": _ttl,
}
#: Per index whose function changed, a text its function's ReQL (``index_status``'s
#: ``query``) holds since the change: a table built by an earlier version lacks it, and
#: gets the index rebuilt (``state`` counts cancelled jobs as ended since #25).
INDEX_MARKS: dict[str, str] = {"state": CANCELLED}
#: Indexes of earlier versions, dropped from a queue's table when a dispatcher of this
#: version opens it (each costs every write; see the module's docstring).
OBSOLETE_INDEXES = (
    "pending",
    "leases",
    "delayed",
    "created",
    "status",
    "status_created",
    "finished",
)


def claim_candidates(table: Any, limit: int, fields: Sequence[str] = ()) -> RqlQuery:
    """The ``limit`` most urgent pending jobs, in take order (``state`` index); only their
    ``fields`` if any are named."""
    query = (
        table.between([PENDING, r.minval, r.minval], [PENDING, r.maxval, r.maxval], index="state")
        .order_by(index="state")
        .limit(limit)
    )
    return (query.pluck(*fields) if fields else query).coerce_to("array")


def next_due(table: Any, status: JobStatus, after: float, *, index: str = "state") -> RqlQuery:
    """The first job of ``status`` whose ``[status, time]`` key (see :func:`due`) is
    after ``after``, as a list of at most one document."""
    return (
        table.between([status.value, after], [status.value, r.maxval], index=index,
                      left_bound="open")
        .order_by(index=index)
        .limit(1)
        .coerce_to("array")
    )  # fmt: skip


def count_ahead(table: Any, job: JobRecord, limit: int) -> RqlQuery:
    """How many pending jobs come before ``job`` in the take order (``state`` index: of
    higher priority, or equal and ready earlier), up to ``limit``."""
    return (
        table.between(
            [PENDING, r.minval, r.minval], [PENDING, job.priority, job.ready_at], index="state"
        )
        .limit(limit)
        .count()
    )


def due(
    table: Any, status: JobStatus, until: float, limit: int, *, index: str = "state"
) -> RqlQuery:
    """Up to ``limit`` jobs of ``status`` whose ``[status, time]`` key is at most ``until``,
    earliest first: under ``state``, started jobs by ``lease_expires``, delayed ones by
    ``ready_at``, finished and failed ones by ``finished_at``; under ``ttl``, pending and
    delayed ones by ``expires_at``. A selection (``coerce_to("array")`` reads it,
    ``delete()`` purges it)."""
    return (
        table.between(
            [status.value, r.minval], [status.value, until], index=index, right_bound="closed"
        )
        .order_by(index=index)
        .limit(limit)
    )


def _of_status(table: Any, status: JobStatus, after: str | None = None) -> Any:
    """The jobs of ``status`` in id order (``status_id``), after the id ``after``."""
    low = [status.value, r.minval if after is None else after]
    return table.between(
        low, [status.value, r.maxval], index="status_id", left_bound="open"
    ).order_by(index="status_id")


def peek(table: Any, status: JobStatus) -> RqlQuery:
    """The next job of ``status`` (as a one-element array): the take order for pending
    jobs, the earliest ``ready_at`` for delayed ones, the oldest for the others."""
    if status is JobStatus.PENDING:
        return claim_candidates(table, 1)
    if status is JobStatus.DELAYED:
        selection = table.between([DELAYED, r.minval], [DELAYED, r.maxval], index="state").order_by(
            index="state"
        )
    else:
        selection = _of_status(table, status)
    return selection.limit(1).coerce_to("array")


def page(
    table: Any,
    cursor: str | None,
    limit: int,
    status: JobStatus | None = None,
    max_bytes: int | None = None,
    used: int = 0,
) -> RqlQuery:
    """One page of the listing in creation order (the order of the time-ordered ids),
    after ``cursor`` (the last id of the previous page, see :func:`parse_cursor`): every
    job through the primary key, or one status through ``status_id``; with ``max_bytes``,
    cut by :func:`within_bytes` (``used`` bytes of the page already read)."""
    after = parse_cursor(cursor)
    if status is None:
        selection = (
            table
            if after is None
            else table.between(after, r.maxval, index="id", left_bound="open")
        )
        ordered = selection.order_by(index="id").limit(limit)
    else:
        ordered = _of_status(table, status, after).limit(limit)
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
    """``{status: count}`` of every status, zeros included: one query counting each
    status's range of ``status_id`` (the server walks each range, never the whole table)."""
    return r.expr(
        {
            status.value: table.between(
                [status.value, r.minval], [status.value, r.maxval], index="status_id"
            ).count()
            for status in JobStatus
        }
    )


def compare_and_set(
    table: Any,
    before: JobRecord,
    after: JobRecord,
    *,
    durability: str,
    status: JobStatus | None = None,
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


#: One conditional write of a job: (the job as read, the job to write, the status it must
#: still have, or None for any).
Write = tuple[JobRecord, JobRecord, "JobStatus | None"]


def conditional_writes(
    table: Any,
    writes: Sequence[Write],
    *,
    durability: str,
    patched: Mapping[str, Sequence[str]] | None = None,
) -> RqlQuery:
    """For each ``(before, after, status)``, replace the job by ``after`` if it is still at
    ``before.rev`` (and has ``status``, unless None), all in one write (``get_all`` of the
    distinct ids, then one conditional replace per document): each document's write is
    atomic and deterministic on its own (the new documents, the expected revisions and
    statuses are one JSON literal, parsed once and looked up by the row's id), the batch
    as a whole is not. ``return_changes``: the ``changes`` of the result hold the
    documents written (``new_val``); the others count ``unchanged`` (they moved on) or are
    absent (deleted). Ids must be distinct and keys the server keeps as sent
    (:func:`~tqueues.stores.rethinkdb.documents.escape_key` leaves them alone).

    A job of ``patched`` (id -> field names) gets only those fields of ``after`` written
    (:func:`patch`), the document's others kept as stored at ``before.rev``, so
    ``before`` and ``after`` may be slim (:func:`~tqueues.stores.rethinkdb.head.slim`);
    ``new_val`` is then the only whole copy of what was written. Raises ValueError when
    such a job differs from ``before`` in another field, or a field holds an object.
    """
    patched = patched or {}
    whole = [after for before, after, _ in writes if before.id not in patched]
    plan: dict[str, Any] = {
        "new": {doc["id"]: doc for doc in stored_documents(whole)},
        "rev": {before.id: before.rev for before, _, _ in writes},
        "status": {
            before.id: None if status is None else status.value for before, _, status in writes
        },
    }
    if patched:
        plan["patch"] = {b.id: patch(b, a, patched[b.id]) for b, a, _ in writes if b.id in patched}

    def write(planned: Any) -> Any:
        def expected(row: Row) -> Any:
            wanted = planned["status"][row["id"]]
            return (row["rev"] == planned["rev"][row["id"]]) & (
                wanted.eq(None) | (row["status"] == wanted)
            )

        def written(row: Row) -> Any:
            if not patched:
                return planned["new"][row["id"]]
            patched_row = row.merge(planned["patch"][row["id"]])
            if not whole:
                return patched_row
            return r.branch(
                planned["patch"].has_fields(row["id"]), patched_row, planned["new"][row["id"]]
            )

        return table.get_all(*(before.id for before, _, _ in writes)).replace(
            lambda row: r.branch(row.eq(None), None, r.branch(expected(row), written(row), row)),
            durability=durability,
            return_changes=True,
        )

    # The plan is parsed once (r.json, bound by do), not once per document written.
    return r.json(dumps(plan)).do(write)


def patch(before: JobRecord, after: JobRecord, fields: Sequence[str]) -> dict[str, Any]:
    """The ``fields`` of ``after``'s document: what a write of ``after`` over ``before``
    sets (merged into the stored document). Raises ValueError if ``after`` differs from
    ``before`` in any other field (the write would lose it), or if one of ``fields`` holds
    an object (a merge would blend it with the stored one)."""
    old, new = job_to_doc(before), job_to_doc(after)
    lost = sorted(name for name in old.keys() | new.keys()
                  if name not in fields and old.get(name) != new.get(name))  # fmt: skip
    if lost:
        raise ValueError(f"job {before.id}: a patch of {list(fields)} would not write {lost}")
    values = {name: new.get(name) for name in fields}
    if any(isinstance(value, dict) for value in values.values()):
        raise ValueError(f"job {before.id}: a patch may not write an object")
    return values


def delete_if_unchanged(table: Any, job: JobRecord, *, durability: str) -> RqlQuery:
    """Delete the job if it is still at ``job.rev``: ``deleted`` 1 if so (a replace by
    null, which deletes, so the check and the delete are one atomic write)."""
    return table.get(job.id).replace(
        lambda row: r.branch(row.eq(None), None, r.branch(row["rev"] == job.rev, None, row)),
        durability=durability,
    )


def remove(table: Any, job_id: str, *, durability: str) -> RqlQuery:
    """Delete one job, returning it (``changes[0].old_val``); ``deleted`` 0 if absent."""
    return table.get(job_id).delete(durability=durability, return_changes=True)


def insert_claimed_unless_pending(
    table: Any, job: JobRecord, claimed: JobRecord, *, durability: str
) -> RqlQuery:
    """One query for a put that a waiting taker may have: ``claimed`` (``job`` already
    taken for the taker) inserted when no job of the queue is pending, else ``job`` as it
    was put. The insert's answer, with ``handed`` true when ``claimed`` was inserted.

    The check reads one key of the ``state`` index. It and the insert are not one atomic
    write (RethinkDB has none across documents), so a job another dispatcher puts at the
    same instant may be taken after this one although more urgent: an order, never a job,
    is what that race can cost.
    """
    idle = (
        table.between([PENDING, r.minval, r.minval], [PENDING, r.maxval, r.maxval], index="state")
        .limit(1)
        .count()
        .eq(0)
    )
    return r.branch(
        idle,
        insert(table, [claimed], durability=durability).merge({"handed": True}),
        insert(table, [job], durability=durability).merge({"handed": False}),
    )


def insert(table: Any, jobs: list[JobRecord], *, durability: str) -> RqlQuery:
    """Insert new jobs (one document, or an array of them); a taken id is an error."""
    docs = stored_documents(jobs)
    payload = r.json(dumps(docs[0] if len(docs) == 1 else docs))
    return table.insert(payload, conflict="error", durability=durability)


__all__ = [
    "INDEXES",
    "INDEX_MARKS",
    "OBSOLETE_INDEXES",
    "Write",
    "claim_candidates",
    "compare_and_set",
    "conditional_writes",
    "count_ahead",
    "count_by_status",
    "delete_if_unchanged",
    "due",
    "get_many",
    "insert",
    "insert_claimed_unless_pending",
    "next_due",
    "page",
    "patch",
    "peek",
    "remove",
]
