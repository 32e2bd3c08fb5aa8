"""What a job costs a RethinkDB server, by the queue table's indexes and open change feeds,
straight from the driver: the ceiling a tqueues drain on that server cannot pass.

``python -m benchmarks.rethinkdb_indexes --rethinkdb HOST:PORT [--jobs N] [--server_pid
PID]`` creates a scratch database on that server (dropped at the end). For each variant
of a queue table, a fresh table of it, with ``durability hard`` (``--durability soft``:
acknowledged once in the server's memory):

* ``bare``: no secondary index; ``take order``: the ``state`` index alone (what a take
  needs); ``tqueues``: every index of a tqueues queue table
  (:data:`tqueues.stores.rethinkdb.queries.INDEXES`);
* with 0, 1 or 3 change feeds of the table open (a tqueues dispatcher follows each queue
  with one: three dispatchers, three feeds), each read to its end;

it runs (with ``--single M``, after ``M`` inserts one at a time, each waiting for the
last, as W1's single puts do) ``N`` job cycles the way a batching dispatcher writes them:
the jobs inserted, then claimed, then finished, ``--batch`` documents a query
(:data:`BATCH`), :data:`WRITERS` queries at once, each claim and finish a conditional
replace
(``get_all(*ids).replace(r.branch(row.status == ..., changed, row))``). It prints the jobs
per second of each and, where the server runs on this machine (its process found by its
port, or given: ``--server_pid``, e.g. ``DIR/node0/pid`` of ``../shared/rethinkdb/up``),
the server's CPU per job and the jobs per second that CPU
allows when the server has every core of this machine to itself.

The server, not the dispatcher, is measured: no tqueues process runs, so a real drain
(W2 in :mod:`benchmarks.run`) on the same server is slower than this. Run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from rethinkdb import r

from benchmarks.run import cpu_seconds, rethinkdb_pids
from tqueues.stores.rethinkdb.queries import INDEXES

BATCH = 20  #: documents per query by default (what W2's writes carry: docs/benchmarks.rst)
WRITERS = 2  #: queries in flight at once (a dispatcher's two claim groups)
#: variant name -> the indexes of its table
VARIANTS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "take order": ("state",),
    "tqueues": tuple(INDEXES),
}
FEEDS = (0, 1, 3)  #: change feeds open, per variant
#: seconds the feeds may take to bring the last change after the last write
FEED_DEADLINE = 60.0


def _job(n: int) -> dict[str, Any]:
    return {
        "id": f"{n:012d}{uuid.uuid4().hex[:8]}",
        "queue": "q",
        "method": "m:f",
        "args": [1],
        "kwargs": {},
        "status": "pending",
        "priority": 1024,
        "ready_at": float(n),
        "created_at": float(n),
        "attempts": 0,
        "rev": 0,
        "ttr": 60,
        "max_attempts": 3,
        "expires_at": None,
        "lease_expires": None,
        "finished_at": None,
    }


def _step(status: str, changed: dict[str, Any]) -> Callable[[Any], Any]:
    """A conditional replace's function: ``changed`` merged into a job still ``status``."""
    return lambda row: r.branch(row["status"] == status, row.merge(changed), row)


CLAIM = _step("pending", {"status": "started", "rev": 1, "lease": "L", "lease_expires": 9e9})
FINISH = _step("started", {"status": "finished", "rev": 2, "lease": None, "finished_at": 1.0})


