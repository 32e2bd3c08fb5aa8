"""The queue catalog: the ``tqueues_queues`` table, the in-memory cache of queue settings,
and the creation (and upgrade) of each queue's table and secondary indexes.

A queue's document holds every :class:`~tqueues.jobs.QueueConfig` field and ``ready``,
which turns true once the queue's table and indexes exist. The document doubles as the
lock that serialises the creation of the table across dispatchers, since RethinkDB's
``table_create`` is not serialisable across a cluster (rethinkdb/rethinkdb#5900, #4898).

The database and the catalog table have no such lock (nothing exists yet to lock on):
dispatchers started at the same instant on an empty database may make two of either.
:meth:`Catalog.open` looks for such twins in the system tables (``db_config``,
``table_config``) and drops all but the one with the smallest id, which every dispatcher
picks alike, then opens again.

Tables are created with ``settings.replicas`` replicas and ``settings.write_acks``;
:func:`reconfigure` applies new values to every table of a database.

The cache is refreshed from the server by every :meth:`Catalog.list` (the reaper calls it
each round), so a change of settings made through another dispatcher is seen within a
reap interval; a cache miss always reads the server. A queue's pause state is seen
sooner: :meth:`Catalog.follow` reads the catalog's changefeed, so another dispatcher's
pause or resume reaches this one's cache (and :attr:`Catalog.on_pause`) in milliseconds;
while that feed is down (it is reopened with backoff, and the catalog read again when it
is), the reaper's read is the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from rethinkdb.ast import RqlQuery
from rethinkdb.errors import ReqlError

from tqueues.errors import QueueNotFound, StoreUnavailable, ValidationError
from tqueues.jobs import QueueConfig
from tqueues.retry import Backoff
from tqueues.settings import RethinkDBSettings
from tqueues.stores.rethinkdb.documents import config_to_doc, doc_to_config, r, reql_literal
from tqueues.stores.rethinkdb.edges import EDGE_INDEXES, EDGES_TABLE
from tqueues.stores.rethinkdb.history import HISTORY_TABLE
from tqueues.stores.rethinkdb.keys import KEYS_TABLE
from tqueues.stores.rethinkdb.pool import (
    Ambiguous,
    Exists,
    Missing,
    MissingIndex,
    Pool,
    first_error,
    message,
)
from tqueues.stores.rethinkdb.queries import INDEX_MARKS, INDEXES, OBSOLETE_INDEXES
from tqueues.stores.rethinkdb.schedules import SCHEDULES_TABLE
from tqueues.stores.rethinkdb.workers import WORKER_INDEXES, WORKERS_TABLE

log = logging.getLogger("tqueues.stores.rethinkdb")

QUEUES_TABLE = "tqueues_queues"
#: The tables beside the catalog's own (each made at open, if missing).
CATALOG_TABLES = (HISTORY_TABLE, WORKERS_TABLE, SCHEDULES_TABLE, EDGES_TABLE, KEYS_TABLE)
ADMIN_TIMEOUT = 60.0  #: seconds for table and index creation (slow on a cluster).
#: seconds the queue list comes from the cache before it is read again (a safety net: the
#: catalog's feed keeps the cache up to date).
LIST_REFRESH = 30.0
SYSTEM = r.db("rethinkdb")  #: the server's system tables (``db_config``, ``table_config``).


async def create_table(pool: Pool, settings: RethinkDBSettings, name: str, **options: Any) -> None:
    """Create the table ``name`` of ``settings.db`` with ``settings.replicas`` replicas
    (one shard) and ``settings.write_acks``, and wait until it accepts writes; one that
    exists already is left as it is. Raises StoreUnavailable (too few servers for the
    replicas, among others)."""
    timeout = max(ADMIN_TIMEOUT, settings.timeout)
    table = r.db(settings.db).table(name)
    try:
        await pool.run(
            r.db(settings.db).table_create(name, replicas=settings.replicas, **options),
            timeout=timeout,
        )
    except Exists:
        return
    if settings.write_acks != "majority":  # RethinkDB's default
        await pool.run(table.config().update({"write_acks": settings.write_acks}), timeout=timeout)
    await pool.run(table.wait(wait_for="ready_for_writes"), timeout=timeout)


async def reconfigure(
    pool: Pool,
    db: str,
    *,
    replicas: int,
    write_acks: str,
    backfill: float = 0.0,
    timeout: float = ADMIN_TIMEOUT,
) -> list[str]:
    """Give every table of the database ``db`` (the catalog and each queue's) one shard,
    ``replicas`` replicas and ``write_acks`` ("majority" or "single"), and wait until each
    accepts writes; then, when ``backfill`` > 0, up to ``backfill`` seconds until every
    replica of every table holds a full copy (new replicas copy the data in the
    background: until then a table survives no more failures than before). The names of
    the tables, in order. Raises StoreUnavailable (too few servers for the replicas, a
    missing database: Missing; :class:`BackfillUnfinished` when the copies are not done
    within ``backfill`` seconds: the new settings are in force all the same)."""
    tables = sorted(await pool.run(r.db(db).table_list()))
    for name in tables:
        table = r.db(db).table(name)
        await pool.run(table.reconfigure(shards=1, replicas=replicas), timeout=timeout)
        await pool.run(table.config().update({"write_acks": write_acks}), timeout=timeout)
    for name in tables:
        await pool.run(r.db(db).table(name).wait(wait_for="ready_for_writes"), timeout=timeout)
    if backfill > 0:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + backfill
        for name in tables:
            left = max(1, math.ceil(deadline - loop.time()))  # the server takes whole seconds
            ready = r.db(db).table(name).wait(wait_for="all_replicas_ready", timeout=left)
            try:
                await pool.run(ready, timeout=left + timeout)
            except StoreUnavailable as exc:
                if "Timed out" not in exc.message:
                    raise
                raise BackfillUnfinished(
                    f"{db}.{name} has {replicas} replica(s) and write_acks {write_acks}, but "
                    f"not every replica held a full copy within {backfill:g}s; RethinkDB goes "
                    "on copying in the background: run the command again to wait again, or "
                    "watch rethinkdb.table_status"
                ) from exc
    return tables


class BackfillUnfinished(StoreUnavailable):
    """The new replicas did not all hold a full copy of their table in time (see
    :func:`reconfigure`); the settings were applied."""


async def remove_twins(pool: Pool, db: str) -> bool:
    """Drop the extra databases named ``db``, then the extra ``tqueues_queues``,
    ``tqueues_history``, ``tqueues_workers``, ``tqueues_schedules``, ``tqueues_edges``
    and ``tqueues_keys`` tables in it, keeping of each name the one with the smallest id
    (every dispatcher keeps the same one). True if any was dropped. Twins come from
    creations at the same instant through different servers (rethinkdb/rethinkdb#5900,
    #4898); each is as new as the other, so the one dropped holds at most the catalog
    table."""
    dropped = False
    twins = [
        ("db_config", {"name": db}),
        ("table_config", {"db": db, "name": QUEUES_TABLE}),
        ("table_config", {"db": db, "name": HISTORY_TABLE}),
        ("table_config", {"db": db, "name": WORKERS_TABLE}),
        ("table_config", {"db": db, "name": SCHEDULES_TABLE}),
        ("table_config", {"db": db, "name": EDGES_TABLE}),
        ("table_config", {"db": db, "name": KEYS_TABLE}),
    ]
    for table, match in twins:
        try:
            rows = await pool.run(SYSTEM.table(table).coerce_to("array"))
        except Missing:  # a server without system tables (a stand-in for tests): no twins
            return dropped
        ids = sorted(
            row["id"] for row in rows if all(row.get(key) == value for key, value in match.items())
        )
        if len(ids) > 1:
            log.warning(
                "%s %r was created %d times at once; keeping %s, dropping %s",
                "database" if table == "db_config" else "table",
                match["name"],
                len(ids),
                ids[0],
                ", ".join(ids[1:]),
                extra={"action": "twins_dropped"},
            )
            await pool.run(
                SYSTEM.table(table).get_all(*ids[1:]).delete(),
                timeout=ADMIN_TIMEOUT,
            )
            dropped = True
    return dropped


class Catalog:
    """The queues of one database, as one dispatcher process sees them."""

    def __init__(self, pool: Pool, settings: RethinkDBSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.db = r.db(settings.db)
        self.queues = self.db.table(QUEUES_TABLE)
        self.configs: dict[str, QueueConfig] = {}  #: the cache, by name.
        #: the cache holds every ready queue: the catalog's feed is up and the catalog was
        #: read since it opened (see :meth:`listed`)
        self.complete = False
        self.reads = 0  #: reads of the whole catalog so far (:meth:`list`)
        self._read_at = 0.0  #: monotonic time of the last one
        #: told the settings of a queue whose pause state another dispatcher changed (as
        #: a read of its document finds it: see :meth:`cache`)
        self.on_pause: Callable[[QueueConfig], object] | None = None
        self._unbuilt: set[str] = set()  #: queues recorded here whose table is not built yet.

    async def admin(self, query: RqlQuery) -> Any:
        """Run a schema query, with a longer timeout; "already exists" is success (None)."""
        try:
            return await self.pool.run(query, timeout=max(ADMIN_TIMEOUT, self.settings.timeout))
        except Exists:
            return None

    async def open(self) -> None:
        """Create the database and ``tqueues_queues`` if missing, load every ready queue and
        give the tables an older version created the indexes they lack.

        A database or table just created may not be found at once by the next query (the
        server's metadata lags a ``db_create``, on a cluster above all): that is tried
        again, with backoff, for up to the admin timeout (60 s). So is a database or
        catalog table that turns out to exist twice (another dispatcher created it at the
        same instant through another server): the extra ones are dropped first (see
        :func:`remove_twins`), and so is an index of a catalog table just created that is
        not found yet (the table existed twice for a moment). Raises StoreUnavailable.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(ADMIN_TIMEOUT, self.settings.timeout)
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            try:
                return await self._open()
            except (Missing, Ambiguous, _Twins, MissingIndex) as exc:
                delay = backoff.next()
                if loop.time() + delay > give_up:
                    raise
                log.info("opening the catalog: %s; trying again", exc.message)
                await backoff.sleep(delay)

    async def _open(self) -> None:
        db = self.settings.db
        created = False
        if db not in await self.pool.run(r.db_list()):
            created = await self.admin(r.db_create(db)) is not None
        if await self._remove_twins():
            raise _Twins(f"database {db!r} existed twice")
        tables = await self.pool.run(self.db.table_list())
        missing = [name for name in (QUEUES_TABLE, *CATALOG_TABLES) if name not in tables]
        if missing:
            # at once: the server makes several tables in about the time of one
            await asyncio.gather(*(
                create_table(self.pool, self.settings, name,
                             **({"primary_key": "name"} if name == QUEUES_TABLE else {}))
                for name in missing
            ))  # fmt: skip
            created = True
        await self.admin(self.queues.wait(wait_for="ready_for_writes"))
        await asyncio.gather(
            self._ensure_indexes(WORKERS_TABLE, WORKER_INDEXES),
            self._ensure_indexes(EDGES_TABLE, EDGE_INDEXES),
        )
        # Twins made by another dispatcher at the same instant are seen by now (the
        # server's metadata spreads over the cluster within the round trips above).
        if created and await self._remove_twins():
            raise _Twins(f"database {db!r} or its {QUEUES_TABLE} existed twice")
        configs = await self.list()
        await asyncio.gather(*(self.upgrade(config.name) for config in configs))

    async def _ensure_indexes(self, name: str, indexes: dict[str, Any]) -> None:
        """Create the indexes a catalog-level table (the registry's, the edges') lacks (a
        table of an earlier version, or one just created) and wait for them."""
        table = self.db.table(name)
        existing = set(await self.pool.run(table.index_list()))
        for index, function in indexes.items():
            if index not in existing:
                await self.admin(table.index_create(index, function))
        await self.admin(table.index_wait(*indexes))

    async def _remove_twins(self) -> bool:
        """:func:`remove_twins`, or False (with a warning) when the user may not read the
        system tables."""
        try:
            return await remove_twins(self.pool, self.settings.db)
        except Ambiguous:
            raise
        except StoreUnavailable as exc:
            if "permission" not in exc.message.lower():
                raise
            log.warning("cannot look for twin databases: %s", exc.message)
            return False

    async def upgrade(self, name: str) -> None:
        """Create the indexes the queue's table lacks and wait for them; a table that is
        gone, or indexes still building after the admin timeout, are logged, not raised
        (reads through an unready index fail with StoreUnavailable until it is built)."""
        try:
            await self.ensure_indexes(name)
        except Missing:
            log.warning("queue %r is recorded but its table does not exist", name)
        except StoreUnavailable as exc:
            log.warning("indexes of queue %r are not ready: %s", name, exc.message)

    async def ensure_indexes(self, name: str) -> None:
        """``index_list``, ``index_create`` for each missing index, ``index_wait`` for all;
        then ``index_drop`` for each index of an earlier version (OBSOLETE_INDEXES), once
        the new ones are ready: each costs every write. A dispatcher of that version still
        running on the database answers 503 to the reads that needed them until it is
        upgraded too (nothing is lost: its workers retry or move on)."""
        table = self.db.table(name)
        existing = set(await self.pool.run(table.index_list()))
        missing = [index for index in INDEXES if index not in existing]
        for index in missing:
            await self.admin(table.index_create(index, INDEXES[index]))
        if missing:
            log.info("queue %r: created indexes %s", name, ", ".join(missing))
        await self.admin(table.index_wait(*INDEXES))
        await self._rebuild_changed(name, table)
        obsolete = [index for index in OBSOLETE_INDEXES if index in existing]
        for index in obsolete:
            try:
                await self.admin(table.index_drop(index))
            except StoreUnavailable as exc:  # another dispatcher dropped it first
                if "does not exist" not in exc.message:
                    raise
        if obsolete:
            log.info("queue %r: dropped indexes of an earlier version: %s", name, obsolete)

    async def _rebuild_changed(self, name: str, table: Any) -> None:
        """Rebuild each index whose function changed since the table was made (see
        INDEX_MARKS): the new function is built beside it as ``<index>_next``, then renamed
        over it (``index_rename`` with ``overwrite``, one atomic swap: reads never miss
        it). Several dispatchers may do it at once: whoever renames first wins, the others'
        "already exists" and "does not exist" are the work done."""
        statuses = await self.pool.run(table.index_status(*INDEX_MARKS))
        for status in statuses:
            index = status["index"]
            if INDEX_MARKS[index] in str(status.get("query", "")):
                continue
            building = f"{index}_next"
            try:
                await self.admin(table.index_create(building, INDEXES[index]))
                await self.admin(table.index_wait(building))
                await self.admin(table.index_rename(building, index, overwrite=True))
                await self.admin(table.index_wait(index))  # (the rename reaches each shard)
            except StoreUnavailable as exc:
                if "already exists" not in exc.message and "does not exist" not in exc.message:
                    raise
                continue
            log.info("queue %r: rebuilt index %s (its function changed)", name, index)

    async def create(self, config: QueueConfig) -> bool:
        """Create the queue's table and indexes unless the queue exists; True if created here.

        Race-safe across dispatchers: the queue's document is inserted first (one insert
        wins); the winner creates the table and indexes and marks the queue ready, the
        others wait (up to 60 s) for that, then build it themselves (the winner may have
        died). A queue cannot be named after the catalog table (``tqueues_queues``): its
        jobs would go into the catalog, and dropping it would drop every queue's settings;
        nor after the history's, the workers', the schedules', the edges' and the keys'
        tables (``tqueues_history``, ``tqueues_workers``, ``tqueues_schedules``,
        ``tqueues_edges``, ``tqueues_keys``). Raises ValidationError (that name),
        StoreUnavailable.
        """
        if config.name == QUEUES_TABLE or config.name in CATALOG_TABLES:
            raise ValidationError(
                f"queue name {config.name!r} is reserved by the RethinkDB store", field="name"
            )
        if config.name in self.configs:
            return False
        doc = reql_literal({**config_to_doc(config), "ready": False})
        result = await self.pool.run(
            self.queues.insert(doc, conflict="error", durability=self.settings.durability)
        )
        created = result.get("inserted") == 1
        if created:
            self._unbuilt.add(config.name)
        elif config.name not in self._unbuilt:
            if await self.pool.run(self.queues.get(config.name)) is None:
                raise StoreUnavailable(
                    f"could not record queue {config.name!r}: {first_error(result)}"
                )
            stored = await self._wait_ready(config.name)
            if stored is not None:
                self.configs[config.name] = stored
                return False
        await self._build(config.name)
        await self.pool.run(
            self.queues.get(config.name).update(
                {"ready": True}, durability=self.settings.durability
            )
        )
        self._unbuilt.discard(config.name)
        stored_doc = await self.pool.run(self.queues.get(config.name))
        self.configs[config.name] = doc_to_config(stored_doc) if stored_doc else config
        return created

    async def _wait_ready(self, name: str) -> QueueConfig | None:
        """The queue's settings once another dispatcher has built it; None after 60 s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(ADMIN_TIMEOUT, self.settings.timeout)
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            doc = await self.pool.run(self.queues.get(name))
            if doc is not None and doc.get("ready"):
                return doc_to_config(doc)
            if loop.time() >= deadline:
                log.warning("queue %r was not built by its creator; building it here", name)
                return None
            await backoff.sleep()

    async def _build(self, name: str) -> None:
        """Create the queue's table and its indexes and wait until they are ready."""
        await create_table(self.pool, self.settings, name)
        await self.ensure_indexes(name)

    async def get(self, name: str) -> QueueConfig:
        """The queue's settings, from the cache or else from the server (queues made
        elsewhere). Raises QueueNotFound (also while another dispatcher is creating it)."""
        config = self.configs.get(name)
        if config is not None:
            return config
        if name == QUEUES_TABLE:
            raise QueueNotFound(f"queue {name!r} does not exist", queue=name)
        doc = await self.pool.run(self.queues.get(name))
        if doc is None or not doc.get("ready"):
            raise QueueNotFound(f"queue {name!r} does not exist", queue=name)
        return self.cache(doc_to_config(doc))

    async def listed(self) -> list[QueueConfig]:
        """Every ready queue, by name: from the cache while it is complete (the catalog's
        feed keeps it so, see :meth:`follow`) and was read in the last LIST_REFRESH
        seconds, else read (:meth:`list`). For callers that ask often (the reaper, every
        round) instead of a read of the whole catalog each time."""
        if self.complete and time.monotonic() - self._read_at < LIST_REFRESH:
            return sorted(self.configs.values(), key=lambda config: config.name)
        return await self.list()

    async def list(self) -> list[QueueConfig]:
        """Every ready queue, by name, read from the server; refreshes the cache."""
        self.reads += 1
        self._read_at = time.monotonic()
        docs = await self.pool.run(self.queues.order_by(index="name").coerce_to("array"))
        configs = [
            doc_to_config(doc) for doc in docs if doc.get("ready") and doc["name"] != QUEUES_TABLE
        ]
        return [self.cache(config) for config in configs]

    def cache(self, config: QueueConfig) -> QueueConfig:
        """Keep ``config`` as the queue's settings just read from the server; if its
        pause state differs from the one cached, tell :attr:`on_pause`. The settings."""
        cached = self.configs.get(config.name)
        self.configs[config.name] = config
        if cached is not None and _pause_of(cached) != _pause_of(config) and self.on_pause:
            self.on_pause(config)
        return config

    async def update(self, config: QueueConfig) -> None:
        """Replace every setting of the queue (one atomic write of its document), but for
        its pause state (see :meth:`set_pause`): a pause another dispatcher wrote stays.

        Raises QueueNotFound.
        """
        await self.get(config.name)
        doc = {k: v for k, v in config_to_doc(config).items() if k not in PAUSE_FIELDS}
        result = await self.pool.run(
            self.queues.get(config.name).update(
                reql_literal(doc), durability=self.settings.durability
            )
        )
        if result.get("errors"):
            raise StoreUnavailable(
                f"RethinkDB did not store queue {config.name!r}: {first_error(result)}"
            )
        if not (result.get("replaced") or result.get("unchanged")):
            self.forget(config.name)
            raise QueueNotFound(f"queue {config.name!r} does not exist", queue=config.name)
        self.configs[config.name] = config

    async def set_pause(self, name: str, paused: bool, until: float | None) -> QueueConfig:
        """Write the queue's pause state alone (one atomic update of its document's
        ``paused`` and ``paused_until``); the settings after, cached. Raises
        QueueNotFound."""
        await self.get(name)
        change = {"paused": paused, "paused_until": until if paused else None}
        result = await self.pool.run(
            self.queues.get(name).update(
                change, durability=self.settings.durability, return_changes="always"
            )
        )
        if result.get("errors"):
            raise StoreUnavailable(f"RethinkDB did not pause queue {name!r}: {first_error(result)}")
        changes = result.get("changes") or []
        if not changes or not changes[0].get("new_val"):
            self.forget(name)
            raise QueueNotFound(f"queue {name!r} does not exist", queue=name)
        config = doc_to_config(changes[0]["new_val"])
        self.configs[name] = config
        return config

    async def follow(self) -> None:
        """Read the catalog's changefeed until cancelled, keeping the cache of the queues
        it holds up to date (so :attr:`on_pause` hears of other dispatchers' pauses at
        once); a feed that breaks is reopened with backoff, and the catalog read again."""
        backoff = Backoff()
        while True:
            try:
                await self._follow_once(backoff)
            except asyncio.CancelledError:
                raise
            except (ReqlError, StoreUnavailable, OSError, TimeoutError) as exc:
                text = exc.message if isinstance(exc, StoreUnavailable) else message(exc)
                log.info("the catalog's change feed broke: %s; reopening it", text)
            await backoff.sleep()

    async def _follow_once(self, backoff: Backoff) -> None:
        conn = await self.pool.get()
        cursor = await self.pool.run(self.queues.changes(), conn=conn)
        try:
            backoff.reset()
            await self.list()  # what changed while the feed was down
            self.complete = True
            changes = self.pool.changes(cursor, conn)
            async with contextlib.aclosing(changes):
                async for change in changes:
                    self._apply(change.get("old_val"), change.get("new_val"))
        finally:
            self.complete = False
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await cursor.close()

    def _apply(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """One change of the catalog: a ready queue's settings cached (another
        dispatcher's pause heard of at once), a removed queue forgotten."""
        if new and new.get("ready") and new.get("name") != QUEUES_TABLE:
            self.cache(doc_to_config(new))
        elif old and not new:
            self.forget(str(old.get("name")))

    async def remove(self, name: str) -> None:
        """Delete the queue's document (its table is dropped first) and forget it."""
        self.forget(name)
        await self.pool.run(self.queues.get(name).delete(durability=self.settings.durability))

    def forget(self, name: str) -> None:
        """Drop the queue from the cache (its table is gone); the next use re-reads."""
        self.configs.pop(name, None)


#: The fields of a queue's document that hold its pause state, written by set_pause alone.
PAUSE_FIELDS = frozenset({"paused", "paused_until"})


def _pause_of(config: QueueConfig) -> tuple[bool, float | None]:
    return config.paused, config.paused_until


class _Twins(StoreUnavailable):
    """Twins were dropped: open again."""


__all__ = [
    "ADMIN_TIMEOUT",
    "QUEUES_TABLE",
    "BackfillUnfinished",
    "Catalog",
    "create_table",
    "reconfigure",
    "remove_twins",
]
