"""The dispatcher's timer of periodic jobs: it fires the schedules of the store (see
:mod:`tqueues.stores.schedules`) at their ticks.

Every dispatcher runs one, with no leader: a tick fired by two at once makes one job. It
sleeps until the earliest next tick it knows, and reads the schedules again at least
every :data:`REREAD` seconds (so a schedule another dispatcher created or resumed fires
within that) or at once when this process changed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tqueues import clock
from tqueues.errors import StoreUnavailable
from tqueues.retry import raise_if_cancelling
from tqueues.stores.base import Store

log = logging.getLogger(__name__)

REREAD = 2.0  #: seconds between two reads of the schedules, at most.


async def fire_forever(store: Store, reread: float = REREAD) -> None:
    """Until cancelled: fire the schedules due, then wait for the earliest next tick, at
    most ``reread`` seconds, or until this process changes a schedule. Survives store
    outages (the ticks due meanwhile follow their schedules' ``catch_up``)."""
    changed = store.schedules_changed
    while True:
        changed.clear()
        earliest: float | None = None
        try:
            earliest = await store.fire_schedules(clock.now())
        except StoreUnavailable as exc:
            log.warning("schedules: %s", exc.message, extra={"action": "schedules_failed"})
        raise_if_cancelling()  # (a cancellation the store swallowed)
        wait = reread if earliest is None else min(reread, max(0.0, earliest - clock.now()))
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
        # that arrives as the event is set (the dispatcher would then not stop).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await changed.wait()


__all__ = ["REREAD", "fire_forever"]
