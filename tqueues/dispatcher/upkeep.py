"""The dispatcher's slow upkeep: this process's counts flushed to the throughput history,
old minutes purged (see :mod:`tqueues.stores.history`), silent workers dropped from the
registry (:mod:`tqueues.stores.workers`).

Idempotent per call and additive, so several dispatchers on one store need no leader:
each adds only what it counted, and a purge by two at once deletes each minute once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tqueues import clock
from tqueues.errors import StoreUnavailable
from tqueues.retry import raise_if_cancelling
from tqueues.stores.base import Store
from tqueues.stores.history import BUCKET, FLUSH_INTERVAL, bucket_of
from tqueues.stores.workers import DROP_AFTER

log = logging.getLogger(__name__)


async def keep_up(store: Store, keep: float) -> None:
    """Until cancelled: flush every :data:`FLUSH_INTERVAL` seconds and just after each
    minute boundary; once a minute, delete the minutes older than ``keep`` seconds and
    the workers silent for :data:`~tqueues.stores.workers.DROP_AFTER` seconds.
    Survives store outages (what was not flushed is flushed later). The caller flushes
    a last time with :func:`flush_last` when it stops."""
    purged = None
    while True:
        now = clock.now()
        boundary = bucket_of(now) + BUCKET
        await asyncio.sleep(min(FLUSH_INTERVAL, boundary - now + 0.01))
        now = clock.now()
        try:
            await store.flush_history(now)
            if purged != bucket_of(now):
                purged = bucket_of(now)
                await store.purge_history(bucket_of(now - keep))
                await store.forget_workers(before=now - DROP_AFTER)
        except StoreUnavailable as exc:
            log.warning("upkeep: %s", exc.message, extra={"action": "upkeep_failed"})
        raise_if_cancelling()  # (a cancellation the store swallowed)


async def flush_last(store: Store) -> None:
    """Flush what this process counted since its last flush (it is stopping); a store
    that cannot be reached loses those counts, with a warning."""
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await store.flush_history(clock.now())
        except StoreUnavailable as exc:
            log.warning(
                "history: the last counts are lost: %s",
                exc.message,
                extra={"action": "history_failed"},
            )
