"""Two thousand long-poll takers on a real dispatcher (issue #21, finding 2): each job put
goes to exactly one of them, and a put of n jobs wakes at most n.

Before, every job that became pending woke every taker of its queue, each of which
claimed: with 2,000 takers, 100 puts took 12 s. What is asserted here is what a put
costs in wake-ups, as the dispatcher counts them (``woken`` in the queue's stats) and as
the takers see them (how many takes were answered): never how long anything took
(``benchmarks/longpoll_takers.py`` measures that).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.acceptance.conftest import Cluster, wait_for

TAKERS = 2_000
SINGLE = 20  #: jobs put one at a time (POST /)
BATCH = 30  #: jobs put as one batch (POST /queues/q/jobs)
PARK_BATCH = 250  #: takes sent at once while parking (the listen backlog is 128)
WAIT = 150  #: the takers' wait= (seconds): longer than the test


@contextlib.contextmanager
def open_files(at_least: int) -> Iterator[None]:
    """This process's soft open-files limit raised to ``at_least`` (skip if the hard limit
    is lower), restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < at_least:
        pytest.skip(f"the open-files hard limit ({hard}) is below {at_least}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, at_least), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(300)
async def test_2000_waiting_takers_get_each_job_once_and_a_put_wakes_at_most_its_jobs(
    cluster: Cluster, store_args: list[str]
) -> None:
    with open_files(TAKERS + 512):
        dispatcher = await cluster.dispatcher(None, *store_args)
        url = dispatcher.url
        connector = aiohttp.TCPConnector(limit=TAKERS + 16)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await _run(session, url)


async def _run(session: aiohttp.ClientSession, url: str) -> None:
    async def counters() -> dict[str, int]:
        async with session.get(url + "queues/q/stats") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return {str(name): int(n) for name, n in body["counters"].items()}

    async with session.put(url, params={"queue": "q"}) as response:
        assert response.status == 200
    got: list[str] = []  #: the job of each take answered with one
    empty: list[int] = []  #: the status of each take answered without one

    async def take() -> None:
        async with session.get(url, params={"queue": "q", "wait": str(WAIT)}) as response:
            if response.status == 200:
                got.append((await response.json())["id"])
            else:
                empty.append(response.status)

    # Given 2,000 takers waiting on the empty queue, as the dispatcher counts them
    takers: list[asyncio.Task[None]] = []
    try:
        for _ in range(0, TAKERS, PARK_BATCH):
            takers += [asyncio.create_task(take()) for _ in range(PARK_BATCH)]

            async def parked(n: int = len(takers)) -> bool:
                return (await counters()).get("take_waited", 0) >= n

            await wait_for(parked, timeout=60, interval=0.1, what=f"{len(takers)} takers")
        before = await counters()
        # When jobs are put one at a time, then as one batch
        put: list[str] = []
        body = {"queue": "q", "method": "m:f", "ttr": 3600}
        for _ in range(SINGLE):
            async with session.post(url, json=body) as response:
                assert response.status == 200
                put.append((await response.json())["id"])
        batch = {"jobs": [{"method": "m:f", "ttr": 3600, "args": [i]} for i in range(BATCH)]}
        async with session.post(url + "queues/q/jobs", json=batch) as response:
            assert response.status == 201
            put += [job["id"] for job in (await response.json())["jobs"]]
        # Then each job went to exactly one taker, and only those takes were answered
        await wait_for(lambda: len(got) >= len(put), timeout=60, what=f"{len(put)} takes answered")
        after = await counters()
        assert sorted(got) == sorted(put)
        assert empty == []
        assert sum(taker.done() for taker in takers) == len(put)
        # And the dispatcher claimed each once, and woke at most one taker per job that
        # became pending (the others never left the line)
        delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        assert delta.get("taken", 0) == len(put), delta
        assert delta.get("released", 0) == 0, delta
        assert delta.get("woken", 0) <= len(put), delta
        assert delta.get("woken", 0) + delta.get("handed", 0) >= len(put), delta
        async with session.get(url + "queues/q/stats") as response:
            assert (await response.json())["jobs"]["pending"] == 0
    finally:
        for taker in takers:
            taker.cancel()
        await asyncio.gather(*takers, return_exceptions=True)
