"""Periodic jobs: schedules stored beside the queues, fired by every dispatcher.

A schedule belongs to a queue and has a name unique in it. It holds a job template (what
``POST /queues/{name}/jobs`` takes, but ``queue``), and either a cron expression read in
an IANA time zone (cronsim: five fields, minutes to days of the week; daylight
saving as cron does it) or a fixed interval ``every`` seconds (ticks at
``created_at + k * every``). It stores its ``next_tick``, the time (epoch seconds) of the
next job it owes.

Firing needs no leader. Whoever fires (any dispatcher, any number at once) computes from
the same stored schedule the same ticks (:meth:`ScheduleRecord.plan`), inserts each
tick's job under an id derived from the schedule and the tick (:func:`tick_id`), and
then moves ``next_tick`` on with a compare-and-set on the schedule's ``rev``. A second
insert of a tick's job is refused by the store's primary key, so each tick makes exactly
one job however many dispatchers fire it; a dispatcher that stops between the insert and
the compare-and-set leaves the tick to the next one, whose insert is refused and whose
compare-and-set moves on.

Ticks missed while no dispatcher ran (``next_tick`` in the past when a dispatcher looks)
follow the schedule's ``catch_up``:

``latest`` (the default)
    one job for the latest tick due, the earlier ones skipped (Celery beat's way);
``all``
    one job for every tick due, oldest first, at most :data:`MAX_CATCH_UP` per pass;
``skip``
    none, unless the latest tick due is at most :data:`MISSED_AFTER` seconds old (a
    dispatcher a little late is not a missed tick): the schedule waits for its next tick.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from tqueues.errors import ValidationError
from tqueues.jobs import JSON, JobRecord, NewJob, new_random_id
from tqueues.limits import MAX_EVERY, MIN_EVERY

CatchUp = Literal["latest", "all", "skip"]
CATCH_UPS: tuple[CatchUp, ...] = ("latest", "all", "skip")
MAX_CATCH_UP = 1000  #: the most missed ticks one pass of an ``all`` schedule fires.
MISSED_AFTER = 60.0  #: seconds after which a tick not yet fired counts as missed.
#: The fields of a job template: NewJob's but ``queue``.
TEMPLATE_FIELDS = tuple(field.name for field in dataclasses.fields(NewJob) if field.name != "queue")


def check_cron(expression: str) -> str:
    """``expression`` if cronsim reads it; else ValidationError naming ``cron``."""
    try:
        CronSim(expression, datetime.now(UTC))
    except (CronSimError, ValueError, KeyError, IndexError) as exc:
        raise ValidationError(
            f"'cron' is not a cron expression (five fields: minute hour day month "
            f"weekday): {exc or 'unreadable'}",
            field="cron",
        ) from None
    return expression


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone; else ValidationError naming ``timezone``."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"'timezone' {name!r} is not an IANA time zone name (such as 'Europe/Madrid' or 'UTC')",
            field="timezone",
        ) from None
    return name


def tick_id(uid: str, tick: float) -> str:
    """The id of the job a tick makes: 32 hex digits, laid out as a UUID version 7 (the
    tick's milliseconds first, so ids sort by tick beside the stores' own time-ordered
    ids), then a digest of the schedule's ``uid`` (new at each creation) and the tick."""
    millis = max(0, round(tick * 1000)) & 0xFFFF_FFFF_FFFF
    digest = hashlib.sha256(f"{uid}:{millis}".encode()).hexdigest()
    return f"{millis:012x}7{digest[:3]}{digest[3:19]}"


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule."""

    queue: str
    name: str  #: unique in its queue.
    job: dict[str, JSON]  #: the job template: NewJob's fields but ``queue``.
    cron: str | None  #: a cron expression, or None for a fixed interval.
    timezone: str  #: the IANA time zone the cron expression is read in.
    every: float | None  #: seconds between ticks, or None for a cron expression.
    catch_up: CatchUp
    paused: bool
    next_tick: float  #: epoch seconds of the next tick owed.
    created_at: float
    uid: str  #: new at each creation: the tick ids of a re-created schedule differ.
    last_tick: float | None = None  #: the latest tick fired.
    rev: int = 0  #: bumped by every write; writes compare-and-set on it.

    @classmethod
    def new(
        cls,
        queue: str,
        name: str,
        job: dict[str, JSON],
        *,
        now: float,
        cron: str | None = None,
        timezone: str = "UTC",
        every: float | None = None,
        catch_up: CatchUp = "latest",
        paused: bool = False,
    ) -> ScheduleRecord:
        """A new schedule created at ``now``, its first tick the first after ``now``.
        Raises ValidationError: a bad ``cron`` or ``timezone``, neither or both of
        ``cron`` and ``every`` (naming the field)."""
        if (cron is None) == (every is None):
            raise ValidationError("give either 'cron' or 'every' (not both, not neither)",
                                  field="every" if every is not None else "cron")  # fmt: skip
        check_timezone(timezone)
        if cron is not None:
            check_cron(cron)
        if every is not None and not MIN_EVERY <= every <= MAX_EVERY:
            raise ValidationError(f"'every' must be from {MIN_EVERY:g} to {MAX_EVERY:g} "
                                  "seconds", field="every")  # fmt: skip
        unknown = sorted(set(job) - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValidationError(f"unknown job field(s): {', '.join(unknown)}", field=unknown[0])
        draft = cls(queue, name, dict(job), cron, timezone, every, catch_up, paused,
                    next_tick=now, created_at=now, uid=new_random_id())  # fmt: skip
        return dataclasses.replace(draft, next_tick=next(draft.ticks_after(now)))

    @property
    def key(self) -> str:
        """The schedule's key in a store: ``queue/name``."""
        return f"{self.queue}/{self.name}"

    def ticks_after(self, after: float) -> Iterator[float]:
        """The schedule's ticks strictly after ``after`` (epoch seconds), in order."""
        if self.every is not None:
            k = math.floor((after - self.created_at) / self.every) + 1
            while True:
                tick = self.created_at + k * self.every
                if tick > after:
                    yield tick
                k += 1
            return
        assert self.cron is not None
        start = datetime.fromtimestamp(after, ZoneInfo(self.timezone))
        for moment in CronSim(self.cron, start):
            yield moment.timestamp()

    def plan(self, now: float) -> tuple[list[float], float]:
        """What firing the schedule at ``now`` does: the ticks to make jobs for (as its
        ``catch_up`` says; none if none is due) and the ``next_tick`` to store after."""
        if self.next_tick > now:
            return [], self.next_tick
        if self.catch_up == "all":
            due = [self.next_tick]
            for tick in itertools.islice(self.ticks_after(self.next_tick), MAX_CATCH_UP):
                if tick > now or len(due) == MAX_CATCH_UP:
                    return due, tick
                due.append(tick)
        latest = self._latest_due(now)
        upcoming = next(self.ticks_after(now))
        if self.catch_up == "skip" and now - latest > MISSED_AFTER:
            return [], upcoming
        return [latest], upcoming

    def _latest_due(self, now: float) -> float:
        """The latest tick at or before ``now`` (``next_tick`` is one)."""
        if self.every is not None:
            k = math.floor((now - self.created_at) / self.every)
            return max(self.next_tick, self.created_at + k * self.every)
        latest = self.next_tick
        for tick in self.ticks_after(self.next_tick):
            if tick > now:
                break
            latest = tick
        return latest

    def template(self) -> NewJob:
        """The job each tick makes (its id is :func:`tick_id`)."""
        return NewJob(self.queue, **self.job)

    def to_dict(self) -> dict[str, JSON]:
        """The schedule as JSON."""
        doc: dict[str, Any] = dataclasses.asdict(self)
        del doc["uid"], doc["rev"]
        return doc

    def fields(self) -> dict[str, JSON]:
        """Every field, to store."""
        return dataclasses.asdict(self)

    @classmethod
    def from_fields(cls, doc: dict[str, Any]) -> ScheduleRecord:
        """The record of stored fields; fields it does not know are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        fields = {name: value for name, value in doc.items() if name in known}
        for name in ("every", "next_tick", "created_at", "last_tick"):
            if fields.get(name) is not None:  # RethinkDB gives integral numbers as int
                fields[name] = float(fields[name])
        return cls(**fields)


def mark(job: JobRecord, schedule: ScheduleRecord, tick: float | None) -> JobRecord:
    """``job`` marked with the schedule that made it and its tick (None: run by hand):
    the job's ``schedule`` and ``tick`` fields."""
    return dataclasses.replace(job, extra={"schedule": schedule.name, "tick": tick})


__all__ = [
    "CATCH_UPS",
    "MAX_CATCH_UP",
    "MAX_EVERY",
    "MIN_EVERY",
    "MISSED_AFTER",
    "TEMPLATE_FIELDS",
    "CatchUp",
    "ScheduleRecord",
    "check_cron",
    "check_timezone",
    "mark",
    "tick_id",
]
