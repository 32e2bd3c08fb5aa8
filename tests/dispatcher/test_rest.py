"""The REST API: every route and status code, batches, roles, and every answer checked
against the OpenAPI document the dispatcher serves."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from tests.contract.test_store import until
from tests.dispatcher.conftest import Client
from tqueues import clock
from tqueues.dispatcher import create_app
from tqueues.dispatcher.keys import settings_key, store_key
from tqueues.dispatcher.openapi import document
from tqueues.dispatcher.rest import MAX_BATCH, MAX_OUTCOMES
from tqueues.settings import DispatcherSettings

DOC = document()
#: (path template, its regex, how many parameters), literal segments preferred.
TEMPLATES = sorted(
    (
        (path, re.compile("^" + re.sub(r"\{(\w+)\}", r"[^/]+", path) + "$"), path.count("{"))
        for path in DOC["paths"]
    ),
    key=lambda t: t[2],
)
#: (template, method, status) of every answer checked in this module.
SEEN: set[tuple[str, str, int]] = set()


def template_of(path: str) -> str:
    path = path.partition("?")[0]
    for template, pattern, _ in TEMPLATES:
        if pattern.match(path):
            return template
    raise AssertionError(f"{path} is not in the OpenAPI document")


def check_answer(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    """Assert the answer is documented: its status for that operation, and its body's schema."""
    template = template_of(path)
    operation = DOC["paths"][template].get(method.lower())
    assert operation is not None, f"{method} {template} is not documented"
    response = operation["responses"].get(str(status))
    assert response is not None, f"{method} {template} {status} is not documented: {body}"
    content = response.get("content", {}).get(content_type)
    assert content is not None, f"{method} {template} {status} {content_type} is not documented"
    schema = {**content["schema"], "components": DOC["components"]}
    Draft202012Validator(schema).validate(body)
    SEEN.add((template, method.upper(), status))


class Rest:
    """The REST API over a test client; every answer is checked against the document."""

    def __init__(self, client: Client, token: str | None = None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(
        self, method: str, path: str, body: Any = None, *, expect: int | None = None, **params: Any
    ) -> Any:
        """One request; the decoded body (asserting ``expect`` when given)."""
        kwargs: dict[str, Any] = {"headers": self.headers}
        if params:  # a list value is a repeated parameter
            kwargs["params"] = [
                (k, str(one))
                for k, v in params.items()
                for one in (v if isinstance(v, list) else [v])
            ]
        if body is not None:
            kwargs["data" if isinstance(body, str | bytes) else "json"] = body
        response = await self.client.request(method, path, **kwargs)
        text = await response.text()
        assert response.status < 500 or response.status in (501, 503), text
        is_json = response.content_type == "application/json"
        decoded = json.loads(text) if is_json else text
        check_answer(method, path, response.status, response.content_type, decoded)
        if expect is not None:
            assert response.status == expect, text
        if response.status >= 400:
            assert decoded["error"] and decoded["message"] and "Traceback" not in text
        self.status = response.status
        return decoded

    async def put_job(self, queue: str = "q", **fields: Any) -> dict[str, Any]:
        job: dict[str, Any] = await self.call(
            "POST", f"/queues/{queue}/jobs", {"method": "pkg.mod:func", **fields}, expect=201
        )
        return job

    async def take(self, queue: str = "q", **params: Any) -> list[dict[str, Any]]:
        answer = await self.call("POST", f"/queues/{queue}/take", expect=200, **params)
        jobs: list[dict[str, Any]] = answer["jobs"]
        return jobs

    async def take_one(self, queue: str = "q") -> dict[str, Any]:
        jobs = await self.take(queue)
        assert len(jobs) == 1
        return jobs[0]

    async def action(
        self,
        job: dict[str, Any],
        action: str,
        body: Any = None,
        *,
        expect: int = 200,
        **params: Any,
    ) -> Any:
        path = f"/queues/{job['queue']}/jobs/{job['id']}/{action}"
        return await self.call("POST", path, body, expect=expect, **params)


@pytest.fixture
def rest(client: Client) -> Rest:
    return Rest(client)


# -- the document --------------------------------------------------------------------------


async def test_the_document_is_valid_openapi_and_served(rest: Rest) -> None:
    validate_spec(DOC)
    assert DOC["openapi"].startswith("3.")
    served = await rest.call("GET", "/openapi.json", expect=200)
    # The document bounds wait by the dispatcher's --max_wait (30 in these tests).
    assert served == document(rest.client.app[settings_key])
    assert {"Job", "QueueConfig", "QueueStats", "Error"} <= set(DOC["components"]["schemas"])


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = create_app(DispatcherSettings(data_dir=str(tmp_path)))
    for resource in app.router.resources():
        canonical = resource.canonical
        if canonical == "/ui" or canonical.startswith("/ui/"):
            continue  # the dashboard's static files (tqueues/dispatcher/dashboard.py)
        actions = ("finish", "fail", "release", "requeue", "touch", "bury", "kick", "cancel")
        paths = [canonical.replace("{action}", action) for action in actions]
        for path in paths if "{action}" in canonical else [canonical]:
            assert path in DOC["paths"], path
            for route in resource:
                if route.method == "*":  # a class-based view: its verbs
                    verbs = {"get", "put", "post", "patch", "delete"} & set(dir(route.handler))
                elif route.method == "HEAD":
                    continue
                else:
                    verbs = {route.method.lower()}
                assert verbs and verbs <= set(DOC["paths"][path]), (path, verbs)


# -- queues --------------------------------------------------------------------------------


async def test_queues_list_create_read_change_drop(rest: Rest) -> None:
    listed = await rest.call("GET", "/queues", expect=200)
    assert [q["name"] for q in listed["queues"]] == ["q"]

    created = await rest.call("PUT", "/queues/fast", {"ttr": 5, "priority": 7}, expect=201)
    assert (created["name"], created["ttr"], created["priority"]) == ("fast", 5.0, 7)
    again = await rest.call("PUT", "/queues/fast", {"ttr": 99}, expect=200)
    assert again["ttr"] == 5.0  # an existing queue keeps its settings
    assert (await rest.call("PUT", "/queues/plain", expect=201))["ttr"] == 60.0

    detail = await rest.call("GET", "/queues/fast", expect=200)
    assert detail["stats"]["total"] == 0 and detail["ttr"] == 5.0

    changed = await rest.call("PATCH", "/queues/fast", {"delay": 2.5, "ttl": None}, expect=200)
    assert (changed["delay"], changed["ttr"], changed["ttl"]) == (2.5, 5.0, None)
    job = await rest.put_job("fast")
    assert (job["status"], job["priority"]) == ("delayed", 7)

    dropped = await rest.call("DELETE", "/queues/fast", expect=200)
    assert dropped == {"queue": "fast", "deleted": 1}
    names = [q["name"] for q in (await rest.call("GET", "/queues"))["queues"]]
    assert names == ["plain", "q"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/queues/nope"), ("PATCH", "/queues/nope"), ("DELETE", "/queues/nope"),
     ("POST", "/queues/nope/truncate"), ("GET", "/queues/nope/stats"),
     ("POST", "/queues/nope/kick"), ("GET", "/queues/nope/jobs"),
     ("POST", "/queues/nope/pause"), ("POST", "/queues/nope/resume"),
     ("GET", "/queues/nope/jobs/next"), ("POST", "/queues/nope/take"),
     ("GET", "/queues/nope/jobs/abc"), ("PATCH", "/queues/nope/jobs/abc"),
     ("DELETE", "/queues/nope/jobs/abc"), ("POST", "/queues/nope/jobs/abc/finish")],
)  # fmt: skip
async def test_a_missing_queue_is_404(rest: Rest, method: str, path: str) -> None:
    body = await rest.call(method, path, expect=404)
    assert body["error"] in ("queue_not_found", "job_not_found")
    if "/jobs/abc" not in path:
        assert body["error"] == "queue_not_found"


