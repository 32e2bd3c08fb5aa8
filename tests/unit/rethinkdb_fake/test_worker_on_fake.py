"""A dispatcher on the RethinkDB store (the in-memory fake server) drained by a worker that
takes its next jobs along with its outcome reports: the route's RethinkDB path, which
applies the outcomes and claims the next jobs as concurrent compare-and-sets."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.acceptance.jobs import method
from tests.unit.fake_rethinkdb import FakeServer
from tqueues.client import Client
from tqueues.dispatcher import create_app
from tqueues.errors import TqueuesError
from tqueues.settings import DispatcherSettings, RethinkDBSettings
from tqueues.stores.rethinkdb import RethinkDBStore
from tqueues.worker import Worker


class TakingAlong(Client):
    """A real client that counts the jobs its reports asked to take along."""

    asked = 0

    async def report_and_take(
        self, queue: str, outcomes: Sequence[Mapping[str, Any]], count: int, **kwargs: Any
    ) -> tuple[list[dict[str, Any] | TqueuesError], list[dict[str, Any]]]:
        self.asked += count
        return await super().report_and_take(queue, outcomes, count, **kwargs)


@pytest.fixture
async def client(
    fake_server: FakeServer, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    """A dispatcher on a RethinkDB store (the fake server) with queue ``q`` created."""
    store = RethinkDBStore(RethinkDBSettings(host="fake", db=f"t_{uuid.uuid4().hex[:12]}"))
    client = await aiohttp_client(create_app(DispatcherSettings(reap_interval=0.05), store))
    assert (await client.put("/queues/q")).status == 201
    return client


async def test_a_worker_drains_a_rethinkdb_queue_taking_jobs_along(client: TestClient) -> None:
    jobs = [{"method": method("coro_add"), "args": [i, 1]} for i in range(120)]
    assert (await client.post("/queues/q/jobs", json={"jobs": jobs})).status == 201

    api = TakingAlong(str(client.make_url("/")))
    worker = Worker("unused", ["q"], concurrency=5, burst=True, client=api)
    counts = await worker.run()

    assert counts["finished"] == 120 and counts["taken"] == 120
    stats = await (await client.get("/queues/q/stats")).json()
    assert stats["jobs"]["finished"] == 120 and stats["total"] == 120
    assert api.asked > 0  # the reports took jobs along
    finished = await (await client.get("/queues/q/jobs?status=finished&limit=200")).json()
    assert sorted(job["result"]["sum"] for job in finished["jobs"]) == list(range(1, 121))
    assert all(job["attempts"] == 1 for job in finished["jobs"])  # each ran once


async def test_brief_outcomes_that_take_along_on_rethinkdb(client: TestClient) -> None:
    for priority in range(3):
        body = {"method": "pkg.mod:f", "priority": priority}
        assert (await client.post("/queues/q/jobs", json=body)).status == 201
    (a,) = (await (await client.post("/queues/q/take")).json())["jobs"]
    outcomes = [{"id": a["id"], "lease": a["lease"], "action": "finish", "result": 7}]
    body = {"outcomes": outcomes, "take": 5, "worker": "w", "brief": True}
    answer = await (await client.post("/queues/q/outcomes", json=body)).json()
    assert answer["results"] == [{"stored": {"id": a["id"], "status": "finished"}}]
    assert [job["priority"] for job in answer["jobs"]] == [1, 2]
    assert all(job["status"] == "started" and job["worker"] == "w" for job in answer["jobs"])
