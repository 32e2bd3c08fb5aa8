"""The resource-style REST API: queues and their jobs as resources, one view per resource.

=======================================  ================================================
route                                    what it does
=======================================  ================================================
``GET /queues``                          every queue with its settings
``PUT /queues/{name}``                   create (201) or confirm (200) a queue
``GET|PATCH|DELETE /queues/{name}``      settings and stats; change settings; drop
``POST /queues/{name}/truncate``         remove every job; how many went
``GET /queues/{name}/stats``             jobs per status and event counters
``POST /queues/{name}/kick``             kick up to ``bound`` buried (else delayed) jobs
``POST|GET /queues/{name}/jobs``         enqueue one job or a batch; list jobs by status
``GET /queues/{name}/jobs/next``         peek the next job of a status
``POST /queues/{name}/take``             take up to ``count`` jobs with their leases
``POST /take?queue=a&queue=b``           the same from the first of several queues
``GET|PATCH|DELETE .../jobs/{id}``       read, update (touch with ``?lease=``), delete
``POST .../jobs/{id}/{action}``          finish, fail, release, requeue, touch, bury, kick
``POST /queues/{name}/outcomes``         finish, fail, release, ... many jobs at once
=======================================  ================================================

A missing queue answers 404 ``queue_not_found`` here (the documented ``/`` API keeps its
501). Errors are :class:`~tqueues.errors.TqueuesError` subclasses turned into JSON by the
error middleware; the OpenAPI document (:mod:`tqueues.dispatcher.openapi`) describes
every route.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp_cors
from aiohttp import web

from tqueues import codec
from tqueues.dispatcher.actions import (
    ACTION_FUNCTIONS,
    OUTCOME_ACTIONS,
    Action,
    only,
)
from tqueues.dispatcher.keys import settings_key, store_key
from tqueues.dispatcher.requests import query_float, read_object
from tqueues.errors import (
    JobNotFound,
    QueueMissing,
    QueueNotFound,
    TqueuesError,
    ValidationError,
)
from tqueues.jobs import (
    Job,
    JobStatus,
    NewJob,
    QueueConfig,
    validate_queue_name,
)
from tqueues.settings import DispatcherSettings
from tqueues.stores.base import Store

MAX_BATCH = 1000  #: jobs one enqueue request may carry.
MAX_TAKE = 100  #: jobs one take may ask for.
MAX_TAKE_QUEUES = 32  #: queues one take may name.
MAX_OUTCOMES = 1000  #: outcomes one report may carry.
MAX_PAGE = 1000  #: jobs one listing page may hold.
DEFAULT_PAGE = 100
MAX_KICK = 10_000  #: the largest ``bound`` of a queue kick.
MAX_ID = 128
PEEKABLE = (JobStatus.PENDING, JobStatus.DELAYED, JobStatus.BURIED)
ACTIONS = tuple(ACTION_FUNCTIONS)  #: the job actions of the action route


def json_response(body: Any, *, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(body, status=status, dumps=codec.dumps_str)


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter between ``low`` and ``high``; 400 naming it otherwise."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"'{name}' must be an integer", field=name) from None
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low} and {high}", field=name)
    return value


def query_status(request: web.Request, allowed: tuple[JobStatus, ...]) -> JobStatus | None:
    """The ``status`` query parameter, one of ``allowed``; None when absent."""
    raw = request.query.get("status")
    if raw is None or raw == "":
        return None
    if raw not in [s.value for s in allowed]:
        choices = ", ".join(s.value for s in allowed)
        raise ValidationError(f"'status' must be one of {choices}", field="status")
    return JobStatus(raw)


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
        """The job id named in the path."""
        job_id = self.request.match_info["id"]
        if len(job_id) > MAX_ID:
            raise ValidationError("'id' is too long", field="id")
        return job_id

    @property
    def lease(self) -> str | None:
        """The ``lease`` query parameter, if any."""
        lease = self.request.query.get("lease")
        if lease is not None and len(lease) > MAX_ID:
            raise ValidationError("'lease' is too long", field="lease")
        # An empty ?lease= is a lease that matches nothing (409), as on /: read as "no
        # lease", it would act on a job whoever holds it.
        return lease

    def hand_over(self, jobs: list[Job]) -> None:
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
            if isinstance(exc, QueueMissing):
                raise
            raise QueueMissing(exc.message, **exc.details) from None


class Queues(RestView):
    """``/queues``: the collection of queues."""

    async def get(self) -> web.Response:
        """Every queue with its settings: ``{"queues": [QueueConfig, ...]}`` by name."""
        queues = await self.store.list_queues()
        return json_response({"queues": [config.to_dict() for config in queues]})


class Queue(RestView):
    """``/queues/{name}``: one queue's settings."""

    async def get(self) -> web.Response:
        """The queue's settings and ``stats``; 404 if it does not exist."""
        config = await self.store.get_queue(self.queue)
        stats = await self.store.stats(self.queue)
        return json_response({**config.to_dict(), "stats": stats.to_dict()})

    async def put(self) -> web.Response:
        """Create the queue with the body's settings: 201 with them; 200 with the settings
        it already has (unchanged) when it exists."""
        config = QueueConfig.from_request(self.queue, await read_object(self.request))
        if await self.store.create_queue(config):
            return json_response(config.to_dict(), status=201)
        return json_response((await self.store.get_queue(config.name)).to_dict())

    async def patch(self) -> web.Response:
        """Change any subset of the settings; the new settings. Jobs already put keep theirs."""
        fields = await read_object(self.request)
        config = (await self.store.get_queue(self.queue)).changed(fields)
        await self.store.update_queue(config)
        return json_response(config.to_dict())

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


