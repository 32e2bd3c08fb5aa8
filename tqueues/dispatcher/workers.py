"""The worker registry's views: heartbeats in, the list of workers and operators'
commands (quiet, stop) out (see :mod:`tqueues.stores.workers`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tqueues import clock
from tqueues.dispatcher import models as m
from tqueues.dispatcher.operation import body_of, query_of
from tqueues.dispatcher.rest import RestView, json_response
from tqueues.errors import ValidationError
from tqueues.ids import problem
from tqueues.stores.workers import DROP_AFTER, HEARTBEAT, Command, WorkerRecord


class WorkerView(RestView):
    """A view of one worker, named in the path."""

    @property
    def worker_id(self) -> str:
        """The worker named in the path: at most 127 bytes of UTF-8, no NUL (400 naming
        ``worker`` otherwise)."""
        worker_id = self.request.match_info["worker"]
        wrong = problem(worker_id)
        if wrong is not None:
            raise ValidationError(f"'worker' {wrong.replace('job id', 'worker name')}",
                                  field="worker")  # fmt: skip
        return worker_id


class Workers(RestView):
    """``/workers``."""

    async def get(self) -> web.Response:
        """Every worker seen in the last DROP_AFTER seconds (of ``queue`` only, if given),
        with its ``state``: running, quiet, stopping or lost (no heartbeat for LOST_AFTER
        seconds): ``{"workers": [Worker, ...]}`` by id."""
        query: m.WorkersQuery = query_of(self.request)
        now = clock.now()
        workers = [
            worker
            for worker in await self.store.list_workers()
            if now - worker.last_seen <= DROP_AFTER
            and (query.queue is None or query.queue in worker.queues)
        ]
        return json_response({"workers": [worker.to_dict(now) for worker in workers]})


class WorkerHeartbeat(WorkerView):
    """``/workers/{worker}/heartbeat``."""

    async def post(self) -> web.Response:
        """Store the worker's heartbeat (a last one saying "stopped" drops it); answer
        ``{"command": null | "quiet" | "stop", "interval": seconds, "cancel": [job id,
        ...]}``: ``cancel`` lists the running jobs of the beat asked to stop (each read by
        its primary key: nothing more per beat than its running jobs)."""
        beat: m.Heartbeat = await body_of(self.request)
        worker_id = self.worker_id
        if beat.activity == "stopped":
            await self.store.forget_workers(id=worker_id)
            return json_response({"command": None, "interval": HEARTBEAT, "cancel": []})
        record = WorkerRecord(
            id=worker_id,
            host=beat.host,
            pid=beat.pid,
            version=beat.version,
            queues=list(beat.queues),
            concurrency=beat.concurrency,
            running=[job.model_dump() for job in beat.running],
            started_at=beat.started_at,
            last_seen=clock.now(),
            finished=beat.finished,
            failed=beat.failed,
            activity=beat.activity,
        )
        stored, cancel = await asyncio.gather(
            self.store.save_worker(record),
            self.store.cancel_requests([(job.queue, job.id) for job in beat.running]),
        )
        return json_response({"command": stored.command, "interval": HEARTBEAT, "cancel": cancel})


class WorkerCommandView(WorkerView):
    """``/workers/{worker}/quiet`` and ``/stop``: leave an operator's command."""

    command: Command

    async def post(self) -> web.Response:
        """Leave the command for the worker's next heartbeat; the worker (Worker)."""
        worker = await self.store.command_worker(self.worker_id, self.command)
        return json_response(worker.to_dict(clock.now()))


class WorkerQuiet(WorkerCommandView):
    """``/workers/{worker}/quiet``: take no more jobs (those running finish)."""

    command = "quiet"


class WorkerStop(WorkerCommandView):
    """``/workers/{worker}/stop``: shut down gracefully, as on SIGTERM."""

    command = "stop"


__all__ = ["WorkerHeartbeat", "WorkerQuiet", "WorkerStop", "Workers"]
