"""A :class:`~tqueues.worker.Worker`'s shutdown: stop taking, let running jobs finish,
give back the rest.

:class:`Shutdown` is the stop signal: :meth:`Shutdown.stop` (safe from a signal handler)
ends every wait the worker made through :meth:`Shutdown.until_stopped` (a long-poll
take, a wait for a free slot) at once, and :meth:`Shutdown.drain` gives running jobs
their grace period, then cancels them (each gives its job back). :func:`give_back`
releases jobs taken and never started, so that they need not wait for their leases.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

from tqueues.client import Client
from tqueues.errors import TqueuesError

log = logging.getLogger("tqueues.worker")


class Shutdown:
    """Whether the worker is stopping, and the waits a stop cuts short."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()
        self._quiet = asyncio.Event()
        self._interruptible: set[asyncio.Future[Any]] = set()  #: what stop() cancels

    def stop(self) -> None:
        """Stop taking jobs (running ones carry on) and shut down; safe to call from a
        signal handler."""
        self._stopping.set()
        self._quiet.set()
        self._interrupt()

    def quiet(self) -> None:
        """Stop taking jobs (running ones carry on) without shutting down: the worker stays
        until :meth:`stop` (an operator's "quiet", as Sidekiq's)."""
        self._quiet.set()
        self._interrupt()

    def _interrupt(self) -> None:
        for waiting in list(self._interruptible):
            waiting.cancel()

    @property
    def stopping(self) -> bool:
        """Whether the worker takes no more jobs (:meth:`stop` or :meth:`quiet` was
        called)."""
        return self._quiet.is_set()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (not only :meth:`quiet`)."""
        return self._stopping.is_set()

    async def until_shut_down(self) -> None:
        """Return once :meth:`stop` is called."""
        await self._stopping.wait()

    async def until_stopped(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` unless the worker stops first (:meth:`stop` cancels it: then
        None). Awaited directly, so whatever ends it resumes the caller at once. The
        caller's own cancellation is raised as usual."""
        if self.stopping:
            if inspect.iscoroutine(coro):
                coro.close()
            return None
        task = asyncio.ensure_future(coro)
        self._interruptible.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if self.stopping and task.cancelled() and not (caller and caller.cancelling()):
                return None  # stop() cancelled it, not our caller's cancellation
            raise
        finally:
            self._interruptible.discard(task)

    async def drain(
        self,
        running: set[asyncio.Task[None]],
        in_method: set[asyncio.Task[None]],
        grace: float,
        counts: collections.Counter[str],
    ) -> None:
        """Wait up to ``grace`` seconds for the ``running`` jobs (running their method or
        delivering their outcome), then cancel those left and wait for them to end. Those
        cancelled while still ``in_method`` give their jobs back: counted in ``counts``
        as ``given_back``."""
        if not running:
            return
        log.info(
            "waiting up to %gs for %d running job(s)",
            grace,
            len(running),
            extra={"action": "draining"},
        )
        _, pending = await asyncio.wait(running, timeout=grace)
        given_back = len(pending & in_method)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            counts["given_back"] += given_back


async def give_back(client: Client, docs: Iterable[dict[str, Any]]) -> None:
    """Release taken jobs that never started (one outcome report per queue), so that they
    are pending again at once; a refusal or an unreachable dispatcher is ignored (their
    leases then expire and they run again: at least once, never lost)."""
    by_queue: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        release = {"id": doc["id"], "lease": doc.get("lease"), "action": "release"}
        by_queue.setdefault(doc["queue"], []).append(release)
    for queue, releases in by_queue.items():
        with contextlib.suppress(TqueuesError):  # else their leases expire: they run again
            await client.report(queue, releases)


__all__ = ["Shutdown", "give_back"]
