"""A RethinkDB restart while a worker polls: the worker carries on and nothing is lost.

Runs when TQUEUES_TEST_RETHINKDB=host:port names a server and
TQUEUES_TEST_RETHINKDB_RESTART is a shell command that restarts it (for example
``docker restart rethinkdb`` or ``systemctl restart rethinkdb@default``); the command
must return once the server is stopping or back (either works: the test waits).
"""

from __future__ import annotations

import os
import subprocess

import aiohttp
import pytest

from tests.acceptance.conftest import Api, Cluster, wait_for

RESTART = os.environ.get("TQUEUES_TEST_RETHINKDB_RESTART", "")


async def test_worker_carries_on_across_a_rethinkdb_restart(
    cluster: Cluster, session: aiohttp.ClientSession, store_args: list[str]
) -> None:
    if not store_args:
        pytest.skip("a RethinkDB test")
    if not RESTART:
        pytest.skip("set TQUEUES_TEST_RETHINKDB_RESTART to a command that restarts the server")
    # Given a dispatcher on RethinkDB and a polling worker, with jobs acknowledged
    dispatcher = await cluster.dispatcher(None, *store_args)
    api = Api(session, dispatcher.url)
    await api.create_queue("restart")
    await cluster.worker(dispatcher.url, "restart", concurrency=2)
    before = [(await api.put("restart", "coro_add", i, 1))["id"] for i in range(20)]

    # When the server restarts
    subprocess.run(RESTART, shell=True, check=True, timeout=120)

    # Then enqueueing works again (503 meanwhile), and every acknowledged job finishes
    async def enqueued() -> str | None:
        status, body = await api.call(
            "POST", None, {"queue": "restart", "method": "tests.acceptance.jobs:coro_add",
                           "args": [1, 2]},
        )  # fmt: skip
        assert status in (200, 503), body
        return body["id"] if status == 200 else None

    after = await wait_for(enqueued, timeout=120, interval=0.5, what="RethinkDB to be back")
    # within seconds: a take whose answer the dead server never sent leaves no job
    # started under a lease nobody holds until it expires (a minute here)
    final = await api.wait_final("restart", [*before, after], timeout=30)
    assert {job["status"] for job in final.values()} == {"finished"}
    assert dispatcher.proc.running()
    # An outage is reported in lines a person reads: no ERROR (the server's "primary
    # replica not available" while it starts is an outage, not a refused query) and no
    # query printouts or tracebacks.
    log = dispatcher.proc.log()
    assert " ERROR " not in log, log[-3000:]
    assert "Traceback" not in log and "^^^^" not in log, log[-3000:]
