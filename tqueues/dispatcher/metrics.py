"""The dispatcher's metrics, in the Prometheus text format (``GET /metrics``).

Exported with the official ``prometheus_client`` library (its metric families, its
registry, its encoders), from a :class:`~prometheus_client.CollectorRegistry` of each
application (several dispatchers in one process share nothing). What it costs:

* per job change, what :meth:`Metrics.changed` does: a bisection and two additions
  (:class:`Distribution`) when a job is taken (its wait) or a run ends (its run time), a
  counter for a retry; the counts of job events are the store's own
  :attr:`~tqueues.stores.base.Store.counters`, read at scrape time;
* per HTTP request, a counter and a distribution (:func:`http_middleware`);
* per store write, a distribution (:func:`time_writes`);
* per scrape, for each queue, the store's counts of its jobs by status (the embedded
  store keeps them in memory, :mod:`tqueues.stores.census`; RethinkDB counts each
  status's range of an index, on the server) and the first of its pending jobs (through
  the status index), so a scrape costs the same with 10 or 1,000,000 jobs queued.

The names, labels and an example of each are in ``docs/observability.rst``.
"""

from __future__ import annotations

import bisect
import collections
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tqueues import clock
from tqueues.dispatcher.keys import store_key
from tqueues.dispatcher.operation import document_path, operation_of
from tqueues.errors import QueueNotFound
from tqueues.jobs import JobRecord, JobStatus
from tqueues.stores.base import Store

#: The kinds of job change counted in ``tqueues_job_events_total`` (the ``event`` of a
#: job's revision, :mod:`tqueues.lifecycle`); each queue has them all, zeros included.
EVENTS = (
    "put", "taken", "updated", "touched", "finished", "failed", "buried", "released",
    "expired", "promoted", "kicked", "cancel_requested", "cancelled", "awaited", "deleted",
)  # fmt: skip
#: Seconds: from a millisecond (a job handed to a waiting worker) to an hour.
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)  # fmt: skip
RUN_BUCKETS = WAIT_BUCKETS
#: Seconds: a request (long-polls and WebSockets last as long as they wait or stay open).
HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0, 30.0, 60.0)  # fmt: skip
#: Seconds: a store write, as the dispatcher waits for it (a group commit and its sync).
WRITE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)  # fmt: skip
#: The store's write primitives (:mod:`tqueues.stores.primitives`) that :func:`time_writes`
#: times, by the ``operation`` label they get.
WRITES = ("insert", "insert_many", "insert_and_claim", "claim_first", "mutate",
          "mutate_many", "mutate_and_claim", "reap")  # fmt: skip
#: The methods an unmatched request is counted under by name (others: ``other``).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ENDS_OF_RUN = frozenset({"finished", "failed", "buried", "cancelled"})
_AGAIN = frozenset({JobStatus.PENDING, JobStatus.DELAYED})
#: The states of a worker of the registry (WorkerRecord.state).
WORKER_STATES = ("running", "quiet", "stopping", "lost")


