"""Throughput history: per queue and per minute, how many jobs were put, taken, finished,
failed, ... kept in the store, so that it outlives a dispatcher and sums every dispatcher.

Each dispatcher process already counts the changes it makes (``Store.counters``; every
change of a job is made, and so counted, by exactly one process). Every
:data:`FLUSH_INTERVAL` seconds, at each minute boundary and when it stops, it adds what it
counted since its last flush to the store's buckets, one atomic addition per (queue,
minute, event): a bucket holds the sum over every dispatcher sharing the store, and a
restart loses at most the last few seconds of a process that was killed. A flush that
fails is kept and added to the next one (an outage delays counts, it does not drop them;
a write that failed half-way on RethinkDB may count part of it twice).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping

from tqueues.jobs import JSON

BUCKET = 60  #: seconds per bucket; a bucket is named by its start (epoch seconds).
FLUSH_INTERVAL = 5.0  #: seconds between flushes (and one at every minute boundary).
#: The changes counted: the events of :mod:`tqueues.lifecycle` that move a job through
#: the queue ("updated" and "touched" are progress of a running job, not throughput).
EVENTS = (
    "put",
    "taken",
    "finished",
    "failed",
    "buried",
    "released",
    "expired",
    "promoted",
    "kicked",
    "cancelled",
    "deleted",
)

#: (queue, bucket start, event) -> count.
Counts = dict[tuple[str, int, str], int]


def bucket_of(t: float) -> int:
    """The start of the bucket holding time ``t`` (epoch seconds)."""
    return int(t // BUCKET) * BUCKET


@dataclasses.dataclass(frozen=True, slots=True)
class Bucket:
    """One minute of a queue's history: events counted in ``[at, at + 60)``."""

    at: int  #: the minute's start, epoch seconds.
    counts: dict[str, int]  #: event -> count; events that did not happen are left out.

    def to_dict(self) -> dict[str, JSON]:
        """The bucket as JSON: ``{"at": ..., "counts": {...}}``."""
        return {"at": self.at, "counts": dict(self.counts)}


def buckets_of(rows: Iterable[tuple[int, str, int]]) -> list[Bucket]:
    """Buckets from ``(at, event, count)`` rows (any order), earliest first."""
    by_minute: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for at, event, count in rows:
        if count:
            by_minute[int(at)][str(event)] = int(count)
    return [Bucket(at, counts) for at, counts in sorted(by_minute.items())]


class Unflushed:
    """What one process counted and has not yet added to the store's history."""

    def __init__(self) -> None:
        self._seen: dict[str, collections.Counter[str]] = {}
        self._since: float | None = None
        self._counts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    def collect(self, counters: Mapping[str, Mapping[str, int]], now: float) -> None:
        """Take in what ``counters`` (the store's, per queue: monotonic) gained since the
        last call, as happened in the bucket of the middle of that interval (flushes run
        at each minute boundary, so an interval lies within one minute but for the
        scheduling delay)."""
        since = self._since if self._since is not None else now
        at = bucket_of((since + now) / 2)
        self._since = now
        for queue, counter in counters.items():
            seen = self._seen.setdefault(queue, collections.Counter())
            for event in EVENTS:
                gained = counter.get(event, 0) - seen[event]
                if gained > 0:
                    self._counts[(queue, at, event)] += gained
                    seen[event] += gained

    def drain(self) -> Counts:
        """Everything collected and not flushed; forgotten here (see :meth:`restore`)."""
        counts, self._counts = dict(self._counts), collections.Counter()
        return counts

    def restore(self, counts: Counts) -> None:
        """Keep ``counts`` (a flush of them failed) for the next flush."""
        self._counts.update(counts)


__all__ = [
    "BUCKET",
    "EVENTS",
    "FLUSH_INTERVAL",
    "Bucket",
    "Counts",
    "Unflushed",
    "bucket_of",
    "buckets_of",
]
