"""The worker's allow-list with real processes: a job reaches only functions defined in an
allowed module, not whatever such a module imported (issue #21)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from tests.acceptance.conftest import Api, Cluster

EXAMPLES = "examples.tasks"  #: imports asyncio, which imports logging and subprocess


async def put(session: aiohttp.ClientSession, url: str, **job: Any) -> str:
    """Enqueue ``job`` (method, args, kwargs, max_attempts...) on queue ``allow``; its id."""
    async with session.post(url, json={"queue": "allow", **job}) as response:
        body = await response.json()
        assert response.status == 200, body
        return str(body["id"])


async def test_a_job_reaches_only_functions_its_allowed_module_defines(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given a worker that allows examples.tasks (and tests.acceptance.jobs)
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("allow")
    worker = await cluster.worker(dispatcher.url, "allow", "--allow", EXAMPLES)
    hijack = tmp_path / "hijacked.log"
    marker = tmp_path / "ran"
    # When jobs name functions those modules merely imported, or walk dunder attributes
    refused = {
        # the worker's log redirected to a file of the producer's choosing
        f"{EXAMPLES}:asyncio.log.logging.basicConfig": {
            "kwargs": {"filename": str(hijack), "force": True}
        },
        f"{EXAMPLES}.asyncio.log.logging.basicConfig": {
            "kwargs": {"filename": str(hijack), "force": True}
        },
        f"{EXAMPLES}:asyncio.base_events.subprocess.run": {"args": [["touch", str(marker)]]},
        "tests.acceptance.jobs:os.system": {"args": [f"touch {marker}"]},
        "tests.acceptance.jobs:Path": {"args": [str(marker)]},  # a class: constructed
        f"{EXAMPLES}:add.__globals__.get": {"args": ["hashlib"]},
        f"{EXAMPLES}:add.__class__": {"args": []},
    }
    ids = {
        await put(session, dispatcher.url, method=name, max_attempts=1, **job): name
        for name, job in refused.items()
    }
    done = await api.wait_final("allow", list(ids), timeout=20)
    # Then each is refused, naming why, and none of them ran (without a colon, the module
    # "examples.tasks.asyncio.log.logging" is not found: "examples.tasks" is no package)
    # (a name no worker runs fails for good; one this worker refuses is buried, its one
    # attempt spent)
    expected = {"InvalidMethodName": "failed", "MethodNotAllowed": "buried",
                "MethodNotFound": "buried"}  # fmt: skip
    for job_id, name in ids.items():
        job = done[job_id]
        assert job["status"] == expected.get(job["error"].partition(":")[0]), job
        assert name in job["error"], job
    assert not hijack.exists()
    assert not marker.exists()
    # And the functions the allowed module defines still run, logged where they were
    legit = [
        await put(session, dispatcher.url, method=f"{EXAMPLES}:add", args=[1, 2]),
        await put(session, dispatcher.url, method=f"{EXAMPLES}.checksum", args=["x"],
                  kwargs={"rounds": 4}),
    ]  # fmt: skip
    ran = await api.wait_final("allow", legit, timeout=20)
    assert [ran[i]["status"] for i in legit] == ["finished", "finished"]
    assert ran[legit[0]]["result"] == 3
    assert f"{legit[0]} {EXAMPLES}:add> finished" in worker.log()
