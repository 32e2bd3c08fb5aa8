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


async def test_with_two_in_flight_a_second_batch_starts_at_once_and_later_ones_wait() -> None:
    served = Served()
    served.gate.clear()
    coalescer: Coalescer[int, str] = Coalescer(served, name="test", parallel=2)
    first = asyncio.ensure_future(coalescer.submit("q", 1))
    await served.entered.wait()
    second = asyncio.ensure_future(coalescer.submit("q", 2))
    for _ in range(3):
        await asyncio.sleep(0)
    assert served.batches == [[1], [2]]  # both in flight, neither answered yet
    later = [asyncio.ensure_future(coalescer.submit("q", n)) for n in (3, 4)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert served.batches == [[1], [2]]  # no third in flight: these wait together
    served.gate.set()
    assert await asyncio.gather(first, second, *later) == ["q:1", "q:2", "q:3", "q:4"]
    assert served.batches == [[1], [2], [3, 4]]
    assert not coalescer._lines  # nothing left behind once all is answered


def test_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Served(), name="test", parallel=0)


async def test_a_request_naming_a_job_in_flight_waits_for_that_query() -> None:
    waiting = collections.deque([request(1), request(2, 3), request(4)])
    assert names(take_distinct(waiting, {"j1", "j3"})) == [["j4"]]
    assert names(list(waiting)) == [["j1"], ["j2", "j3"]]
    assert take_distinct(waiting, {"j1", "j3"}) == []  # all of them wait
    assert names(take_distinct(waiting, set())) == [["j1"], ["j2", "j3"]]


class Server:
    """A stand-in for RethinkDB's answers to conditional writes, for the coalescing alone:
    each query waits until released and then reports every document written; which jobs
    each query held, and how many queries were in flight at most, are kept."""

    def __init__(self) -> None:
        self.queries: list[list[str]] = []
        self.in_flight: set[str] = set()
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def run(self, queue: str, query: object) -> dict[str, object]:
        written = _ids_of(query)
        assert not self.in_flight.intersection(written), "a job in two queries in flight"
        self.queries.append(written)
        self.in_flight.update(written)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.in_flight.difference_update(written)
            self.running -= 1
        return {"changes": [{"new_val": {"id": i, "rev": 1}} for i in written]}


def _ids_of(query: object) -> list[str]:
    """The ids a conditional write's ``get_all`` names (the driver's term tree)."""
    from rethinkdb import ast

    found: list[str] = []

    def walk(term: object) -> None:
        if isinstance(term, ast.GetAll):
            found.extend(arg.data for arg in term._args[1:])  # type: ignore[attr-defined]
            return
        for arg in getattr(term, "_args", ()):
            walk(arg)
        for arg in getattr(term, "optargs", {}).values():
            walk(arg)

    walk(query)
    return found


def written_job(n: int) -> tuple[JobRecord, JobRecord, JobStatus]:
    before = job(n)
    return before, before.revise(), JobStatus.PENDING


async def test_queue_writes_keep_a_job_in_one_query_in_flight_and_its_writes_in_order() -> None:
    from rethinkdb import r

    from tqueues.stores.rethinkdb.writes import PARALLEL, QueueWrites

    server = Server()
    writes = QueueWrites(lambda queue: r.table(queue), server.run, "hard")
    first = asyncio.ensure_future(writes.write("q", [written_job(1), written_job(2)]))
    for _ in range(3):
        await asyncio.sleep(0)
    assert server.queries == [["j1", "j2"]]
    again = asyncio.ensure_future(writes.write("q", [written_job(2)]))  # j2 is in flight
    other = asyncio.ensure_future(writes.write("q", [written_job(3)]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.queries == [["j1", "j2"], ["j3"]]  # the second write of j2 waits
    server.release.set()
    answers = await asyncio.gather(first, again, other)
    assert [sorted(a.ids) for a in answers] == [["j1", "j2"], ["j2"], ["j3"]]
    assert server.queries == [["j1", "j2"], ["j3"], ["j2"]]
    assert server.most_running == PARALLEL == 2
    await writes.close()


def test_a_patch_writes_the_claims_fields_and_refuses_to_lose_another_change() -> None:
    from tqueues.stores.rethinkdb.queries import patch

    before = job(1).evolve(worker="old", args=[], kwargs={})  # slim: no arguments
    after = lifecycle.claim(before, lease="L", worker=None, now=5.0)
    fields = patch(before, after, lifecycle.CLAIM_FIELDS)
    assert fields == {"status": "started", "lease": "L", "lease_expires": 5.0 + before.ttr,
                      "attempts": 1, "started_at": 5.0, "worker": None, "event": "taken",
                      "rev": before.rev + 1}  # fmt: skip
    with pytest.raises(ValueError, match="would not write"):
        patch(before, after.evolve(error="x"), lifecycle.CLAIM_FIELDS)
    with pytest.raises(ValueError, match="object"):
        patch(before, before.evolve(extra={"a": 1}), ("extra",))


class ClaimWrites:
    """The store's ``write_many`` for :class:`Claims`, for the grouping alone: each write
    waits until released, then reports every claim written (whole, as the server would
    answer a patch); which candidates each write tried and how many were in flight at
    most are kept."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()

    async def __call__(
        self,
        queue: str,
        pairs: list[tuple[JobRecord, JobRecord]],
        *,
        status: JobStatus | None = None,
        patch: tuple[str, ...] = (),
    ) -> Written:
        from tqueues.stores.rethinkdb.documents import job_to_doc

        self.calls.append([before.id for before, _ in pairs])
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        docs = {after.id: job_to_doc(after) for _, after in pairs}
        return Written(frozenset(docs), docs=docs if patch else {})


async def test_claim_groups_of_a_queue_go_two_at_once_with_distinct_candidates() -> None:
    import itertools

    from tqueues.stores.rethinkdb.claims import CLAIM_PARALLEL, Claims
    from tqueues.stores.rethinkdb.head import Heads

    # Given a queue whose pending head holds ten jobs, j0 to j9 in take order
    heads = Heads()
    heads.opened("q")
    end_fill = heads.begin_fill("q")
    assert end_fill is not None
    end_fill([job(n) for n in range(10)], 512)

    async def no_reads(queue: str, query: object) -> object:
        raise AssertionError("the head answers: no index read")

    leases = itertools.count()
    writes = ClaimWrites()
    claims = Claims(
        heads=heads, table=lambda queue: queue, run=no_reads, write_many=writes,
        remember=lambda job: None, undo_claim=lambda job: None,
        new_lease=lambda: f"L{next(leases)}",
    )  # fmt: skip
    # When one take's claim write is under way and two more takes come
    first = asyncio.ensure_future(claims.claim("q", 3, "w1", 2.0))
    for _ in range(5):
        await asyncio.sleep(0)
    assert writes.calls == [["j0", "j1", "j2"]]
    second = asyncio.ensure_future(claims.claim("q", 3, "w2", 2.0))
    third = asyncio.ensure_future(claims.claim("q", 2, "w3", 2.0))
    for _ in range(5):
        await asyncio.sleep(0)
    # Then those two go together at once, as a second write in flight, with the next
    # candidates (not the ones the first write tries)
    assert writes.calls == [["j0", "j1", "j2"], ["j3", "j4", "j5", "j6", "j7"]]
    assert writes.most_running == CLAIM_PARALLEL == 2
    writes.release.set()
    got = [[j.id for j in jobs] for jobs in await asyncio.gather(first, second, third)]
    assert got == [["j0", "j1", "j2"], ["j3", "j4", "j5"], ["j6", "j7"]]
    await claims.close()
