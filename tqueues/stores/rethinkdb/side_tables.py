"""The tables of a database beside its queues' (each created with the catalog, see
:mod:`~tqueues.stores.rethinkdb.queues`): the throughput history, the worker registry,
the periodic jobs' schedules, the dependencies' edges and the unique jobs' keys; what the
store does with the first four (the keys are :mod:`~tqueues.stores.rethinkdb.keys`').

Each table's queries are built in its own module (:mod:`.history`, :mod:`.workers`,
:mod:`.schedules`, :mod:`.edges`); here they are run. A queue made by an earlier version
may have one of these tables' names: that table then stays the queue's, and what needs
the other is off (StoreUnavailable says which and how to get it back).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from rethinkdb.ast import RqlQuery

from tqueues.dependencies import key
from tqueues.errors import ScheduleExists, StoreUnavailable, WorkerNotFound
from tqueues.ids import storable
from tqueues.jobs import JobRecord
from tqueues.stores.history import Bucket, Counts, buckets_of
from tqueues.stores.rethinkdb import edges, history, keys, schedules, workers
from tqueues.stores.rethinkdb.pool import first_error
from tqueues.stores.schedules import ScheduleRecord
from tqueues.stores.workers import Command, WorkerRecord

Run = Callable[[RqlQuery], Awaitable[Any]]


class SideTables:
    """The side tables of database ``db``: ``queues()`` names its queues (raises
    StoreUnavailable while the store is closed), ``run`` runs a query (raises
    StoreUnavailable), each write with ``durability``.

    Every method raises StoreUnavailable when the server cannot be reached, or when a
    queue has its table's name.
    """

    def __init__(
        self, db: Any, queues: Callable[[], Collection[str]], run: Run, durability: str
    ) -> None:
        self._db, self._queues, self._run = db, queues, run
        self._options = {"durability": durability}

    def _table(self, name: str, off: str, what: str) -> Any:
        """The table ``name``. Raises StoreUnavailable (``off``: what stops working) when a
        queue of an earlier version has its name."""
        if name in self._queues():
            raise StoreUnavailable(
                f"{off}: a queue is named {name!r}, {what} "
                "(rename the queue: drain it into another and drop it)"
            )
        return self._db.table(name)

    def history(self) -> Any:
        return self._table(history.HISTORY_TABLE, "history is off", "the history's table")

    def workers(self) -> Any:
        return self._table(
            workers.WORKERS_TABLE, "the worker registry is off", "the registry's table"
        )

    def schedules(self) -> Any:
        return self._table(
            schedules.SCHEDULES_TABLE, "periodic jobs are off", "the schedules' table"
        )

    def keys(self) -> Any:
        return self._table(keys.KEYS_TABLE, "unique jobs are off", "the keys' table")

    def edges(self) -> Any:
        return self._table(edges.EDGES_TABLE, "dependencies are off", "the edges' table")

    # -- the throughput history --------------------------------------------------------------

    async def add_history(self, counts: Counts) -> None:
        """One insert whose conflict function sums: each document's addition is atomic,
        the query as a whole is not."""
        result = await self._run(history.add(self.history(), counts, **self._options))
        if result.get("errors"):
            raise StoreUnavailable(f"RethinkDB did not add to the history: {first_error(result)}")

    async def read_history(self, queue: str, since: int, until: int) -> list[Bucket]:
        docs = await self._run(history.read(self.history(), queue, since, until))
        return buckets_of((doc["at"], doc["event"], doc["n"]) for doc in docs)

    async def purge_history(self, queues: Iterable[str], before: int | None) -> int:
        """One range delete per queue of ``queues``: their counts from before minute
        ``before`` (all of them with None); how many documents went."""
        table, deleted = self.history(), 0
        for queue in queues:
            query = history.delete(table, queue, before, **self._options)
            deleted += int((await self._run(query)).get("deleted", 0))
        return deleted

    # -- the worker registry -----------------------------------------------------------------

    async def save_worker(self, record: WorkerRecord) -> WorkerRecord:
        result = await self._run(workers.save(self.workers(), record, **self._options))
        changes = result.get("changes") or ()
        if result.get("errors") or not changes:
            raise StoreUnavailable(f"RethinkDB did not store worker {record.id!r}: "
                                   f"{first_error(result)}")  # fmt: skip
        return WorkerRecord.from_fields(changes[0]["new_val"])

    async def list_workers(self) -> list[WorkerRecord]:
        docs = await self._run(self.workers().coerce_to("array"))
        return sorted((WorkerRecord.from_fields(doc) for doc in docs), key=lambda w: w.id)

    async def command_worker(self, worker_id: str, command: Command) -> WorkerRecord:
        """Raises WorkerNotFound."""
        if not storable(worker_id):
            raise WorkerNotFound(f"no worker {worker_id!r} is known", id=worker_id)
        result = await self._run(workers.command(self.workers(), worker_id, command,
                                                 **self._options))  # fmt: skip
        changes = result.get("changes") or ()
        if not changes or changes[0].get("new_val") is None:
            raise WorkerNotFound(f"no worker {worker_id!r} is known", id=worker_id)
        return WorkerRecord.from_fields(changes[0]["new_val"])

    async def forget_workers(self, *, before: float | None = None, id: str | None = None) -> int:
        table = self.workers()
        if id is not None:
            if not storable(id):
                return 0
            query = table.get(id).delete(**self._options)
        elif before is not None:
            query = workers.forget_before(table, before, **self._options)
        else:
            return 0
        return int((await self._run(query)).get("deleted", 0))

    # -- periodic jobs -----------------------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> None:
        """Raises ScheduleExists."""
        result = await self._run(schedules.create(self.schedules(), schedule, **self._options))
        if result.get("inserted") == 1:
            return
        if "Duplicate primary key" in str(result.get("first_error", "")):
            raise ScheduleExists(
                f"schedule {schedule.name!r} exists in queue {schedule.queue!r}",
                queue=schedule.queue, name=schedule.name,
            )  # fmt: skip
        raise StoreUnavailable(f"RethinkDB did not store schedule {schedule.key!r}: "
                               f"{first_error(result)}")  # fmt: skip

    async def list_schedules(self, queue: str | None = None) -> list[ScheduleRecord]:
        table = self.schedules()
        selection = table if queue is None else schedules.of_queue(table, queue)
        docs = await self._run(selection.coerce_to("array"))
        records = (ScheduleRecord.from_fields(doc) for doc in docs)
        return sorted(records, key=lambda schedule: (schedule.queue, schedule.name))

    async def swap_schedule(self, before: ScheduleRecord, after: ScheduleRecord) -> bool:
        result = await self._run(schedules.swap(self.schedules(), before, after, **self._options))
        if result.get("errors"):
            raise StoreUnavailable(f"RethinkDB did not store schedule {before.key!r}: "
                                   f"{first_error(result)}")  # fmt: skip
        return int(result.get("replaced", 0)) == 1

    async def delete_schedule(self, queue: str, name: str) -> bool:
        query = self.schedules().get(f"{queue}/{name}").delete(**self._options)
        return int((await self._run(query)).get("deleted", 0)) == 1

    async def delete_schedules_of(self, queue: str) -> None:
        await self._run(schedules.of_queue(self.schedules(), queue).delete(**self._options))

    # -- dependencies ------------------------------------------------------------------------

    async def add_edges(self, job: JobRecord) -> None:
        query = edges.add(self.edges(), list(job.after), key(job.queue, job.id), **self._options)
        result = await self._run(query)
        if result.get("errors"):
            raise StoreUnavailable(f"RethinkDB did not store the edges of job {job.id}: "
                                   f"{first_error(result)}")  # fmt: skip

    async def dependents_of(self, queue: str, job_id: str) -> list[str]:
        names = await self._run(edges.dependents(self.edges(), key(queue, job_id)))
        return [str(name) for name in names]

    async def drop_edges(self, queue: str, job_id: str) -> None:
        await self._run(edges.drop(self.edges(), key(queue, job_id), **self._options))


__all__ = ["SideTables"]
