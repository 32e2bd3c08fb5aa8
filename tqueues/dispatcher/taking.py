"""The REST routes a worker lives on: takes (of one queue or the first of several) and
outcome reports that may take the next jobs along (see :mod:`tqueues.dispatcher.rest`
for the rest of the API and the views' base).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tqueues.dispatcher import models as m
from tqueues.dispatcher.actions import ACTION_FUNCTIONS
from tqueues.dispatcher.operation import body_of, query_of
from tqueues.dispatcher.rest import RestView, as_missing, json_response
from tqueues.errors import QueueNotFound, TqueuesError, ValidationError
from tqueues.ids import validate_job_id
from tqueues.jobs import JobRecord


class Take(RestView):
    """``/queues/{name}/take``."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` (default 1) jobs, each with its ``lease``, waiting up to
        ``?wait=`` seconds for the first: 200 ``{"jobs": [...]}``, an empty list when none
        came. ``?worker=`` names the taker."""
        return await _take(self, [self.queue], query_of(self.request))


class TakeAny(RestView):
    """``/take``: a take from several queues."""

    async def post(self) -> web.Response:
        """Take up to ``?count=`` jobs of the first of the ``?queue=`` queues (repeated, in
        the order to try them, 1 to MAX_TAKE_QUEUES) that has pending jobs, waiting up to
        ``?wait=`` seconds for a job in any of them: 200 ``{"jobs": [...]}`` as
        ``/queues/{name}/take`` answers, the jobs all of one queue. 404 if a queue does not
        exist (nothing is taken then)."""
        query: m.TakeAnyQuery = query_of(self.request)
        return await _take(self, take_queues(query.queue, "queue"), query)


def take_queues(queues: list[str], field: str) -> list[str]:
    """``queues`` (valid names, as many as a take may name) as the queues of one take:
    none twice; 400 naming ``field`` otherwise."""
    if len(set(queues)) < len(queues):
        raise ValidationError("a queue is named twice", field=field)
    return queues


async def _take(view: RestView, queues: list[str], query: m.TakeQuery) -> web.Response:
    """The take of ``queues`` that ``query`` (``count``, ``wait``, ``worker``) asks for,
    answered with the jobs and their leases."""
    jobs = await view.store.take_any(
        queues, query.count, worker=query.worker or None, wait=query.wait
    )
    view.hand_over(jobs)
    return json_response({"jobs": [job.to_dict(with_lease=True) for job in jobs]})


class Outcomes(RestView):
    """``/queues/{name}/outcomes``: how many runs ended, reported in one request, and
    optionally the next jobs taken in the same round trip."""

    async def post(self) -> web.Response:
        """Apply ``{"outcomes": [{"id", "lease", "action", ...its fields}, ...]}`` (1 to
        MAX_OUTCOMES): 200 ``{"results": [{"job": JobRecord} | {"error": Error}, ...]}`` in order.

        Every item is validated before any is applied (a 400 names the first bad one,
        ``outcomes[i]``, and its field). Then each is applied on its own, exactly as
        ``POST .../jobs/{id}/{action}?lease=`` would, in one store write where the store
        can (``Store.apply_many``); an item's 404 or 409 (or 503) is its ``error`` and does
        not affect the others. A ``job`` in the answer is durable.

        With ``"brief": true`` a stored outcome's item is ``{"stored": {"id", "status"}}``
        instead of the whole job (a worker has no use for its job's args and result echoed
        back). With ``"take": n`` (0 to MAX_TAKE) and optionally ``"worker"``, up to n pending
        jobs are also claimed, as ``POST .../take?count=n`` would without waiting, alongside
        the outcomes, in one store write where the store can (``Store.apply_and_take``):
        the answer's ``"jobs"`` holds them with their leases. A take the store refuses
        (503) leaves ``"jobs"`` empty; if the outcomes fail as a whole, nothing is taken
        either.
        """
        batch: m.OutcomeBatch = await body_of(self.request)
        result = _brief_result if batch.brief else _result
        take, worker = batch.take, batch.worker or None
        changes = []
        for index, item in enumerate(batch.outcomes):
            where = f"outcomes[{index}]"
            job_id = validate_job_id(item.id, where=where)
            changes.append((job_id, ACTION_FUNCTIONS[item.action](self.store, item.lease, item)))
        if not take:
            answers = await self.store.apply_many(self.queue, changes)
            return json_response({"results": [result(answer) for answer in answers]})
        applied, taken = await self.store.apply_and_take(self.queue, changes, take, worker=worker)
        self.hand_over(taken)
        return json_response(
            {
                "results": [result(answer) for answer in applied],
                "jobs": [job.to_dict(with_lease=True) for job in taken],
            }
        )


def _result(answer: JobRecord | BaseException) -> dict[str, Any]:
    if isinstance(answer, JobRecord):
        return {"job": answer.to_dict()}
    return _error_result(answer)


def _brief_result(answer: JobRecord | BaseException) -> dict[str, Any]:
    """An item of a ``brief`` answer: the job's id and new status, not the whole job."""
    if isinstance(answer, JobRecord):
        return {"stored": {"id": answer.id, "status": answer.status.value}}
    return _error_result(answer)


def _error_result(answer: BaseException) -> dict[str, Any]:
    if isinstance(answer, QueueNotFound):
        answer = as_missing(answer)
    if isinstance(answer, TqueuesError):
        return {"error": {**answer.to_dict(), "status": answer.status}}
    raise answer  # a bug, not an outcome: the error middleware logs it and answers 500
