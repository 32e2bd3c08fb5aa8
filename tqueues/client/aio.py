"""The asyncio client of the dispatcher's REST API, used by the worker and by programs.

One :class:`aiohttp.ClientSession` per client, kept alive across calls. Every operation
of docs/rest-api.rst is a method of the same name (see docs/client.rst). Errors come back
as the typed exceptions of :mod:`tqueues.errors`, named by the dispatcher's JSON ``error``
code: :class:`~tqueues.errors.NotFound` (:class:`~tqueues.errors.QueueNotFound`,
:class:`~tqueues.errors.JobNotFound`), :class:`~tqueues.errors.Conflict`
(:class:`~tqueues.errors.LeaseMismatch`, :class:`~tqueues.errors.InvalidTransition`),
:class:`~tqueues.errors.Unavailable` (:class:`~tqueues.errors.StoreUnavailable`, and
:class:`~tqueues.errors.DispatcherUnavailable` when the dispatcher cannot be reached),
:class:`~tqueues.errors.ValidationError`, :class:`~tqueues.errors.Unauthorized`,
:class:`~tqueues.errors.Forbidden`. Jobs are plain dicts, as the API writes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from tqueues import codec
from tqueues.client.answers import JSONDict, answer_of, outcome_results
from tqueues.client.errors_text import connection_error_text
from tqueues.client.stream import JobStream, TakeStream
from tqueues.errors import DispatcherUnavailable, JobNotFound, TqueuesError
from tqueues.limits import DEFAULT_PAGE

log = logging.getLogger("tqueues.client")


def path_segment(value: str) -> str:
    """``value`` as one percent-encoded path segment (see :meth:`Client.url`)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def after_name(job: str | Mapping[str, Any]) -> str:
    """How ``after`` names ``job``: an id or ``"queue/id"`` as given, or a job (a dict
    with ``queue`` and ``id``, as :meth:`Client.put` returns it) as ``"queue/id"``."""
    if isinstance(job, str):
        return job
    return f"{job['queue']}/{job['id']}"


