"""A worker's set-up, with real processes: what it cannot import or may not run is retried
and buried, not failed for good (issue #21, B)."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.acceptance.conftest import Api, Cluster, wait_for


async def put(session: aiohttp.ClientSession, url: str, queue: str, **job: Any) -> str:
    """Enqueue ``job`` (method, args, kwargs, max_attempts...) on ``queue``; its id."""
    async with session.post(url, json={"queue": queue, **job}) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["id"])


async def test_a_module_the_worker_cannot_import_is_retried_then_buried(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a worker that allows a package it cannot import (not deployed on it)
    dispatcher = await cluster.dispatcher()  # --retry_base 0: retries at once
    api = Api(session, dispatcher.url)
    await api.create_queue("setup")
    worker = await cluster.worker(dispatcher.url, "setup", "--allow", "tq_not_deployed")
    # When a job names a function of it
    job_id = await put(
        session, dispatcher.url, "setup", method="tq_not_deployed.tasks:run", max_attempts=3
    )
    # Then each run fails as retryable, and the job is buried after its last attempt,
    # with the import error as its error
    job = (await api.wait_final("setup", [job_id], timeout=20))[job_id]
    assert (job["status"], job["attempts"]) == ("buried", 3), job
    assert job["error"].startswith("MethodNotFound: "), job
    assert "No module named 'tq_not_deployed'" in job["error"], job
    assert worker.log().count(f"{job_id} tq_not_deployed.tasks:run> cannot run here") == 3


async def test_a_method_outside_the_allow_list_is_retried_then_buried_with_a_warning(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a worker that allows tests.acceptance.jobs only
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("setup")
    worker = await cluster.worker(dispatcher.url, "setup")
    # When a job names a method outside its list (another worker's, say), and another a
    # name that no worker runs (a private function)
    refused = await put(session, dispatcher.url, "setup", method="os:system",
                        args=["true"], max_attempts=2)  # fmt: skip
    private = await put(session, dispatcher.url, "setup",
                        method="tests.acceptance.jobs:_record_start", max_attempts=2)  # fmt: skip
    done = await api.wait_final("setup", [refused, private], timeout=20)
    # Then the refused one is retried and buried, each refusal logged as a WARNING that says
    # what will happen to it
    assert (done[refused]["status"], done[refused]["attempts"]) == ("buried", 2)
    assert done[refused]["error"].startswith("MethodNotAllowed: ")

    def warnings() -> list[str]:
        mark = f"{refused} os:system> cannot run here"
        return [line for line in worker.log().splitlines() if " WARNING " in line and mark in line]

    await wait_for(lambda: len(warnings()) == 2, timeout=10, what="two warnings")
    assert "retried (attempt 1 of 2)" in warnings()[0]
    assert "buried (attempt 2 of 2)" in warnings()[1]
    # And the name no worker runs fails for good at once
    assert (done[private]["status"], done[private]["attempts"]) == ("failed", 1)
    assert done[private]["error"].startswith("InvalidMethodName: ")
