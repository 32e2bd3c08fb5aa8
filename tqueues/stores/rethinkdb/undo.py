"""Claims nobody received, released in the background.

A claim whose write got no answer (the connection broke, the server did not answer in
time) may have been applied: the job is then started under a lease only this process
knows, and no worker runs it. Rather than leave it to its ttr, the process releases it,
conditional on that lease, retrying while the server is unavailable until the lease
would have expired anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tqueues import clock
from tqueues.errors import (
    InvalidTransition,
    JobNotFound,
    LeaseMismatch,
    QueueNotFound,
    StoreUnavailable,
)
from tqueues.jobs import JobRecord
from tqueues.retry import Backoff

log = logging.getLogger("tqueues.stores.rethinkdb")

#: ``release(queue, job_id, lease)``: the store's release of a job held under ``lease``
Release = Callable[[str, str, str | None], Awaitable[object]]


class ClaimUndo:
    """The undos under way of one store; ``release`` releases a job under a lease."""

    def __init__(self, release: Release) -> None:
        self._release = release
        self._undoing: set[asyncio.Task[None]] = set()

    def __call__(self, claimed: JobRecord) -> None:
        """Release ``claimed`` (a claim nobody received) in the background, retrying with
        backoff while the server is unavailable, until its lease would have expired.

        The release is conditional on the claim's own lease: if the claim was not
        applied, or the job moved on, it changes nothing (LeaseMismatch,
        InvalidTransition, JobNotFound or QueueNotFound end the undo quietly).
        """
        task = asyncio.ensure_future(self._until_answered(claimed))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    def cancel(self) -> None:
        """Stop every undo under way (the store closes): their leases expire as usual."""
        for undo in tuple(self._undoing):
            undo.cancel()

    async def _until_answered(self, claimed: JobRecord) -> None:
        loop = asyncio.get_running_loop()
        expires = claimed.lease_expires if claimed.lease_expires is not None else clock.now()
        give_up = loop.time() + max(0.0, expires - clock.now())
        backoff = Backoff(base=0.1, cap=2.0)
        while True:
            try:
                await self._release(claimed.queue, claimed.id, claimed.lease)
            except (LeaseMismatch, InvalidTransition, JobNotFound, QueueNotFound):
                return  # the claim was not applied, or the job is someone else's now
            except StoreUnavailable as exc:
                delay = backoff.next()
                if loop.time() + delay > give_up:
                    log.warning(
                        "job %s of queue %r may be claimed by a take that got no answer; "
                        "its lease expires: %s",
                        claimed.id,
                        claimed.queue,
                        exc.message,
                    )
                    return
                await backoff.sleep(delay)
                continue
            log.info(
                "job %s of queue %r: a claim that got no answer was applied; released it",
                claimed.id,
                claimed.queue,
            )
            return


__all__ = ["ClaimUndo", "Release"]