async def test_enqueue_into_a_missing_queue_is_404(rest: Rest) -> None:
    body = await rest.call("POST", "/queues/nope/jobs", {"method": "a:b"}, expect=404)
    assert body["error"] == "queue_not_found"
    batch = {"jobs": [{"method": "a:b"}]}
    assert (await rest.call("POST", "/queues/nope/jobs", batch, expect=404))["queue"] == "nope"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [("PUT", "/queues/bad-name", None, "queue"),
     ("PUT", "/queues/" + "x" * 65, None, "queue"),
     ("PUT", "/queues/n", {"ttr": -1}, "ttr"),
     ("PUT", "/queues/n", {"ttl_action": "explode"}, "ttl_action"),
     ("PUT", "/queues/n", {"colour": 1}, "colour"),
     ("PUT", "/queues/n", "[1]", None),
     ("PUT", "/queues/n", "{bad", None),
     ("PATCH", "/queues/q", {"max_attempts": 0}, "max_attempts"),
     ("PATCH", "/queues/q", {"priority": 2**32}, "priority"),
     ("PATCH", "/queues/q", {"name": "other"}, "name"),
     ("POST", "/queues/q/kick", {"bound": 0}, "bound"),
     ("POST", "/queues/q/kick", {"bound": "3"}, "bound"),
     ("POST", "/queues/q/kick", {"limit": 3}, "limit"),
     ("POST", "/queues/q/pause", {"for": 0}, "for"),
     ("POST", "/queues/q/pause", {"for": -1}, "for"),
     ("POST", "/queues/q/pause", {"for": "10"}, "for"),
     ("POST", "/queues/q/pause", {"for": 10**9}, "for"),
     ("POST", "/queues/q/pause", {"until": 10}, "until")],
)  # fmt: skip
async def test_queue_input_is_validated(
    rest: Rest, method: str, path: str, body: Any, field: str | None
) -> None:
    error = await rest.call(method, path, body, expect=400)
    if field is not None:
        assert field == error.get("field") or field in error.get("fields", [])


async def test_history_counts_what_this_dispatcher_flushed(rest: Rest) -> None:
    for _ in range(3):
        await rest.put_job()
    # (the dispatcher flushes every few seconds: flush now rather than wait)
    store = rest.client.app[store_key]
    now = clock.now()
    await store.flush_history(now)
    history = await rest.call("GET", "/queues/q/history", expect=200)
    assert (history["queue"], history["bucket"]) == ("q", 60)
    assert sum(b["counts"].get("put", 0) for b in history["buckets"]) == 3
    assert history["since"] <= now <= history["until"]
    # A span read names its bounds: none is empty, so is a reversed one; a longer span
    # than 31 days is read over its last 31 days, as the answer says
    empty = await rest.call("GET", "/queues/q/history", expect=200, since=0, until=60)
    assert (empty["since"], empty["buckets"]) == (0, [])
    reversed_ = await rest.call("GET", "/queues/q/history", expect=200, since=120, until=60)
    assert reversed_["buckets"] == []
    long = await rest.call("GET", "/queues/q/history", expect=200, since=0, until=now)
    assert long["since"] == (int(now - 31 * 86_400) // 60) * 60
    assert long["buckets"] == history["buckets"]
    error = await rest.call("GET", "/queues/q/history", expect=400, until=-1)
    assert error["field"] == "until"
    await rest.call("GET", "/queues/nope/history", expect=404)


def heartbeat(**fields: Any) -> dict[str, Any]:
    """A worker's heartbeat body."""
    now = clock.now()
    return {
        "host": "web-1", "pid": 4242, "version": "1.0", "queues": ["q"], "concurrency": 2,
        "running": [{"queue": "q", "id": "job-1", "started_at": now - 1}],
        "started_at": now - 60, "finished": 3, "failed": 1, **fields,
    }  # fmt: skip


async def test_the_worker_registry(rest: Rest) -> None:
    # Given a worker's heartbeat
    answer = await rest.call("POST", "/workers/web-1:4242/heartbeat", heartbeat(), expect=200)
    assert answer == {"command": None, "interval": 5.0, "cancel": []}
    # Then the worker is listed, running, with what it runs (and per queue)
    (worker,) = (await rest.call("GET", "/workers", expect=200))["workers"]
    assert (worker["id"], worker["state"], worker["finished"]) == ("web-1:4242", "running", 3)
    assert worker["running"][0]["id"] == "job-1" and worker["seen_ago"] < 5
    assert (await rest.call("GET", "/workers", expect=200, queue="other"))["workers"] == []
    # When an operator asks it to be quiet, its next heartbeat hears it
    quiet = await rest.call("POST", "/workers/web-1:4242/quiet", expect=200)
    assert quiet["command"] == "quiet"
    answer = await rest.call(
        "POST", "/workers/web-1:4242/heartbeat", heartbeat(activity="quiet"), expect=200
    )
    assert answer["command"] == "quiet"
    assert (await rest.call("GET", "/workers"))["workers"][0]["state"] == "quiet"
    # And a stop; its last heartbeat (stopped) drops it from the registry
    assert (await rest.call("POST", "/workers/web-1:4242/stop", expect=200))["command"] == "stop"
    await rest.call(
        "POST", "/workers/web-1:4242/heartbeat", heartbeat(activity="stopped"), expect=200
    )
    assert (await rest.call("GET", "/workers"))["workers"] == []
    # Unknown workers and bad heartbeats are refused, naming the problem
    error = await rest.call("POST", "/workers/nobody/stop", expect=404)
    assert error["error"] == "worker_not_found"
    error = await rest.call("POST", "/workers/w/heartbeat", heartbeat(pid=-1), expect=400)
    assert error["field"] == "pid"
    error = await rest.call("POST", "/workers/w/heartbeat", {"host": "h"}, expect=400)
    assert error["error"] == "bad_request"
    error = await rest.call("POST", f"/workers/{'w' * 200}/heartbeat", heartbeat(), expect=400)
    assert error["field"] == "worker"


async def test_explain_says_why_a_job_waits(rest: Rest) -> None:
    first = await rest.put_job()
    second = await rest.put_job()
    answer = await rest.call("GET", f"/queues/q/jobs/{second['id']}/explain", expect=200)
    assert (answer["id"], answer["status"]) == (second["id"], "pending")
    assert [r["code"] for r in answer["reasons"]] == ["queued", "no_worker"]
    assert answer["reasons"][0]["ahead"] == 1
    # A paused queue says so, and until when
    await rest.call("POST", "/queues/q/pause", {"for": 60}, expect=200)
    answer = await rest.call("GET", f"/queues/q/jobs/{second['id']}/explain", expect=200)
    assert [r["code"] for r in answer["reasons"]] == ["paused", "queued", "no_worker"]
    assert answer["reasons"][0]["paused_until"] > clock.now() + 50
    await rest.call("POST", "/queues/q/resume", expect=200)
    (taken,) = await rest.take()
    assert taken["id"] == first["id"]
    answer = await rest.call("GET", f"/queues/q/jobs/{first['id']}/explain", expect=200)
    assert answer["reasons"][0]["code"] == "leased"
    await rest.call("GET", "/queues/q/jobs/nope/explain", expect=404)


async def test_schedules_of_periodic_jobs(rest: Rest) -> None:
    base = "/queues/q/schedules"
    job = {"method": "pkg.mod:func", "args": [1], "priority": 5}
    # Created (cron in a time zone), listed, read
    made = await rest.call("POST", base, {"name": "nightly", "job": job, "cron": "30 2 * * *",
                                          "timezone": "Europe/Madrid"}, expect=201)  # fmt: skip
    assert (made["cron"], made["every"], made["catch_up"], made["paused"]) == (
        "30 2 * * *", None, "latest", False)  # fmt: skip
    assert made["next_tick"] > clock.now() and made["job"]["priority"] == 5
    await rest.call("POST", base, {"name": "often", "job": job, "every": 3600}, expect=201)
    listed = (await rest.call("GET", base, expect=200))["schedules"]
    assert [s["name"] for s in listed] == ["nightly", "often"]
    assert await rest.call("GET", f"{base}/nightly", expect=200) == made
    # Paused and resumed
    assert (await rest.call("POST", f"{base}/often/pause", expect=200))["paused"] is True
    resumed = await rest.call("POST", f"{base}/often/resume", expect=200)
    assert resumed["paused"] is False and resumed["next_tick"] > clock.now()
    # Run now: a job of its own, marked with the schedule
    ran = await rest.call("POST", f"{base}/nightly/run", expect=201)
    assert (ran["method"], ran["args"], ran["schedule"], ran["tick"]) == (
        "pkg.mod:func", [1], "nightly", None)  # fmt: skip
    # Deleted
    gone = await rest.call("DELETE", f"{base}/often", expect=200)
    assert gone["name"] == "often"
    assert (await rest.call("DELETE", f"{base}/often", expect=404))["error"] == (
        "schedule_not_found")  # fmt: skip
    await rest.call("POST", f"{base}/often/run", expect=404)
    await rest.call("GET", "/queues/nope/schedules", expect=404)
    # A name taken, and bad schedules, each refused naming the problem
    again = await rest.call("POST", base, {"name": "nightly", "job": job, "every": 60},
                            expect=409)  # fmt: skip
    assert again["error"] == "schedule_exists"
    for body, field in [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"cron": "* * * * *", "every": 60}, "every"),
        ({}, "cron"),
        ({"every": 0}, "every"),
        ({"every": 60, "catch_up": "some"}, "catch_up"),
    ]:
        error = await rest.call("POST", base, {"name": "bad", "job": job, **body}, expect=400)
        assert error["field"] == field, error
        assert field in error["message"]
    error = await rest.call("POST", base, {"name": "a b", "job": job, "every": 60}, expect=400)
    assert error["field"] == "name"
    error = await rest.call("POST", f"{base}/a%20b/pause", expect=400)
    assert error["field"] == "schedule"


