"""The line of waiting long-poll takers (``tqueues.stores.waiters``): one taker woken per
job, the longest-waiting first; a taker leaves the line at once, wherever it stands; a
woken taker that found nothing keeps its place; no wake-up is lost.

The real WaitLine on a real event loop; the takers are tasks, the jobs real JobRecord objects.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tqueues import clock, lifecycle
from tqueues.jobs import JobRecord, NewJob, QueueConfig
from tqueues.stores.waiters import Waited, Waiter, WaitLine

DEADLINE = 10.0  # seconds any wait here may take
LONG = 60.0  # a wait or poll no test lasts


class Line:
    """A WaitLine, what it gave back, and its counters."""

    def __init__(self) -> None:
        self.given_back: list[JobRecord] = []
        self.counters: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )
        self.line = WaitLine(self.given_back.extend, self.counters)

    def taker(
        self, queues: Sequence[str] = ("q",), *, ticket: int | None = None, poll: float = LONG
    ) -> tuple[asyncio.Task[Waited], int]:
        """A task waiting in line (once it has run a step), and its ticket."""
        ticket = self.line.ticket() if ticket is None else ticket
        since = self.line.signals(queues)
        task = asyncio.create_task(
            self.line.wait(queues, 1, None, since=since, timeout=LONG, ticket=ticket, poll=poll)
        )
        return task, ticket


async def until(condition: Callable[[], Any]) -> None:
    """Yield to the loop until ``condition()`` holds; fail after DEADLINE."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def job(n: int = 0) -> JobRecord:
    return lifecycle.create(
        NewJob(queue="q", method="m:f", args=[n]), QueueConfig("q"), now=clock.now()
    )


async def parked(line: Line, n: int, queues: Sequence[str] = ("q",)) -> list[asyncio.Task[Waited]]:
    """``n`` takers in line, oldest first."""
    tasks = [line.taker(queues)[0] for _ in range(n)]
    await until(lambda: all(len(line.line[q]) == n for q in queues))
    return tasks


async def test_a_job_wakes_one_taker_the_longest_waiting() -> None:
    line = Line()
    tasks = await parked(line, 1000)
    # When one job becomes pending, then two more
    assert line.line.wake("q") == 1
    await until(lambda: tasks[0].done())
    assert line.line.wake("q", 2) == 2
    await until(lambda: tasks[2].done())
    # Then the three oldest takers were woken to look, in order, and nobody else
    assert [task.done() for task in tasks[:4]] == [True, True, True, False]
    assert sum(task.done() for task in tasks) == 3
    assert all(task.result() == Waited([], False) for task in tasks[:3])
    assert len(line.line["q"]) == 997 and line.counters["q"]["woken"] == 3
    # And an unknown number (changes that went unseen) wakes them all
    assert line.line.wake("q", None) == 997
    await asyncio.gather(*tasks)
    assert not line.line["q"] and line.counters["q"]["woken_to_search"] == 997
    assert line.counters["q"]["woken"] == 3


async def test_a_taker_that_leaves_is_out_of_the_line_at_once_wherever_it_stands() -> None:
    line = Line()
    tasks = await parked(line, 5, queues=("q", "r"))
    # When a taker in the middle of both lines goes away
    tasks[2].cancel()
    await asyncio.gather(tasks[2], return_exceptions=True)
    # Then it is out of both, and the others keep their order
    for queue in ("q", "r"):
        assert len(line.line[queue]) == 4
    assert line.line.wake("q", 4) == 4
    await asyncio.gather(tasks[0], tasks[1], tasks[3], tasks[4])
    assert not line.line["q"] and not line.line["r"]


async def test_a_woken_taker_that_found_nothing_goes_back_to_the_head_of_the_line() -> None:
    line = Line()
    first, ticket = line.taker()
    await until(lambda: len(line.line["q"]) == 1)
    others = [line.taker()[0] for _ in range(3)]
    await until(lambda: len(line.line["q"]) == 4)
    # Given the oldest taker woken, and finding nothing (another taker got the job)
    line.line.wake("q")
    assert (await first).jobs == []
    # When it waits again with its ticket, and a put chooses a taker
    again, _ = line.taker(ticket=ticket)
    await until(lambda: len(line.line["q"]) == 4)
    chosen = line.line.choose("q")
    # Then the put chose it: it kept its place at the head
    assert chosen is not None and chosen.ticket == ticket
    assert chosen.hand([job()])
    assert len((await again).jobs) == 1
    # And a newcomer goes to the end, behind those who waited longer
    late, late_ticket = line.taker()
    await until(lambda: len(line.line["q"]) == 4)
    assert [waiter.ticket for waiter in line.line["q"]][-1] == late_ticket
    for task in [*others, late]:
        task.cancel()
    await asyncio.gather(*others, late, return_exceptions=True)


