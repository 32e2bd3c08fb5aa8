"""An in-memory stand-in for a RethinkDB server, at the driver's connection boundary.

It evaluates the driver's query objects (the ReQL terms the RethinkDB store builds, and
only those) against Python dicts, with the semantics the store relies on: single-document
writes are atomic, secondary indexes skip null keys and documents whose index function
fails, ``between`` is left-closed and right-open unless told otherwise, changefeeds report
every write in order, ties in an index are broken by primary key (as the server stores
index keys). It is no proof that a real server agrees: it lets the store's own
logic (claims, compare-and-set, feeds, reconnection) run end to end without one.

Where the store could get the server wrong, the fake is as strict as RethinkDB 2.4 (each
rule names the server source or document it follows):

* a write function (``replace``/``update``) and an index function must be deterministic
  (no table reads, ``r.now()``, ``r.uuid()``, ``r.js``, ``r.http``, ``r.random``); the
  server refuses them otherwise (``non_atomic`` is not supported here);
* a replacement must keep the primary key (else the write reports an error);
* only the optional arguments the server accepts for each term, and ``durability`` only
  ``hard`` or ``soft``;
* an index key is a number, string, bool or an array of those: null, objects, and arrays
  holding null are not indexed (``datum_t::print_secondary`` and ``array_to_str_key``
  raise, and the btree code drops the row from the index);
* reading through an index the table lacks fails with the server's "Index `x` was not
  found on table `db.t`." (not "does not exist");
* a stream (``between``, ``order_by``, ``limit``, a table) that is not coerced to an array
  comes back as a cursor, not a list;
* ``changes`` adds ``type`` only with ``include_types``, refuses ``squash`` (the default,
  false, is what the store needs), reports a dropped table as "Changefeed aborted (table
  unavailable).", and reports an overflow of its queue as ``{"error": "Changefeed cache
  over array size limit, skipped N elements."}`` (:meth:`FakeTable.overflow`).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import Any

from rethinkdb import ast
from rethinkdb.ast import ReQLEncoder
from rethinkdb.errors import (
    ReqlCursorEmpty,
    ReqlDriverError,
    ReqlNonExistenceError,
    ReqlOpFailedError,
    ReqlQueryLogicError,
    ReqlRuntimeError,
    ReqlServerCompileError,
    ReqlTimeoutError,
)

_MIN = object()
_MAX = object()
_CLOSED = object()

#: Terms that make a function non-deterministic (the server's ``is_deterministic``).
_NONDETERMINISTIC = frozenset(
    {"Now", "Random", "UUID", "JavaScript", "Http", "Table", "DB", "Get", "GetAll", "Between"}
)
#: The optional arguments the server accepts on the terms the store uses.
_OPTARGS: dict[str, frozenset[str]] = {
    "Insert": frozenset({"conflict", "durability", "return_changes"}),
    "Replace": frozenset({"durability", "return_changes", "non_atomic", "ignore_write_hook"}),
    "Update": frozenset({"durability", "return_changes", "non_atomic", "ignore_write_hook"}),
    "Delete": frozenset({"durability", "return_changes", "ignore_write_hook"}),
    "Between": frozenset({"index", "left_bound", "right_bound"}),
    "GetAll": frozenset({"index"}),
    "OrderBy": frozenset({"index"}),
    "Group": frozenset({"index", "multi"}),
    "Changes": frozenset(
        {
            "squash",
            "changefeed_queue_size",
            "include_initial",
            "include_states",
            "include_offsets",
            "include_types",
        }
    ),
    "TableCreate": frozenset({"primary_key", "shards", "replicas", "primary_replica_tag"}),
    "IndexCreate": frozenset({"multi", "geo"}),
    "IndexRename": frozenset({"overwrite"}),
    "Wait": frozenset({"wait_for", "timeout"}),
    "Fold": frozenset({"emit", "final_emit"}),
}
#: Terms whose result the server streams (the driver hands back a cursor).
_STREAMS = frozenset({"Between", "OrderBy", "Limit", "Table", "Fold", "GetAll"})


def _deterministic(term: Any) -> bool:
    """Whether a function body uses only deterministic terms (as the server checks)."""
    if not isinstance(term, ast.RqlQuery):
        return True
    if type(term).__name__ in _NONDETERMINISTIC:
        return False
    parts = [*term._args, *term.optargs.values()]
    return all(_deterministic(part) for part in parts)


def _served(value: Any) -> Any:
    """``value`` as the driver decodes it from the server's JSON: integral doubles come back
    as integers (the server prints ``60.0`` as ``60``), tuples as lists."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _served(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_served(item) for item in value]
    return value


