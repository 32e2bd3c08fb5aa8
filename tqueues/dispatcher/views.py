"""The documented TQueues API on ``/``: one class-based view, one method per verb.

=========  ===============================  ==========================================
verb       query                            what it does
=========  ===============================  ==========================================
PUT        ``queue``                        create the queue (idempotent); ``ok``
POST       (body)                           enqueue a job; the stored job
GET        ``queue`` [``wait``, ``worker``]  take the next job (with its lease); 404 none
GET        ``queue``, ``id``                read one job
PATCH      ``queue``, ``id`` [``lease``]      merge fields into the job; touch the lease
DELETE     ``queue``, ``id`` [``lease``]      finish, fail or give back the job
=========  ===============================  ==========================================

A missing queue answers 501, as the original documentation says; see docs/http-api.rst.
"""

from __future__ import annotations

from typing import Any

import aiohttp_cors
from aiohttp import web

from tqueues import codec
from tqueues.dispatcher.keys import settings_key, store_key
from tqueues.dispatcher.requests import query_float, query_id, query_queue, read_object
from tqueues.errors import QueueEmpty, ValidationError
from tqueues.jobs import MAX_TTR, Job, NewJob, QueueConfig
from tqueues.stores.base import Store

ENQUEUE_JSON_FIELDS = ("args", "kwargs", "priority", "ttr", "max_attempts", "delay")


def job_response(job: Job, *, with_lease: bool = False) -> web.Response:
    """A job as the JSON answer."""
    return web.json_response(job.to_dict(with_lease=with_lease), dumps=codec.dumps_str)


class Dispatcher(web.View, aiohttp_cors.CorsViewMixin):
    """Exposes the queues to producers and workers over HTTP (the documented ``/`` API)."""

    @property
    def store(self) -> Store:
        return self.request.app[store_key]

    async def put(self) -> web.Response:
        """Create the queue ``?queue=NAME`` unless it exists; always ``ok``.

        An optional JSON body sets the queue's defaults for new queues: ``ttr`` (seconds)
        and ``max_attempts``.
        """
        config = QueueConfig.from_request(
            query_queue(self.request), await read_object(self.request)
        )
        await self.store.create_queue(config)
        return web.Response(text="ok")

    async def post(self) -> web.Response:
        """Enqueue ``{"queue", "method", "args", "kwargs"}``; 200 with the stored job.

        400 when a field is missing or malformed, 501 when the queue does not exist.
        """
        fields = await read_object(self.request, form_json=ENQUEUE_JSON_FIELDS)
        if "queue" not in fields and "queue" in self.request.query:
            fields["queue"] = self.request.query["queue"]
        job = await self.store.put(NewJob.from_request(fields))
        return job_response(job)

    async def get(self) -> web.Response:
        """Take the next job of ``?queue=NAME`` (``&id=ID`` reads one job instead).

        ``wait=SECONDS`` holds the request until a job is ready or the time is up. 200 with
        the job and its ``lease`` token, 404 when none came, 501 when the queue is missing.
        """
        request = self.request
        queue = query_queue(request)
        if "id" in request.query:
            return job_response(await self.store.get(queue, query_id(request)))
        wait = query_float(request, "wait", 0.0, high=request.app[settings_key].max_wait)
        worker = request.query.get("worker")
        if worker is not None and len(worker) > 200:
            raise ValidationError("'worker' is too long", field="worker")
        job = await self.store.take(queue, worker=worker, wait=wait)
        if job is None:
            raise QueueEmpty(f"no job is pending in queue {queue!r}", queue=queue)
        transport = request.transport
        if transport is None or transport.is_closing():
            # The waiting client went away: give the job back at once rather than after its ttr.
            self.store.give_back([job])
            raise web.HTTPServiceUnavailable(text="the client disconnected")
        return job_response(job, with_lease=True)

    async def patch(self) -> web.Response:
        """Merge the body's fields into job ``?queue=Q&id=ID``; with ``&lease=``, touch it too.

        404 for an unknown job, 409 when the lease is no longer the caller's or the job is
        final, 400 for fields the dispatcher owns.
        """
        request = self.request
        queue, job_id = query_queue(request), query_id(request)
        fields = await read_object(request)
        job = await self.store.update(queue, job_id, fields, lease=request.query.get("lease"))
        return job_response(job)

    async def delete(self) -> web.Response:
        """End the run of job ``?queue=Q&id=ID``: finish it, fail it or give it back.

        The optional JSON body is one of ``{"result": ...}`` (finished; also an empty body),
        ``{"error": "...", "traceback": "...", "permanent": false}`` (a failed run: retried
        while attempts remain, then buried; failed at once if permanent),
        ``{"release": true, "delay": SECONDS}`` (given back untried) or
        ``{"bury": true, "reason": "..."}`` (set aside until kicked). With ``&lease=``, 409
        when the lease is no longer the caller's; without it (the original clients) the job
        is ended whoever holds it. 404 for an unknown job.
        """
        request = self.request
        queue, job_id = query_queue(request), query_id(request)
        lease = request.query.get("lease")
        body = await read_object(request)
        return job_response(await self._end(queue, job_id, lease, body))

    async def _end(self, queue: str, job_id: str, lease: str | None, body: dict[str, Any]) -> Job:
        keys = set(body)
        if keys <= {"result"}:
            return await self.store.finish(queue, job_id, lease=lease, result=body.get("result"))
        if "error" in keys and keys <= {"error", "traceback", "permanent"}:
            error, traceback = body["error"], body.get("traceback")
            if not isinstance(error, str) or not isinstance(traceback, str | None):
                raise ValidationError("'error' and 'traceback' must be strings", field="error")
            permanent = body.get("permanent", False)
            if not isinstance(permanent, bool):
                raise ValidationError("'permanent' must be true or false", field="permanent")
            return await self.store.fail(
                queue, job_id, lease=lease, error=error[:10_000],
                traceback=traceback[:100_000] if traceback else None, permanent=permanent,
            )  # fmt: skip
        if body.get("release") is True and keys <= {"release", "delay"}:
            delay = body.get("delay", 0)
            if (
                isinstance(delay, bool)
                or not isinstance(delay, int | float)
                or not (0 <= delay <= MAX_TTR)
            ):
                raise ValidationError("'delay' must be a number of seconds", field="delay")
            return await self.store.release(queue, job_id, lease=lease, delay=float(delay))
        if body.get("bury") is True and keys <= {"bury", "reason"}:
            reason = body.get("reason")
            if not isinstance(reason, str | None):
                raise ValidationError("'reason' must be a string", field="reason")
            return await self.store.bury(queue, job_id, lease=lease, reason=reason)
        raise ValidationError(
            'the body must be {"result": ...}, {"error": ..., "traceback": ...}, '
            '{"release": true, "delay": ...} or {"bury": true, "reason": ...}',
            fields=sorted(keys),
        )