class DispatcherStatsView(RestView):
    """``/stats``: every queue's statistics and their sums."""

    async def get(self) -> web.Response:
        """Jobs per status and event counters, summed over the queues and per queue."""
        return json_response(await self.store.dispatcher_stats())


class QueueKick(RestView):
    """``/queues/{name}/kick``."""

    async def post(self) -> web.Response:
        """Kick up to ``{"bound": N}`` buried jobs, or delayed ones when none is buried:
        ``{"queue", "kicked": n}``."""
        body = await read_object(self.request)
        only(body, ("bound",), "a kick")
        bound = body.get("bound", 1)
        if isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound <= MAX_KICK:
            raise ValidationError(f"'bound' must be an integer from 1 to {MAX_KICK}", field="bound")
        kicked = await self.store.kick(self.queue, bound)
        return json_response({"queue": self.queue, "kicked": kicked})


class Jobs(RestView):
    """``/queues/{name}/jobs``: the queue's jobs."""

    def _new_job(self, fields: Any, where: str) -> NewJob:
        if not isinstance(fields, dict):
            raise ValidationError(f"{where} must be a JSON object", field=where)
        queue = self.queue
        if fields.get("queue", queue) != queue:
            raise ValidationError(f"{where}: 'queue' differs from the path", field="queue")
        try:
            return NewJob.from_request({**fields, "queue": queue})
        except ValidationError as exc:
            if where == "the body":
                raise
            raise ValidationError(f"{where}: {exc.message}", index=where, **exc.details) from None

    async def post(self) -> web.Response:
        """Enqueue one job (the body is the job: 201 with the stored job) or a batch
        (``{"jobs": [...]}``, 1 to MAX_BATCH: 201 with ``{"jobs": [...]}`` in order).

        Every job of a batch is validated before any is stored; a 400 names the first bad
        one (``jobs[i]``) and its field. The batch is one durable write.
        """
        body = await read_object(self.request)
        if "jobs" in body:
            if set(body) != {"jobs"}:
                raise ValidationError("a batch body has only 'jobs'", fields=sorted(body))
            items = body["jobs"]
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                raise ValidationError(
                    f"'jobs' must be a list of 1 to {MAX_BATCH} jobs", field="jobs"
                )
            news = [self._new_job(item, f"jobs[{i}]") for i, item in enumerate(items)]
            stored = await self.store.put_many(news)
            return json_response({"jobs": [job.to_dict() for job in stored]}, status=201)
        job = await self.store.put(self._new_job(body, "the body"))
        return json_response(job.to_dict(), status=201)

    async def get(self) -> web.Response:
        """A page of the queue's jobs in creation order: ``?status=&cursor=&limit=`` →
        ``{"jobs": [...], "next_cursor": str | null}`` (null on the last page)."""
        request = self.request
        status = query_status(request, tuple(JobStatus))
        limit = query_int(request, "limit", DEFAULT_PAGE, low=1, high=MAX_PAGE)
        cursor = request.query.get("cursor") or None
        if cursor is not None and len(cursor) > 1024:
            raise ValidationError("'cursor' is too long", field="cursor")
        try:
            page = await self.store.list_jobs(self.queue, status=status, cursor=cursor, limit=limit)
        except (ValueError, TypeError):
            raise ValidationError("'cursor' is not one this API gave", field="cursor") from None
        return json_response(
            {"jobs": [job.to_dict() for job in page.jobs], "next_cursor": page.next_cursor}
        )