async def test_pause_and_resume_a_queue(rest: Rest) -> None:
    await rest.put_job()
    running = await rest.take_one()
    job = await rest.put_job()
    # When the queue is paused until resumed
    paused = await rest.call("POST", "/queues/q/pause", expect=200)
    assert (paused["name"], paused["paused"], paused["paused_until"]) == ("q", True, None)
    # Then takes of every kind hand out nothing, and puts are still accepted
    assert await rest.take(wait=0.2) == []
    assert (await rest.call("POST", "/take", expect=200, queue="q"))["jobs"] == []
    assert (await rest.call("GET", "/", expect=404, queue="q"))["error"] == "queue_empty"
    finish = {"id": running["id"], "lease": running["lease"], "action": "finish"}
    outcome = await rest.call("POST", "/queues/q/outcomes", {"outcomes": [finish], "take": 1})
    assert outcome["jobs"] == [] and outcome["results"][0]["job"]["status"] == "finished"
    await rest.put_job()
    # And the statistics and the settings say so
    stats = await rest.call("GET", "/queues/q/stats", expect=200)
    assert (stats["paused"], stats["paused_until"], stats["jobs"]["pending"]) == (True, None, 2)
    detail = await rest.call("GET", "/queues/q", expect=200)
    assert detail["paused"] and detail["stats"]["paused"]
    by_queue = (await rest.call("GET", "/stats", expect=200))["by_queue"]
    assert [q["paused"] for q in by_queue] == [True]
    assert (await rest.call("GET", "/queues"))["queues"][0]["paused"] is True
    # When a taker waits and the queue is resumed
    taking = asyncio.create_task(rest.take(wait=10))
    await asyncio.sleep(0.1)
    assert not taking.done()
    resumed = await rest.call("POST", "/queues/q/resume", expect=200)
    assert (resumed["paused"], resumed["paused_until"]) == (False, None)
    # Then it gets the oldest job at once
    assert [taken["id"] for taken in await taking] == [job["id"]]
    # And a pause for a time shows its end, and ends by itself
    timed = await rest.call("POST", "/queues/q/pause", {"for": 0.3}, expect=200)
    assert timed["paused"] and timed["paused_until"] > job["created_at"]
    stats = await rest.call("GET", "/queues/q/stats")
    assert stats["paused_until"] == timed["paused_until"]
    assert len(await rest.take(wait=5)) == 1
    assert (await rest.call("GET", "/queues/q"))["paused"] is False
    # And a resume of a queue that is not paused changes nothing
    assert (await rest.call("POST", "/queues/q/resume", expect=200))["paused"] is False


async def test_truncate_stats_and_kick(rest: Rest) -> None:
    for _ in range(3):
        await rest.put_job()
    stats = await rest.call("GET", "/queues/q/stats", expect=200)
    assert stats["jobs"]["pending"] == 3 and stats["total"] == 3
    assert stats["counters"]["put"] == 3

    for job in await rest.take(count=3):
        await rest.action(job, "bury", {"reason": "later"}, lease=job["lease"])
    kicked = await rest.call("POST", "/queues/q/kick", {"bound": 2}, expect=200)
    assert kicked == {"queue": "q", "kicked": 2}
    stats = await rest.call("GET", "/queues/q/stats")
    assert (stats["jobs"]["pending"], stats["jobs"]["buried"]) == (2, 1)
    assert (await rest.call("POST", "/queues/q/kick", expect=200))["kicked"] == 1
    assert (await rest.call("POST", "/queues/q/kick", {"bound": 5}))["kicked"] == 0

    await rest.put_job(delay=60)  # with nothing buried, a kick promotes delayed jobs
    assert (await rest.call("POST", "/queues/q/kick", {"bound": 5}))["kicked"] == 1

    await rest.call("PUT", "/queues/other", {}, expect=201)
    overall = await rest.call("GET", "/stats", expect=200)
    assert (overall["queues"], overall["jobs"]["pending"], overall["total"]) == (2, 4, 4)
    assert overall["counters"]["put"] == 4 and overall["counters"]["kicked"] == 4
    assert [q["queue"] for q in overall["by_queue"]] == ["other", "q"]

    truncated = await rest.call("POST", "/queues/q/truncate", expect=200)
    assert truncated == {"queue": "q", "deleted": 4}
    assert (await rest.call("GET", "/queues/q/stats"))["total"] == 0


# -- enqueue and list -------------------------------------------------------------------------


