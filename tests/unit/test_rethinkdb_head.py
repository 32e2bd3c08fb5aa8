"""The pending head of a RethinkDB queue (tqueues/stores/rethinkdb/head.py), against a model
of the table and its changefeed: writes commit in order, the feed delivers them in that
order but late, this process's own writes may be applied before their feed message, and
fills read the table at some moment between their start and their end. Once the feed has
delivered everything, whatever the head answers is exactly the most urgent pending jobs.

Pure bookkeeping, so no server is needed; the store's use of it is tested against a real
RethinkDB in tests/contract/test_store_head.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tqueues import lifecycle
from tqueues.jobs import JobRecord, JobStatus, NewJob, QueueConfig
from tqueues.stores.rethinkdb.head import SPREAD, Head, Heads, spread, take_key

STATUSES = (JobStatus.PENDING, JobStatus.STARTED, JobStatus.FINISHED, JobStatus.DELAYED)


def job(n: int, priority: int) -> JobRecord:
    created = lifecycle.create(NewJob("q", "m:f", args=[n]), QueueConfig("q"), now=1.0 + n)
    return dataclasses.replace(created, id=f"{n:04d}", priority=priority)


class Table:
    """The queue table and its feed: every write is a change in commit order."""

    def __init__(self) -> None:
        self.docs: dict[str, JobRecord] = {}
        self.feed: list[tuple[JobRecord | None, JobRecord | None]] = []
        self.made = 0

    def write(self, old: JobRecord | None, new: JobRecord | None) -> None:
        if new is None:
            assert old is not None
            del self.docs[old.id]
        else:
            self.docs[new.id] = new
        self.feed.append((old, new))

    def act(self, op: str, pick: int, arg: int) -> None:
        """A write: ``put`` a job of priority ``arg``, or ``change`` (to status ``arg``,
        maybe a priority up) or ``delete`` the ``pick``-th job."""
        ids = sorted(self.docs)
        if op == "put":
            self.write(None, job(self.made, priority=arg))
            self.made += 1
        elif op == "change" and ids:
            old = self.docs[ids[pick % len(ids)]]
            new = dataclasses.replace(
                old, status=STATUSES[arg], rev=old.rev + 1, priority=old.priority + arg % 2
            )
            self.write(old, new)
        elif op == "delete" and ids:
            self.write(self.docs[ids[pick % len(ids)]], None)

    def pending(self) -> list[JobRecord]:
        return sorted(
            (j for j in self.docs.values() if j.status is JobStatus.PENDING), key=take_key
        )


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "change", "delete", "deliver", "own", "fill", "end"]),
        st.integers(0, 1000),
        st.integers(0, 3),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(1, 6))
def test_what_the_head_answers_is_the_most_urgent_pending_jobs(ops: Any, size: int) -> None:
    heads = Heads(size=size, refresh=3600)
    heads.opened("q")
    table, delivered = Table(), 0
    fills: list[tuple[Any, list[JobRecord], int]] = []  # (end_fill, what it read, limit)
    for op, pick, arg in ops:
        if op in ("put", "change", "delete"):
            table.act(op, pick, arg)
        elif op == "deliver":
            for old, new in table.feed[delivered : delivered + pick % 5 + 1]:
                heads.apply("q", old, new)
            delivered = min(len(table.feed), delivered + pick % 5 + 1)
        elif op == "own" and delivered < len(table.feed):
            # a write of this process, answered before its feed message arrives
            old, new = table.feed[delivered + pick % (len(table.feed) - delivered)]
            heads.apply("q", old, new)
        elif op == "fill":
            end_fill = heads.begin_fill("q")
            assert end_fill is not None
            limit = size + arg - 1 if size + arg > 1 else 1
            fills.append((end_fill, table.pending()[:limit], limit))  # the read's moment
        elif op == "end" and fills:
            end_fill, read, limit = fills.pop(pick % len(fills))
            end_fill(read if arg else None, limit)  # None: the read failed
    for old, new in table.feed[delivered:]:
        heads.apply("q", old, new)
    for end_fill, read, limit in fills:
        end_fill(read, limit)
    truth = table.pending()
    for count in range(1, size + 2):
        answer = heads.candidates("q", count)
        if answer is not None:
            assert [j.id for j in answer] == [j.id for j in truth[:count]]


def test_a_head_answers_nothing_until_filled_after_its_feed_opened() -> None:
    heads = Heads(size=4)
    assert heads.candidates("q", 1) is None  # no feed
    assert heads.begin_fill("q") is None
    heads.opened("q")
    heads.apply("q", None, job(1, 0))
    assert heads.candidates("q", 1) is None  # not filled yet
    end_fill = heads.begin_fill("q")
    assert end_fill is not None
    end_fill([job(1, 0)], 4)
    assert [j.id for j in heads.candidates("q", 3) or []] == ["0001"]
    heads.forget("q")  # the feed broke
    assert heads.candidates("q", 1) is None


def test_a_fill_of_a_head_that_was_forgotten_meanwhile_fills_nothing() -> None:
    heads = Heads(size=4)
    heads.opened("q")
    end_fill = heads.begin_fill("q")
    assert end_fill is not None
    heads.forget("q")  # the feed broke during the read: changes may have been missed
    heads.opened("q")
    end_fill([job(1, 0)], 4)
    assert heads.candidates("q", 1) is None


def test_an_incomplete_head_keeps_urgent_newcomers_and_asks_for_a_read_when_short() -> None:
    head = Head(size=3)
    head.fill([job(n, 5) for n in range(3)], 3)  # three read, more may be pending
    assert not head.complete
    head.apply(None, job(10, 0))  # more urgent than its bound: kept, the last one dropped
    head.apply(None, job(11, 9))  # beyond its bound: not its business
    assert [j.id for j in head.candidates(3, 0, 60) or []] == ["0010", "0000", "0001"]
    assert head.candidates(4, 0, 60) is None
    claimed = dataclasses.replace(job(10, 0), status=JobStatus.STARTED, rev=1)
    head.apply(job(10, 0), claimed)
    head.apply(None, job(10, 0))  # the put's feed message, after the claim: stale
    assert [j.id for j in head.candidates(2, 0, 60) or []] == ["0000", "0001"]
    assert head.candidates(3, 0, 60) is None


def test_a_head_is_refilled_once_its_refresh_is_due() -> None:
    head = Head(size=3)
    head.fill([], 3)
    assert head.candidates(1, 0, 60) == []
    assert head.candidates(1, 0, 0) is None


def test_a_job_changed_during_a_fill_beyond_what_the_read_reached_is_not_answered() -> None:
    heads = Heads(size=8)
    heads.opened("q")
    end_fill = heads.begin_fill("q")
    assert end_fill is not None
    # while the read of the two most urgent of four pending jobs is under way, the last
    # one changes (its feed message arrives before the read's answer)
    late = job(3, 5)
    heads.apply("q", late, dataclasses.replace(late, rev=1))
    end_fill([job(0, 5), job(1, 5)], 2)
    assert [j.id for j in heads.candidates("q", 2) or []] == ["0000", "0001"]
    assert heads.candidates("q", 3) is None  # job 2 may come first: read again


def test_a_contended_claim_spreads_over_one_priority_and_never_passes_a_higher_one() -> None:
    candidates = [job(n, priority=n // 10) for n in range(40)]  # ten of each of four
    orders = {tuple(j.id for j in spread(candidates, 2)) for _ in range(20)}
    assert len(orders) > 1  # takers elsewhere mostly pick other jobs
    for order in orders:
        by_id = {j.id: j for j in candidates}
        priorities = [by_id[i].priority for i in order]
        assert priorities == sorted(priorities)  # a higher priority still goes first
        assert order[2 * SPREAD :] == tuple(j.id for j in candidates[2 * SPREAD :])
        assert sorted(order) == sorted(by_id)


def test_the_sweep_is_due_when_a_change_or_its_last_read_says_so() -> None:
    heads = Heads(size=4)
    assert heads.needs("q", "sweep", 100.0)  # no feed: sweep every round
    heads.opened("q")
    assert heads.needs("q", "sweep", 100.0)  # nothing known yet
    end_sweep = heads.begin("q", "sweep")
    assert end_sweep is not None
    # a job claimed elsewhere while the sweep read, under a lease to 130
    claimed = dataclasses.replace(job(1, 0), status=JobStatus.STARTED, rev=1, lease_expires=130.0)
    heads.apply("q", job(1, 0), claimed)
    end_sweep(150.0)  # the earliest its reads found after 100
    assert not heads.needs("q", "sweep", 129.0)
    assert heads.needs("q", "sweep", 130.0)  # the lease the feed brought, not the read's
    delayed = dataclasses.replace(job(2, 0), status=JobStatus.DELAYED, ready_at=110.0)
    heads.apply("q", None, delayed)
    assert heads.needs("q", "sweep", 110.0)
    failed = heads.begin("q", "sweep")
    assert failed is not None
    failed(float("-inf"))  # a sweep that failed
    assert heads.needs("q", "sweep", 0.0)
    heads.forget("q")
    assert heads.needs("q", "sweep", 0.0)


def test_a_head_holds_jobs_slim_whatever_they_carry() -> None:
    heads = Heads(size=4)
    heads.opened("q")
    end_fill = heads.begin_fill("q")
    assert end_fill is not None
    end_fill([], 4)
    big = dataclasses.replace(job(1, 0), args=["x" * 500_000], kwargs={"k": "y" * 1000})
    heads.apply("q", None, big)
    (held,) = heads.candidates("q", 1) or []
    assert (held.id, held.rev, held.args, held.kwargs) == (big.id, 0, [], {})
