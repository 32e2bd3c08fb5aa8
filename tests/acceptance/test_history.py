"""Throughput history through real processes: jobs run by a real worker show in
``GET /queues/Q/history`` and in ``tqueues history``; the history survives a restart of the
dispatcher; on RethinkDB it sums every dispatcher of the database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.acceptance.conftest import Cluster, child_env, wait_for
from tests.acceptance.jobs import method
from tqueues.client import Client

ADMIN = str(Path(sys.executable).parent / "tqueues")
DEADLINE = 20.0  # seconds: a flush comes every 5 s


def totals(history: dict[str, Any]) -> dict[str, int]:
    """The counts of every bucket of a history answer, summed per event."""
    summed: dict[str, int] = {}
    for bucket in history["buckets"]:
        for event, n in bucket["counts"].items():
            summed[event] = summed.get(event, 0) + n
    return summed


async def test_history_shows_what_ran_and_survives_a_restart(
    cluster: Cluster, store_args: list[str]
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    started = time.time()
    async with Client(dispatcher.url) as client:
        await client.create_queue("h")
        # Given jobs run by a real worker: five that succeed and one that fails on its only
        # attempt (so it is buried)
        await cluster.worker(dispatcher.url, "h")
        ids = [(await client.put("h", method("coro_add"), [i, 1]))["id"] for i in range(5)]
        ids.append((await client.put("h", method("coro_raise"), [0], max_attempts=1))["id"])

        async def ended() -> bool:
            jobs = [await client.get("h", job_id) for job_id in ids]
            return all(job["status"] in ("finished", "buried") for job in jobs)

        await wait_for(ended, timeout=DEADLINE, what="the jobs to end")

        # Then the history of the queue shows them within a flush interval
        async def counted() -> dict[str, int] | None:
            summed = totals(await client.history("h", since=started - 60))
            return summed if summed.get("finished") == 5 and summed.get("buried") == 1 else None

        summed = await wait_for(counted, timeout=DEADLINE, what="the history to count them")
        assert (summed["put"], summed["taken"]) == (6, 6)
    # When the dispatcher is stopped and another starts on the same store
    dispatcher.proc.stop()
    again = await cluster.dispatcher(dispatcher.data, *store_args)
    async with Client(again.url) as client:
        # Then the history is still there
        summed = totals(await client.history("h", since=started - 60))
        assert (summed["put"], summed["finished"], summed["buried"]) == (6, 5, 1)
        # And the admin command shows it as a table of minutes and as JSON
        out = await asyncio.to_thread(
            subprocess.run,
            [ADMIN, "--url", again.url, "history", "h", "--minutes", "10"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        header = out.stdout.splitlines()[0].split()
        assert header[:2] == ["minute", "(UTC)"] and {"put", "finished", "buried"} <= set(header)
        out = await asyncio.to_thread(
            subprocess.run,
            [ADMIN, "--url", again.url, "history", "h", "--json"],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert totals(json.loads(out.stdout))["finished"] == 5


async def test_bad_history_reads_are_400_naming_the_problem(cluster: Cluster) -> None:
    dispatcher = await cluster.dispatcher()
    async with Client(dispatcher.url) as client:
        await client.create_queue("h")
    async with aiohttp.ClientSession() as session:
        for query, field in (
            ("since=abc", "since"),
            ("since=1e300", "since"),
            ("until=-1", "until"),
            ("until=nan", "until"),
        ):
            async with session.get(f"{dispatcher.url}queues/h/history?{query}") as response:
                body = await response.json()
                assert response.status == 400, (query, body)
                assert body["error"] == "bad_request" and body.get("field") == field, body
        async with session.get(f"{dispatcher.url}queues/nope/history") as response:
            assert response.status == 404


async def test_dispatchers_of_one_database_sum_their_history(
    cluster: Cluster, store_args: list[str]
) -> None:
    if not store_args:
        return  # one embedded store belongs to one dispatcher: nothing to sum
    first = await cluster.dispatcher(None, *store_args)
    second = await cluster.dispatcher(cluster.tmp_path / "data2", *store_args)
    started = time.time()
    # Given jobs put, taken and finished through each of two dispatchers
    for dispatcher, n in ((first, 3), (second, 4)):
        async with Client(dispatcher.url) as client:
            await client.create_queue("h")
            for i in range(n):
                await client.put("h", method("coro_add"), [i, 1])
            for _ in range(n):
                (job,) = await client.take_many("h", 1, wait=5)
                await client.finish("h", job["id"], lease=job["lease"], result=None)
    # When both stop (each flushes what it counted)
    first.proc.stop()
    second.proc.stop()
    # Then a third dispatcher of the database reads the sums
    third = await cluster.dispatcher(cluster.tmp_path / "data3", *store_args)
    async with Client(third.url) as client:
        summed = totals(await client.history("h", since=started - 60))
    assert (summed["put"], summed["taken"], summed["finished"]) == (7, 7, 7)
