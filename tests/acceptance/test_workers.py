"""The worker registry with real processes: two workers announce themselves and what they
run; an operator quiets one (it takes no more jobs, finishes its own and stays up) and
stops the other (it shuts down gracefully and leaves the registry); the CLI shows them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.acceptance.conftest import Cluster, child_env, wait_for
from tests.acceptance.jobs import finished_ids, method, start_markers
from tqueues.client import Client

ADMIN = str(Path(sys.executable).parent / "tqueues")
DEADLINE = 20.0  # seconds: heartbeats come every 5 s


async def admin(url: str, *argv: str) -> str:
    """``tqueues --url URL ARGV...``: its standard output (it must succeed)."""
    out = await asyncio.to_thread(
        subprocess.run, [ADMIN, "--url", url, *argv], capture_output=True, text=True,
        env=child_env(), timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_workers_are_listed_quieted_and_stopped(
    cluster: Cluster, store_args: list[str], markers: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *store_args)
    async with Client(dispatcher.url) as client:
        await client.create_queue("w")
        # Given two workers, one running a long job
        first = await cluster.worker(dispatcher.url, "w", "--heartbeat", "0.5", concurrency=2)
        slow = await client.put("w", method("marked_sleep"), [str(markers), 4.0])
        await wait_for(lambda: start_markers(markers, slow["id"]), timeout=DEADLINE,
                       what="the slow job to start")  # fmt: skip
        second = await cluster.worker(dispatcher.url, "w", "--heartbeat", "0.5", concurrency=3)

        async def both() -> list[dict[str, Any]] | None:
            workers = await client.workers("w")
            return workers if len(workers) == 2 else None

        workers = {w["pid"]: w for w in await wait_for(both, timeout=DEADLINE,
                                                           what="both workers listed")}  # fmt: skip
        # Then each is listed with its queues, concurrency and state; the first runs the job
        one, two = workers[first.pid], workers[second.pid]
        assert (one["state"], one["queues"], one["concurrency"]) == ("running", ["w"], 2)
        assert (two["state"], two["concurrency"]) == ("running", 3)

        async def running_slow() -> bool:
            listed = {w["pid"]: w for w in await client.workers()}
            return [job["id"] for job in listed[first.pid]["running"]] == [slow["id"]]

        await wait_for(running_slow, timeout=DEADLINE, what="the slow job in the registry")
        table = await admin(dispatcher.url, "workers")
        assert one["id"] in table and two["id"] in table and "running" in table

        # When the first is quieted while it runs the slow job
        await admin(dispatcher.url, "workers", "quiet", one["id"])

        async def quiet() -> bool:
            listed = {w["pid"]: w for w in await client.workers()}
            return listed[first.pid]["state"] == "quiet"

        await wait_for(quiet, timeout=DEADLINE, what="the first worker to be quiet")
        # Then new jobs all go to the second, the slow job still finishes, and the first
        # stays up (quiet, with nothing running)
        fast = [
            (await client.put("w", method("marked_sleep"), [str(markers), 0.05]))["id"]
            for _ in range(6)
        ]
        await wait_for(lambda: set(fast) <= set(finished_ids(markers)), timeout=DEADLINE,
                       what="the new jobs to finish")  # fmt: skip
        assert {m["pid"] for f in fast for m in start_markers(markers, f)} == {second.pid}
        await wait_for(lambda: slow["id"] in finished_ids(markers), timeout=DEADLINE,
                       what="the slow job to finish on the quiet worker")  # fmt: skip
        assert first.running()

        # When the second is stopped through the registry
        stopped = json.loads(await admin(dispatcher.url, "workers", "stop", two["id"]))
        assert stopped["command"] == "stop"
        # Then it exits cleanly and leaves the registry at once; the quiet one stays
        assert await second.wait_exit(DEADLINE) == 0

        async def only_the_quiet_one() -> bool:
            return [w["pid"] for w in await client.workers()] == [first.pid]

        await wait_for(only_the_quiet_one, timeout=DEADLINE, what="the stopped worker to go")
        assert first.running()
