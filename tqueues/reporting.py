"""Delivering how runs ended: one outcome at a time, or many in one request.

:func:`deliver` sends one outcome with a call of its own (what a standalone
:class:`~tqueues.worker.Job` does). :class:`Reporter` is what the jobs of a
:class:`~tqueues.worker.Worker` use: their outcomes queue up per queue, and one
``POST /queues/{name}/outcomes`` per queue is in flight at a time; whatever queued while
it was in flight goes in the next one. Batches form by themselves under load (no timer,
no waiting for company), and a lone outcome is sent at once.

Either way, per outcome: an outcome is done once the dispatcher has stored it (its answer
means it is durable), or refused it as no longer the caller's to report (409, 404: logged
as ``report_refused``), or once transport errors kept it from being delivered until the
job's lease would have expired (logged as ``report_lost``; the job runs again elsewhere:
at least once, never lost). Transport errors are retried with backoff (0.1 s doubling to
5 s, with jitter: :class:`~tqueues.retry.Backoff`). Waiting for an outcome is shielded
from cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqueues.client import Client
from tqueues.errors import (
    DispatcherUnavailable,
    InvalidTransition,
    JobNotFound,
    LeaseMismatch,
    StoreUnavailable,
    TqueuesError,
)
from tqueues.limits import MAX_OUTCOMES
from tqueues.retry import Backoff

log = logging.getLogger("tqueues.worker")
#: Transport-level failures worth retrying with backoff.
TRANSIENT = (DispatcherUnavailable, StoreUnavailable)
#: Answers that mean the job is no longer ours to report on.
LOST = (LeaseMismatch, InvalidTransition, JobNotFound)


def _refused(what: str, exc: TqueuesError) -> None:
    if isinstance(exc, LOST):
        log.warning(
            "%s: outcome refused (%s): %s",
            what,
            exc.code,
            exc.message,
            extra={"action": "report_refused"},
        )
    else:
        log.error("%s: outcome refused: %s", what, exc.message, extra={"action": "report_refused"})


def _lost(what: str, exc: TqueuesError | None) -> None:
    reason = exc.message if exc is not None else "the worker stopped first"
    log.error(
        "%s: outcome not delivered; it will run again after its lease expires: %s",
        what,
        reason,
        extra={"action": "report_lost"},
    )


def _retrying(what: str, delay: float, exc: TqueuesError) -> None:
    log.warning(
        "%s: retrying the report in %.1f s: %s",
        what,
        delay,
        exc.message,
        extra={"action": "report_retry"},
    )


async def deliver(call: Callable[[], Awaitable[Any]], what: str, ttr: float) -> None:
    """Make ``call`` (one outcome's request), retrying transport errors for ``ttr`` seconds.

    Returns once it was answered, refused (logged) or given up (logged); never raises a
    TqueuesError. ``what`` names the job in the log.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + ttr
    backoff = Backoff()
    while True:
        try:
            await call()
            return
        except TRANSIENT as exc:
            delay = backoff.next()
            if loop.time() + delay > give_up:
                _lost(what, exc)
                return
            _retrying(what, delay, exc)
            await asyncio.sleep(delay)
        except TqueuesError as exc:
            _refused(what, exc)
            return


async def shielded(awaitable: Awaitable[None]) -> None:
    """Wait for ``awaitable`` even if cancelled meanwhile (then re-raise the cancellation)."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


@dataclass
class _Outcome:
    """One outcome waiting to be delivered, and who waits for it."""

    body: dict[str, Any]  #: {"id", "lease", "action", ...the action's fields}
    what: str  #: the job, for the log
    give_up: float  #: loop time after which it is not retried any more
    done: asyncio.Future[None] = field(repr=False)

    def settle(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class Taker(Protocol):
    """Who takes the next jobs along with a batch of outcomes (a Worker)."""

    worker_id: str

    def take_along(self, queue: str) -> int:
        """How many jobs of ``queue`` the next report should take (0: none)."""

    def taken_along(self, queue: str, asked: int, docs: Sequence[dict[str, Any]]) -> None:
        """The report that asked for ``asked`` jobs ended, with ``docs`` taken (maybe none)."""


class Reporter:
    """Sends the outcomes of a worker's jobs, batched per queue, through ``client``.

    :meth:`report` queues one outcome and waits until it is settled (stored, refused or
    given up). :meth:`flush` waits until nothing is queued or in flight; call it before
    closing the client. With a ``taker``, each batch also takes the jobs it asks for, in
    the same request (``Client.report_and_take``).
    """

    def __init__(self, client: Client, *, taker: Taker | None = None) -> None:
        self.client = client
        self.taker = taker
        self._queued: dict[str, list[_Outcome]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self.requests = 0  #: batches sent (each one request), for statistics and tests

    async def report(
        self,
        queue: str,
        job_id: str,
        lease: str | None,
        action: str,
        fields: dict[str, Any],
        *,
        what: str,
        ttr: float,
    ) -> None:
        """Deliver ``action`` (finish, fail, release, requeue, bury) with ``fields`` for the
        job; ``ttr`` bounds the retries. Shielded from cancellation."""
        loop = asyncio.get_running_loop()
        outcome = _Outcome(
            {**fields, "id": job_id, "lease": lease, "action": action},
            what,
            loop.time() + ttr,
            loop.create_future(),
        )
        self._queued.setdefault(queue, []).append(outcome)
        if queue not in self._senders:
            self._senders[queue] = loop.create_task(self._send(queue))
        await shielded(outcome.done)

    async def flush(self) -> None:
        """Wait until every queued outcome is settled."""
        while self._senders:
            await asyncio.gather(*self._senders.values(), return_exceptions=True)

    async def _send(self, queue: str) -> None:
        """Send the queue's outcomes, a batch at a time, until none is left."""
        queued = self._queued[queue]
        batch: list[_Outcome] = []
        backoff = Backoff()
        try:
            while queued:
                batch = queued[:MAX_OUTCOMES]
                del queued[:MAX_OUTCOMES]
                retry, exc = await self._send_batch(queue, batch)
                batch = []
                if not retry:
                    backoff.reset()
                    continue
                assert exc is not None
                loop = asyncio.get_running_loop()
                delay = backoff.next()
                keep = []
                for outcome in retry:
                    if loop.time() + delay > outcome.give_up:
                        _lost(outcome.what, exc)
                        outcome.settle()
                    else:
                        _retrying(outcome.what, delay, exc)
                        keep.append(outcome)
                if keep:
                    batch = keep
                    await asyncio.sleep(delay)
                    queued[:0] = keep  # first in the next request, with what came meanwhile
                    batch = []
        except BaseException:
            # Cancelled (the loop is going away) or a bug: settle everyone, nothing hangs.
            for outcome in (*batch, *queued):
                _lost(outcome.what, None)
                outcome.settle()
            queued.clear()
            raise
        finally:
            del self._senders[queue]
            if not queued:
                self._queued.pop(queue, None)

    async def _send_batch(
        self, queue: str, batch: list[_Outcome]
    ) -> tuple[list[_Outcome], TqueuesError | None]:
        """One request; the outcomes to retry after a transport error, and that error."""
        self.requests += 1
        bodies = [outcome.body for outcome in batch]
        asked = self.taker.take_along(queue) if self.taker is not None else 0
        taken: list[dict[str, Any]] = []
        try:
            if asked:
                assert self.taker is not None
                results, taken = await self.client.report_and_take(
                    queue, bodies, asked, worker=self.taker.worker_id, brief=True
                )
            else:
                results = await self.client.report(queue, bodies, brief=True)
        except TRANSIENT as exc:
            return batch, exc
        except TqueuesError:
            # The batch as a whole was refused (too large a body, or a dispatcher without
            # the route): each outcome on its own route, as a standalone job reports.
            await asyncio.gather(*(self._send_one(queue, outcome) for outcome in batch))
            return [], None
        finally:
            if self.taker is not None:
                self.taker.taken_along(queue, asked, taken)
        retry: list[_Outcome] = []
        error: TqueuesError | None = None
        for outcome, result in zip(batch, results, strict=True):
            if isinstance(result, TRANSIENT):
                retry.append(outcome)
                error = result
                continue
            if isinstance(result, TqueuesError):
                _refused(outcome.what, result)
            outcome.settle()
        return retry, error

    async def _send_one(self, queue: str, outcome: _Outcome) -> None:
        fields = dict(outcome.body)
        job_id, lease, action = fields.pop("id"), fields.pop("lease"), fields.pop("action")
        method = getattr(self.client, action)
        ttr = outcome.give_up - asyncio.get_running_loop().time()
        try:
            await deliver(lambda: method(queue, job_id, lease=lease, **fields), outcome.what, ttr)
        finally:
            outcome.settle()


__all__ = ["LOST", "TRANSIENT", "Reporter", "Taker", "deliver", "shielded"]
