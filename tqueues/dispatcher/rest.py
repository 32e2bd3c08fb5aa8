"""The resource-style REST API: queues and their jobs as resources, one view per resource.

=======================================  ================================================
route                                    what it does
=======================================  ================================================
``GET /queues``                          every queue with its settings
``PUT /queues/{name}``                   create (201) or confirm (200) a queue
``GET|PATCH|DELETE /queues/{name}``      settings and stats; change settings; drop
``POST /queues/{name}/truncate``         remove every job; how many went
``GET /queues/{name}/stats``             jobs per status and event counters
``POST /queues/{name}/pause``            pause it (``{"for": seconds}``, or until resumed)
``POST /queues/{name}/resume``           end its pause
``POST /queues/{name}/kick``             kick up to ``bound`` buried (else delayed) jobs,
                                         or of a ``status`` (failed too)
``POST|GET /queues/{name}/jobs``         enqueue one job or a batch; list jobs by status
``GET /queues/{name}/jobs/next``         peek the next job of a status
``POST /queues/{name}/take``             take up to ``count`` jobs with their leases
``POST /take?queue=a&queue=b``           the same from the first of several queues
``GET|PATCH|DELETE .../jobs/{id}``       read, update (touch with ``?lease=``), delete
``POST .../jobs/{id}/{action}``          finish, fail, release, requeue, touch, bury, kick
``POST /queues/{name}/outcomes``         finish, fail, release, ... many jobs at once
=======================================  ================================================

The views of the routes a worker lives on (takes and outcome reports) are in
:mod:`tqueues.dispatcher.taking`; the others are here.

A missing queue answers 404 ``queue_not_found`` here (the documented ``/`` API keeps its
501). Errors are :class:`~tqueues.errors.TqueuesError` subclasses turned into JSON by the
error middleware; the OpenAPI document (:mod:`tqueues.dispatcher.openapi`) describes
every route.
"""

from __future__ import annotations

from typing import Any

import aiohttp_cors
from aiohttp import web

from tqueues import clock, codec
from tqueues.dispatcher import enqueuing
from tqueues.dispatcher import models as m
from tqueues.dispatcher.actions import ACTION_FUNCTIONS, OUTCOME_ACTIONS
from tqueues.dispatcher.keys import settings_key, store_key
from tqueues.dispatcher.models import (
    MAX_BATCH,
    MAX_ID,
    MAX_KICK,
    MAX_OUTCOMES,
    MAX_PAGE,
    MAX_TAKE,
    MAX_TAKE_QUEUES,
)
from tqueues.dispatcher.operation import body_of, query_of
from tqueues.errors import (
    JobNotFound,
    QueueMissing,
    QueueNotFound,
    ValidationError,
)
from tqueues.ids import validate_job_id
from tqueues.jobs import (
    JobRecord,
    JobStatus,
    QueueConfig,
    validate_queue_name,
)
from tqueues.settings import DispatcherSettings
from tqueues.stores.base import Store
from tqueues.stores.history import BUCKET, bucket_of

#: bytes of jobs past which a listing page ends early (its cursor continues after it).
MAX_PAGE_BYTES = 4 * 1024 * 1024
#: seconds of history one read may span (31 days: 44,640 minutes).
MAX_HISTORY_SPAN = 31 * 86_400


