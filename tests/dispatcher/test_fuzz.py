"""Generated and malformed requests against a dispatcher on each store: never a 5xx, never
a broken job; and the one answer, on every route and both stores, to an id no job can have."""

from __future__ import annotations

import collections
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import StoreFactory
from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.dispatcher.actions import ACTION_FUNCTIONS
from tqueues.dispatcher.keys import store_key
from tqueues.jobs import RESERVED_FIELDS as RESERVED
from tqueues.jobs import JobStatus
from tqueues.settings import DispatcherSettings


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[Client]], make_store: StoreFactory, tmp_path: Path
) -> Client:
    """A test client of a dispatcher on each store (SQLite; RethinkDB when a server is
    named) with queue ``q`` created."""
    settings = DispatcherSettings(
        data_dir=str(tmp_path / "data"), reap_interval=0.05, max_body=64 * 1024, max_wait=30
    )
    test_client = await aiohttp_client(create_app(settings, store=make_store()))
    response = await test_client.put("/?queue=q")
    assert response.status == 200
    return test_client


#: Object keys: any short text, and the key RethinkDB would read as one of its own types.
json_keys = st.text(max_size=10) | st.sampled_from(["$reql_type$", "\\$reql_type$"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["queue", "method", "args", "kwargs", "priority", "ttr", "max_attempts", "delay",
          "result", "error", "traceback", "release", "status", "id", "progress"]  # fmt: skip
field_values = (
    json_values
    | st.sampled_from([{"$reql_type$": "TIME"}, [{"$reql_type$": "BINARY", "data": "aGk="}]])
    | st.sampled_from(["q", "nope", "pkg.mod:func", "", "q" * 65, "a:b", "\u0000", "é", "0" * 32])
    | st.integers(-(2**40), 2**40)
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    json_values.map(json.dumps).map(str.encode),
    st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=6)
    .map(json.dumps)
    .map(str.encode),
)
#: JobRecord ids as a client may send them: any text (NUL bytes and other controls, accents,
#: emoji), and ids around the longest a store can hold (127 bytes of UTF-8).
LONG_IDS = ["x" * 127, "x" * 128, "é" * 63 + "x", "é" * 64, "\U0001f389" * 32, "x" * 200]
job_ids = (
    st.text(max_size=40)
    | st.text(st.characters(codec="utf-8"), min_size=30, max_size=70)
    | st.sampled_from(["0" * 32, "\x00", "a\x00b", "é", "\U0001f389", *LONG_IDS])
)
query_values = {
    "queue": st.sampled_from(["q", "nope", "", "bad-name", "q" * 70, "Q_1", "é", "q\x00"]),
    "id": job_ids,
    "wait": st.sampled_from(["0", "0.001", "-1", "nan", "inf", "1e309", "x", ""]),
    "lease": st.text(max_size=40),
    "worker": st.text(max_size=300),
}
queries = st.fixed_dictionaries({}, optional={k: v for k, v in query_values.items()})
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", None]
)


#: Hundreds of requests against one dispatcher per store (the function-scoped client is
#: reused on purpose: state accumulates across examples, and consistency is checked after
#: each), a few seconds per test and store.
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    query=queries,
    body=bodies,
    content_type=content_types,
)
async def test_no_request_gets_a_5xx(
    client: Client, method: str, query: dict[str, str], body: bytes | None, content_type: Any
) -> None:
    # Queue names that PUT may create are limited to valid ones the strategy knows.
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.request(method, "/", params=query, data=body, headers=headers)
    text = await response.text()
    # 501 is the documented answer for a missing queue; every other 5xx is a defect.
    documented = response.status == 501 and '"queue_not_found"' in text
    assert response.status < 500 or documented, (method, query, body, text)
    if response.status >= 400:
        payload = await response.json()
        assert payload["error"] and payload["message"]
        assert "Traceback" not in text
    await assert_consistent(client)


async def assert_consistent(client: Client) -> None:
    """Every stored job is well-formed: whatever was refused left nothing half-way."""
    store = client.app[store_key]
    for config in await store.list_queues():
        jobs = (await store.list_jobs(config.name, limit=10_000)).jobs
        # The counts (kept in memory by the embedded store) are those of the jobs stored.
        counts = {status: n for status, n in (await store.count_jobs(config.name)).items() if n}
        assert counts == collections.Counter(job.status for job in jobs)
        for job in jobs:
            assert isinstance(job.args, list) and isinstance(job.kwargs, dict)
            assert isinstance(job.method, str) and job.method
            assert (job.lease is not None) == (job.status is JobStatus.STARTED)
            assert (job.finished_at is not None) == job.status.is_final
            assert 0 <= job.attempts <= job.max_attempts


