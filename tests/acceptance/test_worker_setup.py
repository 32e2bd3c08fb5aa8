"""A worker's set-up, with real processes (issue #21): what it cannot import or may not run
is retried and buried, not failed for good (B); it imports job modules from the directory
it was started in and says which --allow it cannot find (C); it says in words that it
cannot reach the dispatcher (D)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.acceptance.conftest import (
    STARTUP_TIMEOUT,
    WORKER,
    Api,
    Cluster,
    Proc,
    child_env,
    wait_for,
)


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


def spawn_in(cluster: Cluster, directory: Path, argv: list[str]) -> Proc:
    """A process started in ``directory`` without PYTHONPATH (as a user's shell starts it),
    stopped at teardown with the cluster's others."""
    env = child_env()
    env.pop("PYTHONPATH", None)
    log_path = cluster.logs / f"worker-in-{directory.name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=directory, env=env)  # fmt: skip
    proc = Proc(f"worker-in-{directory.name}", argv, log_path, popen)
    cluster.procs.append(proc)
    return proc


async def start_in(cluster: Cluster, directory: Path, url: str, *allow: str) -> Proc:
    """``tqueues_worker`` of queue ``cwd`` started in ``directory`` (without PYTHONPATH)
    with ``--allow`` each of ``allow``; returns once it logged that it started."""
    argv = [WORKER, "--endpoint_url", url, "--queue", "cwd", "--wait", "1"]
    worker = spawn_in(cluster, directory, [*argv, *(f"--allow={a}" for a in allow)])

    async def started() -> bool:
        assert worker.running(), worker.log()
        return " taking from " in worker.log()

    await wait_for(started, timeout=STARTUP_TIMEOUT, what="the worker to start")
    return worker


async def test_a_worker_imports_job_modules_from_the_directory_it_was_started_in(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given a project directory with a job module, and no PYTHONPATH (the README's first run)
    project = tmp_path / "project"
    project.mkdir()
    (project / "tq_cwd_tasks.py").write_text("def double(x, *, tq_parent_job):\n    return 2 * x\n")
    dispatcher = await cluster.dispatcher()
    api = Api(session, dispatcher.url)
    await api.create_queue("cwd")
    # When the console script starts there
    worker = await start_in(cluster, project, dispatcher.url, "tq_cwd_tasks")
    # Then it runs the project's job, and finds nothing to warn about
    job_id = await put(session, dispatcher.url, "cwd", method="tq_cwd_tasks:double", args=[21])
    job = (await api.wait_final("cwd", [job_id], timeout=20))[job_id]
    assert (job["status"], job["result"]) == ("finished", 42), job
    assert " WARNING " not in worker.log()


async def test_a_worker_says_in_one_line_which_allow_prefix_it_cannot_find(
    cluster: Cluster, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # Given a directory with one module
    (tmp_path / "tq_here.py").write_text("def f(*, tq_parent_job):\n    return 1\n")
    dispatcher = await cluster.dispatcher()
    await Api(session, dispatcher.url).create_queue("cwd")
    # When a worker starts there allowing it, a module found nowhere, and a package prefix
    # that is not importable
    worker = await start_in(
        cluster, tmp_path, dispatcher.url, "tq_here", "tq_nowhere.tasks", "tq_not_either"
    )
    # Then it starts all the same, and says which it cannot find, one line each
    warnings = [line for line in worker.log().splitlines() if " WARNING " in line]
    assert len(warnings) == 2, warnings
    assert "--allow tq_nowhere.tasks: " in warnings[0]
    assert "No module named 'tq_nowhere'" in warnings[0]
    assert "--allow tq_not_either: " in warnings[1]
    assert worker.running()


async def test_a_worker_says_in_words_that_it_cannot_reach_the_dispatcher(
    cluster: Cluster,
) -> None:
    # Given a port nothing listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    # When a worker is pointed at it
    worker = cluster.spawn("worker", cluster.worker_argv(url, "default"))
    # Then it says, in one line a person reads, which URL, what failed and what it does next
    line = re.compile(
        rf"WARNING tqueues\.worker: cannot take: cannot reach the dispatcher at "
        rf"{re.escape(url)}: connection refused; retrying in \d+\.\d s$",
        re.MULTILINE,
    )
    await wait_for(lambda: len(line.findall(worker.log())) >= 2, timeout=15, what="two retries")
    assert "Error(" not in worker.log() and "ConnectionKey" not in worker.log(), worker.log()
    assert worker.running()