def _parse_json(text: str) -> Any:
    """``r.json``: the server parses the text as a datum, reading an object with a
    ``$reql_type$`` key as one of its own types (refused here: the store escapes such
    keys, so none reaches the server) and refusing NaN and infinities."""

    def pseudo(obj: dict[str, Any]) -> dict[str, Any]:
        if "$reql_type$" in obj:
            raise ReqlQueryLogicError(f"Unknown $reql_type$ `PTYPE<{obj['$reql_type$']}>`.")
        return obj

    def constant(name: str) -> Any:
        raise ReqlQueryLogicError(f'Failed to parse "{name}" as JSON.')

    return json.loads(text, object_hook=pseudo, parse_constant=constant)


def _indexable(key: Any) -> bool:
    """Whether the server stores ``key`` in a secondary index: a number, string or bool,
    or an array of indexable values (null and objects raise in ``print_secondary``)."""
    if isinstance(key, list):
        return all(_indexable(item) for item in key)
    return isinstance(key, bool | int | float | str)


def _sort_key(value: Any) -> tuple[Any, ...]:
    """ReQL's order: minval < arrays < booleans < null < numbers < objects < strings < maxval."""
    if value is _MIN:
        return (-1,)
    if value is _MAX:
        return (9,)
    if isinstance(value, list):
        return (0, tuple(_sort_key(item) for item in value))
    if isinstance(value, bool):
        return (1, value)
    if value is None:
        return (2,)
    if isinstance(value, int | float):
        return (3, value)
    if isinstance(value, dict):
        return (4, sorted(value))
    return (6, value)