async def test_enqueue_one_job(rest: Rest) -> None:
    job = await rest.put_job(args=[1], kwargs={"a": 2}, priority=5, ttr=3, urgent=False)
    assert (job["queue"], job["args"], job["kwargs"], job["priority"]) == ("q", [1], {"a": 2}, 5)
    assert job["status"] == "pending" and "lease" not in job
    same_queue = await rest.call("POST", "/queues/q/jobs", {"queue": "q", "method": "a:b"})
    assert rest.status == 201 and same_queue["queue"] == "q"


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "method"), ({"method": ""}, "method"), ({"method": "a:b", "queue": "other"}, "queue"),
     ({"method": "a:b", "args": {}}, "args"), ({"method": "a:b", "priority": -1}, "priority"),
     ({"method": "a:b", "urgent": "yes"}, "urgent"), ({"method": "a:b", "colour": 1}, "colour"),
     ({"jobs": []}, "jobs"), ({"jobs": {}}, "jobs"), ({"jobs": [1]}, "jobs[0]"),
     ({"jobs": [{"method": "a:b"}], "method": "a:b"}, "method")],
)  # fmt: skip
async def test_enqueue_input_is_validated(rest: Rest, body: Any, field: str) -> None:
    error = await rest.call("POST", "/queues/q/jobs", body, expect=400)
    assert field in (error.get("field"), error.get("index"), *error.get("fields", []))


async def test_batch_enqueue_keeps_order_and_is_all_or_nothing(rest: Rest) -> None:
    batch = {"jobs": [{"method": "a:b", "args": [i]} for i in range(5)]}
    stored = await rest.call("POST", "/queues/q/jobs", batch, expect=201)
    assert [job["args"] for job in stored["jobs"]] == [[i] for i in range(5)]

    bad = {"jobs": [{"method": "a:b"}, {"method": "a:b", "ttr": "long"}, {"nothing": 1}]}
    error = await rest.call("POST", "/queues/q/jobs", bad, expect=400)
    assert (error["index"], error["field"]) == ("jobs[1]", "ttr")
    assert "jobs[1]" in error["message"]
    too_many = {"jobs": [{"method": "a:b"}] * (MAX_BATCH + 1)}
    assert (await rest.call("POST", "/queues/q/jobs", too_many, expect=400))["field"] == "jobs"
    assert (await rest.call("GET", "/queues/q/stats"))["total"] == 5  # nothing else stored

    full = {"jobs": [{"method": "a:b"}] * MAX_BATCH}
    assert len((await rest.call("POST", "/queues/q/jobs", full, expect=201))["jobs"]) == MAX_BATCH


async def test_list_jobs_by_status_with_pages(rest: Rest) -> None:
    ids = [(await rest.put_job(args=[i]))["id"] for i in range(5)]
    taken = await rest.take_one()
    page = await rest.call("GET", "/queues/q/jobs", expect=200, limit=2)
    assert [j["id"] for j in page["jobs"]] == ids[:2] and page["next_cursor"]
    seen = [j["id"] for j in page["jobs"]]
    while page["next_cursor"]:
        page = await rest.call("GET", "/queues/q/jobs", limit=2, cursor=page["next_cursor"])
        seen += [j["id"] for j in page["jobs"]]
    assert seen == ids
    started = await rest.call("GET", "/queues/q/jobs", status="started")
    assert [j["id"] for j in started["jobs"]] == [taken["id"]]
    assert started["next_cursor"] is None and "lease" not in started["jobs"][0]
    pending = await rest.call("GET", "/queues/q/jobs", status="pending", limit=100)
    assert len(pending["jobs"]) == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "ready"}, "status"), ({"limit": 0}, "limit"), ({"limit": "x"}, "limit"),
     ({"limit": 1001}, "limit"), ({"cursor": "c" * 2000}, "cursor")],
)  # fmt: skip
async def test_list_input_is_validated(rest: Rest, params: dict[str, Any], field: str) -> None:
    error = await rest.call("GET", "/queues/q/jobs", expect=400, **params)
    assert error["field"] == field


async def test_peek_pending_delayed_buried(rest: Rest) -> None:
    for status in ("pending", "delayed", "buried"):
        error = await rest.call("GET", "/queues/q/jobs/next", expect=404, status=status)
        assert error["error"] == "job_not_found"
    low = await rest.put_job(priority=10)
    high = await rest.put_job(priority=1)
    late = await rest.put_job(delay=100)
    soon = await rest.put_job(delay=50)
    assert (await rest.call("GET", "/queues/q/jobs/next", expect=200))["id"] == high["id"]
    peeked = await rest.call("GET", "/queues/q/jobs/next", status="delayed")
    assert peeked["id"] == soon["id"] != late["id"]
    job = await rest.take_one()
    await rest.action(job, "bury", lease=job["lease"])
    assert (await rest.call("GET", "/queues/q/jobs/next", status="buried"))["id"] == high["id"]
    assert (await rest.call("GET", "/queues/q/jobs/next"))["id"] == low["id"]
    error = await rest.call("GET", "/queues/q/jobs/next", expect=400, status="started")
    assert error["field"] == "status"


# -- take -------------------------------------------------------------------------------------


async def test_take_one_many_and_none(rest: Rest) -> None:
    assert await rest.take() == []  # none: 200 and an empty list
    ids = [(await rest.put_job(args=[i]))["id"] for i in range(5)]
    first = await rest.take_one()
    assert first["id"] == ids[0] and first["lease"] and first["status"] == "started"
    batch = await rest.take(count=3, worker="w1")
    assert [j["id"] for j in batch] == ids[1:4]
    assert {j["worker"] for j in batch} == {"w1"} and all(j["lease"] for j in batch)
    assert [j["id"] for j in await rest.take(count=10)] == ids[4:]
    assert await rest.take(count=10) == []


async def test_take_waits_for_a_job(rest: Rest) -> None:
    waiting = asyncio.create_task(rest.take(wait=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    job = await Rest(rest.client).put_job()
    taken = await asyncio.wait_for(waiting, 5)
    assert [j["id"] for j in taken] == [job["id"]]
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await rest.take(wait=0.3) == []
    assert loop.time() - started >= 0.25


@pytest.mark.parametrize(
    ("params", "field"),
    [({"wait": -1}, "wait"), ({"wait": "soon"}, "wait"), ({"wait": 31}, "wait"),
     ({"count": 0}, "count"), ({"count": 101}, "count"), ({"count": "2.5"}, "count"),
     ({"worker": "w" * 201}, "worker")],
)  # fmt: skip
async def test_take_input_is_validated(rest: Rest, params: dict[str, Any], field: str) -> None:
    error = await rest.call("POST", "/queues/q/take", expect=400, **params)
    assert error["field"] == field


async def test_take_from_several_queues(rest: Rest) -> None:
    for name in ("qa", "qb"):
        await rest.call("PUT", f"/queues/{name}", expect=201)
    # The first queue in the order given that has jobs gives them, all from that queue
    assert (await rest.call("POST", "/take", expect=200, queue=["qa", "qb"]))["jobs"] == []
    in_b = [(await rest.put_job("qb", args=[i]))["id"] for i in range(3)]
    in_a = (await rest.put_job("qa"))["id"]
    answer = await rest.call("POST", "/take", expect=200, queue=["qb", "qa"], count=2, worker="w")
    assert [(j["id"], j["queue"], j["worker"]) for j in answer["jobs"]] == [
        (in_b[0], "qb", "w"), (in_b[1], "qb", "w")
    ]  # fmt: skip
    assert all(j["lease"] and j["status"] == "started" for j in answer["jobs"])
    answer = await rest.call("POST", "/take", expect=200, queue=["qa", "qb"], count=5)
    assert [j["id"] for j in answer["jobs"]] == [in_a]
    answer = await rest.call("POST", "/take", expect=200, queue=["qb"], count=5)
    assert [j["id"] for j in answer["jobs"]] == [in_b[2]]
    # A long-poll on several queues, all empty, is answered by a put to any of them
    waiting = asyncio.create_task(
        rest.call("POST", "/take", expect=200, queue=["qa", "qb"], count=5, wait=10)
    )
    store = rest.client.app[store_key]
    await until(lambda: bool(store._waiters["qb"]))
    put = await Rest(rest.client).put_job("qb")
    assert [j["id"] for j in (await asyncio.wait_for(waiting, 5))["jobs"]] == [put["id"]]


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "queue"), ({"queue": ""}, "queue"), ({"queue": "bad-name"}, "queue"),
     ({"queue": ["q", "q"]}, "queue"), ({"queue": [f"q{i}" for i in range(33)]}, "queue"),
     ({"queue": "q", "count": 0}, "count"), ({"queue": "q", "wait": -1}, "wait"),
     ({"queue": "q", "worker": "w" * 201}, "worker")],
)  # fmt: skip
async def test_take_from_several_queues_input_is_validated(
    rest: Rest, params: dict[str, Any], field: str
) -> None:
    error = await rest.call("POST", "/take", expect=400, **params)
    assert error["field"] == field


