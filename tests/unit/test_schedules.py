"""The pure rules of periodic jobs (tqueues.stores.schedules): cron ticks in a time zone,
fixed intervals, the catch-up plans, the ids of ticks' jobs, and bad schedules refused
naming the field."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from tqueues.errors import ValidationError
from tqueues.stores.schedules import MAX_CATCH_UP, ScheduleRecord, tick_id

JOB = {"method": "m:f"}


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_cron_ticks_are_read_in_the_time_zone_across_daylight_saving() -> None:
    schedule = ScheduleRecord.new("q", "s", JOB, now=at("2026-03-27 12:00"),
                                  cron="0 9 * * *", timezone="Europe/Madrid")  # fmt: skip
    ticks = list(itertools.islice(schedule.ticks_after(at("2026-03-27 12:00")), 3))
    # 09:00 in Madrid: 08:00 UTC before the change (Sunday 29 March), 07:00 UTC after
    assert ticks == [at("2026-03-28 08:00"), at("2026-03-29 07:00"), at("2026-03-30 07:00")]
    assert schedule.next_tick == ticks[0]


def test_intervals_tick_from_the_creation() -> None:
    schedule = ScheduleRecord.new("q", "s", JOB, now=100.5, every=10)
    assert schedule.next_tick == 110.5
    assert list(itertools.islice(schedule.ticks_after(125), 2)) == [130.5, 140.5]


def test_catch_up_of_all_is_bounded_per_pass() -> None:
    schedule = ScheduleRecord.new("q", "s", JOB, now=0, every=1, catch_up="all")
    ticks, upcoming = schedule.plan(5000.5)
    # The first MAX_CATCH_UP ticks now; the next pass continues at once (its tick is due)
    assert ticks == [float(k) for k in range(1, MAX_CATCH_UP + 1)]
    assert upcoming == MAX_CATCH_UP + 1
    latest = ScheduleRecord.new("q", "s", JOB, now=0, every=1)
    assert latest.plan(5000.5) == ([5000.0], 5001.0)


def test_tick_ids_sort_by_tick_and_differ_per_creation() -> None:
    ids = [tick_id("u1", 1_800_000_000 + k) for k in range(3)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids) and ids[0][12] == "7"  # laid out as a UUID version 7
    assert tick_id("u1", 1_800_000_000) == ids[0]
    assert tick_id("u2", 1_800_000_000) != ids[0]


@pytest.mark.parametrize(("fields", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "* * * * *", "every": 60}, "every"),
    ({}, "cron"),
    ({"every": 0.5}, "every"),
])  # fmt: skip
def test_bad_schedules_are_refused_naming_the_field(fields: dict, field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ScheduleRecord.new("q", "s", JOB, now=0, **fields)
    assert refused.value.details["field"] == field
    assert field in refused.value.message
