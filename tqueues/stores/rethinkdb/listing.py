"""Listing a queue's jobs a page at a time, in creation order (the order of their
time-ordered ids): every job through the primary key, one status through ``status_id``
(:func:`~tqueues.stores.rethinkdb.queries.page`); a page cut by bytes read in parts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.primitives import Page
from tqueues.stores.rethinkdb import queries
from tqueues.stores.rethinkdb.documents import doc_to_job, format_cursor

#: documents the first read of a listing page cut by bytes asks for; each further read of
#: the page asks for at most LIST_READ_GROWTH times more.
LIST_FIRST_READ, LIST_READ_GROWTH = 16, 8

Run = Callable[[RqlQuery], Awaitable[Any]]


async def page(
    run: Run, table: Any, status: JobStatus | None, cursor: str | None, limit: int
) -> Page:
    """At most ``limit`` jobs of ``table`` (of ``status``, if any) after ``cursor`` (the
    id of the last job of the previous page; an unreadable one starts over), read with
    ``run`` in one query; the next page's cursor unless the page is the last."""
    docs = await run(queries.page(table, cursor, limit, status))
    jobs = [doc_to_job(doc) for doc in docs]
    return Page(jobs, format_cursor(jobs[-1]) if jobs and len(jobs) == limit else None)


async def page_within(
    run: Run,
    table: Any,
    status: JobStatus | None,
    cursor: str | None,
    limit: int,
    max_bytes: int,
) -> Page:
    """:func:`page`, cut once its jobs reach ``max_bytes`` (counted in characters of the
    documents' JSON), read in parts, each cut on the server (:func:`queries.within_bytes`):
    only the page comes back, and the server reads past it no more documents than the
    part that cut it asked for (a single read of ``limit`` documents would read all of
    them for a page of five large jobs). The first part asks for LIST_FIRST_READ
    documents; each next one for as many as the bytes left hold at the average size so
    far (a quarter more), at most LIST_READ_GROWTH times the last (a page of jobs of about
    one size takes one read when they are large, up to three when small)."""
    jobs: list[JobRecord] = []
    used, read = 0, LIST_FIRST_READ
    while True:
        # Once the page is full, one more document tells whether more follow.
        want = 1 if used >= max_bytes else min(read, limit - len(jobs))
        *docs, used = await run(queries.page(table, cursor, want, status, max_bytes, used))
        found = [doc_to_job(doc) for doc in docs if doc is not None]
        jobs += found
        if found:
            cursor = format_cursor(found[-1])
        if len(found) < len(docs):  # cut by bytes, and more follow
            return Page(jobs, cursor)
        if len(docs) < want:  # the end of the queue
            return Page(jobs, None)
        if len(jobs) == limit:
            return Page(jobs, cursor)
        room = (max_bytes - used) * 5 * len(jobs) // (4 * max(used, 1)) + 1
        read = min(read * LIST_READ_GROWTH, max(room, 1))


__all__ = ["LIST_FIRST_READ", "LIST_READ_GROWTH", "page", "page_within"]
