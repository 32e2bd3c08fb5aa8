"""Generated and malformed requests against a dispatcher: never a 5xx, never a broken job."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.dispatcher.conftest import Client
from tqueues.dispatcher.keys import store_key
from tqueues.jobs import JobStatus

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = ["queue", "method", "args", "kwargs", "priority", "ttr", "max_attempts", "delay",
          "result", "error", "traceback", "release", "status", "id", "progress"]  # fmt: skip
field_values = (
    json_values
    | st.sampled_from(["q", "nope", "pkg.mod:func", "", "q" * 65, "a:b", "\u0000", "é"])
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
query_values = {
    "queue": st.sampled_from(["q", "nope", "", "bad-name", "q" * 70, "Q_1"]),
    "id": st.text(max_size=40) | st.sampled_from(["0" * 32]),
    "wait": st.sampled_from(["0", "0.001", "-1", "nan", "inf", "1e309", "x", ""]),
    "lease": st.text(max_size=40),
    "worker": st.text(max_size=300),
}
queries = st.fixed_dictionaries({}, optional={k: v for k, v in query_values.items()})
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", None]
)


#: Thousands of requests against one dispatcher (the function-scoped client is reused on
#: purpose: state accumulates across examples, and consistency is checked after each).
FUZZ = settings(
    max_examples=2000,
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
        for job in (await store.list_jobs(config.name, limit=10_000)).jobs:
            assert isinstance(job.args, list) and isinstance(job.kwargs, dict)
            assert isinstance(job.method, str) and job.method
            assert (job.lease is not None) == (job.status is JobStatus.STARTED)
            assert (job.finished_at is not None) == job.status.is_final
            assert 0 <= job.attempts <= job.max_attempts


segments = st.sampled_from(["q", "nope", "bad-name", "Q_1", "x" * 70, "%00", "..", "é"])
ids = st.sampled_from(["0" * 32, "next", "", "x" * 200]) | st.text(
    st.characters(codec="ascii", exclude_characters="/?#%"), max_size=12
)
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
            {"id": ids | st.sampled_from(["0" * 32]), "lease": st.text(max_size=8) | st.none()},
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
