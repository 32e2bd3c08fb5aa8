"""The dispatcher's housekeeping loops (reaper, schedules) stop when cancelled, even when
the store they call swallowed the cancellation (fault injection: a store whose calls turn
it into an outage, as a driver may; the dispatcher's shutdown awaits these loops)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tqueues.dispatcher.reaper import reap_forever
from tqueues.dispatcher.scheduler import fire_forever
from tqueues.errors import StoreUnavailable
from tqueues.stores.base import Store
from tqueues.stores.sqlite import SQLiteStore


class SwallowingStore(SQLiteStore):
    """An embedded store whose housekeeping calls wait until cancelled, then raise
    StoreUnavailable instead of the cancellation."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.called = asyncio.Event()

    async def _swallow(self) -> None:
        self.called.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise StoreUnavailable("connection closed") from None

    async def reap(self, now: float) -> int:
        await self._swallow()
        return 0

    async def fire_schedules(self, now: float) -> float | None:
        await self._swallow()
        return None


Loop = Callable[[Store], Coroutine[Any, Any, None]]


@pytest.mark.parametrize(
    "loop",
    [lambda store: reap_forever(store, 60.0), lambda store: fire_forever(store, 60.0)],
    ids=["reaper", "schedules"],
)
async def test_a_housekeeping_loop_ends_when_cancelled_even_if_its_store_swallowed_it(
    tmp_path: Path, loop: Loop
) -> None:
    async with SwallowingStore(tmp_path) as store:
        task = asyncio.create_task(loop(store))
        await asyncio.wait_for(store.called.wait(), 5)
        task.cancel()
        # Then the loop ends, cancelled, instead of waiting its 60 s for the next round
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done and task.cancelled()
