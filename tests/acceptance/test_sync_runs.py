"""Each job runs once, whatever ``--sync``: a real dispatcher, a real worker waiting on its
queue, and single puts that the dispatcher hands straight to the waiting worker.

With ``--sync NORMAL`` every handed-off job used to run twice (issue #21, finding 1):
``put 30, taken 59, released 29`` and a ``lease_mismatch`` per job in the worker's log.
Runs are counted by the job itself (a line in a file per run) and by the dispatcher's
``taken``/``released`` counters, not only by the jobs' final states.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.acceptance.conftest import Api, Cluster
from tests.acceptance.jobs import read_runs

JOBS = 30


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sync", [[], ["--sync", "NORMAL"]], ids=["FULL", "NORMAL"])
async def test_a_job_handed_to_a_waiting_worker_runs_once(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path, sync: list[str]
) -> None:
    # Given a dispatcher and a worker of two slots waiting on an empty queue
    dispatcher = await cluster.dispatcher(None, *sync)
    api = Api(session, dispatcher.url)
    await api.create_queue("q")
    worker = await cluster.worker(dispatcher.url, "q", concurrency=2)
    runs_file = tmp_path / "runs.txt"

    async def stats() -> dict[str, Any]:
        async with session.get(dispatcher.url + "queues/q/stats") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body

    # When jobs are put one at a time, each once the one before has finished (so the
    # worker is back waiting and the put hands the job to it)
    ids = []
    for n in range(JOBS):
        job = await api.put("q", "record_run", str(runs_file), n)
        ids.append(job["id"])
        await api.wait_final("q", [job["id"]], timeout=30)
    # Then each job ran once and was finished by that run
    final = await api.wait_final("q", ids, timeout=30)
    runs = read_runs(runs_file)
    assert {job_id: len(runs.get(job_id, [])) for job_id in ids} == dict.fromkeys(ids, 1)
    for job_id in ids:
        assert final[job_id]["status"] == "finished"
        assert final[job_id]["attempts"] == 1
        assert final[job_id]["result"] == runs[job_id][0]
    # And the dispatcher claimed each once and gave none back; hand-offs did happen
    counters = (await stats())["counters"]
    assert (counters["put"], counters["taken"], counters.get("released", 0)) == (JOBS, JOBS, 0)
    assert counters.get("handed", 0) >= 1, counters
    # And the worker, still running, never found its lease gone
    assert worker.running()
    assert "lease_mismatch" not in worker.log()
