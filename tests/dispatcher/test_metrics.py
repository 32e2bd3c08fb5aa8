"""``GET /metrics``: the Prometheus text format, its values after real job traffic, and
who may read it (the monitor role reads the dispatcher's state, never a job)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StoreFactory
from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.settings import DispatcherSettings

ADMIN, WORKER, MONITOR = "a" * 32, "w" * 32, "m" * 32


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Client, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of ``GET /metrics``, parsed by prometheus_client's own parser."""
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def take(client: Client, count: int, worker: str = "w1") -> list[dict[str, Any]]:
    response = await client.post(f"/queues/q/take?count={count}&worker={worker}")
    assert response.status == 200
    jobs: list[dict[str, Any]] = (await response.json())["jobs"]
    return jobs


@pytest.fixture
async def either(
    aiohttp_client: Callable[..., Awaitable[Client]], make_store: StoreFactory, tmp_path: Path
) -> Client:
    """A dispatcher with queue ``q`` on each store (RethinkDB when a server is named)."""
    settings = DispatcherSettings(data_dir=str(tmp_path / "data"), reap_interval=0.05)
    client = await aiohttp_client(create_app(settings, store=make_store()))
    assert (await client.put("/queues/q")).status == 201
    return client


async def test_metrics_count_jobs_by_state_events_retries_and_timings(either: Client) -> None:
    client = either
    # Given jobs put, taken, finished, failed (to be retried) and one left pending
    await client.patch("/queues/q", json={"max_attempts": 2})
    body = {"jobs": [{"method": "m:f"} for _ in range(5)]}
    assert (await client.post("/queues/q/jobs", json=body)).status == 201
    first, second, third = await take(client, 3)
    for job in (first, second):
        url = f"/queues/q/jobs/{job['id']}/finish?lease={job['lease']}"
        assert (await client.post(url, json={"result": 1})).status == 200
    url = f"/queues/q/jobs/{third['id']}/fail?lease={third['lease']}"
    assert (await client.post(url, json={"error": "boom"})).status == 200
    heartbeat = {"host": "h", "pid": 1, "version": "0", "queues": ["q"], "concurrency": 1,
                 "started_at": 0}  # fmt: skip
    assert (await client.post("/workers/w1/heartbeat", json=heartbeat)).status == 200
    await asyncio.sleep(0.01)  # the oldest pending job has waited a while

    # When Prometheus would scrape
    samples = await scrape(client)

    # Then the jobs by state are the store's, every state present
    states = {"pending": 2, "delayed": 1, "started": 0, "finished": 2, "buried": 0, "failed": 0}
    for state, count in states.items():
        assert value(samples, "tqueues_jobs", queue="q", state=state) == count
    # and the counters of events, the retry, the histograms of wait and run time
    events = {"put": 5, "taken": 3, "finished": 2, "failed": 1, "buried": 0, "expired": 0}
    for event, count in events.items():
        assert value(samples, "tqueues_job_events_total", queue="q", event=event) == count
    assert value(samples, "tqueues_job_retries_total", queue="q") == 1
    assert value(samples, "tqueues_job_wait_seconds_count", queue="q") == 3
    assert value(samples, "tqueues_job_run_seconds_count", queue="q") == 3
    assert value(samples, "tqueues_job_run_seconds_bucket", queue="q", le="+Inf") == 3
    assert value(samples, "tqueues_queue_oldest_pending_age_seconds", queue="q") >= 0.01
    assert value(samples, "tqueues_workers_alive") == 1
    assert value(samples, "tqueues_workers", state="running") == 1
    assert value(samples, "tqueues_workers", state="lost") == 0
    # and the HTTP requests by route and status, and the store's writes
    put_route = {"method": "POST", "route": "/queues/{name}/jobs"}
    assert value(samples, "tqueues_http_requests_total", **put_route, status="201") == 1
    assert value(samples, "tqueues_http_request_duration_seconds_count", **put_route) == 1
    finish = {"method": "POST", "route": "/queues/{name}/jobs/{id}/finish", "status": "200"}
    assert value(samples, "tqueues_http_requests_total", **finish) == 2
    assert value(samples, "tqueues_store_write_duration_seconds_count", operation="mutate") == 3
    assert value(samples, "tqueues_store_write_duration_seconds_count", operation="insert_many")


async def test_a_report_that_takes_along_is_timed_as_one_write(either: Client) -> None:
    body = {"jobs": [{"method": "m:f"} for _ in range(2)]}
    assert (await either.post("/queues/q/jobs", json=body)).status == 201
    (first,) = await take(either, 1)
    # When a worker reports its outcome and takes the next job in the same request
    outcome = {"id": first["id"], "lease": first["lease"], "action": "finish"}
    answer = await either.post("/queues/q/outcomes", json={"outcomes": [outcome], "take": 1})
    assert answer.status == 200 and len((await answer.json())["jobs"]) == 1
    # Then the store's write is timed once, as the outcomes and the claim together
    samples = await scrape(either)
    write = "tqueues_store_write_duration_seconds_count"
    assert value(samples, write, operation="mutate_and_claim") == 1
    assert value(samples, "tqueues_job_events_total", queue="q", event="taken") == 2
    assert value(samples, "tqueues_job_events_total", queue="q", event="finished") == 1


