"""The REST routes a worker lives on: takes (of one queue or the first of several) and
outcome reports that may take the next jobs along (see :mod:`tqueues.dispatcher.rest`
for the rest of the API and the views' base).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tqueues.dispatcher.actions import ACTION_FUNCTIONS, OUTCOME_ACTIONS, Action
from tqueues.dispatcher.requests import query_float, read_object
from tqueues.dispatcher.rest import (
    MAX_ID,
    MAX_OUTCOMES,
    MAX_TAKE,
    MAX_TAKE_QUEUES,
    RestView,
    as_missing,
    json_response,
    query_int,
)
from tqueues.errors import QueueNotFound, TqueuesError, ValidationError
from tqueues.ids import validate_job_id
from tqueues.jobs import Job, validate_queue_name


class Take(RestView):
    """``/queues/{name}/take``."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` (default 1) jobs, each with its ``lease``, waiting up to
        ``?wait=`` seconds for the first: 200 ``{"jobs": [...]}``, an empty list when none
        came. ``?worker=`` names the taker."""
        return await _take(self, [self.queue])


class TakeAny(RestView):
    """``/take``: a take from several queues."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` jobs of the first of the ``?queue=`` queues (repeated, in
        the order to try them, 1 to MAX_TAKE_QUEUES) that has pending jobs, waiting up to
        ``?wait=`` seconds for a job in any of them: 200 ``{"jobs": [...]}`` as
        ``/queues/{name}/take`` answers, the jobs all of one queue. 404 if a queue does not
        exist (nothing is taken then)."""
        queues = self.request.query.getall("queue", [])
        if not queues:
            raise ValidationError(
                "name the queues to take from: ?queue=NAME, repeated", field="queue"
            )
        return await _take(self, take_queues(queues, "queue"))


def take_queues(queues: Any, field: str) -> list[str]:
    """``queues`` as the queues of one take: a list of 1 to MAX_TAKE_QUEUES valid names,
    none twice; 400 naming ``field`` otherwise."""
    if not isinstance(queues, list) or not queues:
        raise ValidationError(f"'{field}' must name 1 to {MAX_TAKE_QUEUES} queues", field=field)
    if len(queues) > MAX_TAKE_QUEUES:
        raise ValidationError(f"at most {MAX_TAKE_QUEUES} queues per take", field=field)
    for name in queues:
        try:
            validate_queue_name(name)
        except ValidationError as exc:
            raise ValidationError(exc.message, **{**exc.details, "field": field}) from None
    if len(set(queues)) < len(queues):
        raise ValidationError("a queue is named twice", field=field)
    return queues


async def _take(view: RestView, queues: list[str]) -> web.Response:
    """The take of ``queues`` that ``view``'s query (``count``, ``wait``, ``worker``) asks
    for, answered with the jobs and their leases."""
    request = view.request
    wait = query_float(request, "wait", 0.0, high=view.settings.max_wait)
    count = query_int(request, "count", 1, low=1, high=MAX_TAKE)
    worker = worker_name(request.query.get("worker"))
    jobs = await view.store.take_any(queues, count, worker=worker, wait=wait)
    view.hand_over(jobs)
    return json_response({"jobs": [job.to_dict(with_lease=True) for job in jobs]})


def worker_name(worker: Any) -> str | None:
    """A taker's name (``worker``): a string of at most 200 characters, or None."""
    if worker is None or worker == "":
        return None
    if not isinstance(worker, str):
        raise ValidationError("'worker' must be a string", field="worker")
    if len(worker) > 200:
        raise ValidationError("'worker' is too long", field="worker")
    return worker


def _outcome(item: Any, index: int) -> tuple[Action, str, str | None, dict[str, Any]]:
    """The action, job id, lease and body of ``outcomes[index]``; 400 naming it otherwise."""
    where = f"outcomes[{index}]"
    if not isinstance(item, dict):
        raise ValidationError(f"{where} must be a JSON object", index=where)
    body = dict(item)
    job_id = body.pop("id", None)
    lease = body.pop("lease", None)
    action = body.pop("action", None)
    job_id = validate_job_id(job_id, where=where)
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
        worker = worker_name(body.get("worker"))
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
    if isinstance(answer, QueueNotFound):
        answer = as_missing(answer)
    if isinstance(answer, TqueuesError):
        return {"error": {**answer.to_dict(), "status": answer.status}}
    raise answer  # a bug, not an outcome: the error middleware logs it and answers 500
