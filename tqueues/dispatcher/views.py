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
from tqueues.dispatcher import enqueuing
from tqueues.dispatcher import models as m
from tqueues.dispatcher.actions import MAX_ERROR, MAX_TRACEBACK
from tqueues.dispatcher.keys import store_key
from tqueues.dispatcher.operation import body_of, query_of
from tqueues.errors import QueueEmpty
from tqueues.ids import validate_job_id
from tqueues.jobs import JobRecord, QueueConfig
from tqueues.stores.base import Store


def job_response(job: JobRecord, *, with_lease: bool = False) -> web.Response:
    """A job as the JSON answer."""
    return web.json_response(job.to_dict(with_lease=with_lease), dumps=codec.dumps_str)


class Dispatcher(web.View, aiohttp_cors.CorsViewMixin):
    """Exposes the queues to producers and workers over HTTP (the documented ``/`` API)."""

    @property
    def store(self) -> Store:
        return self.request.app[store_key]

    async def put(self) -> web.Response:
        """Create the queue ``?queue=NAME`` unless it exists; always ``ok``.

        An optional body sets the new queue's settings (``ttr``, ``max_attempts``, ...).
        """
        query: m.LegacyQueueQuery = query_of(self.request)
        settings: m.QueueSettings = await body_of(self.request)
        await self.store.create_queue(settings.applied_to(QueueConfig(query.queue)))
        return web.Response(text="ok")

    async def post(self) -> web.Response:
        """Enqueue ``{"queue", "method", "args", "kwargs"}``; 200 with the stored job (with
        a ``key``: and ``duplicate``, as on the REST route, which see).

        400 when a field is missing or malformed, 501 when the queue does not exist. A
        body without ``queue`` takes the ``?queue=`` of the query.
        """
        query = self.request.query
        body: m.LegacyNewJob = await body_of(
            self.request, {"queue": query["queue"]} if "queue" in query else None
        )
        enqueued = await self.store.enqueue(body.to_job(body.queue))
        return web.json_response(enqueuing.answer(enqueued), dumps=codec.dumps_str)

    async def get(self) -> web.Response:
        """Take the next job of ``?queue=NAME`` (``&id=ID`` reads one job instead).

        ``wait=SECONDS`` holds the request until a job is ready or the time is up. 200 with
        the job and its ``lease`` token, 404 when none came, 501 when the queue is missing.
        """
        request = self.request
        query: m.LegacyTakeQuery = query_of(request)
        queue = query.queue
        if query.id is not None:
            return job_response(await self.store.get(queue, validate_job_id(query.id)))
        job = await self.store.take(queue, worker=query.worker or None, wait=query.wait)
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
        query: m.LegacyJobQuery = query_of(self.request)
        job_id = validate_job_id(query.id)
        fields: dict[str, Any] = await body_of(self.request)
        job = await self.store.update(query.queue, job_id, fields, lease=query.lease)
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
        query: m.LegacyJobQuery = query_of(self.request)
        job_id = validate_job_id(query.id)
        body = await body_of(self.request)
        return job_response(await self._end(query.queue, job_id, query.lease, body))

    async def _end(self, queue: str, job_id: str, lease: str | None, body: Any) -> JobRecord:
        store = self.store
        if isinstance(body, m.Fail):
            traceback = body.traceback[:MAX_TRACEBACK] if body.traceback else None
            return await store.fail(queue, job_id, lease=lease, error=body.error[:MAX_ERROR],
                                    traceback=traceback, permanent=body.permanent)  # fmt: skip
        if isinstance(body, m.LegacyRelease):
            return await store.release(queue, job_id, lease=lease, delay=body.delay)
        if isinstance(body, m.LegacyBury):
            return await store.bury(queue, job_id, lease=lease, reason=body.reason)
        return await store.finish(queue, job_id, lease=lease, result=body.result)