#: Queue names in the path: the queue that exists half of the time (the paths of its jobs
#: are where ids reach a store), else names that are missing or malformed.
segments = st.just("q") | st.sampled_from(
    ["nope", "bad-name", "Q_1", "x" * 70, "%00", "..", "%C3%A9"]
)
#: Ids as one percent-encoded path segment, as the clients send them.
ids = st.sampled_from(["0" * 32, "next", "", "x" * 200]) | job_ids.map(lambda i: quote(i, safe=""))
rest_paths = st.one_of(
    st.just("/queues"),
    st.just("/stats"),
    st.builds("/queues/{}".format, segments),
    st.builds(
        "/queues/{}/{}".format,
        segments,
        st.sampled_from(
            ["truncate", "stats", "kick", "take", "jobs", "jobs/next", "outcomes", "other"]
        ),
    ),
    st.builds("/queues/{}/jobs/{}".format, segments, ids),
    st.builds(
        "/queues/{}/jobs/{}/{}".format,
        segments,
        ids,
        st.sampled_from(["finish", "fail", "release", "requeue", "touch", "bury", "kick", "x"]),
    ),
)
rest_query_values = {
    **query_values,
    "count": st.sampled_from(["1", "3", "0", "-1", "100000", "x", ""]),
    "status": st.sampled_from(["pending", "delayed", "buried", "finished", "nope", ""]),
    "cursor": st.text(max_size=20),
    "limit": st.sampled_from(["1", "0", "1001", "x", "-5"]),
}
rest_queries = st.fixed_dictionaries({}, optional=rest_query_values)
REST_FIELDS = [*FIELDS, "jobs", "bound", "reason", "permanent", "ttl", "urgent", "retention",
               "ttl_action"]  # fmt: skip
rest_bodies = st.one_of(
    bodies,
    st.dictionaries(st.sampled_from(REST_FIELDS), field_values, max_size=6)
    .map(json.dumps)
    .map(str.encode),
    st.lists(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=4), max_size=3).map(
        lambda jobs: json.dumps({"jobs": jobs}).encode()
    ),
    st.lists(
        st.fixed_dictionaries(
            {"id": job_ids, "lease": st.text(max_size=8) | st.none()},
            optional={
                "action": st.sampled_from(["finish", "fail", "release", "bury", "touch", "x"]),
                **{name: field_values for name in ("result", "error", "delay", "reason")},
            },
        ),
        max_size=3,
    ).map(lambda outcomes: json.dumps({"outcomes": outcomes}).encode()),
)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
    path=rest_paths,
    query=rest_queries,
    body=rest_bodies,
    content_type=content_types,
)
async def test_no_rest_request_gets_a_5xx(
    client: Client,
    method: str,
    path: str,
    query: dict[str, str],
    body: bytes | None,
    content_type: Any,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.request(method, path, params=query, data=body, headers=headers)
    text = await response.text()
    # A path like /queues/.. resolves to /, whose documented answer to a missing queue is 501.
    documented = response.url.path == "/" and response.status == 501 and '"queue_not_found"' in text
    assert response.status < 500 or documented, (method, path, query, body, text)
    if response.status >= 400:
        payload = await response.json()
        assert payload["error"] and payload["message"]
        assert "Traceback" not in text
    await assert_consistent(client)


#: JSON every store keeps as sent (integers within 2**53, as JSON's doubles hold them).
stored_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(FUZZ, max_examples=100)
@given(
    args=st.lists(stored_values, max_size=3),
    kwargs=st.dictionaries(json_keys, stored_values, max_size=3),
    fields=st.dictionaries(
        json_keys.filter(lambda k: k not in RESERVED), stored_values, max_size=3
    ),
    result=stored_values,
)
async def test_what_a_job_holds_reads_back_as_sent(
    client: Client, args: list[Any], kwargs: dict[str, Any], fields: dict[str, Any], result: Any
) -> None:
    # When a job is put, updated and finished with any JSON (keys a store could read as
    # its own types included)
    put = await client.post(
        "/queues/q/jobs", json={"method": "a:b", "args": args, "kwargs": kwargs}
    )
    assert put.status == 201, await put.text()
    job_id = (await put.json())["id"]
    path = f"/queues/q/jobs/{job_id}"
    patched = await client.patch(path, json=fields)
    finished = await client.post(f"{path}/finish", json={"result": result})
    assert (patched.status, finished.status) == (200, 200), await finished.text()
    # Then every read gives it back as it was sent, on every store
    read = await (await client.get(path)).json()
    assert (read["args"], read["kwargs"], read["result"]) == (args, kwargs, result)
    assert {name: read[name] for name in fields} == fields


#: Every request that names one job by its id, and where the id goes: the query, the
#: path (one percent-encoded segment, as the clients send it) or the body.
ID_ROUTES = [
    ("GET", "/", "query"),
    ("PATCH", "/", "query"),
    ("DELETE", "/", "query"),
    ("GET", "/queues/q/jobs/{}", "path"),
    ("PATCH", "/queues/q/jobs/{}", "path"),
    ("DELETE", "/queues/q/jobs/{}", "path"),
    *(("POST", f"/queues/q/jobs/{{}}/{action}", "path") for action in ACTION_FUNCTIONS),
    ("POST", "/queues/q/outcomes", "body"),
]


def unstorable(job_id: str) -> bool:
    """Whether no job can have this id: a NUL in it, or more than 127 bytes of UTF-8."""
    return "\x00" in job_id or len(job_id.encode()) > 127


@FUZZ
@given(
    route=st.sampled_from(ID_ROUTES),
    job_id=st.sampled_from(["\x00", "a\x00b", *LONG_IDS]) | job_ids,
    lease=st.none() | st.text(max_size=8),
    fields=st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3),
)
async def test_no_request_naming_a_job_gets_a_5xx(
    client: Client,
    route: tuple[str, str, str],
    job_id: str,
    lease: str | None,
    fields: dict[str, Any],
) -> None:
    method, path, where = route
    params = {} if lease is None else {"lease": lease}
    body: Any = fields
    if where == "query":
        params.update(queue="q", id=job_id)
    elif where == "path":
        path = path.format(quote(job_id, safe=""))
    else:
        body = {"outcomes": [{**fields, "id": job_id, "lease": lease, "action": "finish"}]}
    response = await client.request(method, path, params=params, json=body)
    payload = await response.json()
    # Never a 5xx: an id is the client's to get wrong, never an outage of the store
    assert response.status < 500, (method, path, job_id, payload)
    if unstorable(job_id):
        # and an id no job can have is one answer on every route and store: 400 naming it
        # (in a batch of outcomes, a body refused as a whole is refused first)
        assert response.status == 400, (method, path, payload)
        assert where == "body" or payload["field"] == "id", (method, path, payload)
    elif response.status >= 400:
        assert payload["error"] and payload["message"]
    await assert_consistent(client)


