"""Tokens and the method allow-list with real processes; giving back blocking jobs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import aiohttp

from tests.acceptance.conftest import Api, Cluster, wait_for
from tests.acceptance.jobs import finished_ids, method, start_markers

TOKEN = "t0k3n-" + "x" * 26


async def test_worker_with_the_token_runs_jobs_and_without_it_stops(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Given a dispatcher that requires a token
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        api = Api(session, dispatcher.url)
        await api.create_queue("secure")
        job = await api.put("secure", "coro_add", 2, 3)
        # When a worker with the token runs
        await cluster.worker(dispatcher.url, "secure", "--token", TOKEN)
        # Then the job is done
        done = await api.wait_final("secure", [job["id"]], timeout=20)
        assert done[job["id"]]["status"] == "finished"
    # And a worker with a wrong token exits with a clear message instead of retrying
    wrong = cluster.spawn("worker", [*cluster.worker_argv(dispatcher.url, "secure"),
                                     "--token", "wrong-" + "y" * 26])  # fmt: skip
    assert await wrong.wait_exit(timeout=15) != 0
    assert "bearer token" in wrong.log()


async def test_method_outside_the_allow_list_fails_without_being_imported(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("allow")
    await cluster.worker(dispatcher.url, "allow")  # --allow tests.acceptance.jobs
    marker = tmp_path / "imported"
    body = {"queue": "allow", "method": "os:system", "args": [f"touch {marker}"],
            "max_attempts": 1}  # fmt: skip
    async with session.post(dispatcher.url, json=body) as response:
        job = await response.json()
    done = (await api.wait_final("allow", [job["id"]], timeout=20))[job["id"]]
    assert done["status"] == "buried"  # retried while attempts remain (issue #21, B)
    assert done["error"].startswith("MethodNotAllowed") and "os:system" in done["error"]
    assert not marker.exists()


async def test_blocking_job_past_the_grace_period_is_given_back_and_worker_exits(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    # Given a worker running a blocking function that will not end for a minute
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("block")
    worker = await cluster.worker(dispatcher.url, "block", grace=0.3)
    job = await api.put("block", "plain_marked_sleep", str(markers), 60.0)
    await wait_for(lambda: start_markers(markers), timeout=10, what="the job to start")
    # When the worker gets SIGTERM
    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    # Then it exits without waiting for the thread, and the job is pending again, untried
    assert await worker.wait_exit(timeout=15) == 0
    assert time.monotonic() - stopped_at < 15
    back = await api.get("block", job["id"])
    assert (back["status"], back["attempts"]) == ("pending", 0), back
    assert finished_ids(markers) == []
    assert method("plain_marked_sleep") == back["method"]