class Client:
    """Talks to a dispatcher at ``endpoint_url``. Use ``async with Client(url) as client:``.

    ``endpoint_url`` may be a list of URLs, dispatchers of one cluster (sharing one
    RethinkDB database): calls go to one of them, and when it cannot be reached or does
    not answer, the next calls go to the next one (see :meth:`request`). ``timeout``
    bounds each call, in seconds, on top of any long-poll ``wait``; ``token`` is sent as
    ``Authorization: Bearer <token>``. Raises ValueError for an empty list.
    """

    def __init__(
        self, endpoint_url: str | Sequence[str], *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        urls = [endpoint_url] if isinstance(endpoint_url, str) else list(endpoint_url)
        if not urls:
            raise ValueError("a client needs at least one endpoint URL")
        #: Every dispatcher's URL, each ending with ``/``; calls go to ``endpoint_url``.
        self.endpoint_urls = tuple(url if url.endswith("/") else url + "/" for url in urls)
        self._bases = tuple(URL(url) for url in self.endpoint_urls)
        self._current = 0
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint_url(self) -> str:
        """The URL of the dispatcher the calls go to now."""
        return self.endpoint_urls[self._current]

    @property
    def _base(self) -> URL:
        return self._bases[self._current]

    def unreachable(self, endpoint_url: str) -> bool:
        """The dispatcher at ``endpoint_url`` could not be reached or did not answer: the
        next calls go to the next URL in the list, unless they have already moved on (or
        there is only one). True if they moved."""
        if len(self.endpoint_urls) == 1 or endpoint_url != self.endpoint_url:
            return False
        self._current = (self._current + 1) % len(self.endpoint_urls)
        log.warning(
            "the dispatcher at %s cannot be reached; using %s", endpoint_url, self.endpoint_url,
            extra={"action": "dispatcher_failover"},
        )  # fmt: skip
        return True

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                headers=self._headers,
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- transport -----------------------------------------------------------------------

    def url(self, *segments: str) -> URL:
        """The URL of a path under the endpoint; each segment is percent-encoded whole, so
        that no value (a job id from a web form, say) reaches another path: ``/`` and the
        dot segments ``.`` and ``..`` included (``delete(q, "../../q")`` must not become
        ``DELETE /queues/q``)."""
        return self._base.joinpath(*map(path_segment, segments), encoded=True)

    async def request(
        self,
        method: str,
        path: Sequence[str],
        body: Any = None,
        *,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        wait: float = 0.0,
    ) -> Any:
        """One call to the path ``path`` (its segments), with the query ``params`` (pairs
        for a repeated name); the decoded answer.

        Raises the typed error the dispatcher names, DispatcherUnavailable when it cannot
        be reached or does not answer within ``timeout + wait`` seconds. Of several
        dispatchers, a connection refused (nothing was sent) is tried on each of the others
        at once; a call that got no answer moves the next calls to the next dispatcher but
        raises (it may have been done: the caller decides whether to call again).
        """
        timeout = aiohttp.ClientTimeout(total=self.timeout + wait)
        data = None if body is None else codec.dumps(body)
        headers = {"Content-Type": "application/json"} if data is not None else None
        for attempt in range(len(self.endpoint_urls)):
            endpoint_url = self.endpoint_url
            try:
                async with self.session.request(
                    method,
                    self.url(*path),
                    params=params,
                    data=data,
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    raw = await response.read()
                    status = response.status
                    is_json = response.content_type == "application/json"
                    charset = response.charset or "utf-8"
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.unreachable(endpoint_url)
                if isinstance(exc, aiohttp.ClientConnectorError) and attempt + 1 < len(
                    self.endpoint_urls
                ):
                    continue  # nothing was sent: the next dispatcher may take it
                reason = connection_error_text(exc, timeout=timeout.total)
                raise DispatcherUnavailable(
                    f"cannot reach the dispatcher at {endpoint_url}: {reason}"
                ) from exc
            return answer_of(status, raw, is_json=is_json, charset=charset)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _lease(lease: str | None) -> dict[str, str]:
        return {} if lease is None else {"lease": lease}

    # -- queues --------------------------------------------------------------------------

    async def list_queues(self) -> list[JSONDict]:
        """Every queue with its settings, by name."""
        answer: JSONDict = await self.request("GET", ["queues"])
        queues: list[JSONDict] = answer["queues"]
        return queues

    async def create_queue(self, queue: str, **settings: Any) -> JSONDict:
        """Create ``queue`` unless it exists; its settings (those it had, if it existed).

        ``settings``: ttr, max_attempts, delay, ttl, priority, retention, ttl_action.
        """
        config: JSONDict = await self.request("PUT", ["queues", queue], settings)
        return config

    async def queue_settings(self, queue: str) -> JSONDict:
        """The queue's settings, with its statistics under ``stats``."""
        config: JSONDict = await self.request("GET", ["queues", queue])
        return config

    async def update_queue(self, queue: str, **settings: Any) -> JSONDict:
        """Change any of the queue's settings; the new settings."""
        config: JSONDict = await self.request("PATCH", ["queues", queue], settings)
        return config

    async def drop_queue(self, queue: str) -> int:
        """Remove the queue and its jobs; how many jobs went."""
        answer: JSONDict = await self.request("DELETE", ["queues", queue])
        return int(answer["deleted"])

    async def truncate(self, queue: str) -> int:
        """Remove every job of the queue; how many went."""
        answer: JSONDict = await self.request("POST", ["queues", queue, "truncate"])
        return int(answer["deleted"])

    async def stats(self, queue: str) -> JSONDict:
        """``{"queue", "jobs": {status: n}, "total", "counters": {event: n}}``."""
        stats: JSONDict = await self.request("GET", ["queues", queue, "stats"])
        return stats

    async def history(
        self, queue: str, *, since: float | None = None, until: float | None = None
    ) -> JSONDict:
        """Per-minute counts of the queue's events between ``since`` and ``until`` (epoch
        seconds; default the last hour), summed over every dispatcher and kept across
        restarts: ``{"queue", "bucket": 60, "since", "until", "buckets": [{"at",
        "counts": {event: n}}]}``, minutes without events left out."""
        params = {
            name: repr(float(value))
            for name, value in (("since", since), ("until", until))
            if value is not None
        }
        history: JSONDict = await self.request("GET", ["queues", queue, "history"], params=params)
        return history

    async def explain(self, queue: str, job_id: str) -> JSONDict:
        """Why the job is (not) running: ``{"queue", "id", "status", "summary", "reasons":
        [{"code", "text", ...fields}]}`` (delayed until when, jobs ahead of it, whether a
        worker takes from its queue, its lease, why it was buried). Raises JobNotFound."""
        answer: JSONDict = await self.request("GET", ["queues", queue, "jobs", job_id, "explain"])
        return answer

    async def workers(self, queue: str | None = None) -> list[JSONDict]:
        """The workers seen in the last 5 minutes (taking from ``queue`` only, if given),
        each with its ``state`` (running, quiet, stopping, or lost: no heartbeat for 15
        s), the jobs it runs and its totals; by id."""
        params = {"queue": queue} if queue is not None else None
        answer: JSONDict = await self.request("GET", ["workers"], params=params)
        workers: list[JSONDict] = answer["workers"]
        return workers

    async def quiet_worker(self, worker_id: str) -> JSONDict:
        """Ask the worker to take no more jobs (those running finish); the worker. It
        learns it at its next heartbeat. Raises WorkerNotFound."""
        worker: JSONDict = await self.request("POST", ["workers", worker_id, "quiet"])
        return worker

    async def stop_worker(self, worker_id: str) -> JSONDict:
        """Ask the worker to shut down gracefully (as on SIGTERM); the worker. It learns
        it at its next heartbeat. Raises WorkerNotFound."""
        worker: JSONDict = await self.request("POST", ["workers", worker_id, "stop"])
        return worker

    async def heartbeat(self, worker_id: str, beat: JSONDict) -> JSONDict:
        """Send a worker's heartbeat (what :class:`~tqueues.worker.Worker` does every few
        seconds); ``{"command": None | "quiet" | "stop", "interval": seconds, "cancel":
        [ids of its running jobs asked to stop]}``."""
        answer: JSONDict = await self.request("POST", ["workers", worker_id, "heartbeat"], beat)
        return answer

    async def create_schedule(
        self,
        queue: str,
        name: str,
        method: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        cron: str | None = None,
        timezone: str = "UTC",
        every: float | None = None,
        catch_up: str = "latest",
        paused: bool = False,
        **options: Any,
    ) -> JSONDict:
        """Create the schedule ``name`` of ``queue``: a job of ``method(*args, **kwargs)``
        (``options``: priority, ttr, max_attempts, delay, ttl, urgent) at every tick of
        ``cron`` (read in the IANA ``timezone``) or every ``every`` seconds; ticks missed
        while no dispatcher ran are caught up as ``catch_up`` says ("latest", "all",
        "skip"). The schedule. Raises ValidationError (naming the field: a bad cron
        expression or time zone, both ``cron`` and ``every``), ScheduleExists,
        QueueNotFound."""
        body: JSONDict = {
            "name": name,
            "job": {"method": method, "args": list(args), "kwargs": dict(kwargs or {}),
                    **options},
            "timezone": timezone,
            "catch_up": catch_up,
            "paused": paused,
        }  # fmt: skip
        if cron is not None:
            body["cron"] = cron
        if every is not None:
            body["every"] = every
        schedule: JSONDict = await self.request("POST", ["queues", queue, "schedules"], body)
        return schedule

    async def schedules(self, queue: str) -> list[JSONDict]:
        """The queue's schedules, by name. Raises QueueNotFound."""
        answer: JSONDict = await self.request("GET", ["queues", queue, "schedules"])
        schedules: list[JSONDict] = answer["schedules"]
        return schedules

    async def schedule(self, queue: str, name: str) -> JSONDict:
        """The schedule. Raises ScheduleNotFound."""
        schedule: JSONDict = await self.request("GET", ["queues", queue, "schedules", name])
        return schedule

    async def pause_schedule(self, queue: str, name: str) -> JSONDict:
        """Pause the schedule (no tick fires until resumed); the schedule. Raises
        ScheduleNotFound."""
        path = ["queues", queue, "schedules", name, "pause"]
        schedule: JSONDict = await self.request("POST", path)
        return schedule

    async def resume_schedule(self, queue: str, name: str) -> JSONDict:
        """Resume the schedule: its next tick is the first after now; the schedule.
        Raises ScheduleNotFound."""
        path = ["queues", queue, "schedules", name, "resume"]
        schedule: JSONDict = await self.request("POST", path)
        return schedule

    async def run_schedule(self, queue: str, name: str) -> JSONDict:
        """Make the schedule's job now, outside its ticks; the job. Raises
        ScheduleNotFound."""
        job: JSONDict = await self.request("POST", ["queues", queue, "schedules", name, "run"])
        return job

    async def delete_schedule(self, queue: str, name: str) -> JSONDict:
        """Delete the schedule (the jobs it made stay); the schedule as it was. Raises
        ScheduleNotFound."""
        path = ["queues", queue, "schedules", name]
        schedule: JSONDict = await self.request("DELETE", path)
        return schedule

    async def dispatcher_stats(self) -> JSONDict:
        """Every queue's statistics and their sums: ``{"queues", "jobs", "total",
        "counters", "by_queue"}``."""
        stats: JSONDict = await self.request("GET", ["stats"])
        return stats

    async def kick(self, queue: str, bound: int = 1, *, status: str | None = None) -> int:
        """Kick up to ``bound`` (1 to 10,000) buried jobs (delayed ones if none is buried),
        or with ``status`` ("buried", "failed" or "delayed") jobs of that status only:
        failed jobs are kicked only so. Buried and failed jobs come back pending with
        their attempts renewed. How many were kicked."""
        body: JSONDict = {"bound": bound}
        if status is not None:
            body["status"] = status
        answer: JSONDict = await self.request("POST", ["queues", queue, "kick"], body)
        return int(answer["kicked"])

    async def pause(self, queue: str, seconds: float | None = None) -> JSONDict:
        """Pause the queue for ``seconds`` (None: until :meth:`resume`): takes get none of
        its jobs, puts are still accepted; a pause under way is replaced. Its settings
        after (``paused``, ``paused_until`` in epoch seconds or None)."""
        body: JSONDict = {} if seconds is None else {"for": seconds}
        config: JSONDict = await self.request("POST", ["queues", queue, "pause"], body)
        return config

    async def resume(self, queue: str) -> JSONDict:
        """End the queue's pause (nothing changes if it is not paused); its settings after."""
        config: JSONDict = await self.request("POST", ["queues", queue, "resume"])
        return config

    # -- jobs ----------------------------------------------------------------------------

    async def put(
        self,
        queue: str,
        method: str,
        args: Sequence[Any] = (),
        kwargs: JSONDict | None = None,
        *,
        key: str | None = None,
        **options: Any,
    ) -> JSONDict:
        """Enqueue a job; the stored job. ``options``: priority, urgent, ttr, ttl, delay,
        max_attempts, after: the jobs it waits for (ids of jobs of ``queue``, ``"queue/id"``,
        or jobs as :meth:`put` returned them): it stays ``waiting`` until they all
        finished, and is buried if one fails for good or is deleted.

        ``key`` (1 to 256 characters) makes it a unique job: while a job of the queue with
        that key is pending, delayed or started, the put stores nothing and returns that
        job, untouched, with ``"duplicate": True`` (a job stored has ``"duplicate":
        False``); once it ends, the key is free. A job may not have both."""
        if options.get("after"):
            options["after"] = [after_name(job) for job in options["after"]]
        body = {"method": method, "args": list(args), "kwargs": kwargs or {}, **options}
        if key is not None:
            body["key"] = key
        job: JSONDict = await self.request("POST", ["queues", queue, "jobs"], body)
        return job

    async def put_many(self, queue: str, jobs: Sequence[Mapping[str, Any]]) -> list[JSONDict]:
        """Enqueue 1 to 1,000 jobs (dicts with ``method`` and the options of :meth:`put`,
        ``key`` among them) in one durable write, all or none; the stored jobs in order
        (for a duplicate, the live job that holds its key: see :meth:`put`)."""
        answer: JSONDict = await self.request(
            "POST", ["queues", queue, "jobs"], {"jobs": [dict(job) for job in jobs]}
        )
        stored: list[JSONDict] = answer["jobs"]
        return stored

    def job_stream(self, queue: str) -> JobStream:
        """A job stream to ``queue``: :meth:`put` and :meth:`put_many` over one WebSocket
        (``/queues/{queue}/jobs/stream``), for a producer that enqueues one job at a time
        (see :mod:`tqueues.client.stream`). Use ``async with client.job_stream(q) as s:``."""
        return JobStream(self, queue)

    def take_stream(self) -> TakeStream:
        """A take stream: :meth:`TakeStream.take <tqueues.client.stream.TakeStream.take>`
        (``take_any``'s long-poll) over one WebSocket (``/take/stream``), each take one
        small frame each way. Use ``async with client.take_stream() as s:``."""
        return TakeStream(self)

    async def take_many(
        self, queue: str, count: int, *, wait: float = 0.0, worker: str | None = None
    ) -> list[JSONDict]:
        """Up to ``count`` jobs, each with its ``lease``, waiting up to ``wait`` seconds for
        the first; an empty list when none came."""
        params = {"wait": repr(float(wait)), "count": str(count)}
        if worker:
            params["worker"] = worker
        answer: JSONDict = await self.request(
            "POST", ["queues", queue, "take"], params=params, wait=wait
        )
        jobs: list[JSONDict] = answer["jobs"]
        return jobs

    async def take_any(
        self, queues: Sequence[str], count: int = 1, *, wait: float = 0.0, worker: str | None = None
    ) -> list[JSONDict]:
        """Up to ``count`` jobs, each with its ``lease``, of the first of ``queues`` (in
        that order) that has any, waiting up to ``wait`` seconds for a job in any of them;
        an empty list when none came. Raises QueueNotFound if one of them does not exist."""
        params = [("queue", queue) for queue in queues]
        params += [("wait", repr(float(wait))), ("count", str(count))]
        if worker:
            params.append(("worker", worker))
        answer: JSONDict = await self.request("POST", ["take"], params=params, wait=wait)
        jobs: list[JSONDict] = answer["jobs"]
        return jobs

    async def take(
        self, queue: str, *, wait: float = 0.0, worker: str | None = None
    ) -> JSONDict | None:
        """The next job of ``queue`` with its lease, waiting up to ``wait`` seconds, or None."""
        jobs = await self.take_many(queue, 1, wait=wait, worker=worker)
        return jobs[0] if jobs else None

    async def get(self, queue: str, job_id: str) -> JSONDict:
        """Read one job (its ``result`` once finished)."""
        job: JSONDict = await self.request("GET", ["queues", queue, "jobs", job_id])
        return job

    async def list_jobs(
        self,
        queue: str,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
    ) -> JSONDict:
        """A page of the queue's jobs in creation order: ``{"jobs", "next_cursor"}``; pass
        ``next_cursor`` back as ``cursor`` until it is None."""
        params = {"limit": str(limit)}
        if status is not None:
            params["status"] = status
        if cursor is not None:
            params["cursor"] = cursor
        page: JSONDict = await self.request("GET", ["queues", queue, "jobs"], params=params)
        return page

    async def peek(self, queue: str, status: str = "pending") -> JSONDict | None:
        """The pending (delayed, buried) job that comes next, not taken; None if none.

        Raises QueueNotFound for a missing queue.
        """
        try:
            job: JSONDict = await self.request(
                "GET", ["queues", queue, "jobs", "next"], params={"status": status}
            )
        except JobNotFound:
            return None
        return job

    async def update(
        self, queue: str, job_id: str, fields: JSONDict, *, lease: str | None = None
    ) -> JSONDict:
        """Merge ``fields`` into the job; with ``lease``, also extend the lease."""
        job: JSONDict = await self.request(
            "PATCH", ["queues", queue, "jobs", job_id], fields, params=self._lease(lease)
        )
        return job

    async def delete(self, queue: str, job_id: str) -> JSONDict:
        """Delete the job whatever its state; the job as it was."""
        job: JSONDict = await self.request("DELETE", ["queues", queue, "jobs", job_id])
        return job

    async def _action(
        self, queue: str, job_id: str, action: str, body: JSONDict, lease: str | None = None
    ) -> JSONDict:
        job: JSONDict = await self.request(
            "POST", ["queues", queue, "jobs", job_id, action], body, params=self._lease(lease)
        )
        return job

    async def finish(
        self, queue: str, job_id: str, *, lease: str | None = None, result: Any = None
    ) -> JSONDict:
        """Mark the job finished with ``result``."""
        return await self._action(queue, job_id, "finish", {"result": result}, lease)

    async def fail(
        self,
        queue: str,
        job_id: str,
        *,
        lease: str | None = None,
        error: str,
        traceback: str | None = None,
        permanent: bool = False,
    ) -> JSONDict:
        """Report a failed run (retried while attempts remain; failed at once if permanent)."""
        body = {"error": error, "traceback": traceback, "permanent": permanent}
        return await self._action(queue, job_id, "fail", body, lease)

    async def release(
        self, queue: str, job_id: str, *, lease: str | None = None, delay: float = 0.0
    ) -> JSONDict:
        """Give a taken job back untried; it keeps its place (pending after ``delay``)."""
        return await self._action(queue, job_id, "release", {"delay": delay}, lease)

    async def requeue(
        self, queue: str, job_id: str, *, lease: str | None = None, delay: float = 0.0
    ) -> JSONDict:
        """Give a taken job back untried, to the end of the queue."""
        return await self._action(queue, job_id, "requeue", {"delay": delay}, lease)

    async def touch(
        self, queue: str, job_id: str, *, lease: str, ttr: float | None = None
    ) -> JSONDict:
        """Extend the lease to ``ttr`` seconds from now (default: the job's ttr)."""
        body = {} if ttr is None else {"ttr": ttr}
        return await self._action(queue, job_id, "touch", body, lease)

    async def bury(
        self, queue: str, job_id: str, *, lease: str | None = None, reason: str | None = None
    ) -> JSONDict:
        """Set the job aside until kicked."""
        return await self._action(queue, job_id, "bury", {"reason": reason}, lease)

    async def kick_job(self, queue: str, job_id: str) -> JSONDict:
        """Make a buried or failed (attempts renewed) or delayed job pending now; raises
        InvalidTransition for a job in another state."""
        return await self._action(queue, job_id, "kick", {})

    async def cancel(self, queue: str, job_id: str, *, lease: str | None = None) -> JSONDict:
        """Cancel the job; the job after it. A pending, delayed or buried job is cancelled
        at once; a started one is flagged ``cancel_requested``: its worker stops it within
        about a second (its next heartbeat) and it ends cancelled, never retried. With
        ``lease`` (its worker), a started job ends cancelled at once. Raises
        InvalidTransition for a job that ended, JobNotFound, QueueNotFound."""
        return await self._action(queue, job_id, "cancel", {}, lease)

    async def report(
        self, queue: str, outcomes: Sequence[Mapping[str, Any]], *, brief: bool = False
    ) -> list[JSONDict | TqueuesError]:
        """Report how 1 to 1,000 runs ended, in one request and one durable write.

        Each outcome is ``{"id", "lease", "action", ...}`` with ``action`` one of finish,
        fail, release, requeue, bury and that action's fields (finish: ``result``; fail:
        ``error``, ``traceback``, ``permanent``; release, requeue: ``delay``; bury:
        ``reason``). Each is applied on its own, as :meth:`finish` (and the others) would.
        The answer has one item per outcome, in order: the job after the change (durable),
        or the typed error that outcome alone got (LeaseMismatch, InvalidTransition,
        JobNotFound, QueueNotFound, StoreUnavailable, ...), returned, not raised. A
        malformed batch raises ValidationError (naming ``outcomes[i]``) and applies none;
        the transport raises as every call does. With ``brief``, a stored outcome's item
        is ``{"id", "status"}`` instead of the whole job.
        """
        body: JSONDict = {"outcomes": [dict(o) for o in outcomes]}
        if brief:
            body["brief"] = True
        answer: JSONDict = await self.request("POST", ["queues", queue, "outcomes"], body)
        return outcome_results(answer)

    async def report_and_take(
        self,
        queue: str,
        outcomes: Sequence[Mapping[str, Any]],
        count: int,
        *,
        worker: str | None = None,
        brief: bool = False,
    ) -> tuple[list[JSONDict | TqueuesError], list[JSONDict]]:
        """:meth:`report`, and take up to ``count`` (1 to 100) more jobs in the same round
        trip (as :meth:`take_many` without waiting): the results and the jobs taken, each
        with its ``lease`` (maybe none)."""
        body: JSONDict = {"outcomes": [dict(o) for o in outcomes], "take": count}
        if worker:
            body["worker"] = worker
        if brief:
            body["brief"] = True
        answer: JSONDict = await self.request("POST", ["queues", queue, "outcomes"], body)
        return outcome_results(answer), answer["jobs"]

    # -- the dispatcher ------------------------------------------------------------------

    async def health(self) -> JSONDict:
        """``{"status": "ok", "version", "queues"}`` while the dispatcher's store answers."""
        health: JSONDict = await self.request("GET", ["health"])
        return health
