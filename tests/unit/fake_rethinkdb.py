"""An in-memory stand-in for a RethinkDB server, at the driver's connection boundary.

It evaluates the driver's query objects (the ReQL terms the RethinkDB store builds, and
only those) against Python dicts, with the semantics the store relies on: single-document
writes are atomic, secondary indexes skip null keys and documents whose index function
fails, ``between`` is left-closed and right-open unless told otherwise, changefeeds report
every write in order, ties in an index are broken by primary key (as the server stores
index keys). It is no proof that a real server agrees: it lets the store's own
logic (claims, compare-and-set, feeds, reconnection) run end to end without one.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from rethinkdb import ast
from rethinkdb.errors import (
    ReqlCursorEmpty,
    ReqlDriverError,
    ReqlNonExistenceError,
    ReqlOpFailedError,
    ReqlRuntimeError,
)

_MIN = object()
_MAX = object()
_CLOSED = object()


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
        self.feeds: list[FakeCursor] = []

    def index_key(self, index: str, doc: dict[str, Any]) -> Any:
        if index == self.primary_key:
            return doc[self.primary_key]
        try:
            return self.indexes[index](doc)
        except (ReqlRuntimeError, KeyError, TypeError):
            return None

    def write(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        key = (new or old or {}).get(self.primary_key)
        if new is None:
            self.docs.pop(key, None)
        else:
            self.docs[key] = copy.deepcopy(new)
        kind = "add" if old is None else "remove" if new is None else "change"
        for feed in tuple(self.feeds):
            feed.items.put_nowait(
                {"type": kind, "old_val": copy.deepcopy(old), "new_val": copy.deepcopy(new)}
            )


class FakeServer:
    """Databases of tables; ``up`` False refuses connections (a restart, a network cut)."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, FakeTable]] = {}
        self.up = True
        self.connections: list[FakeConnection] = []
        self.queries = 0

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
    def __init__(self, table: FakeTable, conn: FakeConnection) -> None:
        self.items: asyncio.Queue[Any] = asyncio.Queue()
        self.table = table
        self.conn = conn

    async def next(self) -> Any:
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
        return _Evaluator(self).eval(term, {})


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

    def eval(self, term: Any, env: dict[int, Any]) -> Any:  # noqa: C901 - one case per term
        name = type(term).__name__
        args = term._args if isinstance(term, ast.RqlQuery) else []
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
        if name == "Bracket":
            value, field = self.eval(args[0], env), self.eval(args[1], env)
            if not isinstance(value, dict) or field not in value:
                raise ReqlNonExistenceError(f"No attribute `{field}` in object")
            return value[field]
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
                cursor.items.put_nowait(ReqlOpFailedError(f"Table `{db}.{table}` does not exist."))
            return {"tables_dropped": 1}
        if name == "Wait":
            self.table(args[0], env)
            return {"ready": 1}
        if name == "IndexList":
            return sorted(self.table(args[0], env).indexes)
        if name == "IndexCreate":
            table = self.table(args[0], env)
            index = self.eval(args[1], env)
            if index in table.indexes:
                raise ReqlOpFailedError(f"Index `{index}` already exists on table.")
            table.indexes[index] = self.eval(args[2], env)
            return {"created": 1}
        if name == "IndexWait":
            table = self.table(args[0], env)
            for arg in args[1:]:
                if self.eval(arg, env) not in table.indexes:
                    raise ReqlOpFailedError("Index does not exist.")
            return [{"ready": True}]
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
            return len(self.sequence(source, env))
        if name == "Changes":
            table = self.table(args[0], env)
            cursor = FakeCursor(table, self.conn)
            table.feeds.append(cursor)
            self.conn.cursors.append(cursor)
            return cursor
        if name in ("Between", "OrderBy", "Limit", "CoerceTo"):
            return self.sequence(term, env)
        raise NotImplementedError(f"the fake RethinkDB does not know {name}")

    def insert(self, term: ast.RqlQuery, env: dict[int, Any]) -> dict[str, Any]:
        table = self.table(term._args[0], env)
        value = self.eval(term._args[1], env)
        result: dict[str, Any] = {"inserted": 0, "errors": 0}
        for doc in value if isinstance(value, list) else [value]:
            key = doc[table.primary_key]
            if key in table.docs:
                result["errors"] += 1
                result.setdefault("first_error", f"Duplicate primary key `{table.primary_key}`")
                continue
            table.write(None, doc)
            result["inserted"] += 1
        return result

    def replace(self, term: ast.RqlQuery, env: dict[int, Any], *, update: bool) -> dict[str, Any]:
        selection = term._args[0]
        assert type(selection).__name__ == "Get", "only single-document writes are atomic"
        table = self.table(selection._args[0], env)
        key = self.eval(selection._args[1], env)
        old = copy.deepcopy(table.docs.get(key))
        change = self.eval(term._args[1], env)
        new = change(old) if callable(change) else change
        if update:
            if old is None:
                return {"skipped": 1, "replaced": 0, "errors": 0}
            new = {**old, **new}
        if new is None and old is None:
            return {"skipped": 1, "replaced": 0, "errors": 0}
        if new == old:
            return {"unchanged": 1, "replaced": 0, "errors": 0}
        table.write(old, new)
        if new is None:
            return {"deleted": 1, "replaced": 0, "errors": 0}
        return {"replaced": 1, "errors": 0}

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
        counts: dict[Any, int] = {}
        for doc in table.docs.values():
            key = table.index_key(index, doc)
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def sequence(self, term: ast.RqlQuery, env: dict[int, Any]) -> Any:
        name = type(term).__name__
        args = term._args
        if name == "CoerceTo":
            return list(self.sequence(args[0], env))
        if name == "Limit":
            return list(self.sequence(args[0], env))[: self.eval(args[1], env)]
        if name == "OrderBy":
            index = self.opt(term, "index")
            source = args[0]
            if type(source).__name__ == "Table":
                table = self.table(source, env)
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
        raise NotImplementedError(name)


def patch_store(monkeypatch: Any, server: FakeServer) -> None:
    """Make every RethinkDBStore connect to ``server`` instead of the network."""
    from tqueues.stores.rethinkdb.pool import Pool

    async def connect(self: Any) -> FakeConnection:
        return await server.connect()

    monkeypatch.setattr(Pool, "_connect", connect)


__all__ = ["FakeServer", "patch_store"]
