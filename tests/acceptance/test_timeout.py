"""A worker's --timeout bounds each run: a job that hangs fails instead of holding its lease."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.acceptance.conftest import Api, Cluster


async def test_a_run_past_the_timeout_fails_and_the_worker_goes_on(
    cluster: Cluster, session: aiohttp.ClientSession, markers: Path
) -> None:
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("slow", max_attempts=1)
    await cluster.worker(dispatcher.url, "slow", "--timeout", "0.3", concurrency=1)
    hung = await api.put("slow", "marked_sleep", str(markers), 600.0)
    quick = await api.put("slow", "coro_add", 1, 1)
    own = await api.put("slow", "coro_time_out", 7)  # its own TimeoutError, well in time
    final = await api.wait_final("slow", [hung["id"], quick["id"], own["id"]], timeout=20)
    assert final[hung["id"]]["status"] == "buried"
    assert final[hung["id"]]["error"] == "TimeoutError: the job ran longer than its 0.3s timeout"
    assert final[quick["id"]]["status"] == "finished"
    assert final[own["id"]]["error"] == "TimeoutError: upstream 7 did not answer"
