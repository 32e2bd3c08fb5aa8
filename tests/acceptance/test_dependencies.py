"""Dependencies with real processes (#25, part 4), on each store: a dispatcher and a worker
of four run a chain a → b → c in order and a job waiting for all three after them (fan-in,
put with the ``tqueues`` command's ``--after``); a job waiting for one that fails for good
is buried with the reason; explain and stats show a waiting job; an unknown id is a 400."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cluster, child_env, wait_for
from tests.acceptance.jobs import method
from tqueues.client import Client
from tqueues.errors import ValidationError

ADMIN = str(Path(sys.executable).parent / "tqueues")
DEADLINE = 20.0  #: seconds for the jobs to run


async def test_a_chain_and_a_fan_in_run_in_order(
    cluster: Cluster, store_args: list[str], tmp_path: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    runs = tmp_path / "runs"
    async with Client(dispatcher.url) as client:
        await client.create_queue("d")
        await client.create_queue("other", max_attempts=1)
        # Given a chain a → b → c, and a job after all three put with the command
        a = await client.put("d", method("record_run"), [str(runs), 1])
        b = await client.put("d", method("record_run"), [str(runs), 2], after=[a])
        c = await client.put("d", method("record_run"), [str(runs), 3], after=[b["id"]])
        job = json.dumps({"method": method("record_run"), "args": [str(runs), 4]})
        argv = [ADMIN, "--url", dispatcher.url, "put", "d", job, "--after", a["id"],
                "--after", f"d/{b['id']}", "--after", c["id"]]  # fmt: skip
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, env=child_env(), timeout=30
        )
        assert out.returncode == 0, out
        last = json.loads(out.stdout)
        assert (b["status"], c["status"], last["status"]) == ("waiting", "waiting", "waiting")
        # and a job of another queue waiting for one that fails for good
        doomed = await client.put("other", method("coro_raise"), [1])
        orphan = await client.put("d", method("record_run"), [str(runs), 5],
                                  after=[f"other/{doomed['id']}"])  # fmt: skip
        explained = await client.explain("d", c["id"])
        assert explained["reasons"][0]["code"] == "waiting"
        assert explained["reasons"][0]["outstanding"] == [f"d/{b['id']}"]
        assert (await client.stats("d"))["jobs"]["waiting"] == 4
        with pytest.raises(ValidationError) as refused:
            await client.put("d", method("record_run"), [str(runs), 6], after=["f" * 32])
        assert f"d/{'f' * 32}" in str(refused.value)

        # When a worker of four runs them
        await cluster.worker(dispatcher.url, "d", concurrency=4)
        await cluster.worker(dispatcher.url, "other", concurrency=1)

        # Then the chain runs in order, the fan-in last; the orphan is buried, never run
        async def all_finished() -> bool:
            jobs = [await client.get("d", job["id"]) for job in (a, b, c, last)]
            return all(job["status"] == "finished" for job in jobs)

        await wait_for(all_finished, timeout=DEADLINE, what="the chain to finish")
        order = [line.split()[1] for line in runs.read_text().splitlines()]
        assert order == ["1", "2", "3", "4"]

        async def orphan_buried() -> bool:
            return (await client.get("d", orphan["id"]))["status"] == "buried"

        await wait_for(orphan_buried, timeout=DEADLINE, what="the orphan to be buried")
        buried = await client.get("d", orphan["id"])
        assert buried["error"] == f"prerequisite other/{doomed['id']} is buried"
        assert buried["attempts"] == 0
