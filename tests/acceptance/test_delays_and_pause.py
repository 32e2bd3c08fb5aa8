"""Exact delays and paused queues (issue #25, parts 1 and 6) through real dispatcher
processes and real HTTP, on both stores; two dispatcher processes on one RethinkDB
database; the ``tqueues pause`` and ``resume`` commands.

The dispatchers sweep every 30 s here, so a delayed job that comes at its time was
promoted by the delay timer, not by the sweep. Timings are measured from before the
request that set the time, and asserted loosely (a behaviour, not a benchmark).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import tqueues
from tests.acceptance.conftest import Cluster, long_poll
from tests.acceptance.test_admin_cli import tq

NO_SWEEP = ("--reap_interval", "30")
LATE = 0.2  #: seconds past its time a job may come on a loaded test machine


async def test_a_delayed_put_is_taken_at_its_time(cluster: Cluster, store_args: list[str]) -> None:
    d = await cluster.dispatcher(None, *NO_SWEEP, *store_args)
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q")
        # Given a job put with delay=1
        before_put = time.time()
        put = await client.put("q", "a:b", delay=1)
        # When a take waits up to 2 s
        taken = await client.take("q", wait=2)
        elapsed = time.time() - before_put
        # Then it gets the job at 1 s: not before, and not a sweep later
        assert taken is not None and taken["id"] == put["id"]
        assert 1.0 <= elapsed < 1.0 + LATE, elapsed
        # And a take that waits exactly the delay gets its job too (the original API's)
        put = await client.put("q", "a:b", delay=1)
        async with long_poll(d.url, "q", wait=1) as poll:
            status, job = await poll
        assert (status, job["id"]) == (200, put["id"])


async def test_a_retry_and_a_delayed_release_come_at_their_time(
    cluster: Cluster, store_args: list[str]
) -> None:
    d = await cluster.dispatcher(None, *NO_SWEEP, "--retry_base", "0.5", *store_args)
    async with tqueues.Client(d.url) as client:
        await client.create_queue("q", max_attempts=3)
        await client.put("q", "a:b")
        # Given a run that fails with attempts left: retried after its backoff
        first = await client.take("q")
        assert first is not None
        failed = await client.fail("q", first["id"], lease=first["lease"], error="E")
        assert failed["status"] == "delayed"
        # Then a waiting take gets the retry at its time
        again = await client.take("q", wait=3)
        assert again is not None and again["id"] == first["id"]
        assert failed["ready_at"] <= time.time() < failed["ready_at"] + LATE
        # Given the job released with a delay of 0.5 s
        released = await client.release("q", again["id"], lease=again["lease"], delay=0.5)
        assert released["status"] == "delayed"
        # Then a waiting take gets it at its time
        third = await client.take("q", wait=3)
        assert third is not None and third["id"] == first["id"]
        assert released["ready_at"] <= time.time() < released["ready_at"] + LATE


async def test_two_dispatchers_time_each_others_delays_and_pauses(
    cluster: Cluster, store_args: list[str]
) -> None:
    if not store_args:
        pytest.skip("two dispatchers share a database on the RethinkDB store only")
    a = await cluster.dispatcher(cluster.tmp_path / "a", *NO_SWEEP, *store_args)
    b = await cluster.dispatcher(cluster.tmp_path / "b", *NO_SWEEP, *store_args)
    async with tqueues.Client(a.url) as on_a, tqueues.Client(b.url) as on_b:
        await on_a.create_queue("q")
        await on_b.take("q")  # B follows the queue
        # Given a long-poll waiting on B
        async with long_poll(b.url, "q", wait=3) as poll:
            # When a job is put on A with a delay
            before_put = time.time()
            put = await on_a.put("q", "a:b", delay=1)
            status, job = await poll
        # Then B's long-poll gets it at its time
        elapsed = time.time() - before_put
        assert (status, job["id"]) == (200, put["id"])
        assert 1.0 <= elapsed < 1.0 + LATE, elapsed

        # When A pauses the queue
        await on_a.pause("q")
        queued = await on_a.put("q", "a:b")

        # Then B hands out nothing (it learns of the pause from the catalog's feed)
        async def b_paused() -> bool:
            return bool((await on_b.stats("q"))["paused"])

        deadline = time.monotonic() + 5
        while not await b_paused():
            assert time.monotonic() < deadline, "B never learnt of A's pause"
            await asyncio.sleep(0.02)
        assert await on_b.take("q") is None
        # When B's taker waits and A resumes the queue
        async with long_poll(b.url, "q", wait=10) as poll:
            await asyncio.sleep(0.2)
            assert not poll.done()
            before_resume = time.time()
            await on_a.resume("q")
            status, job = await poll
        # Then B's taker gets the job at once
        assert (status, job["id"]) == (200, queued["id"])
        assert time.time() - before_resume < 0.5


async def test_pause_and_resume_commands(cluster: Cluster) -> None:
    d = await cluster.dispatcher()
    url = d.url
    async with tqueues.Client(url) as client:
        await client.create_queue("q")
        await client.put("q", "a:b")
    # When the queue is paused from the command line
    paused = await tq("pause", "q", url=url)
    assert paused.returncode == 0 and paused.stdout.strip() == "paused q until resumed"
    # Then takes get nothing, and stats say it is paused
    assert (await tq("take", "q", url=url)).returncode == 1
    table = (await tq("stats", "q", url=url)).stdout.splitlines()
    assert table[0].split()[-1] == "paused" and table[1].split()[-2:] == ["until", "resumed"]
    assert json.loads((await tq("stats", "q", "--json", url=url)).stdout)["paused"] is True
    # When it is resumed, takes get its job
    resumed = await tq("resume", "q", url=url)
    assert resumed.returncode == 0 and resumed.stdout.strip() == "resumed q"
    assert (await tq("take", "q", url=url)).returncode == 0
    # A pause for a time says until when
    timed = await tq("pause", "q", "--for", "600", url=url)
    assert timed.returncode == 0 and timed.stdout.startswith("paused q until 20")
    assert timed.stdout.strip().endswith("Z")
    # Bad input is one line naming the problem
    for argv, message in (
        (["--for", "soon"], "--for must be a number"),
        (["--for", "0"], "--for must be more than 0"),
        (["--for", "-5"], "--for must not be negative"),
    ):
        refused = await tq("pause", "q", *argv, url=url)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    missing = await tq("pause", "nope", url=url)
    assert missing.returncode == 2 and "queue_not_found" in missing.stderr