async def test_take_from_several_queues_one_missing_takes_nothing(rest: Rest) -> None:
    job = await rest.put_job()
    error = await rest.call("POST", "/take", expect=404, queue=["q", "nope"])
    assert (error["error"], error["queue"]) == ("queue_not_found", "nope")
    assert (await rest.call("GET", f"/queues/q/jobs/{job['id']}"))["status"] == "pending"


# -- one job ----------------------------------------------------------------------------------


async def test_read_update_delete_a_job(rest: Rest) -> None:
    job = await rest.put_job()
    path = f"/queues/q/jobs/{job['id']}"
    assert (await rest.call("GET", path, expect=200))["id"] == job["id"]
    updated = await rest.call("PATCH", path, {"progress": 0.5}, expect=200)
    assert updated["progress"] == 0.5
    taken = await rest.take_one()
    touched = await rest.call("PATCH", path, {"progress": 0.7}, lease=taken["lease"])
    assert touched["lease_expires"] >= taken["lease_expires"] and touched["progress"] == 0.7
    assert (await rest.call("GET", path))["progress"] == 0.7
    assert "lease" not in await rest.call("GET", path)
    error = await rest.call("PATCH", path, {"x": 1}, expect=409, lease="not-the-lease")
    assert error["error"] == "lease_mismatch"
    error = await rest.call("PATCH", path, {"status": "finished"}, expect=400)
    assert error["error"] == "bad_request"
    deleted = await rest.call("DELETE", path, expect=200)
    assert deleted["id"] == job["id"] and deleted["status"] == "started"
    for method in ("GET", "PATCH", "DELETE"):
        error = await rest.call(method, path, expect=404)
        assert error["error"] == "job_not_found"
    assert (await rest.call("GET", "/queues/q/jobs/" + "x" * 129, expect=400))["field"] == "id"


async def test_finish_and_read_the_result(rest: Rest) -> None:
    await rest.put_job()
    job = await rest.take_one()
    done = await rest.action(job, "finish", {"result": {"answer": 42}}, lease=job["lease"])
    assert (done["status"], done["result"]) == ("finished", {"answer": 42})
    stored = await rest.call("GET", f"/queues/q/jobs/{job['id']}")
    assert stored["result"] == {"answer": 42}
    error = await rest.action(job, "finish", expect=409)
    assert error["error"] == "invalid_transition"


async def test_fail_retries_then_buries_and_permanent_fails(rest: Rest) -> None:
    await rest.put_job(max_attempts=2)
    job = await rest.take_one()
    retried = await rest.action(
        job, "fail", {"error": "E: 1", "traceback": "tb"}, lease=job["lease"]
    )
    assert retried["status"] in ("delayed", "pending") and retried["error"] == "E: 1"
    await rest.action(retried, "kick") if retried["status"] == "delayed" else None
    again = await rest.take_one()
    buried = await rest.action(again, "fail", {"error": "E: 2"}, lease=again["lease"])
    assert buried["status"] == "buried" and buried["traceback"] is None

    await rest.put_job()
    job = await rest.take_one()
    failed = await rest.action(
        job, "fail", {"error": "bad input", "permanent": True}, lease=job["lease"]
    )
    assert failed["status"] == "failed"


async def test_release_requeue_touch_bury_kick(rest: Rest) -> None:
    first, second = await rest.put_job(), await rest.put_job()
    job = await rest.take_one()
    released = await rest.action(job, "release", lease=job["lease"])
    assert released["status"] == "pending" and released["attempts"] == 0
    assert (await rest.take_one())["id"] == first["id"]  # it kept its place

    delayed = await rest.action(first, "release", {"delay": 30})
    assert delayed["status"] == "delayed"
    kicked = await rest.action(first, "kick")
    assert kicked["status"] == "pending"

    job = await rest.take_one()
    assert job["id"] == second["id"]  # the kicked one went to the end
    requeued = await rest.action(job, "requeue", lease=job["lease"])
    assert requeued["status"] == "pending"
    assert (await rest.take_one())["id"] == first["id"]

    job = await rest.take_one()
    touched = await rest.action(job, "touch", {"ttr": 500}, lease=job["lease"])
    assert touched["lease_expires"] > job["lease_expires"] + 400
    assert (await rest.action(job, "touch", expect=400))["field"] == "lease"
    error = await rest.action(job, "touch", expect=409, lease="stale")
    assert error["error"] == "lease_mismatch"

    buried = await rest.action(job, "bury", {"reason": "poison"}, lease=job["lease"])
    assert buried["status"] == "buried"
    error = await rest.action(buried, "bury", expect=409)
    assert error["error"] == "invalid_transition"
    assert (await rest.action(buried, "kick"))["status"] == "pending"
    error = await rest.action(buried, "kick", expect=409)
    assert error["error"] == "invalid_transition"


async def test_cancel(rest: Rest) -> None:
    # A pending job and a delayed one are cancelled at once, and never taken
    pending, delayed = await rest.put_job(), await rest.put_job(delay=60)
    for job in (pending, delayed):
        cancelled = await rest.action(job, "cancel")
        assert cancelled["status"] == "cancelled" and cancelled["event"] == "cancelled"
        assert cancelled["finished_at"] is not None
    assert await rest.take(wait=0) == []
    # A started job is flagged: still started, its worker hears of it at its next heartbeat
    await rest.put_job()
    job = await rest.take_one()
    flagged = await rest.action(job, "cancel")
    assert (flagged["status"], flagged["cancel_requested"]) == ("started", True)
    beat = heartbeat(running=[{"queue": "q", "id": job["id"], "started_at": 1.0},
                              {"queue": "q", "id": pending["id"], "started_at": 1.0},
                              {"queue": "gone", "id": "nope", "started_at": 1.0}])  # fmt: skip
    answer = await rest.call("POST", "/workers/w:1/heartbeat", beat, expect=200)
    assert answer["cancel"] == [job["id"], pending["id"]]
    # whatever its worker then reports, it ends cancelled, never retried
    ended = await rest.action(job, "fail", {"error": "stopped"}, lease=job["lease"])
    assert ended["status"] == "cancelled" and ended["attempts"] == 1
    # Its worker may also say so itself, with its lease
    await rest.put_job()
    job = await rest.take_one()
    assert (await rest.action(job, "cancel", lease=job["lease"]))["status"] == "cancelled"
    # A job that ended: 409; an unknown one: 404
    for ended_job in (pending, job):
        error = await rest.action(ended_job, "cancel", expect=409)
        assert error["error"] == "invalid_transition" and "cancelled" in error["message"]
    await rest.put_job()
    job = await rest.take_one()
    await rest.action(job, "finish", {"result": 1}, lease=job["lease"])
    assert (await rest.action(job, "cancel", expect=409))["error"] == "invalid_transition"
    error = await rest.action({**job, "id": "f" * 32}, "cancel", expect=404)
    assert error["error"] == "job_not_found"
    assert (await rest.action({**job, "queue": "nope"}, "cancel", expect=404))["error"] == (
        "queue_not_found"
    )
    stats = await rest.call("GET", "/queues/q/stats", expect=200)
    assert stats["jobs"]["cancelled"] == 4