def json_response(body: Any, *, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(body, status=status, dumps=codec.dumps_str)


class RestView(web.View, aiohttp_cors.CorsViewMixin):
    """The base of every REST view: the store, the names in the path, 404 for a missing queue."""

    @property
    def store(self) -> Store:
        return self.request.app[store_key]

    @property
    def settings(self) -> DispatcherSettings:
        return self.request.app[settings_key]

    @property
    def queue(self) -> str:
        """The queue named in the path, validated (400 naming ``queue`` otherwise)."""
        return validate_queue_name(self.request.match_info["name"])

    @property
    def job_id(self) -> str:
        """The job id named in the path, an id a job could have (400 naming ``id`` otherwise)."""
        return validate_job_id(self.request.match_info["id"])

    @property
    def lease(self) -> str | None:
        """The ``lease`` query parameter, if any (its operation's query model checks it).

        An empty ``?lease=`` is a lease that matches nothing (409), as on /: read as "no
        lease", it would act on a job whoever holds it."""
        query: m.LeaseQuery = query_of(self.request)
        return query.lease

    def hand_over(self, jobs: list[JobRecord]) -> None:
        """Check that the taker is still there for ``jobs``; if it went away, give them back
        at once (not after their ttr) and answer 503."""
        transport = self.request.transport
        if jobs and (transport is None or transport.is_closing()):
            self.store.give_back(jobs)
            raise web.HTTPServiceUnavailable(text="the client disconnected")

    async def _iter(self) -> web.StreamResponse:
        # Every method of every REST view runs through here: a missing queue is 404 on this
        # API, where the documented ``/`` API answers 501 for the same QueueNotFound.
        try:
            return await super()._iter()
        except QueueNotFound as exc:
            raise as_missing(exc) from None


def as_missing(exc: QueueNotFound) -> QueueMissing:
    """A missing queue as this API answers it (404 ``queue_not_found``)."""
    return exc if isinstance(exc, QueueMissing) else QueueMissing(exc.message, **exc.details)


class Queues(RestView):
    """``/queues``: the collection of queues."""

    async def get(self) -> web.Response:
        """Every queue with its settings: ``{"queues": [QueueConfig, ...]}`` by name."""
        queues = await self.store.list_queues()
        now = clock.now()
        return json_response({"queues": [config.as_of(now).to_dict() for config in queues]})


class Queue(RestView):
    """``/queues/{name}``: one queue's settings."""

    async def get(self) -> web.Response:
        """The queue's settings and ``stats``; 404 if it does not exist."""
        config = (await self.store.get_queue(self.queue)).as_of(clock.now())
        stats = await self.store.stats(self.queue)
        return json_response({**config.to_dict(), "stats": stats.to_dict()})

    async def put(self) -> web.Response:
        """Create the queue with the body's settings: 201 with them; 200 with the settings
        it already has (unchanged) when it exists."""
        settings: m.QueueSettings = await body_of(self.request)
        config = settings.applied_to(QueueConfig(self.queue))
        if await self.store.create_queue(config):
            return json_response(config.to_dict(), status=201)
        return json_response((await self.store.get_queue(config.name)).to_dict())

    async def patch(self) -> web.Response:
        """Change any subset of the settings; the new settings. Jobs already put keep theirs."""
        settings: m.QueueSettings = await body_of(self.request)
        config = settings.applied_to(await self.store.get_queue(self.queue))
        await self.store.update_queue(config)
        return json_response(config.as_of(clock.now()).to_dict())

    async def delete(self) -> web.Response:
        """Drop the queue and its jobs: ``{"queue", "deleted": n}``."""
        deleted = await self.store.drop_queue(self.queue)
        return json_response({"queue": self.queue, "deleted": deleted})


class QueueTruncate(RestView):
    """``/queues/{name}/truncate``."""

    async def post(self) -> web.Response:
        """Remove every job, keep the queue: ``{"queue", "deleted": n}``."""
        deleted = await self.store.truncate(self.queue)
        return json_response({"queue": self.queue, "deleted": deleted})


class QueueStatsView(RestView):
    """``/queues/{name}/stats``."""

    async def get(self) -> web.Response:
        """Jobs per status and this dispatcher's event counters (QueueStats)."""
        return json_response((await self.store.stats(self.queue)).to_dict())


class QueueHistoryView(RestView):
    """``/queues/{name}/history``."""

    async def get(self) -> web.Response:
        """Per-minute counts of the queue's events between ``since`` and ``until``
        (QueueHistory; default: the last hour), of the last MAX_HISTORY_SPAN seconds of
        that span at most (the answer's ``since`` says where the read began; a span that
        ends before it starts holds no minute)."""
        query: m.HistoryQuery = query_of(self.request)
        until = query.until if query.until is not None else clock.now()
        since = query.since if query.since is not None else until - 3600
        since = max(since, until - MAX_HISTORY_SPAN, 0.0)
        buckets = (
            await self.store.history(self.queue, since=since, until=until) if since <= until else []
        )
        return json_response(
            {
                "queue": self.queue,
                "bucket": BUCKET,
                "since": bucket_of(since),
                "until": until,
                "buckets": [bucket.to_dict() for bucket in buckets],
            }
        )


class DispatcherStatsView(RestView):
    """``/stats``: every queue's statistics and their sums."""

    async def get(self) -> web.Response:
        """Jobs per status and event counters, summed over the queues and per queue."""
        return json_response(await self.store.dispatcher_stats())


class QueuePause(RestView):
    """``/queues/{name}/pause``."""

    async def post(self) -> web.Response:
        """Pause the queue ``{"for": seconds}``, or until resumed (no body or ``{}``):
        takes hand out none of its jobs, puts are still accepted. Its settings after
        (``paused``, ``paused_until`` in epoch seconds or null)."""
        pause: m.Pause = await body_of(self.request)
        config = await self.store.pause(self.queue, seconds=pause.for_)
        return json_response(config.to_dict())


class QueueResume(RestView):
    """``/queues/{name}/resume``."""

    async def post(self) -> web.Response:
        """End the queue's pause (idempotent); its settings after."""
        return json_response((await self.store.resume(self.queue)).to_dict())


class QueueKick(RestView):
    """``/queues/{name}/kick``."""

    async def post(self) -> web.Response:
        """Kick up to ``{"bound": N}`` buried jobs, or delayed ones when none is buried;
        with ``"status"`` (buried, failed or delayed), jobs of that status only (failed
        ones only so): ``{"queue", "kicked": n}``."""
        kick: m.Kick = await body_of(self.request)
        status = None if kick.status is None else JobStatus(kick.status)
        kicked = await self.store.kick(self.queue, kick.bound, status)
        return json_response({"queue": self.queue, "kicked": kicked})


class Jobs(RestView):
    """``/queues/{name}/jobs``: the queue's jobs."""

    async def post(self) -> web.Response:
        """Enqueue one job (the body is the job: 201 with the stored job) or a batch
        (``{"jobs": [...]}``, 1 to MAX_BATCH: 201 with ``{"jobs": [...]}`` in order).

        Every job of a batch is validated before any is stored; a 400 names the first bad
        one (``jobs[i]``) and its field. The batch is one durable write. A job with a
        ``key`` a live job holds is a duplicate: 200 when nothing was stored (see
        :mod:`~tqueues.dispatcher.enqueuing`).
        """
        body = await body_of(self.request)
        status, stored = await enqueuing.enqueue(self.store, body, self.queue)
        return json_response(stored.get("job", stored), status=status)

    async def get(self) -> web.Response:
        """A page of the queue's jobs in creation order: ``?status=&cursor=&limit=`` →
        ``{"jobs": [...], "next_cursor": str | null}`` (null on the last page).

        A page ends early once its jobs pass MAX_PAGE_BYTES (about; at least one job, so
        an answer is at most that plus one job): large jobs cost the dispatcher a bounded
        page, and ``next_cursor`` goes on from the last job it holds.
        """
        query: m.ListQuery = query_of(self.request)
        try:
            page = await self.store.list_jobs(
                self.queue,
                status=query.status,
                cursor=query.cursor or None,
                limit=query.limit,
                max_bytes=MAX_PAGE_BYTES,
            )
        except (ValueError, TypeError):
            raise ValidationError("'cursor' is not one this API gave", field="cursor") from None
        # Encoded once, as bytes (not a str encoded again by the response).
        body = codec.dumps(
            {"jobs": [job.to_dict() for job in page.jobs], "next_cursor": page.next_cursor}
        )
        return web.Response(body=body, content_type="application/json", charset="utf-8")


class NextJob(RestView):
    """``/queues/{name}/jobs/next``: peek."""

    async def get(self) -> web.Response:
        """The job of ``?status=`` (pending by default, delayed or buried) that comes next,
        without taking it; 404 ``job_not_found`` when there is none."""
        query: m.PeekQuery = query_of(self.request)
        status = JobStatus(query.status)
        job = await self.store.peek(self.queue, status)
        if job is None:
            raise JobNotFound(
                f"no {status.value} job in queue {self.queue!r}", queue=self.queue, status=status
            )
        return json_response(job.to_dict())


class JobView(RestView):
    """``/queues/{name}/jobs/{id}``: one job."""

    async def get(self) -> web.Response:
        """The job (without its lease); 404 ``job_not_found``."""
        return json_response((await self.store.get(self.queue, self.job_id)).to_dict())

    async def patch(self) -> web.Response:
        """Merge the body's fields into the job; with ``?lease=`` also extend the lease.

        409 when the lease is no longer the caller's or the job is final; 400 for a field
        the dispatcher owns.
        """
        job_id = self.job_id  # the job named, before what is asked of it
        fields: dict[str, Any] = await body_of(self.request)
        job = await self.store.update(self.queue, job_id, fields, lease=self.lease)
        return json_response(job.to_dict())

    async def delete(self) -> web.Response:
        """Delete the job whatever its state (an operator's call); the job as it was."""
        return json_response((await self.store.delete(self.queue, self.job_id)).to_dict())


class JobAction(RestView):
    """``/queues/{name}/jobs/{id}/{action}``: a transition of one job.

    ``?lease=`` proves the caller holds the job (409 ``lease_mismatch`` otherwise);
    without it the transition applies whoever holds the job. The answer is the job after
    the change.
    """

    async def post(self) -> web.Response:
        """Apply the action the path ends with, with the body's fields."""
        action = ACTION_FUNCTIONS[self.request.path.rsplit("/", 1)[1]]
        job_id = self.job_id  # the job named, before what is asked of it
        body = await body_of(self.request)
        job = await self.store.apply(self.queue, job_id, action(self.store, self.lease, body))
        return json_response(job.to_dict())


__all__ = [
    "ACTION_FUNCTIONS",
    "MAX_BATCH",
    "MAX_ID",
    "MAX_KICK",
    "MAX_OUTCOMES",
    "MAX_PAGE",
    "MAX_TAKE",
    "MAX_TAKE_QUEUES",
    "OUTCOME_ACTIONS",
    "JobAction",
    "JobView",
    "Jobs",
    "NextJob",
    "Queue",
    "QueueHistoryView",
    "QueueKick",
    "QueueStatsView",
    "QueueTruncate",
    "Queues",
]
