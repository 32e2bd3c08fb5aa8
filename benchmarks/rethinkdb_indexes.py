"""What the queue tables' secondary indexes cost a RethinkDB server, straight from the driver.

``python -m benchmarks.rethinkdb_indexes --rethinkdb HOST:PORT [--jobs N]`` creates a
scratch database on that server (dropped at the end) with two tables: one bare, one with
every index of a tqueues queue table (:data:`tqueues.stores.rethinkdb.queries.INDEXES`).
Into each it writes, with ``durability hard``:

* ``N`` job documents, one insert at a time (what a single put costs the server);
* then claims ``N`` * 4 pending jobs, 50 per conditional replace
  (``get_all(*ids).replace(r.branch(row.status == "pending", claimed, row))``, as a
  batched take writes them),

and prints the rate of each. The server, not the dispatcher, is measured: no tqueues
process runs. Run it on a quiet machine, on a server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from rethinkdb import r

from tqueues.stores.rethinkdb.queries import INDEXES

BATCH = 50  #: documents per conditional replace


def _job(created: float) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "queue": "q",
        "method": "m:f",
        "args": [1],
        "kwargs": {},
        "status": "pending",
        "priority": 1024,
        "ready_at": created,
        "created_at": created,
        "attempts": 0,
        "rev": 0,
        "ttr": 60,
        "max_attempts": 3,
    }


async def measure(conn: Any, table: Any, jobs: int) -> tuple[float, float]:
    """Single inserts per second, and documents claimed per second in batches."""
    started = time.perf_counter()
    for n in range(jobs):
        await table.insert(_job(float(n)), durability="hard").run(conn)
    single = jobs / (time.perf_counter() - started)
    docs = [_job(float(n)) for n in range(jobs * 4)]
    await table.insert(docs, durability="hard").run(conn)
    ids = [doc["id"] for doc in docs]
    started = time.perf_counter()
    for first in range(0, len(ids), BATCH):
        await (
            table.get_all(*ids[first : first + BATCH])
            .replace(
                lambda row: r.branch(
                    row["status"] == "pending",
                    row.merge({"status": "started", "rev": 1, "lease": "L"}),
                    row,
                ),
                durability="hard",
            )
            .run(conn)
        )
    claimed = len(ids) / (time.perf_counter() - started)
    return single, claimed


async def main(address: str, jobs: int) -> None:
    r.set_loop_type("asyncio")
    host, _, port = address.rpartition(":")
    conn = await r.connect(host=host or "127.0.0.1", port=int(port))
    db = f"tqueues_bench_{uuid.uuid4().hex[:8]}"
    await r.db_create(db).run(conn)
    try:
        for name, indexed in (("bare", False), ("indexed", True)):
            await r.db(db).table_create(name).run(conn)
            table = r.db(db).table(name)
            if indexed:
                for index, function in INDEXES.items():
                    await table.index_create(index, function).run(conn)
                await table.index_wait().run(conn)
            single, claimed = await measure(conn, table, jobs)
            print(
                f"{name:8} {single:8,.0f} single inserts/s  "
                f"{claimed:8,.0f} docs/s claimed {BATCH} per conditional replace"
            )
    finally:
        await r.db_drop(db).run(conn)
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rethinkdb", required=True, metavar="HOST:PORT")
    parser.add_argument("--jobs", type=int, default=500)
    options = parser.parse_args()
    asyncio.run(main(options.rethinkdb, options.jobs))