async def test_after(rest: Rest) -> None:
    # A job put after another waits for it; explain names what it waits for
    first = await rest.put_job()
    waiting = await rest.put_job(after=[first["id"]])
    assert (waiting["status"], waiting["after"]) == ("waiting", [f"q/{first['id']}"])
    explained = await rest.call("GET", f"/queues/q/jobs/{waiting['id']}/explain", expect=200)
    assert explained["reasons"][0]["code"] == "waiting"
    assert explained["reasons"][0]["outstanding"] == [f"q/{first['id']}"]
    assert (await rest.call("GET", "/queues/q/stats", expect=200))["jobs"]["waiting"] == 1
    # Bad input: a 400 naming 'after' (and the job it names), nothing stored
    missing = await rest.call("POST", "/queues/q/jobs", {"method": "m:f", "after": ["f" * 32]},
                              expect=400)  # fmt: skip
    assert (missing["field"], missing["value"]) == ("after", f"q/{'f' * 32}")
    for after in (["no queue/x"], [""], [1], "x", ["q/" + "x" * 200], [str(i) for i in range(101)]):
        error = await rest.call("POST", "/queues/q/jobs", {"method": "m:f", "after": after},
                                expect=400)  # fmt: skip
        assert "after" in error["message"], error
    batch = {"jobs": [{"method": "m:f"}, {"method": "m:f", "after": [first["id"]]}]}
    error = await rest.call("POST", "/queues/q/jobs", batch, expect=400)
    assert (error["field"], error["index"]) == ("after", "jobs[1]")
    # The waiting job is not taken; its prerequisite's finish makes it pending
    job = await rest.take_one()
    assert job["id"] == first["id"]
    await rest.action(job, "finish", {"result": 1}, lease=job["lease"])
    for _ in range(200):
        if (await rest.call("GET", f"/queues/q/jobs/{waiting['id']}"))["status"] == "pending":
            break
        await asyncio.sleep(0.01)
    assert (await rest.take_one())["id"] == waiting["id"]
    assert (await rest.call("GET", "/queues/q/stats", expect=200))["total"] == 2


@pytest.mark.parametrize(
    ("action", "body", "params", "field"),
    [("finish", {"results": 1}, {}, "results"), ("fail", {}, {}, "error"),
     ("fail", {"error": 5}, {}, "error"), ("fail", {"error": "x", "permanent": 1}, {}, "permanent"),
     ("release", {"delay": -1}, {}, "delay"), ("requeue", {"delay": "x"}, {}, "delay"),
     ("touch", {"ttr": 0}, {"lease": "l"}, "ttr"), ("bury", {"reason": 3}, {}, "reason"),
     ("kick", {"bound": 3}, {}, "bound"), ("finish", None, {"lease": "l" * 200}, "lease")],
)  # fmt: skip
async def test_action_input_is_validated(
    rest: Rest, action: str, body: Any, params: dict[str, Any], field: str
) -> None:
    job = await rest.put_job()
    error = await rest.action(job, action, body, expect=400, **params)
    assert field in (error.get("field"), *error.get("fields", []))


# -- batched outcomes -----------------------------------------------------------------------


async def test_outcomes_apply_each_item_on_its_own_in_order(rest: Rest) -> None:
    for _ in range(5):
        await rest.put_job(max_attempts=1)
    jobs = await rest.take(count=5)
    a, b, c, d, e = jobs
    await rest.action(e, "finish", lease=e["lease"])  # already final: the batch gets 409
    outcomes = [
        {"id": a["id"], "lease": a["lease"], "action": "finish", "result": {"n": 1}},
        {"id": b["id"], "lease": "stale", "action": "finish"},
        {"id": "nope", "lease": "x", "action": "fail", "error": "E"},
        {"id": c["id"], "lease": c["lease"], "action": "fail", "error": "E: c", "traceback": "t"},
        {"id": d["id"], "lease": d["lease"], "action": "release", "delay": 30},
        {"id": e["id"], "lease": e["lease"], "action": "finish"},
    ]
    answer = await rest.call("POST", "/queues/q/outcomes", {"outcomes": outcomes}, expect=200)
    results = answer["results"]
    assert len(results) == 6
    assert results[0]["job"]["status"] == "finished" and results[0]["job"]["result"] == {"n": 1}
    assert results[1]["error"]["error"] == "lease_mismatch" and results[1]["error"]["status"] == 409
    assert results[2]["error"]["error"] == "job_not_found" and results[2]["error"]["status"] == 404
    assert results[3]["job"]["status"] == "buried" and results[3]["job"]["error"] == "E: c"
    assert results[4]["job"]["status"] == "delayed"
    assert results[5]["error"]["error"] == "invalid_transition"
    # Exactly what the single-job routes stored: b is still taken, its lease intact.
    stored = await rest.call("GET", f"/queues/q/jobs/{b['id']}")
    assert stored["status"] == "started"
    done = await rest.action(b, "finish", lease=b["lease"])
    assert done["status"] == "finished"
    stats = await rest.call("GET", "/queues/q/stats")
    assert stats["jobs"]["finished"] == 3 and stats["jobs"]["delayed"] == 1


async def test_outcomes_requeue_and_bury_and_no_lease(rest: Rest) -> None:
    for _ in range(3):
        await rest.put_job()
    a, b, c = await rest.take(count=3)
    outcomes = [
        {"id": a["id"], "lease": a["lease"], "action": "requeue"},
        {"id": b["id"], "lease": b["lease"], "action": "bury", "reason": "poison"},
        {"id": c["id"], "action": "finish"},  # no lease: whoever holds it, as on /finish
    ]
    results = (await rest.call("POST", "/queues/q/outcomes", {"outcomes": outcomes}))["results"]
    assert [r["job"]["status"] for r in results] == ["pending", "buried", "finished"]


async def test_outcomes_of_a_missing_queue_are_404_each(rest: Rest) -> None:
    body = {"outcomes": [{"id": "x", "lease": "l", "action": "finish"}]}
    results = (await rest.call("POST", "/queues/nope/outcomes", body, expect=200))["results"]
    assert results[0]["error"]["error"] == "queue_not_found"
    assert results[0]["error"]["status"] == 404


