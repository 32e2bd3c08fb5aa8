"""The periodic sweep: expired leases back to pending (or failed), due delayed jobs to
pending; and, every few seconds, the jobs waiting for others judged again (the safety net
of :mod:`tqueues.stores.dependents`).

Idempotent and conditional per job, so several dispatchers on one store need no leader.
"""

from __future__ import annotations

import asyncio
import logging

from tqueues import clock
from tqueues.errors import StoreUnavailable
from tqueues.retry import raise_if_cancelling
from tqueues.stores.base import Store

log = logging.getLogger(__name__)


async def reap_forever(store: Store, interval: float) -> None:
    """Run :meth:`Store.reap` every ``interval`` seconds until cancelled; survive store outages."""
    while True:
        try:
            changed = await store.reap(clock.now())
            changed += await store.dependents.sweep()
            if changed:
                log.debug("reaped %d job(s)", changed, extra={"action": "reaped"})
        except StoreUnavailable as exc:
            log.warning("reaper: %s", exc.message, extra={"action": "reap_failed"})
        raise_if_cancelling()  # (a cancellation the store swallowed)
        await asyncio.sleep(interval)
