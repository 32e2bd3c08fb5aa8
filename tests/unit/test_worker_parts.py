"""The contracts of the worker's parts on their own: the prefetch's account of held jobs
(no I/O) and the shutdown's interruptible waits. The worker as a whole is tested against
a real dispatcher (tests/dispatcher/test_worker_reporting.py, tests/acceptance)."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tqueues.limits import MAX_TAKE
from tqueues.prefetch import Prefetch
from tqueues.shutdown import Shutdown


def _doc(n: int) -> dict[str, object]:
    return {"id": f"j{n}", "queue": "q", "lease": f"l{n}"}


async def test_a_worker_that_has_seen_no_job_end_holds_no_more_than_its_slots() -> None:
    held = Prefetch(concurrency=4, prefetch=12)
    assert held.target() == 0 and held.wanted() == 4
    assert held.ask_to_take() == 1  # not feeding (iterated by hand): one job at a time
    held.received(1, 0, [])
    held.feeding = True
    assert held.ask_to_take() == 4 and held.wanted() == 0  # asked for, in flight
    held.received(4, 4, [_doc(n) for n in range(1, 4)])  # the first starts at once
    assert held.asking == 0 and [doc["id"] for doc, _ in held.ready] == ["j1", "j2", "j3"]
    assert held.wanted() == 1
    assert held.pop_ready() is not None and held.drain() == [_doc(2), _doc(3)]
    assert held.pop_ready() is None


async def test_short_jobs_get_the_whole_prefetch_long_ones_none() -> None:
    held = Prefetch(concurrency=4, prefetch=12)
    held.ran(0.0001)  # far shorter than a round trip
    assert held.target() == 12 and held.wanted() == 16
    slow = Prefetch(concurrency=4, prefetch=12)
    slow.ran(10.0)  # far longer than four round trips
    assert slow.target() == 0


async def test_a_take_never_asks_for_more_than_the_dispatcher_allows() -> None:
    held = Prefetch(concurrency=500, prefetch=1000)
    held.ran(0.0001)
    held.feeding = True
    assert held.wanted() == MAX_TAKE and held.ask_to_take() == MAX_TAKE


async def test_reports_take_along_until_a_take_comes_back_short_or_the_worker_stops() -> None:
    held = Prefetch(concurrency=2, prefetch=0)
    assert held.ask_along(stopping=False) == 0  # before run(): never
    held.feeding = True
    assert held.ask_along(stopping=True) == 0
    asked = held.ask_along(stopping=False)
    assert asked == 2
    held.taken_along(asked, [_doc(1)])  # short: the queue ran dry
    assert len(held.ready) == 1 and held.asking == 0
    assert held.ask_along(stopping=False) == 0
    held.drain()
    count = held.ask_to_take()
    held.received(count, count, [])  # a take that got all it asked for (all started)
    assert held.ask_along(stopping=False) == 2


async def test_next_arrival_ends_when_a_request_in_flight_ends() -> None:
    held = Prefetch(concurrency=1, prefetch=0)
    held.feeding = True
    count = held.ask_to_take()
    arrival = asyncio.ensure_future(held.next_arrival())
    await asyncio.sleep(0)
    assert not arrival.done()
    held.received(count, 0, [])
    assert await asyncio.wait_for(arrival, 5) is True


async def test_stop_cuts_a_wait_short_and_a_stopped_wait_does_not_start() -> None:
    shutdown = Shutdown()
    never = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(shutdown.until_stopped(never))
    await asyncio.sleep(0)
    shutdown.stop()
    assert await asyncio.wait_for(waiting, 5) is None and never.cancelled()
    assert shutdown.stopping
    started = []

    async def work() -> None:
        started.append(True)

    assert await shutdown.until_stopped(work()) is None and not started


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    shutdown = Shutdown()
    waiting = asyncio.ensure_future(shutdown.until_stopped(asyncio.sleep(60)))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_drain_waits_the_grace_then_cancels_and_counts_what_was_given_back() -> None:
    shutdown, counts = Shutdown(), collections.Counter[str]()
    quick = asyncio.ensure_future(asyncio.sleep(0))
    stuck = asyncio.ensure_future(asyncio.sleep(60))
    reporting = asyncio.ensure_future(asyncio.sleep(60))  # method returned, outcome pending
    await shutdown.drain({quick, stuck, reporting}, {quick, stuck}, 0.05, counts)
    assert quick.done() and not quick.cancelled()
    assert stuck.cancelled() and reporting.cancelled()
    assert counts["given_back"] == 1
