"""The ReQL of dependencies (:mod:`tqueues.stores.dependents`): the ``tqueues_edges``
table, one document per edge from a prerequisite to a job waiting for it (both as
``queue/id``), with a ``prerequisite`` index that finds a job's dependents when it ends.

The edges live in a table of their own, not in the queues' tables: an index there would
cost the server on every write of every job (see :mod:`queries`), and only the few jobs
that have dependents (``has_dependents``) ever look here."""

from __future__ import annotations

import hashlib
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.stores.rethinkdb.documents import r

EDGES_TABLE = "tqueues_edges"
#: The secondary indexes of the table: name -> index function.
EDGE_INDEXES = {"prerequisite": lambda row: row["prerequisite"]}


def edge_id(prerequisite: str, dependent: str) -> str:
    """The edge's primary key: a digest of both ends (the two names together may be longer
    than the longest key), so that a second insert of an edge is the same document."""
    return hashlib.sha256(f"{prerequisite}\n{dependent}".encode()).hexdigest()


def add(table: Any, prerequisites: list[str], dependent: str, *, durability: str) -> RqlQuery:
    """Insert the edges from each of ``prerequisites`` to ``dependent`` (one write; an
    edge stored already is replaced by itself)."""
    docs = [
        {"id": edge_id(name, dependent), "prerequisite": name, "dependent": dependent}
        for name in prerequisites
    ]
    return table.insert(r.expr(docs), conflict="replace", durability=durability)


def dependents(table: Any, prerequisite: str) -> RqlQuery:
    """The ``dependent`` of every edge from ``prerequisite`` (one index read)."""
    return table.get_all(prerequisite, index="prerequisite")["dependent"].coerce_to("array")


def drop(table: Any, prerequisite: str, *, durability: str) -> RqlQuery:
    """Delete the edges from ``prerequisite``."""
    return table.get_all(prerequisite, index="prerequisite").delete(durability=durability)


__all__ = ["EDGES_TABLE", "EDGE_INDEXES", "add", "dependents", "drop", "edge_id"]
