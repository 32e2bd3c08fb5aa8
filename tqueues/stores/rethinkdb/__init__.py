"""The RethinkDB store: one table per queue, claims by compare-and-set, one changefeed per queue.

Modules, each owning one thing:

* :mod:`~tqueues.stores.rethinkdb.documents`: jobs and queue settings as documents, ReQL
  literals, listing cursors (pure);
* :mod:`~tqueues.stores.rethinkdb.queries`: the secondary indexes of a queue table and
  every query on it (builders, no I/O);
* :mod:`~tqueues.stores.rethinkdb.pool`: connections, reconnection backoff, driver
  errors as StoreUnavailable; their answers read with orjson
  (:mod:`~tqueues.stores.rethinkdb.wire`);
* :mod:`~tqueues.stores.rethinkdb.queues`: the ``tqueues_queues`` catalog, queue creation
  and index upgrades;
* :mod:`~tqueues.stores.rethinkdb.feeds`: the changefeeds and their fan-out to the hub;
* :mod:`~tqueues.stores.rethinkdb.claims`: claims, served together per queue, won by
  compare-and-set;
* :mod:`~tqueues.stores.rethinkdb.head`: each followed queue's most urgent pending jobs
  and next due time, kept from its feed (claims and sweeps read the index less);
* :mod:`~tqueues.stores.rethinkdb.mutations`: every other change of a job, a
  compare-and-set, many to a query (:mod:`~tqueues.stores.rethinkdb.writes`), the
  started jobs this process wrote last changed without a read
  (:mod:`~tqueues.stores.rethinkdb.started`);
* :mod:`~tqueues.stores.rethinkdb.undo`: claims nobody received, released;
* :mod:`~tqueues.stores.rethinkdb.listing`: pages of a queue's jobs;
* :mod:`~tqueues.stores.rethinkdb.side_tables`: the history, the worker registry, the
  schedules, the dependencies' edges (and the keys' table of
  :mod:`~tqueues.stores.rethinkdb.keys`);
* :mod:`~tqueues.stores.rethinkdb.reaper`: the housekeeping (leases, delays, ttl,
  retention);
* :mod:`~tqueues.stores.rethinkdb.store`: :class:`RethinkDBStore`, the store boundary,
  which puts these together.

See docs/rethinkdb.rst for the layout in the database and the algorithms. The driver comes
with the ``rethinkdb`` extra (``pip install 'tqueues[rethinkdb]'``); without it, importing
this package raises an ImportError that says so.
"""

from __future__ import annotations

try:
    import rethinkdb  # noqa: F401 (every module of this package imports the driver)
except ImportError as error:
    raise ImportError(
        "the RethinkDB store needs the rethinkdb driver, which the 'rethinkdb' extra "
        "installs: pip install 'tqueues[rethinkdb]'",
        name="rethinkdb",
    ) from error

from tqueues.stores.rethinkdb.documents import (
    change_kind,
    doc_to_config,
    doc_to_job,
    job_to_doc,
    parse_cursor,
    r,
    reql_literal,
)
from tqueues.stores.rethinkdb.store import RethinkDBStore

__all__ = [
    "RethinkDBStore",
    "change_kind",
    "doc_to_config",
    "doc_to_job",
    "job_to_doc",
    "parse_cursor",
    "r",
    "reql_literal",
]
