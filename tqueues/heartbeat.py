"""A worker's heartbeat: every few seconds it tells the dispatcher who it is and what it
runs (the registry behind ``GET /workers``), and hears what an operator asked of it.

The dispatcher answers each heartbeat with ``{"command", "interval", "cancel"}``; a
command ("quiet": take no more jobs; "stop": shut down gracefully) is passed on once;
``cancel`` lists the running jobs asked to stop (:func:`tqueues.lifecycle.cancel`),
passed on at every beat. While the worker runs jobs it beats every BUSY_INTERVAL seconds
(1), so that a job cancelled by anyone, through any dispatcher of the store, stops within
about a second: no per-job request or push, one beat a second per busy worker, which the
dispatcher answers by reading the jobs the beat lists (on RethinkDB one ``get_all`` per
queue). A dispatcher that does not know heartbeats (404: an older version) is not asked
again; one that cannot be reached is asked again at the next beat (the worker's takes
report the outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tqueues.client import Client
from tqueues.errors import NotFound, TqueuesError

log = logging.getLogger("tqueues.worker")

INTERVAL = 5.0  #: seconds between beats until the dispatcher says otherwise.
BUSY_INTERVAL = 1.0  #: seconds between beats while jobs run (how soon a cancel is heard).
LAST_BEAT_TIMEOUT = 2.0  #: seconds the last beat (saying "stopped") may take.


class Heartbeat:
    """Beats for one worker while :meth:`run` runs, every ``interval`` seconds or as often
    as the dispatcher asks if that is more often (it counts a worker lost after three of
    its intervals).

    ``describe()`` gives the heartbeat's body (host, pid, version, queues, concurrency,
    running, started_at, finished, failed, activity); ``obey(command)`` is called on the
    event loop, once per command, when the dispatcher passes one on; ``cancel(ids)`` with
    the ids of running jobs asked to stop, at each beat that lists some. While ``busy()``
    (jobs run), beats come every ``busy_interval`` seconds at most.
    """

    def __init__(
        self,
        client: Client,
        worker_id: str,
        describe: Callable[[], dict[str, Any]],
        obey: Callable[[str], None],
        *,
        interval: float = INTERVAL,
        cancel: Callable[[list[str]], None] | None = None,
        busy: Callable[[], bool] | None = None,
        busy_interval: float = BUSY_INTERVAL,
    ) -> None:
        self.client, self.worker_id = client, worker_id
        self.describe, self.obey = describe, obey
        self.cancel = cancel
        self.busy = busy
        self.busy_interval = busy_interval
        self.asked = interval  #: seconds between beats this worker asks for
        self.interval = interval  #: seconds between beats: asked, at most the dispatcher's
        self.known = True  #: False once the dispatcher turned out not to keep a registry.
        self._obeyed: set[str] = set()
        self._wake = asyncio.Event()

    async def beat(self) -> None:
        """Send one heartbeat now and pass on its command. Raises what the client raises
        (TqueuesError)."""
        answer = await self.client.heartbeat(self.worker_id, self.describe())
        interval = answer.get("interval")
        if isinstance(interval, int | float) and 0.1 <= interval <= 300:
            self.interval = min(self.asked, float(interval))
        cancel = answer.get("cancel")
        if self.cancel is not None and isinstance(cancel, list) and cancel:
            self.cancel([job_id for job_id in cancel if isinstance(job_id, str)])
        command = answer.get("command")
        if isinstance(command, str) and command not in self._obeyed:
            self._obeyed.add(command)
            log.info("the dispatcher asks this worker to %s", command,
                     extra={"action": "command", "command": command})  # fmt: skip
            self.obey(command)

    def soon(self) -> None:
        """Beat now rather than at the next interval (the worker's activity changed)."""
        self._wake.set()

    async def run(self) -> None:
        """Beat every ``interval`` seconds (every ``busy_interval`` while ``busy()``) until
        cancelled."""
        loop = asyncio.get_running_loop()
        while self.known:
            try:
                await self.beat()
            except NotFound as exc:
                self.known = False
                log.info("the dispatcher keeps no worker registry (%s): no heartbeats", exc)
                return
            except TqueuesError as exc:
                log.debug("heartbeat: %s", exc)
            self._wake.clear()
            # Ticks of busy_interval: a job that starts while idle is checked within one.
            last, tick = loop.time(), min(self.interval, self.busy_interval)
            while not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    # (asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancellation that arrives as the event is set: the beat never stops)
                    async with asyncio.timeout(tick):
                        await self._wake.wait()
                since = loop.time() - last
                if since >= self.interval - 0.001 or (self.busy is not None and self.busy()):
                    break

    async def last(self) -> None:
        """Say the worker stopped (it leaves the registry at once); best effort, within
        LAST_BEAT_TIMEOUT seconds."""
        if not self.known:
            return
        body = {**self.describe(), "activity": "stopped", "running": []}
        with contextlib.suppress(TqueuesError, TimeoutError):
            async with asyncio.timeout(LAST_BEAT_TIMEOUT):
                await self.client.heartbeat(self.worker_id, body)


__all__ = ["BUSY_INTERVAL", "INTERVAL", "Heartbeat"]