#: Ids no job can have (RethinkDB refuses a NUL in a key and keys over 127 bytes).
UNSTORABLE_IDS = ["\x00", "a\x00b", "x" * 128, "é" * 64, "\U0001f389" * 32]


@pytest.mark.parametrize("job_id", UNSTORABLE_IDS, ids=["nul", "inner-nul", "128", "é", "emoji"])
async def test_an_id_no_job_can_have_is_a_400_naming_it_on_every_route(
    client: Client, job_id: str
) -> None:
    # Given a job, so that a route that skipped the check would have something to act on
    put = await client.post("/queues/q/jobs", json={"method": "a:b"})
    assert put.status == 201
    segment = quote(job_id, safe="")
    calls: list[tuple[str, str, dict[str, str], Any]] = [
        ("GET", "/", {"queue": "q", "id": job_id}, None),
        ("PATCH", "/", {"queue": "q", "id": job_id}, {"progress": 1}),
        ("DELETE", "/", {"queue": "q", "id": job_id}, {"result": 1}),
        ("GET", f"/queues/q/jobs/{segment}", {}, None),
        ("PATCH", f"/queues/q/jobs/{segment}", {}, {"progress": 1}),
        ("DELETE", f"/queues/q/jobs/{segment}", {}, None),
        *(("POST", f"/queues/q/jobs/{segment}/{action}", {"lease": "l"}, {})
          for action in ACTION_FUNCTIONS),
        ("POST", "/queues/q/outcomes", {}, {"outcomes": [{"id": job_id, "action": "finish"}]}),
    ]  # fmt: skip
    for method, path, params, body in calls:
        # When a request names the job by that id
        response = await client.request(method, path, params=params, json=body)
        # Then it is a 400 naming the id, on every store: a client's mistake, not an outage
        payload = await response.json()
        assert response.status == 400, (method, path, payload)
        assert payload["error"] == "bad_request" and payload["field"] == "id", payload
        assert "id" in payload["message"]
    # And nothing was changed
    (job,) = (await client.app[store_key].list_jobs("q")).jobs
    assert (job.status, job.rev, job.extra) == (JobStatus.PENDING, 0, {})


async def test_the_longest_id_a_job_can_have_is_a_404(client: Client) -> None:
    # Ids of up to 127 bytes are ids of no job here (404), on every store, however encoded
    for job_id in ("x" * 127, "é" * 63 + "x", "\U0001f389" * 31 + "abc"):
        for response in (
            await client.get("/", params={"queue": "q", "id": job_id}),
            await client.get(f"/queues/q/jobs/{quote(job_id, safe='')}"),
            await client.post(f"/queues/q/jobs/{quote(job_id, safe='')}/kick"),
        ):
            assert response.status == 404, await response.text()
            assert (await response.json())["error"] == "job_not_found"