async def test_a_job_that_became_pending_while_the_taker_looked_is_not_missed() -> None:
    line = Line()
    # Given a taker that noted the wake-ups, then looked and found nothing
    since = line.line.signals(["q"])
    # When a job becomes pending before it stands in line (nobody is woken)
    assert line.line.wake("q") == 0
    # Then its wait ends at once: it looks again
    waited = await line.line.wait(
        ["q"], 1, None, since=since, timeout=LONG, ticket=line.line.ticket(), poll=LONG
    )
    assert waited == Waited([], False) and not line.line["q"]


async def test_a_woken_taker_that_goes_away_passes_the_wake_up_on() -> None:
    line = Line()
    tasks = await parked(line, 3)
    # Given the oldest taker woken for a job
    assert line.line.wake("q") == 1
    # When it goes away before it could look (its client disconnected)
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    # Then the next taker looks instead, and only it
    await until(lambda: tasks[1].done())
    assert tasks[1].result() == Waited([], False) and not tasks[2].done()
    assert line.counters["q"]["woken"] == 2
    tasks[2].cancel()
    await asyncio.gather(tasks[2], return_exceptions=True)


async def test_a_taker_cancelled_after_a_put_handed_it_jobs_gives_them_back() -> None:
    line = Line()
    (task,) = await parked(line, 1)
    waiter = line.line.choose("q")
    assert waiter is not None and not line.line["q"]
    handed = [job(1)]
    assert waiter.hand(handed)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and line.given_back == handed


async def test_only_the_head_of_the_line_polls_and_its_search_says_so() -> None:
    line = Line()
    # Given a taker at the head of the line that does not poll, and three behind it
    # whose safety-net poll comes due every 20 ms
    head, _ = line.taker(poll=LONG)
    await until(lambda: len(line.line["q"]) == 1)
    tasks = [line.taker(poll=0.02)[0] for _ in range(3)]
    await until(lambda: len(line.line["q"]) == 4)
    # When ten of their polls come due (what is asserted is that nothing happens: a
    # bounded wait is the only way to see it)
    await asyncio.sleep(0.2)
    # Then none of them looked: only the head of a line looks
    assert not any(task.done() for task in tasks) and len(line.line["q"]) == 4
    # And once the head has gone, the next one looks at its next poll, as a search
    head.cancel()
    await asyncio.gather(head, return_exceptions=True)
    assert (await asyncio.wait_for(tasks[0], DEADLINE)) == Waited([], True)
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    # And a search's wake-up makes the one it wakes search too
    (woken,) = await parked(line, 1)
    assert line.line.wake("q", search=True) == 1
    assert (await woken) == Waited([], True)


async def test_a_quiet_queue_wakes_nobody() -> None:
    line = Line()
    (task,) = await parked(line, 1)
    with line.line.quiet("q"):
        assert line.line.wake("q") == 0
    assert not task.done() and len(line.line["q"]) == 1
    assert line.line.wake("q") == 1
    assert (await task).jobs == []


@pytest.mark.parametrize("waiting", [1_000, 100_000])
async def test_takers_leave_a_long_line_without_disturbing_it(
    waiting: int,
) -> None:
    # Given a long line of takers (entries only: what a line holds is its waiters)
    line = Line()
    tasks = await parked(line, 10)
    loop = asyncio.get_running_loop()
    filler = [Waiter(1, None, loop.create_future(), ticket=10**9 + i) for i in range(waiting)]
    for waiter in filler:
        line.line["q"][waiter] = None
    # When the takers at its head leave, and a job wakes one of the rest
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # Then the line lost exactly those (it is a mapping keyed by taker: none is searched
    # for), and the next in line is woken
    assert len(line.line["q"]) == waiting
    assert line.line.wake("q") == 1 and filler[0].jobs.done()
    assert len(line.line["q"]) == waiting - 1