class NextJob(RestView):
    """``/queues/{name}/jobs/next``: peek."""

    async def get(self) -> web.Response:
        """The job of ``?status=`` (pending by default, delayed or buried) that comes next,
        without taking it; 404 ``job_not_found`` when there is none."""
        status = query_status(self.request, PEEKABLE) or JobStatus.PENDING
        job = await self.store.peek(self.queue, status)
        if job is None:
            raise JobNotFound(
                f"no {status.value} job in queue {self.queue!r}", queue=self.queue, status=status
            )
        return json_response(job.to_dict())


class Take(RestView):
    """``/queues/{name}/take``."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` (default 1) jobs, each with its ``lease``, waiting up to
        ``?wait=`` seconds for the first: 200 ``{"jobs": [...]}``, an empty list when none
        came. ``?worker=`` names the taker."""
        request = self.request
        queue = self.queue
        wait = query_float(request, "wait", 0.0, high=self.settings.max_wait)
        count = query_int(request, "count", 1, low=1, high=MAX_TAKE)
        worker = _worker_name(request.query.get("worker"))
        jobs: list[Job] = await self.store.take_many(queue, count, worker=worker, wait=wait)
        self.hand_over(jobs)
        return json_response({"jobs": [job.to_dict(with_lease=True) for job in jobs]})


class TakeAny(RestView):
    """``/take``: a take from several queues."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` jobs of the first of the ``?queue=`` queues (repeated, in
        the order to try them, 1 to MAX_TAKE_QUEUES) that has pending jobs, waiting up to
        ``?wait=`` seconds for a job in any of them: 200 ``{"jobs": [...]}`` as
        ``/queues/{name}/take`` answers, the jobs all of one queue. 404 if a queue does not
        exist (nothing is taken then)."""
        request = self.request
        queues = request.query.getall("queue", [])
        if not queues:
            raise ValidationError(
                "name the queues to take from: ?queue=NAME, repeated", field="queue"
            )
        if len(queues) > MAX_TAKE_QUEUES:
            raise ValidationError(f"at most {MAX_TAKE_QUEUES} queues per take", field="queue")
        for name in queues:
            validate_queue_name(name)
        if len(set(queues)) < len(queues):
            raise ValidationError("a queue is named twice", field="queue")
        wait = query_float(request, "wait", 0.0, high=self.settings.max_wait)
        count = query_int(request, "count", 1, low=1, high=MAX_TAKE)
        worker = _worker_name(request.query.get("worker"))
        jobs = await self.store.take_any(queues, count, worker=worker, wait=wait)
        self.hand_over(jobs)
        return json_response({"jobs": [job.to_dict(with_lease=True) for job in jobs]})


def _worker_name(worker: Any) -> str | None:
    """A taker's name (``worker``): a string of at most 200 characters, or None."""
    if worker is None or worker == "":
        return None
    if not isinstance(worker, str):
        raise ValidationError("'worker' must be a string", field="worker")
    if len(worker) > 200:
        raise ValidationError("'worker' is too long", field="worker")
    return worker


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
        fields = await read_object(self.request)
        job = await self.store.update(self.queue, self.job_id, fields, lease=self.lease)
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
        """Apply the ``action`` of the path with the body's fields."""
        action = ACTION_FUNCTIONS[self.request.match_info["action"]]
        body = await read_object(self.request)
        job = await self.store.apply(self.queue, self.job_id, action(self.store, self.lease, body))
        return json_response(job.to_dict())


def _outcome(item: Any, index: int) -> tuple[Action, str, str | None, dict[str, Any]]:
    """The action, job id, lease and body of ``outcomes[index]``; 400 naming it otherwise."""
    where = f"outcomes[{index}]"
    if not isinstance(item, dict):
        raise ValidationError(f"{where} must be a JSON object", index=where)
    body = dict(item)
    job_id = body.pop("id", None)
    lease = body.pop("lease", None)
    action = body.pop("action", None)
    if not isinstance(job_id, str) or not 1 <= len(job_id) <= MAX_ID:
        raise ValidationError(
            f"{where}: 'id' must be a string of 1 to {MAX_ID} characters", index=where, field="id"
        )
    if not isinstance(lease, str | None) or (lease is not None and len(lease) > MAX_ID):
        raise ValidationError(
            f"{where}: 'lease' must be a string of at most {MAX_ID} characters",
            index=where,
            field="lease",
        )
    if action not in OUTCOME_ACTIONS:
        raise ValidationError(
            f"{where}: 'action' must be one of {', '.join(OUTCOME_ACTIONS)}",
            index=where,
            field="action",
        )
    return ACTION_FUNCTIONS[action], job_id, lease, body


