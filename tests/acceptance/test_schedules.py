"""Periodic jobs with real processes: a schedule of every second, created with the
``tqueues`` command, makes jobs a real worker runs (and one more when run by hand); two
dispatchers on one RethinkDB database firing the same schedule make exactly one job per
tick, none missed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Cluster, wait_for
from tests.acceptance.jobs import finished_ids, method
from tests.acceptance.test_workers import admin
from tqueues.client import Client

DEADLINE = 20.0


async def all_jobs(client: Client, queue: str) -> list[dict[str, Any]]:
    """Every job of the queue, whatever its status."""
    page = await client.list_jobs(queue, limit=1000)
    jobs: list[dict[str, Any]] = page["jobs"]
    return jobs


async def test_a_schedule_makes_jobs_a_worker_runs(
    cluster: Cluster, store_args: list[str], markers: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    async with Client(dispatcher.url) as client:
        await client.create_queue("p")
        await cluster.worker(dispatcher.url, "p")
        # Given a schedule of every second, created with the command
        job = {"method": method("marked_sleep"), "args": [str(markers), 0]}
        made = json.loads(await admin(dispatcher.url, "schedules", "create", "p", "tick",
                                      "--every", "1", json.dumps(job)))  # fmt: skip
        assert (made["every"], made["catch_up"]) == (1, "latest")

        # Then its ticks make jobs the worker runs, one per tick
        async def three_run() -> list[str] | None:
            done = finished_ids(markers)
            return done if len(done) >= 3 else None

        await wait_for(three_run, timeout=DEADLINE, what="three ticks' jobs to run")
        ticks = sorted(j["tick"] for j in await all_jobs(client, "p"))
        assert ticks == [made["next_tick"] + k for k in range(len(ticks))]
        assert "tick" in await admin(dispatcher.url, "schedules", "p")
        # When it is paused and run by hand, the job made by hand runs too
        await admin(dispatcher.url, "schedules", "pause", "p", "tick")
        ran = json.loads(await admin(dispatcher.url, "schedules", "run", "p", "tick"))
        assert ran["tick"] is None and ran["schedule"] == "tick"
        await wait_for(lambda: ran["id"] in finished_ids(markers), timeout=DEADLINE,
                       what="the job run by hand to run")  # fmt: skip
        gone = json.loads(await admin(dispatcher.url, "schedules", "delete", "p", "tick"))
        assert gone["paused"] is True and await client.schedules("p") == []


async def test_two_dispatchers_on_one_database_make_one_job_per_tick(
    cluster: Cluster, store_args: list[str], tmp_path: Path
) -> None:
    if not store_args:
        pytest.skip("one dispatcher per SQLite store: nothing is shared")
    first = await cluster.dispatcher(tmp_path / "a", *store_args)
    second = await cluster.dispatcher(tmp_path / "b", *store_args)
    async with Client(first.url) as client, Client(second.url) as other:
        await client.create_queue("p")
        # Given one schedule of every second, which both dispatchers fire
        made = await other.create_schedule("p", "tick", "examples.tasks:add", [1, 2], every=1)

        async def six_ticks() -> dict[str, Any] | None:
            schedule = await client.schedule("p", "tick")
            last = schedule["last_tick"]
            return schedule if last is not None and last >= made["next_tick"] + 5 else None

        await wait_for(six_ticks, timeout=DEADLINE, what="six ticks fired")
        await client.pause_schedule("p", "tick")
        # Then every tick fired made exactly one job, none missed (a firing under way as
        # the pause came may have made one more, never a second of a tick)
        ticks = sorted(j["tick"] for j in await all_jobs(other, "p"))
        assert len(ticks) >= 6
        assert ticks == [made["next_tick"] + k for k in range(len(ticks))]