class Feed:
    """One change feed of a table, read to its end in a task of its own."""

    def __init__(self, address: tuple[str, int], table: Any) -> None:
        self.changes = 0  #: changes read so far
        self.opened = asyncio.Event()
        self._task = asyncio.create_task(self._follow(address, table))

    async def _follow(self, address: tuple[str, int], table: Any) -> None:
        conn = await r.connect(host=address[0], port=address[1])
        try:
            feed = await table.changes(include_types=True).run(conn)
            self.opened.set()
            while True:
                await feed.next()
                self.changes += 1
        finally:
            await conn.close()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def cycles(
    address: tuple[str, int],
    table: Any,
    jobs: int,
    feeds: int,
    pids: list[int],
    batch: int,
    durability: str = "hard",
) -> tuple[float, float]:
    """Insert, claim and finish ``jobs`` jobs in ``table`` with ``feeds`` change feeds
    open; the seconds it took (until every feed brought every change) and the CPU seconds
    of the server's processes ``pids`` meanwhile (0 without any). Raises TimeoutError when
    the feeds lag FEED_DEADLINE behind."""
    conns = [await r.connect(host=address[0], port=address[1]) for _ in range(WRITERS)]
    following = [Feed(address, table) for _ in range(feeds)]
    try:
        await asyncio.gather(*(feed.opened.wait() for feed in following))
        docs = [_job(n) for n in range(jobs)]
        inserts = [docs[i : i + batch] for i in range(0, jobs, batch)]
        batches = [[doc["id"] for doc in chunk] for chunk in inserts]
        cpu, started = cpu_seconds(pids), time.perf_counter()

        async def write(conn: Any, step: Callable[[list[str]], Any], todo: list[Any]) -> None:
            while todo:
                await step(todo.pop(0)).run(conn, durability=durability)

        await asyncio.gather(*(write(c, table.insert, inserts) for c in conns))
        for change in (CLAIM, FINISH):
            todo = list(batches)
            step = lambda ids, change=change: table.get_all(*ids).replace(change)  # noqa: E731
            await asyncio.gather(*(write(c, step, todo) for c in conns))
        deadline = time.monotonic() + FEED_DEADLINE
        while sum(feed.changes for feed in following) < 3 * jobs * feeds:
            if time.monotonic() > deadline:
                raise TimeoutError("the change feeds did not bring every change")
            await asyncio.sleep(0.01)  # a poll's pace, not a synchronisation
        return time.perf_counter() - started, cpu_seconds(pids) - cpu
    finally:
        for feed in following:
            await feed.close()
        for conn in conns:
            await conn.close()


async def singles(
    conn: Any, table: Any, count: int, durability: str = "hard"
) -> tuple[float, float]:
    """Insert ``count`` jobs into ``table`` one at a time, each after the last was
    answered (what W1's single puts cost the server); inserts per second and the median
    insert's milliseconds."""
    took: list[float] = []
    for n in range(count):
        started = time.perf_counter()
        await table.insert(_job(n)).run(conn, durability=durability)
        took.append(time.perf_counter() - started)
    return count / sum(took), 1000 * statistics.median(took)


async def main(
    address: str, jobs: int, pid: int | None, batch: int, single: int, durability: str = "hard"
) -> None:
    pids = [pid] if pid is not None else rethinkdb_pids(address)
    r.set_loop_type("asyncio")
    host, _, port = address.rpartition(":")
    server = (host or "127.0.0.1", int(port))
    conn = await r.connect(host=server[0], port=server[1])
    db = f"tqueues_bench_{uuid.uuid4().hex[:8]}"
    await r.db_create(db).run(conn)
    cores = os.cpu_count() or 1
    print(
        f"{jobs:,} job cycles a row, {batch} documents a query, {WRITERS} queries at once,"
        f" durability {durability}"
    )
    try:
        for name, indexes in VARIANTS.items():
            for feeds in FEEDS:
                table_name = f"t_{len(indexes)}_{feeds}"
                await r.db(db).table_create(table_name).run(conn)
                table = r.db(db).table(table_name)
                for index in indexes:
                    await table.index_create(index, INDEXES[index]).run(conn)
                await table.index_wait().run(conn)
                if single and not feeds:
                    rate, median = await singles(conn, table, single, durability)
                    print(f"{name:10} single inserts {rate:5,.0f}/s, median {median:.2f} ms")
                seconds, cpu = await cycles(server, table, jobs, feeds, pids, batch, durability)
                row = f"{name:10} {feeds} feeds  {jobs / seconds:7,.0f} jobs/s"
                if pids and cpu <= 0:
                    row += "  server CPU below the clock's resolution: run more jobs"
                elif pids:
                    row += (
                        f"  server {1000 * cpu / jobs:5.2f} ms CPU a job:"
                        f" {cores * jobs / cpu:7,.0f} jobs/s on {cores} cores"
                    )
                print(row, flush=True)
                await r.db(db).table_drop(table_name).run(conn)
    finally:
        await r.db_drop(db).run(conn)
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rethinkdb", required=True, metavar="HOST:PORT")
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--server_pid", type=int, metavar="PID")
    parser.add_argument("--batch", type=int, default=BATCH, help="documents per query")
    parser.add_argument(
        "--single", type=int, default=0, metavar="N", help="also N single inserts per table"
    )
    parser.add_argument("--durability", choices=("hard", "soft"), default="hard")
    options = parser.parse_args()
    asyncio.run(
        main(
            options.rethinkdb,
            options.jobs,
            options.server_pid,
            options.batch,
            options.single,
            options.durability,
        )
    )