async def test_outcomes_take_the_next_jobs_in_the_same_request(rest: Rest) -> None:
    for i in range(4):
        await rest.put_job(priority=i)
    (a,) = await rest.take(count=1, worker="w0")
    outcomes = [{"id": a["id"], "lease": a["lease"], "action": "finish"}]
    body = {"outcomes": outcomes, "take": 2, "worker": "w1"}
    answer = await rest.call("POST", "/queues/q/outcomes", body, expect=200)
    assert answer["results"][0]["job"]["status"] == "finished"
    taken = answer["jobs"]
    # The next two by priority, each started under its own lease for the named worker.
    assert [job["priority"] for job in taken] == [1, 2]
    assert all(job["status"] == "started" and job["worker"] == "w1" for job in taken)
    assert len({job["lease"] for job in taken}) == 2 and a["lease"] not in {
        job["lease"] for job in taken
    }
    for job in taken:
        stored = await rest.call("GET", f"/queues/q/jobs/{job['id']}")
        assert stored["status"] == "started" and stored["attempts"] == 1
    # Asking for more than is pending takes what there is; none left answers an empty list.
    outcomes = [{"id": job["id"], "lease": job["lease"], "action": "finish"} for job in taken]
    answer = await rest.call("POST", "/queues/q/outcomes", {"outcomes": outcomes, "take": 5})
    assert [job["priority"] for job in answer["jobs"]] == [3]
    (d,) = answer["jobs"]
    body = {"outcomes": [{"id": d["id"], "lease": d["lease"], "action": "finish"}], "take": 5}
    answer = await rest.call("POST", "/queues/q/outcomes", body, expect=200)
    assert answer["jobs"] == [] and answer["results"][0]["job"]["status"] == "finished"
    # "take": 0 is a plain report (no "jobs" in the answer).
    body = {"outcomes": [{"id": d["id"], "action": "finish"}], "take": 0}
    answer = await rest.call("POST", "/queues/q/outcomes", body, expect=200)
    assert "jobs" not in answer and answer["results"][0]["error"]["status"] == 409


async def test_brief_outcomes_answer_the_id_and_status_only(rest: Rest) -> None:
    for _ in range(2):
        await rest.put_job(args=["x" * 1000])
    a, b = await rest.take(count=2)
    outcomes = [
        {"id": a["id"], "lease": a["lease"], "action": "finish", "result": "y" * 1000},
        {"id": b["id"], "lease": "stale", "action": "finish"},
    ]
    body = {"outcomes": outcomes, "brief": True}
    results = (await rest.call("POST", "/queues/q/outcomes", body, expect=200))["results"]
    assert results[0] == {"stored": {"id": a["id"], "status": "finished"}}
    assert results[1]["error"]["error"] == "lease_mismatch"
    stored = await rest.call("GET", f"/queues/q/jobs/{a['id']}")
    assert stored["status"] == "finished" and stored["result"] == "y" * 1000


async def test_outcomes_taking_from_a_missing_queue_take_nothing(rest: Rest) -> None:
    body = {"outcomes": [{"id": "x", "lease": "l", "action": "finish"}], "take": 3}
    answer = await rest.call("POST", "/queues/nope/outcomes", body, expect=200)
    assert answer["results"][0]["error"]["error"] == "queue_not_found"
    assert answer["jobs"] == []


@pytest.mark.parametrize(
    ("body", "index", "field"),
    [({"outcomes": []}, None, "outcomes"),
     ({"outcomes": "x"}, None, "outcomes"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "more": 1}, None, "more"),
     ({}, None, None),
     ({"outcomes": [{"id": "x", "action": "finish"}] * (MAX_OUTCOMES + 1)}, None, "outcomes"),
     ({"outcomes": [{"id": "x", "action": "finish"}, 5]}, "outcomes[1]", None),
     ({"outcomes": [{"action": "finish"}]}, "outcomes[0]", "id"),
     ({"outcomes": [{"id": "x" * 200, "action": "finish"}]}, "outcomes[0]", "id"),
     ({"outcomes": [{"id": "x", "lease": 5, "action": "finish"}]}, "outcomes[0]", "lease"),
     ({"outcomes": [{"id": "x", "action": "touch"}]}, "outcomes[0]", "action"),
     ({"outcomes": [{"id": "x", "action": "kick"}]}, "outcomes[0]", "action"),
     ({"outcomes": [{"id": "x", "action": "finish"}, {"id": "y", "action": "finish",
                                                      "results": 1}]}, "outcomes[1]", "results"),
     ({"outcomes": [{"id": "x", "action": "finish"}, {"id": "y", "action": "fail"}]},
      "outcomes[1]", "error"),
     ({"outcomes": [{"id": "x", "action": "release", "delay": -1}]}, "outcomes[0]", "delay"),
     ({"outcomes": [{"id": "x", "action": "fail", "error": "e", "permanent": 1}]},
      "outcomes[0]", "permanent"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": -1}, None, "take"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": 101}, None, "take"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": "2"}, None, "take"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": True}, None, "take"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": 1, "worker": 5}, None, "worker"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "brief": 1}, None, "brief"),
     ({"outcomes": [{"id": "x", "action": "finish"}], "take": 1, "worker": "w" * 201},
      None, "worker")],
)  # fmt: skip
async def test_outcomes_input_is_validated_before_any_is_applied(
    rest: Rest, body: Any, index: str | None, field: str | None
) -> None:
    await rest.put_job()
    taken = await rest.take_one()
    if body.get("outcomes") and isinstance(body["outcomes"], list) and len(body["outcomes"]) < 5:
        # A good first item must not be applied when a later one is bad.
        body = {**body, "outcomes": [{"id": taken["id"], "action": "finish"}, *body["outcomes"]]}
        index = index and f"outcomes[{int(index[9:-1]) + 1}]"
    error = await rest.call("POST", "/queues/q/outcomes", body, expect=400)
    if index is not None:
        assert error["index"] == index and error["message"].startswith(index), error
    if field is not None:
        assert field in (error.get("field"), *error.get("fields", [])), error
    assert (await rest.call("GET", f"/queues/q/jobs/{taken['id']}"))["status"] == "started"


async def test_unknown_routes_and_methods(rest: Rest, client: Client) -> None:
    job = await rest.put_job()
    response = await client.post(f"/queues/q/jobs/{job['id']}/explode")
    assert response.status == 404 and (await response.json())["error"] == "not_found"
    response = await client.post("/queues")
    assert response.status == 405 and "GET" in response.headers["Allow"]


# -- the documented / API, checked against the document too --------------------------------


async def test_the_root_api_matches_the_document(rest: Rest) -> None:
    assert await rest.call("PUT", "/", expect=200, queue="r") == "ok"
    job = await rest.call("POST", "/", {"queue": "r", "method": "a:b"}, expect=200)
    await rest.call("POST", "/", {"queue": "nope", "method": "a:b"}, expect=501)
    taken = await rest.call("GET", "/", expect=200, queue="r")
    assert taken["lease"]
    await rest.call("GET", "/", expect=404, queue="r")
    await rest.call("GET", "/", expect=200, queue="r", id=job["id"])
    await rest.call("PATCH", "/", {"p": 1}, expect=200, queue="r", id=job["id"])
    await rest.call("DELETE", "/", {"result": 1}, expect=200, queue="r", id=job["id"])
    await rest.call("DELETE", "/", expect=409, queue="r", id=job["id"], lease="x")
    assert (await rest.call("GET", "/health", expect=200))["status"] == "ok"


# -- roles ----------------------------------------------------------------------------------

