"""A worker's heartbeat: every few seconds it tells the dispatcher who it is and what it
runs (the registry behind ``GET /workers``), and hears what an operator asked of it.

The dispatcher answers each heartbeat with ``{"command", "interval"}``; a command
("quiet": take no more jobs; "stop": shut down gracefully) is passed on once. A dispatcher
that does not know heartbeats (404: an older version) is not asked again; one that cannot
be reached is asked again at the next beat (the worker's takes report the outage).
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
LAST_BEAT_TIMEOUT = 2.0  #: seconds the last beat (saying "stopped") may take.


class Heartbeat:
    """Beats for one worker while :meth:`run` runs, every ``interval`` seconds or as often
    as the dispatcher asks if that is more often (it counts a worker lost after three of
    its intervals).

    ``describe()`` gives the heartbeat's body (host, pid, version, queues, concurrency,
    running, started_at, finished, failed, activity); ``obey(command)`` is called on the
    event loop, once per command, when the dispatcher passes one on.
    """

    def __init__(
        self,
        client: Client,
        worker_id: str,
        describe: Callable[[], dict[str, Any]],
        obey: Callable[[str], None],
        *,
        interval: float = INTERVAL,
    ) -> None:
        self.client, self.worker_id = client, worker_id
        self.describe, self.obey = describe, obey
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
        """Beat every ``interval`` seconds until cancelled."""
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
            # (asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
            # that arrives as the event is set, and the beat would never stop)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()

    async def last(self) -> None:
        """Say the worker stopped (it leaves the registry at once); best effort, within
        LAST_BEAT_TIMEOUT seconds."""
        if not self.known:
            return
        body = {**self.describe(), "activity": "stopped", "running": []}
        with contextlib.suppress(TqueuesError, TimeoutError):
            async with asyncio.timeout(LAST_BEAT_TIMEOUT):
                await self.client.heartbeat(self.worker_id, body)


__all__ = ["INTERVAL", "Heartbeat"]