class Distribution:
    """What a histogram holds, kept with a bisection and two additions an observation
    (``prometheus_client``'s own Histogram takes a lock and walks its buckets: 2.4 µs an
    observation here, against 0.3); exported by :meth:`family`."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  #: per bucket (not cumulative), +Inf last
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least it."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """The cumulative buckets as a HistogramMetricFamily takes them."""
        total, out = 0, list[tuple[str, float]]()
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts,
                                strict=True):  # fmt: skip
            total += count
            out.append((bound, total))
        return out


class Metrics:
    """The metrics of one dispatcher: what the job path, the HTTP layer and the store's
    writes feed (plain counters and :class:`Distribution` objects, kept on the event
    loop's thread), and the registry that exports them and what the store holds
    (:class:`StoreCollector`, through ``prometheus_client``'s metric families).

    It is the store's :class:`~tqueues.stores.base.Observer` while the application runs.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.wait: dict[str, Distribution] = {}  #: by queue
        self.run: dict[str, Distribution] = {}  #: by queue
        self.retries: collections.Counter[str] = collections.Counter()  #: by queue
        #: by (method, route, status)
        self.requests: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.latency: dict[tuple[str, str], Distribution] = {}  #: by (method, route)
        self.writes: dict[str, Distribution] = {}  #: by operation
        self.collector = StoreCollector(self)
        self.registry.register(self.collector)

    # -- the store's Observer ------------------------------------------------------------

    def changed(self, job: JobRecord, before: JobRecord | None) -> None:
        """Observe a job's change: its wait when taken, its run time when a run ended, a
        retry when a run ended with the job to run again."""
        event = job.event
        if event == "taken":
            if job.started_at is not None:
                wait = self.wait.get(job.queue) or self.wait.setdefault(
                    job.queue, Distribution(WAIT_BUCKETS)
                )
                wait.observe(max(job.started_at - job.ready_at, 0.0))
        elif event in _ENDS_OF_RUN:
            if before is not None and before.status is JobStatus.STARTED and before.started_at:
                ended = job.finished_at or clock.now()
                run = self.run.get(job.queue) or self.run.setdefault(
                    job.queue, Distribution(RUN_BUCKETS)
                )
                run.observe(max(ended - before.started_at, 0.0))
            if event == "failed" and job.status in _AGAIN:
                self.retries[job.queue] += 1
        elif event == "expired" and job.status is JobStatus.PENDING:
            self.retries[job.queue] += 1

    # -- the HTTP layer and the store's writes -------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests[method, route, str(status)] += 1
        key = (method, route)
        latency = self.latency.get(key) or self.latency.setdefault(key, Distribution(HTTP_BUCKETS))
        latency.observe(seconds)

    def wrote(self, operation: str, seconds: float) -> None:
        """Observe one store write of ``operation`` that took ``seconds``."""
        writes = self.writes.get(operation) or self.writes.setdefault(
            operation, Distribution(WRITE_BUCKETS)
        )
        writes.observe(seconds)

    async def exposition(self, store: Store, accept: str = "") -> tuple[bytes, str]:
        """Read what the store holds now (:meth:`StoreCollector.refresh`); every metric in
        the format the ``accept`` header asks for (the Prometheus text format, or
        OpenMetrics), and its content type. Raises StoreUnavailable."""
        await self.collector.refresh(store)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class StoreCollector(Collector):
    """Every family, made at scrape time: what the store holds (jobs by queue and status,
    the age of each queue's oldest pending job, the events it counted, the workers of its
    registry by state) and what
    :class:`Metrics` kept.

    :meth:`refresh` (async: the store's reads) runs before each exposition; ``collect``
    (called by the registry, not async) yields the families.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts: dict[str, dict[JobStatus, int]] = {}
        self._oldest: dict[str, float] = {}
        self._events: dict[str, dict[str, int]] = {}
        self._workers: collections.Counter[str] = collections.Counter()  #: by state
        self._work: dict[str, int] = {}  #: the store's own counts (Store.work)

    async def refresh(self, store: Store) -> None:
        """Read each queue's counts by status and its first pending job (both indexed).
        A queue dropped meanwhile is left out. Raises StoreUnavailable."""
        counts: dict[str, dict[JobStatus, int]] = {}
        oldest: dict[str, float] = {}
        now = clock.now()
        for config in await store.list_queues():
            try:
                counts[config.name] = await store.count_jobs(config.name)
                page = await store.list_jobs(config.name, status=JobStatus.PENDING, limit=1)
            except QueueNotFound:
                continue
            oldest[config.name] = max(now - page.jobs[0].ready_at, 0.0) if page.jobs else 0.0
        self._counts, self._oldest = counts, oldest
        self._events = {
            queue: {event: store.counters[queue][event] for event in EVENTS} for queue in counts
        }
        # The registry (tqueues.stores.workers): a worker's heartbeat every 5 s, one row
        # or document a worker, dropped after 5 minutes unseen.
        self._workers = collections.Counter(w.state(now) for w in await store.list_workers())
        self._work = store.work()

    def collect(self) -> Iterator[Metric]:
        """The families: the store's as the last :meth:`refresh` read them, then the
        dispatcher's own."""
        m = self._metrics
        jobs = GaugeMetricFamily(
            "tqueues_jobs", "Jobs in the queue, by state.", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "tqueues_queue_oldest_pending_age_seconds",
            "Seconds since the queue's first pending job (in put order) became ready; 0 "
            "when none is pending (the queue's latency).",
            labels=["queue"],
        )
        events = CounterMetricFamily(
            "tqueues_job_events",
            "Job changes this dispatcher made since it started, by queue and event.",
            labels=["queue", "event"],
        )
        retries = CounterMetricFamily(
            "tqueues_job_retries",
            "Runs that ended (failed, or their lease expired) with the job to run again.",
            labels=["queue"],
        )
        for queue, counts in self._counts.items():
            for status in JobStatus:
                jobs.add_metric([queue, status.value], counts.get(status, 0))
            oldest.add_metric([queue], self._oldest.get(queue, 0.0))
            for event, count in self._events.get(queue, {}).items():
                events.add_metric([queue, event], count)
            retries.add_metric([queue], m.retries.get(queue, 0))
        yield from (jobs, oldest, events, retries)
        yield _histogram(
            "tqueues_job_wait_seconds",
            "Seconds a job waited pending (from ready_at) before it was taken.",
            ["queue"], {(queue,): d for queue, d in m.wait.items()},
        )  # fmt: skip
        yield _histogram(
            "tqueues_job_run_seconds",
            "Seconds from a job's take to the end of its run (finished, failed or buried).",
            ["queue"], {(queue,): d for queue, d in m.run.items()},
        )  # fmt: skip
        yield GaugeMetricFamily(
            "tqueues_workers_alive",
            "Workers of the registry whose last heartbeat is recent (not lost).",
            value=sum(n for state, n in self._workers.items() if state != "lost"),
        )
        workers = GaugeMetricFamily(
            "tqueues_workers",
            "Workers of the registry by state: running, quiet, stopping or lost.",
            labels=["state"],
        )
        for state in WORKER_STATES:
            workers.add_metric([state], self._workers.get(state, 0))
        yield workers
        requests = CounterMetricFamily(
            "tqueues_http_requests",
            "HTTP requests answered, by method, route (the path template) and status.",
            labels=["method", "route", "status"],
        )
        for key, count in m.requests.items():
            requests.add_metric(list(key), count)
        yield requests
        yield _histogram(
            "tqueues_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer (a WebSocket: its whole life).",
            ["method", "route"], dict(m.latency),
        )  # fmt: skip
        work = CounterMetricFamily(
            "tqueues_store_work",
            "What the store's own machinery did since this dispatcher opened it, by what "
            "(each store names its own counts: a group commit's operations and commits, "
            "say).",
            labels=["what"],
        )
        for what, count in self._work.items():
            work.add_metric([what], count)
        yield work
        yield _histogram(
            "tqueues_store_write_duration_seconds",
            "Seconds a store write took, as the dispatcher waited for it (durable).",
            ["operation"], {(operation,): d for operation, d in m.writes.items()},
        )  # fmt: skip


def _histogram(
    name: str, documentation: str, labels: list[str], series: dict[Any, Distribution]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, distribution in series.items():
        family.add_metric(list(values), distribution.buckets(), distribution.sum)
    return family


def time_writes(store: Store, observe: Callable[[str, float], None]) -> Callable[[], None]:
    """Time every call of the store's write primitives (:data:`WRITES`): ``observe`` is
    told ``(operation, seconds)`` as each ends, however it ends. Done on the instance, at
    the store boundary, so both stores are timed alike; the undo is returned."""
    for name in WRITES:
        setattr(store, name, _timed(getattr(store, name), name, observe))

    def undo() -> None:
        for name in WRITES:
            vars(store).pop(name, None)

    return undo


def _timed(
    write: Callable[..., Awaitable[Any]], name: str, observe: Callable[[str, float], None]
) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await write(*args, **kwargs)
        finally:
            observe(name, time.perf_counter() - started)

    return timed


#: The metrics of the application (set up by :func:`tqueues.dispatcher.app.create_app`).
metrics_key = web.AppKey("metrics", Metrics)


def http_middleware(metrics: Metrics) -> Any:
    """The middleware that counts every answer by method, route and status, and its
    latency (put outermost: it sees the status the client gets)."""

    routes: dict[str, str] = {}  #: the router's path -> the template

    @web.middleware
    async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        operation = operation_of(request)
        method = request.method
        if operation is None:
            route = "unmatched"  # 404 and 405 of no route: the path could be anything
            if method not in METHODS:  # nor may the method make series without end
                method = "other"
        elif (route := routes.get(operation.path, "")) == "":
            route = routes[operation.path] = document_path(operation.path)
        metrics.request(method, route, response.status, time.perf_counter() - started)
        return response

    return count_requests


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every metric in the Prometheus text format (OpenMetrics when the
    Accept header asks for it, as Prometheus does)."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    body, content_type = await request.app[metrics_key].exposition(request.app[store_key], accept)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


__all__ = ["Metrics", "StoreCollector", "http_middleware", "metrics", "metrics_key"]