async def test_the_stores_own_work_is_counted(either: Client) -> None:
    body = {"jobs": [{"method": "m:f"} for _ in range(4)]}
    assert (await either.post("/queues/q/jobs", json=body)).status == 201
    jobs = await take(either, 4)
    # When four outcomes come at once
    finishes = [
        either.post(f"/queues/q/jobs/{job['id']}/finish?lease={job['lease']}") for job in jobs
    ]
    assert [response.status for response in await asyncio.gather(*finishes)] == [200] * 4
    # Then the store's own counts are there, by name, and add up
    samples = await scrape(either)
    work = {
        dict(labels)["what"]: count
        for (name, labels), count in samples.items()
        if name == "tqueues_store_work_total"
    }
    if "commits" in work:  # the embedded store's group commit
        assert set(work) == {"operations", "commits", "syncs", "inline_runs"}
        assert work["operations"] >= work["commits"] >= 1
    else:  # RethinkDB: each write query carries one request or more
        assert work["write_requests"] >= work["write_queries"] >= 2
        assert work["claim_requests"] >= work["claim_groups"] >= 1


async def test_an_expired_lease_counts_as_an_expiry_and_a_retry(client: Client) -> None:
    response = await client.post("/queues/q/jobs", json={"method": "m:f", "ttr": 0.1})
    assert response.status == 201
    await take(client, 1)
    for _ in range(250):  # the reaper runs every 0.05 s here
        samples = await scrape(client)
        # (a scrape's families are read one after another: one may be a change ahead)
        if value(samples, "tqueues_job_events_total", queue="q", event="expired") and value(
            samples, "tqueues_jobs", queue="q", state="pending"
        ):
            break
        await asyncio.sleep(0.02)
    assert value(samples, "tqueues_job_events_total", queue="q", event="expired") == 1
    assert value(samples, "tqueues_job_retries_total", queue="q") == 1
    assert value(samples, "tqueues_jobs", queue="q", state="pending") == 1


async def test_an_empty_queue_has_every_series_at_zero(client: Client) -> None:
    samples = await scrape(client)
    assert value(samples, "tqueues_jobs", queue="q", state="pending") == 0
    assert value(samples, "tqueues_queue_oldest_pending_age_seconds", queue="q") == 0
    assert value(samples, "tqueues_job_events_total", queue="q", event="put") == 0
    assert value(samples, "tqueues_workers_alive") == 0


async def test_two_dispatchers_in_one_process_keep_their_own_metrics(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> None:
    one, two = [
        await aiohttp_client(create_app(DispatcherSettings(data_dir=str(tmp_path / name))))
        for name in ("one", "two")
    ]
    for client in (one, two):
        await client.put("/queues/q")
    await one.post("/queues/q/jobs", json={"method": "m:f"})
    assert value(await scrape(one), "tqueues_job_events_total", queue="q", event="put") == 1
    assert value(await scrape(two), "tqueues_job_events_total", queue="q", event="put") == 0


async def test_openmetrics_when_asked_for(client: Client) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).endswith("# EOF\n")


@pytest.fixture
async def secured(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    tokens = {ADMIN: "admin", WORKER: "worker", MONITOR: "monitor"}
    settings = DispatcherSettings(data_dir=str(tmp_path / "data"), tokens=tokens)
    client = await aiohttp_client(create_app(settings))
    assert (await client.put("/queues/q", headers=bearer(ADMIN))).status == 201
    return client


async def test_a_scrape_needs_a_monitor_or_admin_token(secured: Client) -> None:
    response = await secured.get("/metrics")
    assert response.status == 401
    assert (await response.json())["error"] == "unauthorized"
    response = await secured.get("/metrics", headers=bearer(WORKER))
    assert response.status == 403
    assert (await response.json()) == {
        "error": "forbidden",
        "message": "a worker token may not GET this",
    }
    for token in (MONITOR, ADMIN):
        await scrape(secured, bearer(token))


async def test_the_monitor_role_sees_the_dispatcher_never_a_job(secured: Client) -> None:
    for path in ("/health", "/stats", "/queues/q/stats", "/openapi.json"):
        assert (await secured.get(path, headers=bearer(MONITOR))).status == 200, path
    for method, path in (("GET", "/queues/q/jobs"), ("GET", "/queues"),
                         ("POST", "/queues/q/jobs"), ("POST", "/queues/q/take"),
                         ("GET", "/?queue=q&id=1"),
                         ("POST", "/queues/q/jobs/1/cancel")):  # fmt: skip
        response = await secured.request(method, path, headers=bearer(MONITOR), json={})
        assert response.status == 403, (method, path)


def test_the_monitor_role_may_only_read() -> None:
    """No route that changes anything lets a monitoring token in (``cancel`` once did)."""
    from tqueues.dispatcher.operations import OPERATIONS

    writes = [op for op in OPERATIONS if op.method not in ("GET", "HEAD")]
    assert writes
    let_in = [f"{op.method} {op.path}" for op in writes if "monitor" in op.roles]
    assert let_in == []