ADMIN, PRODUCER, WORKER, MONITOR = "a" * 32, "p" * 32, "w" * 32, "m" * 32
#: (method, path, body) of every REST operation, and the roles besides admin allowed it.
OPERATIONS: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/queues", None, {"producer", "worker"}),
    ("PUT", "/queues/new", None, {"producer"}),
    ("GET", "/queues/q", None, set()),
    ("PATCH", "/queues/q", {"ttr": 5}, set()),
    ("DELETE", "/queues/gone", None, set()),
    ("POST", "/queues/q/truncate", None, set()),
    ("GET", "/queues/q/stats", None, {"monitor"}),
    ("GET", "/stats", None, {"monitor"}),
    ("GET", "/metrics", None, {"monitor"}),
    ("GET", "/queues/q/history", None, {"monitor"}),
    ("POST", "/queues/q/kick", {"bound": 1}, set()),
    ("POST", "/queues/q/jobs", {"method": "a:b"}, {"producer"}),
    ("GET", "/queues/q/jobs", None, {"producer", "worker"}),
    ("GET", "/queues/q/jobs/next", None, {"producer", "worker"}),
    ("POST", "/queues/q/take", None, {"worker"}),
    ("POST", "/take?queue=q", None, {"worker"}),
    ("GET", "/queues/q/jobs/{id}", None, {"producer", "worker"}),
    ("PATCH", "/queues/q/jobs/{id}", {"x": 1}, {"worker"}),
    ("DELETE", "/queues/q/jobs/{id}", None, set()),
    *[
        ("POST", f"/queues/q/jobs/{{id}}/{action}", body, {"worker"})
        for action, body in [
            ("finish", None),
            ("fail", {"error": "e"}),
            ("release", None),
            ("requeue", None),
            ("bury", None),
        ]
    ],
    ("POST", "/queues/q/jobs/{id}/touch", None, {"worker"}),
    ("POST", "/queues/q/jobs/{id}/kick", None, set()),
    ("POST", "/queues/q/outcomes", {"outcomes": [{"id": "x", "action": "finish"}]}, {"worker"}),
    ("GET", "/openapi.json", None, {"producer", "worker", "monitor"}),
    ("GET", "/whoami", None, {"producer", "worker", "monitor"}),
    ("GET", "/health", None, {"producer", "worker", "monitor"}),
]


@pytest.fixture
async def secured(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "data"),
        tokens={ADMIN: "admin", PRODUCER: "producer", WORKER: "worker", MONITOR: "monitor"},
    )
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize("role", ["admin", "producer", "worker", "monitor", None])
async def test_roles_on_the_rest_api(secured: Client, role: str | None) -> None:
    tokens = {"admin": ADMIN, "producer": PRODUCER, "worker": WORKER, "monitor": MONITOR}
    token = tokens.get(role or "", "bad" * 11)
    admin, caller = Rest(secured, ADMIN), Rest(secured, token)
    for method, path, body, allowed in OPERATIONS:
        for name in ("q", "gone"):
            await admin.call("PUT", f"/queues/{name}")
        await admin.call("POST", "/queues/q/truncate")
        job = await admin.put_job()
        await admin.put_job()  # left pending, for a peek
        lease = (await admin.take_one())["lease"]
        if path.endswith("/kick") and "{id}" in path:
            await admin.action({"queue": "q", "id": job["id"]}, "bury", lease=lease)
        params = {"lease": lease} if path.endswith("/touch") else {}
        await caller.call(method, path.replace("{id}", job["id"]), body, **params)
        if role is None:
            assert caller.status == 401
        elif role == "admin" or role in allowed:
            assert caller.status < 400, (role, method, path)
        else:
            assert caller.status == 403, (role, method, path)


# -- coverage of the document -----------------------------------------------------------------


def test_every_rest_operation_was_checked(request: pytest.FixtureRequest) -> None:
    """Runs last: every documented REST operation answered at least once above."""
    mine = [item for item in request.session.items if item.module is request.module]
    if (
        len(mine) != len([i for i in request.session.items if i.path == request.path])
        or len(mine) < 60
    ):
        pytest.skip("only meaningful when the whole module runs")
    documented = {
        (path, method.upper())
        for path, item in DOC["paths"].items()
        for method in item
        # The WebSockets are tested in test_ws.py, test_jobstream.py and test_takestream.py
        if method != "parameters"
        and path not in ("/ws", "/queues/{name}/jobs/stream", "/take/stream")
    }
    checked = {(path, method) for path, method, _ in SEEN}
    assert documented - checked == set()
    codes = {status for _, _, status in SEEN}
    assert {200, 201, 400, 401, 403, 404, 409, 501} <= codes


async def test_json_nested_deeper_than_can_be_stored_is_a_400(rest: Rest) -> None:
    deep = "[" * 300 + "]" * 300  # readable (1,024 levels) but not writable (254)
    job = await rest.put_job()
    (taken,) = await rest.take()
    # A job, a result and a batch of outcomes holding it are refused before anything is
    # written, naming the problem
    answer = await rest.call(
        "POST", "/queues/q/jobs", f'{{"method": "pkg.mod:func", "args": [{deep}]}}', expect=400
    )
    assert "cannot be stored" in answer["message"]
    await rest.action(taken, "finish", f'{{"result": {deep}}}', expect=400, lease=taken["lease"])
    batch = f'{{"outcomes": [{{"id": "{job["id"]}", "lease": "{taken["lease"]}", '
    batch += f'"action": "finish", "result": {deep}}}]}}'
    await rest.call("POST", "/queues/q/outcomes", batch, expect=400)
    # And the job is still the started one, its lease intact
    assert (await rest.call("GET", f"/queues/q/jobs/{job['id']}", expect=200))[
        "status"
    ] == "started"


# -- the dashboard --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "producer", "worker"])
async def test_whoami_names_the_role_and_what_it_may_call(secured: Client, role: str) -> None:
    token = {"admin": ADMIN, "producer": PRODUCER, "worker": WORKER}[role]
    answer = await Rest(secured, token).call("GET", "/whoami", expect=200)
    assert answer["role"] == role
    may = set(answer["operations"])
    assert {"whoami", "list_jobs", "get", "websocket"} <= may
    assert ("put" in may) == (role in ("admin", "producer"))
    assert ("take_many" in may) == (role in ("admin", "worker"))
    assert ("kick" in may, "truncate" in may, "kick_job" in may) == ((role == "admin",) * 3)
    await Rest(secured, "bad" * 11).call("GET", "/whoami", expect=401)


async def test_whoami_without_tokens_is_the_admin(rest: Rest) -> None:
    answer = await rest.call("GET", "/whoami", expect=200)
    assert answer["role"] == "admin"
    assert "truncate" in answer["operations"]


async def test_the_dashboard_is_served_without_a_token_and_holds_no_data(secured: Client) -> None:
    """The page's files need no token (the page asks for one); every datum needs one."""
    moved = await secured.get("/ui", allow_redirects=False)
    assert (moved.status, moved.headers["Location"]) == (302, "/ui/")
    page = await secured.get("/ui/")
    assert page.status == 200 and page.content_type == "text/html"
    assert 'id="token"' in await page.text()
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for name, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        answer = await secured.get(f"/ui/{name}")
        assert answer.status == 200 and kind in answer.content_type
    assert (await secured.get("/ui/nope.js")).status == 404
    assert (await secured.get("/ui/../openapi.json")).status in (401, 403, 404)
    assert (await secured.post("/ui/")).status in (401, 405)
    assert (await secured.get("/queues")).status == 401
