"""Listing pages of large jobs end by bytes, and their cursor goes on where they ended."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dispatcher.conftest import Client
from tqueues.dispatcher import create_app
from tqueues.dispatcher.rest import MAX_PAGE_BYTES
from tqueues.settings import DispatcherSettings

JOB_CHARS = 600_000  #: characters of each large job's argument
JOBS = 12  #: about 7 MB of jobs: more than MAX_PAGE_BYTES (4 MiB), less than two pages


@pytest.fixture
async def big_client(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path) -> Client:
    """A dispatcher taking bodies of up to 1 MiB, with queue ``q`` holding JOBS large jobs
    (their ids, in order, in ``big_client.ids``)."""
    settings = DispatcherSettings(data_dir=str(tmp_path / "data"), max_body=1024 * 1024)
    client = await aiohttp_client(create_app(settings))
    assert (await client.put("/queues/q")).status == 201
    ids = []
    for i in range(JOBS):
        body = {"method": "a:b", "args": ["x" * JOB_CHARS, i]}
        response = await client.post("/queues/q/jobs", json=body)
        assert response.status == 201
        ids.append((await response.json())["id"])
    client.ids = ids  # type: ignore[attr-defined]
    return client


async def get_page(client: Client, **params: str) -> tuple[int, dict[str, Any]]:
    """One page: (the answer's size in bytes, the answer)."""
    response = await client.get("/queues/q/jobs", params=params)
    assert response.status == 200, await response.text()
    raw = await response.read()
    return len(raw), await response.json()


@pytest.mark.parametrize("status", [None, "pending"])
async def test_a_page_of_large_jobs_ends_by_bytes_and_its_cursor_goes_on(
    big_client: Client, status: str | None
) -> None:
    filters = {"status": status} if status else {}
    # When a page of up to 1,000 jobs is asked for
    size, first = await get_page(big_client, limit="1000", **filters)
    # Then it ends once it has passed MAX_PAGE_BYTES: at most one job beyond them
    job_bytes = size / len(first["jobs"])
    assert 1 <= len(first["jobs"]) < JOBS
    assert MAX_PAGE_BYTES <= size <= MAX_PAGE_BYTES + 2 * job_bytes
    assert first["next_cursor"]
    # And the cursor goes on from its last job: every job once, in order
    size, rest = await get_page(big_client, limit="1000", cursor=first["next_cursor"], **filters)
    assert size <= MAX_PAGE_BYTES + 2 * job_bytes
    assert rest["next_cursor"] is None
    listed = [job["id"] for job in first["jobs"] + rest["jobs"]]
    assert listed == big_client.ids  # type: ignore[attr-defined]
    assert all(len(job["args"][0]) == JOB_CHARS for job in first["jobs"] + rest["jobs"])


async def test_a_smaller_limit_still_ends_a_page_first(big_client: Client) -> None:
    _, page = await get_page(big_client, limit="2")
    assert [job["id"] for job in page["jobs"]] == big_client.ids[:2]  # type: ignore[attr-defined]
    assert page["next_cursor"]
