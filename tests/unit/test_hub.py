"""The change hub's frame subscriptions: each change encoded once, held within a byte budget."""

from __future__ import annotations

import asyncio

import pytest

from tqueues import codec, lifecycle
from tqueues.jobs import ChangeEvent, NewJob, QueueConfig
from tqueues.stores.hub import ChangeHub, ChangesMissed, SubscriberTooSlow, encode_change


def change(size: int = 1000, queue: str = "q") -> ChangeEvent:
    """A "put" of a job whose argument is ``size`` characters long."""
    job = lifecycle.create(NewJob(queue, "m:f", args=["x" * size]), QueueConfig(queue), now=1.0)
    return ChangeEvent(job.event, queue, job, None)


async def test_each_change_is_encoded_once_for_every_client_of_the_queue() -> None:
    hub = ChangeHub()
    with hub.subscribe_frames("q", 10**6) as a, hub.subscribe_frames("q", 10**6) as b:
        event = change()
        hub.publish(event)
        hub.publish(change(queue="other"))  # not theirs
        first, second = await a.get(), await b.get()
    assert first is second  # the same bytes object, not two encodings
    assert codec.loads(first) == {
        "type": "change",
        "kind": "put",
        "queue": "q",
        "old_status": None,
        "job": event.job.to_dict(),
    }
    assert hub.subscriber_count() == 0


async def test_the_budget_counts_the_queued_frames_and_the_one_handed_out() -> None:
    hub = ChangeHub()
    size = len(encode_change(change()))
    with hub.subscribe_frames("q", 2 * size) as sub:
        hub.publish(change())
        hub.publish(change())
        assert sub.held == 2 * size and not sub.overflowed
        # The frame handed out still counts while it is written...
        await sub.get()
        assert sub.held == 2 * size
        # ...and no longer once the next is asked for
        await sub.get()
        assert sub.held == size
        hub.publish(change())
        assert sub.held == 2 * size and not sub.overflowed
        # When one more change does not fit
        hub.publish(change())
        # Then the subscription ends at once: what it held is dropped, a sender stuck on
        # the client is woken, and get raises
        assert sub.overflowed and sub.held == 0
        assert sub.too_slow.done()
        with pytest.raises(SubscriberTooSlow, match=f"more than {2 * size} bytes"):
            await sub.get()
        hub.publish(change())  # nothing is held for it any more
        assert sub.held == 0


async def test_a_change_larger_than_the_budget_is_taken_when_nothing_else_is_held() -> None:
    hub = ChangeHub()
    with hub.subscribe_frames("q", 100) as sub:
        hub.publish(change(5000))
        assert not sub.overflowed
        assert len(await sub.get()) > 5000
        hub.publish(change(5000))  # the first still counts: it is being written
        assert sub.overflowed


async def test_a_waiting_get_is_woken_by_a_change() -> None:
    hub = ChangeHub()
    with hub.subscribe_frames("q", 10**6) as sub:
        waiting = asyncio.create_task(sub.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        hub.publish(change())
        assert codec.loads(await asyncio.wait_for(waiting, 5))["kind"] == "put"


async def test_missed_changes_end_a_subscription_after_what_it_holds() -> None:
    hub = ChangeHub()
    with hub.subscribe_frames("q", 10**6) as sub, hub.subscribe("q") as events:
        hub.publish(change())
        hub.changes_missed("q", "its change feed broke")
        assert codec.loads(await sub.get())["kind"] == "put"
        with pytest.raises(ChangesMissed, match="its change feed broke"):
            await sub.get()
        assert not sub.overflowed and not sub.too_slow.done()
        # The in-process subscription of events ends the same way
        assert (await anext(events)).kind == "put"
        with pytest.raises(ChangesMissed):
            await anext(events)


async def test_a_budget_below_one_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        ChangeHub().subscribe_frames("q", 0)