class FakeTable:
    def __init__(self, primary_key: str) -> None:
        self.primary_key = primary_key
        self.docs: dict[Any, dict[str, Any]] = {}
        self.indexes: dict[str, Callable[[Any], Any]] = {}
        self.sources: dict[str, Any] = {}  #: each index's function, as the driver sent it
        self.feeds: list[FakeCursor] = []

    def index_key(self, index: str, doc: dict[str, Any]) -> Any:
        """The document's key under ``index``; None when the index leaves it out (its
        function failed, or returned something the server cannot index)."""
        if index == self.primary_key:
            return doc[self.primary_key]
        try:
            key = self.indexes[index](doc)
        except (ReqlRuntimeError, KeyError, TypeError):
            return None
        return key if _indexable(key) else None

    def check_index(self, index: str, name: str) -> None:
        """Raise as the server does when a read names an index the table lacks."""
        if index != self.primary_key and index not in self.indexes:
            raise ReqlOpFailedError(f"Index `{index}` was not found on table `{name}`.")

    def overflow(self, skipped: int) -> None:
        """Tell every feed of the table that its queue overflowed (the server drops the
        oldest changes and sends this item instead)."""
        for feed in tuple(self.feeds):
            feed.items.put_nowait(
                {"error": f"Changefeed cache over array size limit, skipped {skipped} elements."}
            )

    def write(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        key = (new or old or {}).get(self.primary_key)
        if new is None:
            self.docs.pop(key, None)
        else:
            self.docs[key] = copy.deepcopy(new)
        kind = "add" if old is None else "remove" if new is None else "change"
        for feed in tuple(self.feeds):
            change = {"old_val": _served(old), "new_val": _served(new)}
            if feed.include_types:
                change["type"] = kind
            feed.items.put_nowait(change)


class FakeServer:
    """Databases of tables; ``up`` False refuses connections (a restart, a network cut)."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, FakeTable]] = {}
        self.up = True
        self.connections: list[FakeConnection] = []
        self.queries = 0
        #: Fault injection: each is called with every query; an exception it returns is
        #: raised instead of answering (as the server's errors reach the driver).
        self.faults: list[Callable[[ast.RqlQuery], Exception | None]] = []

    async def connect(self) -> FakeConnection:
        if not self.up:
            raise ReqlDriverError("Could not connect to fake:28015. Error: connection refused")
        conn = FakeConnection(self)
        self.connections.append(conn)
        return conn

    def crash(self) -> None:
        """Drop every connection (and the feeds on them) and refuse new ones."""
        self.up = False
        for conn in self.connections:
            conn.broken("the server went away")
        self.connections.clear()


class FakeCursor:
    """A changefeed cursor (as the asyncio driver's: ``await next(wait=True)``, ``await
    close()``; ``next(wait=False)`` raises ReqlTimeoutError when no change is there)."""

    def __init__(self, table: FakeTable, conn: FakeConnection, *, include_types: bool) -> None:
        self.items: asyncio.Queue[Any] = asyncio.Queue()
        self.table = table
        self.conn = conn
        self.include_types = include_types

    async def next(self, wait: bool = True) -> Any:
        if not wait and self.items.empty():
            raise ReqlTimeoutError()
        item = await self.items.get()
        if item is _CLOSED:
            self.items.put_nowait(_CLOSED)
            raise ReqlCursorEmpty()
        if isinstance(item, Exception):
            self.items.put_nowait(item)
            raise item
        return item

    async def close(self) -> None:
        if self in self.table.feeds:
            self.table.feeds.remove(self)
        self.items.put_nowait(_CLOSED)


class FakeSequence:
    """The cursor over a finite stream (a selection not coerced to an array): the driver
    returns one for SUCCESS_SEQUENCE/SUCCESS_PARTIAL answers, so code that expects a list
    fails here as it would on a server."""

    def __init__(self, items: list[Any]) -> None:
        self._items = list(items)

    def __aiter__(self) -> FakeSequence:
        return self

    async def __anext__(self) -> Any:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)

    async def next(self) -> Any:
        if not self._items:
            raise ReqlCursorEmpty()
        return self._items.pop(0)

    async def close(self) -> None:
        self._items.clear()


class FakeConnection:
    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self._open = True
        self.cursors: list[FakeCursor] = []

    def is_open(self) -> bool:
        return self._open

    def broken(self, why: str) -> None:
        self._open = False
        for cursor in self.cursors:
            if cursor in cursor.table.feeds:
                cursor.table.feeds.remove(cursor)
            cursor.items.put_nowait(ReqlRuntimeError(f"Connection is closed ({why})."))

    async def close(self, noreply_wait: bool = True) -> None:
        self.broken("closed")

    def _start(self, term: ast.RqlQuery, **options: Any) -> Any:
        if not self._open:
            raise ReqlDriverError("Connection is closed.")
        return self._answer(term)

    async def _answer(self, term: ast.RqlQuery) -> Any:
        await asyncio.sleep(0)  # let other queries interleave, as on a real connection
        if not self._open:
            raise ReqlDriverError("Connection is closed.")
        self.server.queries += 1
        # As the driver does before sending: NaN, infinities and non-JSON values fail here.
        ReQLEncoder().encode(term)
        for fault in self.server.faults:
            error = fault(term)
            if error is not None:
                raise error
        evaluator = _Evaluator(self)
        if type(term).__name__ in _STREAMS:
            return FakeSequence(_served(evaluator.sequence(term, {})))
        return _served(evaluator.eval(term, {}))


class _Evaluator:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.server = conn.server

    # -- helpers --------------------------------------------------------------------------

    def opt(self, term: ast.RqlQuery, name: str, default: Any = None) -> Any:
        value = term.optargs.get(name)
        return default if value is None else self.eval(value, {})

    def db(self, name: str) -> dict[str, FakeTable]:
        if name not in self.server.dbs:
            raise ReqlOpFailedError(f"Database `{name}` does not exist.")
        return self.server.dbs[name]

    def table(self, term: ast.RqlQuery, env: dict[int, Any]) -> FakeTable:
        db_name, name = self.eval(term, env)
        tables = self.db(db_name)
        if name not in tables:
            raise ReqlOpFailedError(f"Table `{db_name}.{name}` does not exist.")
        return tables[name]

    # -- terms ----------------------------------------------------------------------------

    def check_optargs(self, term: ast.RqlQuery) -> None:
        """Refuse optional arguments the server does not accept, and bad durabilities."""
        name = type(term).__name__
        allowed = _OPTARGS.get(name)
        if allowed is None:
            return
        for key in term.optargs:
            if key not in allowed:
                raise ReqlServerCompileError(f"Unrecognized optional argument `{key}`.")
        durability = self.opt(term, "durability")
        if durability is not None and durability not in ("hard", "soft"):
            raise ReqlQueryLogicError(
                f'Durability option `{durability}` unrecognized (options are "hard" and "soft").'
            )

    def eval(self, term: Any, env: dict[int, Any]) -> Any:  # noqa: C901 - one case per term
        name = type(term).__name__
        args = term._args if isinstance(term, ast.RqlQuery) else []
        if isinstance(term, ast.RqlQuery) and term.optargs:
            self.check_optargs(term)
        if name == "Datum":
            return term.data
        if name == "RqlConstant":
            return _MIN if term.statement == "minval" else _MAX
        if name == "MakeArray":
            return [self.eval(arg, env) for arg in args]
        if name == "MakeObj":
            return {key: self.eval(value, env) for key, value in term.optargs.items()}
        if name == "Var":
            return env[args[0].data]
        if name == "Json":
            return _parse_json(self.eval(args[0], env))
        if name == "FunCall":  # r.do: the function first, then its arguments
            function = self.eval(args[0], env)
            return function(*(self.eval(arg, env) for arg in args[1:]))
        if name == "Func":
            ids = [arg.data for arg in args[0]._args]
            body = args[1]
            return lambda *values: self.eval(body, {**env, **dict(zip(ids, values, strict=True))})
        if name == "DB":
            return self.eval(args[0], env)
        if name == "Table":
            return (self.eval(args[0], env), self.eval(args[1], env))
        if name == "Eq":
            return self.eval(args[0], env) == self.eval(args[1], env)
        if name == "And":
            return all(self.eval(arg, env) for arg in args)
        if name == "Or":
            return any(self.eval(arg, env) for arg in args)
        if name == "Ne":
            return self.eval(args[0], env) != self.eval(args[1], env)
        if name == "Lt":  # numbers only (what the store compares)
            return self.eval(args[0], env) < self.eval(args[1], env)
        if name == "Add":  # numbers only
            return sum(self.eval(arg, env) for arg in args)
        if name == "ToJsonString":  # the server's compact JSON (key order aside)
            return json.dumps(self.eval(args[0], env), ensure_ascii=False, separators=(",", ":"))
        if name == "Bracket":
            value, field = self.eval(args[0], env), self.eval(args[1], env)
            if not isinstance(value, dict) or field not in value:
                raise ReqlNonExistenceError(f"No attribute `{field}` in object")
            return value[field]
        if name == "Merge":  # objects only (what the store merges into write answers)
            merged = dict(self.eval(args[0], env))
            for arg in args[1:]:
                merged.update(self.eval(arg, env))
            return merged
        if name == "HasFields":  # an object and field names (what the store asks of a plan)
            value = self.eval(args[0], env)
            return all(self.eval(arg, env) in value for arg in args[1:])
        if name == "Branch":
            if self.eval(args[0], env) not in (False, None):
                return self.eval(args[1], env)
            return self.eval(args[2], env)
        if name == "DbList":
            return sorted(self.server.dbs)
        if name == "DbCreate":
            db = self.eval(args[0], env)
            if db in self.server.dbs:
                raise ReqlOpFailedError(f"Database `{db}` already exists.")
            self.server.dbs[db] = {}
            return {"dbs_created": 1}
        if name == "DbDrop":
            self.db(self.eval(args[0], env))
            del self.server.dbs[self.eval(args[0], env)]
            return {"dbs_dropped": 1}
        if name == "TableList":
            return sorted(self.db(self.eval(args[0], env)))
        if name == "TableCreate":
            db, table = self.eval(args[0], env), self.eval(args[1], env)
            tables = self.db(db)
            if table in tables:
                raise ReqlOpFailedError(f"Table `{db}.{table}` already exists.")
            tables[table] = FakeTable(self.opt(term, "primary_key", "id"))
            return {"tables_created": 1}
        if name == "TableDrop":
            db, table = self.eval(args[0], env), self.eval(args[1], env)
            tables = self.db(db)
            if table not in tables:
                raise ReqlOpFailedError(f"Table `{db}.{table}` does not exist.")
            for cursor in tables.pop(table).feeds:
                cursor.items.put_nowait(
                    ReqlOpFailedError("Changefeed aborted (table unavailable).")
                )
            return {"tables_dropped": 1}
        if name == "Wait":
            self.table(args[0], env)
            return {"ready": 1}
        if name == "IndexList":
            return sorted(self.table(args[0], env).indexes)
        if name == "IndexCreate":
            table = self.table(args[0], env)
            index = self.eval(args[1], env)
            db_name, table_name = self.eval(args[0], env)
            if index in table.indexes:
                raise ReqlOpFailedError(
                    f"Index `{index}` already exists on table `{db_name}.{table_name}`."
                )
            if not _deterministic(args[2]):
                raise ReqlQueryLogicError(
                    "Could not prove function deterministic.  "
                    "Index functions must be deterministic."
                )
            table.indexes[index] = self.eval(args[2], env)
            table.sources[index] = args[2]
            return {"created": 1}
        if name == "IndexDrop":
            table = self.table(args[0], env)
            index = self.eval(args[1], env)
            db_name, table_name = self.eval(args[0], env)
            if index not in table.indexes:
                raise ReqlOpFailedError(
                    f"Index `{index}` does not exist on table `{db_name}.{table_name}`."
                )
            del table.indexes[index]
            return {"dropped": 1}
        if name == "IndexStatus":  # "query": the function's text, as the server keeps it
            table = self.table(args[0], env)
            names = [self.eval(arg, env) for arg in args[1:]] or sorted(table.indexes)
            return [
                {"index": index, "ready": True, "query": str(table.sources.get(index, ""))}
                for index in names
            ]
        if name == "IndexRename":
            table = self.table(args[0], env)
            old, new = self.eval(args[1], env), self.eval(args[2], env)
            if old not in table.indexes:
                raise ReqlOpFailedError(f"Index `{old}` does not exist.")
            if new in table.indexes and not self.opt(term, "overwrite"):
                raise ReqlOpFailedError(f"Index `{new}` already exists.")
            table.indexes[new] = table.indexes.pop(old)
            table.sources[new] = table.sources.pop(old, "")
            return {"renamed": 1}
        if name == "IndexWait":
            table = self.table(args[0], env)
            db_name, table_name = self.eval(args[0], env)
            for arg in args[1:]:
                index = self.eval(arg, env)
                if index not in table.indexes:
                    raise ReqlOpFailedError(
                        f"Index `{index}` was not found on table `{db_name}.{table_name}`."
                    )
            return [{"index": index, "ready": True} for index in table.indexes]
        if name == "Get":
            table = self.table(args[0], env)
            return copy.deepcopy(table.docs.get(self.eval(args[1], env)))
        if name == "Insert":
            return self.insert(term, env)
        if name in ("Replace", "Update"):
            return self.replace(term, env, update=name == "Update")
        if name == "Delete":
            return self.delete(term, env)
        if name == "Count":
            source = args[0]
            if type(source).__name__ == "Group":
                return self.group_count(source, env)
            if type(source).__name__ == "Table":
                return len(self.table(source, env).docs)
            if type(source).__name__ == "ToJsonString":  # a string's characters
                return len(self.eval(source, env))
            return len(self.sequence(source, env))
        if name == "Changes":
            table = self.table(args[0], env)
            if self.opt(term, "squash") not in (None, False):
                raise NotImplementedError("the fake RethinkDB does not squash changes")
            cursor = FakeCursor(
                table, self.conn, include_types=bool(self.opt(term, "include_types"))
            )
            table.feeds.append(cursor)
            self.conn.cursors.append(cursor)
            return cursor
        if name in ("Between", "OrderBy", "Limit", "CoerceTo", "GetAll"):
            return self.sequence(term, env)
        raise NotImplementedError(f"the fake RethinkDB does not know {name}")

    def insert(self, term: ast.RqlQuery, env: dict[int, Any]) -> dict[str, Any]:
        table = self.table(term._args[0], env)
        value = self.eval(term._args[1], env)
        result: dict[str, Any] = {"inserted": 0, "errors": 0}
        conflict = self.opt(term, "conflict", "error")
        for doc in value if isinstance(value, list) else [value]:
            key = doc[table.primary_key]
            if key in table.docs and callable(conflict):  # a function: its document replaces
                old = copy.deepcopy(table.docs[key])
                table.write(old, conflict(key, old, doc))
                result["replaced"] = result.get("replaced", 0) + 1
                continue
            if key in table.docs:
                result["errors"] += 1
                result.setdefault("first_error", f"Duplicate primary key `{table.primary_key}`")
                continue
            table.write(None, doc)
            result["inserted"] += 1
        return result

    def replace(self, term: ast.RqlQuery, env: dict[int, Any], *, update: bool) -> dict[str, Any]:
        """``replace``/``update`` of one document (``get``) or of each document of a
        ``get_all`` (each document's write atomic on its own, as on the server). With
        ``return_changes`` (true: not ``"always"``) the result lists the documents that
        changed, as the server does; unchanged ones are left out."""
        selection = term._args[0]
        kind = type(selection).__name__
        assert kind in ("Get", "GetAll"), "only writes of documents named by key are atomic"
        if not self.opt(term, "non_atomic") and not _deterministic(term._args[1]):
            raise ReqlQueryLogicError(
                "Could not prove argument deterministic.  "
                "Maybe you want to use the non_atomic flag?"
            )
        return_changes = self.opt(term, "return_changes")
        if return_changes not in (None, False, True):
            raise NotImplementedError("the fake RethinkDB returns changes true or false only")
        table = self.table(selection._args[0], env)
        if kind == "Get":
            keys = [self.eval(selection._args[1], env)]
        else:
            if "index" in selection.optargs:
                raise NotImplementedError("the fake RethinkDB writes get_all by primary key only")
            found = [self.eval(arg, env) for arg in selection._args[1:]]
            keys = [key for key in found if key in table.docs]  # absent keys: no document
        total: dict[str, Any] = {
            "replaced": 0, "unchanged": 0, "skipped": 0, "deleted": 0, "errors": 0
        }  # fmt: skip
        changes: list[dict[str, Any]] = []
        for key in keys:
            one, change = self.replace_one(term, env, table, key, update=update)
            for field, count in one.items():
                if field == "first_error":
                    total.setdefault("first_error", count)
                else:
                    total[field] += count
            if change is not None:
                changes.append(change)
        if return_changes:
            total["changes"] = changes
        return total

    def replace_one(
        self,
        term: ast.RqlQuery,
        env: dict[int, Any],
        table: FakeTable,
        key: Any,
        *,
        update: bool,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """One document's atomic write: its counts, and its change (None if unchanged)."""
        old = copy.deepcopy(table.docs.get(key))
        change = self.eval(term._args[1], env)
        new = change(old) if callable(change) else change
        if update:
            if old is None:
                return {"skipped": 1}, None
            new = {**old, **new}
        if new is None and old is None:
            return {"skipped": 1}, None
        pk = table.primary_key
        if new is not None and old is not None and new.get(pk) != old[pk]:
            return {"errors": 1, "first_error": f"Primary key `{pk}` cannot be changed."}, None
        if new is not None and pk not in new:
            return {
                "errors": 1,
                "first_error": f"Inserted object must have primary key `{pk}`.",
            }, None
        if new == old:
            return {"unchanged": 1}, None
        table.write(old, new)
        changed = {"old_val": _served(old), "new_val": _served(new)}
        if new is None:
            return {"deleted": 1}, changed
        return {"replaced": 1}, changed

    def delete(self, term: ast.RqlQuery, env: dict[int, Any]) -> dict[str, Any]:
        """Delete one document (``get``) or a selection, each document on its own."""
        selection = term._args[0]
        source = selection
        while type(source).__name__ != "Table":
            source = source._args[0]
        table = self.table(source, env)
        if type(selection).__name__ == "Get":
            key = self.eval(selection._args[1], env)
            docs = [table.docs[key]] if key in table.docs else []
        elif type(selection).__name__ == "Table":
            docs = list(table.docs.values())
        else:
            docs = self.sequence(selection, env)
        result: dict[str, Any] = {"deleted": 0, "skipped": 0, "errors": 0}
        changes = []
        for doc in docs:
            old = table.docs.get(doc[table.primary_key])
            if old is None:
                result["skipped"] += 1
                continue
            old = copy.deepcopy(old)
            table.write(old, None)
            result["deleted"] += 1
            changes.append({"old_val": old, "new_val": None})
        if type(selection).__name__ == "Get" and not docs:
            result["skipped"] = 1
        if self.opt(term, "return_changes"):
            result["changes"] = changes
        return result

    def group_count(self, term: ast.RqlQuery, env: dict[int, Any]) -> dict[Any, int]:
        """``table.group(index=...).count()``: grouped data, as the driver returns it."""
        table = self.table(term._args[0], env)
        index = self.opt(term, "index")
        table.check_index(index, ".".join(self.eval(term._args[0], env)))
        counts: dict[Any, int] = {}
        for doc in table.docs.values():
            key = table.index_key(index, doc)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def fold(self, term: ast.RqlQuery, env: dict[int, Any]) -> list[Any]:
        """``fold`` with ``emit`` (and optionally ``final_emit``): the stream of what they
        emit, folding in order."""
        if "emit" not in term.optargs:
            raise NotImplementedError("the fake RethinkDB folds with emit only")
        source, base, step = term._args
        acc, reduce, emit = self.eval(base, env), self.eval(step, env), self.opt(term, "emit")
        emitted = []
        for doc in self.sequence(source, env):
            new = reduce(acc, doc)
            emitted += emit(acc, doc, new)
            acc = new
        if "final_emit" in term.optargs:
            emitted += self.opt(term, "final_emit")(acc)
        return emitted

    def sequence(self, term: ast.RqlQuery, env: dict[int, Any]) -> Any:  # noqa: C901 - per term
        name = type(term).__name__
        args = term._args
        if term.optargs:
            self.check_optargs(term)
        if name == "CoerceTo":
            return list(self.sequence(args[0], env))
        if name == "Limit":
            return list(self.sequence(args[0], env))[: self.eval(args[1], env)]
        if name == "Pluck":
            fields = [self.eval(arg, env) for arg in args[1:]]
            return [{k: doc[k] for k in fields if k in doc} for doc in self.sequence(args[0], env)]
        if name == "Fold":
            return self.fold(term, env)
        if name == "OrderBy":
            index = self.opt(term, "index")
            source = args[0]
            if type(source).__name__ == "Table":
                table = self.table(source, env)
                table.check_index(index, ".".join(self.eval(source, env)))
                docs = [d for d in table.docs.values() if table.index_key(index, d) is not None]
            else:
                assert self.opt(source, "index") == index, "order_by after between: same index"
                table = self.table(source._args[0], env)
                docs = self.sequence(source, env)
            pk = table.primary_key
            return sorted(
                docs,
                key=lambda d: (_sort_key(table.index_key(index, d)), _sort_key(d[pk])),
            )
        if name == "Between":
            table = self.table(args[0], env)
            index = self.opt(term, "index", table.primary_key)
            table.check_index(index, ".".join(self.eval(args[0], env)))
            low, high = _sort_key(self.eval(args[1], env)), _sort_key(self.eval(args[2], env))
            left_open = self.opt(term, "left_bound", "closed") == "open"
            right_closed = self.opt(term, "right_bound", "open") == "closed"
            found = []
            for doc in table.docs.values():
                value = table.index_key(index, doc)
                if value is None:
                    continue
                key = _sort_key(value)
                if (key > low if left_open else key >= low) and (
                    key <= high if right_closed else key < high
                ):
                    found.append(copy.deepcopy(doc))
            return found
        if name == "Table":
            return [copy.deepcopy(d) for d in self.table(term, env).docs.values()]
        if name == "GetAll":
            return self.get_all(term, env)
        raise NotImplementedError(name)

    def get_all(self, term: ast.RqlQuery, env: dict[int, Any]) -> list[Any]:
        """``get_all`` by primary key: the documents of the keys that exist."""
        if "index" in term.optargs:
            raise NotImplementedError("the fake RethinkDB reads get_all by primary key only")
        table = self.table(term._args[0], env)
        keys = [self.eval(arg, env) for arg in term._args[1:]]
        return [copy.deepcopy(table.docs[key]) for key in keys if key in table.docs]


def patch_store(monkeypatch: Any, server: FakeServer) -> None:
    """Make every RethinkDBStore connect to ``server`` instead of the network."""
    from tqueues.stores.rethinkdb.pool import Pool

    async def connect(self: Any) -> FakeConnection:
        return await server.connect()

    monkeypatch.setattr(Pool, "_connect", connect)


__all__ = ["FakeServer", "patch_store"]
