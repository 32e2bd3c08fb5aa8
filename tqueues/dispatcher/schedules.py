"""The views of periodic jobs (see :mod:`tqueues.stores.schedules`): a queue's schedules
created, listed, read, paused, resumed, run by hand and deleted."""

from __future__ import annotations

import re

from aiohttp import web

from tqueues import clock
from tqueues.dispatcher import models as m
from tqueues.dispatcher.operation import body_of
from tqueues.dispatcher.rest import RestView, json_response
from tqueues.errors import ValidationError
from tqueues.stores.schedules import ScheduleRecord

SCHEDULE_NAME = re.compile(m.SCHEDULE_NAME_SCHEMA["pattern"])


class Schedules(RestView):
    """``/queues/{name}/schedules``."""

    async def get(self) -> web.Response:
        """The queue's schedules: ``{"schedules": [Schedule, ...]}`` by name."""
        queue = self.queue
        await self.store.get_queue(queue)
        schedules = await self.store.list_schedules(queue)
        return json_response({"schedules": [schedule.to_dict() for schedule in schedules]})

    async def post(self) -> web.Response:
        """Create a schedule (NewSchedule); 201 with it. 400 naming the field for a bad
        cron expression or time zone, or both (or neither) of ``cron`` and ``every``;
        409 ``schedule_exists``."""
        body: m.NewSchedule = await body_of(self.request)
        queue = self.queue
        if body.job.queue is not None and body.job.queue != queue:
            raise ValidationError(f"'job.queue' must be the path's queue {queue!r} or absent",
                                  field="queue")  # fmt: skip
        job = body.job.model_dump(exclude={"queue"}, exclude_none=True)
        schedule = ScheduleRecord.new(
            queue, body.name, job, now=clock.now(), cron=body.cron, timezone=body.timezone,
            every=body.every, catch_up=body.catch_up, paused=body.paused,
        )  # fmt: skip
        await self.store.add_schedule(schedule)
        return json_response(schedule.to_dict(), status=201)


class ScheduleView(RestView):
    """A view of one schedule, named in the path."""

    @property
    def schedule_name(self) -> str:
        """The schedule named in the path (400 naming ``schedule`` if no schedule can
        have that name)."""
        name = self.request.match_info["schedule"]
        if not SCHEDULE_NAME.match(name):
            raise ValidationError("'schedule' must be a schedule name: 1 to 62 letters, "
                                  "digits, '_' or '-'", field="schedule")  # fmt: skip
        return name


class Schedule(ScheduleView):
    """``/queues/{name}/schedules/{schedule}``."""

    async def get(self) -> web.Response:
        """The schedule (Schedule); 404 ``schedule_not_found``."""
        return json_response(
            (await self.store.get_schedule(self.queue, self.schedule_name)).to_dict()
        )

    async def delete(self) -> web.Response:
        """Delete the schedule (the jobs it made stay); the schedule as it was."""
        queue, name = self.queue, self.schedule_name
        schedule = await self.store.get_schedule(queue, name)
        await self.store.remove_schedule(queue, name)
        return json_response(schedule.to_dict())


class SchedulePause(ScheduleView):
    """``/queues/{name}/schedules/{schedule}/pause``: no tick fires until resumed."""

    paused = True

    async def post(self) -> web.Response:
        """Pause (or resume) the schedule; the schedule as stored."""
        schedule = await self.store.pause_schedule(
            self.queue, self.schedule_name, paused=self.paused, now=clock.now()
        )
        return json_response(schedule.to_dict())


class ScheduleResume(SchedulePause):
    """``/queues/{name}/schedules/{schedule}/resume``: the next tick is the first after
    now (the ticks of the pause are not caught up)."""

    paused = False


class ScheduleRun(ScheduleView):
    """``/queues/{name}/schedules/{schedule}/run``: its job now, outside its ticks."""

    async def post(self) -> web.Response:
        """Make the schedule's job now (an id of its own; the ticks are left as they
        are); 201 with the job."""
        job = await self.store.run_schedule(self.queue, self.schedule_name)
        return json_response(job.to_dict(), status=201)


__all__ = ["Schedule", "SchedulePause", "ScheduleResume", "ScheduleRun", "Schedules"]
