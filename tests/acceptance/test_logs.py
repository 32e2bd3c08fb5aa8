"""``--log_format json`` and ``--access_log``: real processes, their stderr parsed line by
line; each job's life at INFO in the worker's log, with its fields."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import aiohttp

from tests.acceptance.conftest import DISPATCHER, WORKER, Api, Cluster, child_env, wait_for


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log as the JSON object it must be (fails on any other line)."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message", "action"} <= record.keys(), line
        records.append(record)
    return records


async def test_json_logs_carry_each_jobs_life_as_fields(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    # Given a dispatcher and a worker, both logging JSON, the dispatcher with an access log
    dispatcher = await cluster.dispatcher(None, "--log_format", "json", "--access_log")
    api = Api(session, dispatcher.url)
    await api.create_queue("q")
    ok = [(await api.put("q", "coro_add", i, 1))["id"] for i in range(3)]
    failing = (await api.put("q", "coro_raise", 0, max_attempts=1))["id"]

    # When the worker runs them (--burst: it stops once the queue is empty)
    argv = cluster.worker_argv(dispatcher.url, "q", "--burst", "--log_format", "json")
    worker = cluster.spawn("worker", argv)
    assert await worker.wait_exit(timeout=20) == 0

    # Then every line it wrote is a JSON object, and each job was taken, then finished or
    # failed, with its id, queue, method and the run's duration as fields
    records = json_lines(worker.log())
    by_job: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        if "job_id" in record:
            by_job.setdefault(record["job_id"], {})[record["event"]] = record
    assert set(by_job) == {*ok, failing}
    for job_id in ok:
        assert set(by_job[job_id]) == {"taken", "finished"}
        finished = by_job[job_id]["finished"]
        assert finished["queue"] == "q" and finished["method"].endswith(":coro_add")
        assert finished["action"] == "job_finished" and finished["attempt"] == 1
        assert isinstance(finished["duration"], float) and 0 <= finished["duration"] < 5
    failed = by_job[failing]["failed"]
    assert failed["error"] == "ValueError: coro boom 0" and failed["duration"] >= 0
    assert by_job[failing]["taken"]["level"] == "INFO"
    # and nothing about a job is above INFO: none went wrong on the worker's side
    assert [r for r in records if "job_id" in r and r["level"] != "INFO"] == []

    # And the dispatcher's access log has each request as fields, a token in a query hidden
    async with session.get(dispatcher.url + "ws?queue=q&access_token=s3cret-token") as answer:
        assert answer.status == 426
    await api.take("q")  # the access record is written once the answer is sent

    def access() -> list[dict[str, Any]]:
        return [r for r in json_lines(dispatcher.proc.log()) if r["action"] == "access"]

    await wait_for(lambda: len(access()) >= 10, timeout=10, what="the access records")
    puts = [r for r in access() if r["method"] == "POST" and r["path"] == "/"]
    assert len(puts) == 4 and {r["status"] for r in puts} == {200}
    assert all(isinstance(r["duration"], float) for r in puts)
    hidden = [r for r in access() if r["path"].startswith("/ws")]
    assert hidden[0]["path"] == "/ws?queue=q&access_token=***" and hidden[0]["status"] == 426
    assert "s3cret" not in dispatcher.proc.log()


async def test_text_logs_by_default_and_no_access_log(
    cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("q")
    job = await api.put("q", "coro_add", 1, 2)
    worker = cluster.spawn("worker", cluster.worker_argv(dispatcher.url, "q", "--burst"))
    assert await worker.wait_exit(timeout=20) == 0
    lines = worker.log().splitlines()
    assert not any(line.startswith("{") for line in lines)
    assert any(f"{job['id']}" in line and "finished in" in line for line in lines), lines
    assert " INFO tqueues.worker: " in worker.log()
    assert "POST / " not in dispatcher.proc.log()  # no access log unless asked


def test_an_unknown_log_format_is_refused_in_one_line() -> None:
    for argv in ([DISPATCHER, "--log_format", "xml"],
                 [WORKER, "--queue", "q", "--allow_any", "--log_format", "xml"]):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env(), timeout=30)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().endswith("--log_format must be text or json, not 'xml'")
