"""The worker registry: which workers are alive, what each runs, and what operators ask of
them (quiet: take no more jobs; stop: shut down gracefully).

A worker sends a heartbeat every :data:`HEARTBEAT` seconds; the dispatcher stores it
(every dispatcher of a RethinkDB database sees every worker) with the time it was seen,
by the dispatcher's clock, and answers with the command an operator left for it, if any.
A worker not seen for :data:`LOST_AFTER` seconds is shown as lost; after
:data:`DROP_AFTER` seconds it is dropped. A worker that stops cleanly says so in its last
heartbeat and is dropped at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from tqueues.jobs import JSON

HEARTBEAT = 5.0  #: seconds between a worker's heartbeats.
LOST_AFTER = 3 * HEARTBEAT  #: seconds without a heartbeat after which a worker is lost.
DROP_AFTER = 300.0  #: seconds without a heartbeat after which a worker is dropped.

#: What an operator may ask of a worker.
Command = Literal["quiet", "stop"]
COMMANDS: tuple[Command, ...] = ("quiet", "stop")


def command_of(value: object) -> Command | None:
    """``value`` if it is a command, else None (what a store read back)."""
    return "quiet" if value == "quiet" else "stop" if value == "stop" else None


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One worker as its last heartbeat described it."""

    id: str  #: the worker's name (its takes carry it): by default ``host:pid``.
    host: str
    pid: int
    version: str  #: the worker's tqueues version.
    queues: list[str]
    concurrency: int
    #: the jobs it runs now: ``{"queue", "id", "started_at"}`` each.
    running: list[dict[str, JSON]]
    started_at: float  #: when the worker process started (its clock).
    last_seen: float  #: when its last heartbeat arrived (the dispatcher's clock).
    finished: int  #: jobs it finished since it started.
    failed: int  #: runs that failed (retried or not) since it started.
    #: what the worker says it does: "running" (taking jobs), "quiet" (taking none),
    #: "stopping" (shutting down).
    activity: str = "running"
    command: Command | None = None  #: what an operator asked of it, until it stops.

    def state(self, now: float) -> str:
        """ "lost" if not seen for LOST_AFTER seconds, else its activity ("running",
        "quiet" or "stopping")."""
        return "lost" if now - self.last_seen > LOST_AFTER else self.activity

    def to_dict(self, now: float) -> dict[str, JSON]:
        """The worker as JSON, with its ``state`` and ``seen_ago`` (seconds) as of ``now``."""
        doc: dict[str, Any] = dataclasses.asdict(self)
        doc["state"] = self.state(now)
        doc["seen_ago"] = round(max(0.0, now - self.last_seen), 3)
        return doc

    def fields(self) -> dict[str, JSON]:
        """What a heartbeat sets (everything but ``command``, which operators set)."""
        doc: dict[str, Any] = dataclasses.asdict(self)
        del doc["command"]
        return doc

    @classmethod
    def from_fields(cls, doc: dict[str, Any]) -> WorkerRecord:
        """The record of stored fields; fields it does not know are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        fields = {name: value for name, value in doc.items() if name in known}
        fields["command"] = command_of(fields.get("command"))
        return cls(**fields)


__all__ = [
    "COMMANDS",
    "DROP_AFTER",
    "HEARTBEAT",
    "LOST_AFTER",
    "Command",
    "WorkerRecord",
    "command_of",
]
