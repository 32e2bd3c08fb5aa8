"""Unique jobs with real processes (#25, part 3): a put with a key through the ``tqueues``
command and the client is answered the live job while it lives, and stores a new one
once it ended; two dispatchers on one RethinkDB database, put the same key at the same
instant, store exactly one job, and refuse a kick whose key the other one's job holds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.conftest import Cluster
from tests.acceptance.test_workers import admin
from tqueues.client import Client
from tqueues.errors import KeyTaken


async def test_a_key_is_held_while_its_job_lives(cluster: Cluster, store_args: list[str]) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    async with Client(dispatcher.url) as client:
        await client.create_queue("u")
        job = '{"method": "examples.tasks:add", "args": [1, 2]}'
        put = json.loads(await admin(dispatcher.url, "put", "u", "--key", "daily", job))
        assert (put["key"], put["duplicate"]) == ("daily", False)
        # While it is pending, then started, a put of the key is answered that job
        again = await client.put("u", "examples.tasks:add", [3, 4], key="daily")
        assert again["duplicate"] is True and again["id"] == put["id"]
        assert again["args"] == [1, 2]
        (taken,) = await client.take_many("u", 1)
        printed = await admin(dispatcher.url, "put", "u", "--key", "daily",
                              '{"method": "examples.tasks:add"}')  # fmt: skip
        assert json.loads(printed)["id"] == put["id"]
        # Once it finished, the key is free: a new job
        await client.finish("u", taken["id"], lease=taken["lease"], result=3)
        fresh = await client.put("u", "examples.tasks:add", [5, 6], key="daily")
        assert fresh["duplicate"] is False and fresh["id"] != put["id"]
        assert (await client.stats("u"))["jobs"]["pending"] == 1


async def test_two_dispatchers_put_one_key_at_the_same_instant_once(
    cluster: Cluster, store_args: list[str], tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    if not store_args:
        pytest.skip("one dispatcher per SQLite store: nothing is shared")
    first = await cluster.dispatcher(tmp_path / "a", *store_args)
    second = await cluster.dispatcher(tmp_path / "b", *store_args)
    async with Client(first.url) as client, Client(second.url) as other:
        await client.create_queue("u")
        await other.queue_settings("u")

        async def put(url: str, key: str) -> tuple[int, str]:
            body = {"method": "examples.tasks:add", "key": key}
            async with session.post(f"{url}queues/u/jobs", json=body) as response:
                return response.status, (await response.json())["id"]

        # When both are sent the same key by many producers at once, round after round
        for round_ in range(3):
            key = f"k{round_}"
            answers = await asyncio.gather(
                *(put(url, key) for _ in range(8) for url in (first.url, second.url))
            )
            # Then exactly one job is stored, and every put is answered it
            assert sorted(status for status, _ in answers) == [200] * 15 + [201]
            assert len({job_id for _, job_id in answers}) == 1
        page = await client.list_jobs("u", limit=100)
        assert sorted(job["key"] for job in page["jobs"]) == ["k0", "k1", "k2"]
        # A job buried through one cannot be kicked back while the other's job has its key
        job = next(job for job in page["jobs"] if job["key"] == "k0")
        await client.bury("u", job["id"])
        holder = await other.put("u", "examples.tasks:add", key="k0")
        assert holder["duplicate"] is False
        with pytest.raises(KeyTaken) as refused:
            await client.kick_job("u", job["id"])
        assert refused.value.details["holder"] == holder["id"]
        await other.delete("u", holder["id"])
        assert (await client.kick_job("u", job["id"]))["status"] == "pending"