class Outcomes(RestView):
    """``/queues/{name}/outcomes``: how many runs ended, reported in one request, and
    optionally the next jobs taken in the same round trip."""

    async def post(self) -> web.Response:
        """Apply ``{"outcomes": [{"id", "lease", "action", ...its fields}, ...]}`` (1 to
        MAX_OUTCOMES): 200 ``{"results": [{"job": Job} | {"error": Error}, ...]}`` in order.

        Every item is validated before any is applied (a 400 names the first bad one,
        ``outcomes[i]``, and its field). Then each is applied on its own, exactly as
        ``POST .../jobs/{id}/{action}?lease=`` would, in one store write where the store
        can (``Store.apply_many``); an item's 404 or 409 (or 503) is its ``error`` and does
        not affect the others. A ``job`` in the answer is durable.

        With ``"brief": true`` a stored outcome's item is ``{"stored": {"id", "status"}}``
        instead of the whole job (a worker has no use for its job's args and result echoed
        back). With ``"take": n`` (0 to MAX_TAKE) and optionally ``"worker"``, up to n pending
        jobs are also claimed, as ``POST .../take?count=n`` would without waiting, alongside
        the outcomes (the embedded store commits both at once): the answer's ``"jobs"``
        holds them with their leases. A take the store refuses (503) leaves ``"jobs"``
        empty; if the outcomes fail as a whole, nothing is taken either.
        """
        body = await read_object(self.request)
        if "outcomes" not in body or not set(body) <= {"outcomes", "take", "worker", "brief"}:
            raise ValidationError(
                "the body has 'outcomes' and optionally 'take', 'worker' and 'brief'",
                fields=sorted(body),
            )
        brief = body.get("brief", False)
        if not isinstance(brief, bool):
            raise ValidationError("'brief' must be true or false", field="brief")
        result = _brief_result if brief else _result
        take = body.get("take", 0)
        if type(take) is not int or not 0 <= take <= MAX_TAKE:
            raise ValidationError(f"'take' must be an integer from 0 to {MAX_TAKE}", field="take")
        worker = _worker_name(body.get("worker"))
        items = body["outcomes"]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_OUTCOMES:
            raise ValidationError(
                f"'outcomes' must be a list of 1 to {MAX_OUTCOMES} outcomes", field="outcomes"
            )
        changes = []
        for index, item in enumerate(items):
            action, job_id, lease, fields = _outcome(item, index)
            try:
                changes.append((job_id, action(self.store, lease, fields)))
            except ValidationError as exc:
                where = f"outcomes[{index}]"
                raise ValidationError(
                    f"{where}: {exc.message}", index=where, **exc.details
                ) from None
        if not take:
            answers = await self.store.apply_many(self.queue, changes)
            return json_response({"results": [result(answer) for answer in answers]})
        # Both at once: on the embedded store they share one group commit.
        applied, taken = await asyncio.gather(
            self.store.apply_many(self.queue, changes),
            self.store.take_many(self.queue, take, worker=worker),
            return_exceptions=True,
        )
        if isinstance(applied, BaseException):
            if isinstance(taken, list):
                self.store.give_back(taken)
            raise applied
        if isinstance(taken, TqueuesError):
            taken = []  # the outcomes are stored: answer them; the next take meets the error
        elif isinstance(taken, BaseException):
            raise taken
        self.hand_over(taken)
        return json_response(
            {
                "results": [result(answer) for answer in applied],
                "jobs": [job.to_dict(with_lease=True) for job in taken],
            }
        )


def _result(answer: Job | BaseException) -> dict[str, Any]:
    if isinstance(answer, Job):
        return {"job": answer.to_dict()}
    return _error_result(answer)


def _brief_result(answer: Job | BaseException) -> dict[str, Any]:
    """An item of a ``brief`` answer: the job's id and new status, not the whole job."""
    if isinstance(answer, Job):
        return {"stored": {"id": answer.id, "status": answer.status.value}}
    return _error_result(answer)


def _error_result(answer: BaseException) -> dict[str, Any]:
    if isinstance(answer, QueueNotFound) and not isinstance(answer, QueueMissing):
        answer = QueueMissing(answer.message, **answer.details)
    if isinstance(answer, TqueuesError):
        return {"error": {**answer.to_dict(), "status": answer.status}}
    raise answer  # a bug, not an outcome: the error middleware logs it and answers 500


__all__ = [
    "ACTIONS",
    "ACTION_FUNCTIONS",
    "MAX_BATCH",
    "MAX_OUTCOMES",
    "OUTCOME_ACTIONS",
    "JobAction",
    "JobView",
    "Jobs",
    "NextJob",
    "Outcomes",
    "Queue",
    "QueueKick",
    "QueueStatsView",
    "QueueTruncate",
    "Queues",
    "Take",
]
