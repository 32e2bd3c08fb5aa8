"""The RethinkDB store's group commit (tqueues/stores/rethinkdb/coalesce.py, writes.py):
which requests share a batch, that each gets its own answer, and that a lone request is
sent at once. Counted in batches, never timed."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tqueues import lifecycle
from tqueues.errors import StoreUnavailable
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig
from tqueues.stores.rethinkdb.coalesce import Coalescer, Request
from tqueues.stores.rethinkdb.writes import MAX_WRITE, Batch, Written, take_distinct


class Served:
    """A serve function that records its batches and, while ``gate`` is clear, holds the
    batch in flight (as a query under way would)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, key: str, batch: list[Request[int, str]]) -> None:
        self.batches.append([request.item for request in batch])
        self.entered.set()
        await self.gate.wait()
        for request in batch:
            if request.item < 0:
                request.fail(ValueError(f"refused {request.item}"))
            else:
                request.answer(f"{key}:{request.item}")


async def test_a_lone_request_is_sent_at_once_in_a_batch_of_its_own() -> None:
    served = Served()
    coalescer: Coalescer[int, str] = Coalescer(served, name="test")
    assert await coalescer.submit("q", 1) == "q:1"
    assert await coalescer.submit("q", 2) == "q:2"
    assert served.batches == [[1], [2]]
    assert (coalescer.batches, coalescer.requests) == (2, 2)


async def test_requests_made_while_a_batch_is_in_flight_go_together_in_the_next() -> None:
    served = Served()
    served.gate.clear()
    coalescer: Coalescer[int, str] = Coalescer(served, name="test")
    first = asyncio.ensure_future(coalescer.submit("q", 0))
    await served.entered.wait()  # the first batch is in flight, alone
    others = [asyncio.ensure_future(coalescer.submit("q", n)) for n in (1, -2, 3, 4)]
    elsewhere = asyncio.ensure_future(coalescer.submit("other", 9))  # another queue's line
    await asyncio.sleep(0)
    served.gate.set()
    answers = await asyncio.gather(first, *others, elsewhere, return_exceptions=True)
    assert [answers[i] for i in (0, 1, 3, 4, 5)] == ["q:0", "q:1", "q:3", "q:4", "other:9"]
    assert isinstance(answers[2], ValueError) and str(answers[2]) == "refused -2"
    assert sorted(served.batches) == sorted([[0], [9], [1, -2, 3, 4]])
    assert coalescer.batches == 3


async def test_a_serve_that_fails_fails_each_request_of_its_batch_only() -> None:
    calls = 0

    async def serve(key: str, batch: list[Request[int, str]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("lost RethinkDB")
        for request in batch:
            request.answer("ok")

    coalescer: Coalescer[int, str] = Coalescer(serve, name="test")
    with pytest.raises(StoreUnavailable):
        await coalescer.submit("q", 1)
    assert await coalescer.submit("q", 2) == "ok"


async def test_closing_fails_the_requests_under_way_and_refuses_new_ones() -> None:
    served = Served()
    served.gate.clear()
    coalescer: Coalescer[int, str] = Coalescer(served, name="test")
    under_way = asyncio.ensure_future(coalescer.submit("q", 1))
    await served.entered.wait()
    waiting = asyncio.ensure_future(coalescer.submit("q", 2))
    await asyncio.sleep(0)
    await coalescer.close()
    for request in (under_way, waiting):
        with pytest.raises(StoreUnavailable, match="closed"):
            await request
    with pytest.raises(StoreUnavailable, match="closed"):
        await coalescer.submit("q", 3)


def job(n: int) -> JobRecord:
    new = NewJob.from_request({"queue": "q", "method": "m:f", "args": [n]})
    return lifecycle.create(new, QueueConfig("q"), now=1.0, id=f"j{n}")


def request(*ids: int, alone: bool = False) -> Request[Batch, Written]:
    writes = [(job(n), job(n), JobStatus.PENDING) for n in ids]
    return Request(Batch(writes, alone), asyncio.get_running_loop().create_future())


def names(batch: list[Request[Batch, Written]]) -> list[list[str]]:
    return [[before.id for before, _, _ in r.item.writes] for r in batch]


async def test_a_query_names_each_job_once_and_two_writes_of_a_job_keep_their_order() -> None:
    waiting = collections.deque(
        [request(1, 2), request(2), request(3), request(2, 4), request(4), request(5)]
    )
    assert names(take_distinct(waiting)) == [["j1", "j2"], ["j3"], ["j5"]]
    assert names(list(waiting)) == [["j2"], ["j2", "j4"], ["j4"]]
    assert names(take_distinct(waiting)) == [["j2"]]
    assert names(take_distinct(waiting)) == [["j2", "j4"]]
    assert names(take_distinct(waiting)) == [["j4"]]
    assert not waiting


async def test_an_alone_request_and_a_full_query_end_a_batch() -> None:
    waiting = collections.deque([request(1), request(2, alone=True), request(3)])
    assert names(take_distinct(waiting)) == [["j1"]]
    assert names(take_distinct(waiting)) == [["j2"]]
    assert names(take_distinct(waiting)) == [["j3"]]
    big = request(*range(10, 10 + MAX_WRITE))
    waiting = collections.deque([request(1), big, request(2)])
    assert names(take_distinct(waiting)) == [["j1"]]  # the big one would pass MAX_WRITE
    assert len(take_distinct(waiting)[0].item.writes) == MAX_WRITE
    assert names(take_distinct(waiting)) == [["j2"]]
