"""The dispatcher's metrics, in the Prometheus text format (``GET /metrics``).

Everything is made with the official ``prometheus_client`` library, in a
:class:`~prometheus_client.CollectorRegistry` of each application (several dispatchers in
one process share nothing). What it costs:

* per job change, what :meth:`Metrics.changed` does: a histogram observation when a job
  is taken (its wait) or a run ends (its run time), a counter for a retry; the counts of
  job events are the store's own :attr:`~tqueues.stores.base.Store.counters`, read at
  scrape time;
* per HTTP request, one counter and one histogram observation (:func:`http_middleware`);
* per store write, one histogram observation (:func:`time_writes`);
* per scrape, for each queue, the store's counts of its jobs by status (the embedded
  store keeps them in a table of counts: one row a status; RethinkDB counts each status's
  range of an index, on the server) and the first of its pending jobs (through the
  status index), so a scrape costs the same with 10 or 1,000,000 jobs queued.

The names, labels and an example of each are in ``docs/observability.rst``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

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
    "expired", "promoted", "kicked", "deleted",
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
          "mutate_many", "reap")  # fmt: skip
#: A worker counts as alive this many seconds after its last take (a worker long-polls
#: at least every 30 s by default).
WORKERS_WINDOW = 60.0
_ENDS_OF_RUN = frozenset({"finished", "failed", "buried"})
_AGAIN = frozenset({JobStatus.PENDING, JobStatus.DELAYED})


class Metrics:
    """The metrics of one dispatcher: its registry, the instruments the job path feeds,
    and the collector of what is read at scrape time (:class:`StoreCollector`).

    It is the store's :class:`~tqueues.stores.base.Observer` while the application runs.
    """

    def __init__(self, *, workers_window: float = WORKERS_WINDOW) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.workers_window = workers_window
        self.wait = Histogram(
            "tqueues_job_wait_seconds",
            "Seconds a job waited pending (from ready_at) before it was taken.",
            ["queue"], buckets=WAIT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.run = Histogram(
            "tqueues_job_run_seconds",
            "Seconds from a job's take to the end of its run (finished, failed or buried).",
            ["queue"], buckets=RUN_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.retries = Counter(
            "tqueues_job_retries",
            "Runs that ended (failed, or their lease expired) with the job to run again.",
            ["queue"], registry=self.registry,
        )  # fmt: skip
        self.requests = Counter(
            "tqueues_http_requests",
            "HTTP requests answered, by method, route (the path template) and status.",
            ["method", "route", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tqueues_http_request_duration_seconds",
            "Seconds from a request's arrival to its answer (a WebSocket: its whole life).",
            ["method", "route"], buckets=HTTP_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.writes = Histogram(
            "tqueues_store_write_duration_seconds",
            "Seconds a store write took, as the dispatcher waited for it (durable).",
            ["operation"], buckets=WRITE_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.collector = StoreCollector(self)
        self.registry.register(self.collector)
        #: The worker ids seen taking, with the loop's time of their last take.
        self.takers: dict[str, float] = {}
        # Each labelled child looked up once (``labels()`` builds and locks each call).
        self._children: dict[Any, Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- the store's Observer ------------------------------------------------------------

    def changed(self, job: JobRecord, before: JobRecord | None) -> None:
        """Observe a job's change: its wait when taken, its run time when a run ended, a
        retry when a run ended with the job to run again."""
        event = job.event
        if event == "taken":
            if job.started_at is not None:
                waited = max(job.started_at - job.ready_at, 0.0)
                self._child(self.wait, job.queue).observe(waited)
        elif event in _ENDS_OF_RUN:
            if before is not None and before.status is JobStatus.STARTED and before.started_at:
                ended = job.finished_at or clock.now()
                self._child(self.run, job.queue).observe(max(ended - before.started_at, 0.0))
            if event == "failed" and job.status in _AGAIN:
                self._child(self.retries, job.queue).inc()
        elif event == "expired" and job.status is JobStatus.PENDING:
            self._child(self.retries, job.queue).inc()

    def taking(self, worker: str) -> None:
        """Note a take by ``worker`` (it is alive for :attr:`workers_window` seconds)."""
        self.takers[worker] = time.monotonic()

    def workers_alive(self) -> int:
        """How many workers took (or long-polled) in the last :attr:`workers_window`
        seconds; forgets the others."""
        since = time.monotonic() - self.workers_window
        for worker in [w for w, seen in self.takers.items() if seen < since]:
            del self.takers[worker]
        return len(self.takers)

    # -- the HTTP layer and the store's writes -------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self._child(self.requests, method, route, str(status)).inc()
        self._child(self.latency, method, route).observe(seconds)

    def wrote(self, operation: str, seconds: float) -> None:
        """Observe one store write of ``operation`` that took ``seconds``."""
        self._child(self.writes, operation).observe(seconds)

    async def exposition(self, store: Store, accept: str = "") -> tuple[bytes, str]:
        """Read what the store holds now (:meth:`StoreCollector.refresh`); every metric in
        the format the ``accept`` header asks for (the Prometheus text format, or
        OpenMetrics), and its content type. Raises StoreUnavailable."""
        await self.collector.refresh(store)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


class StoreCollector(Collector):
    """What is read from the store at scrape time: jobs by queue and status, the age of
    each queue's oldest pending job, the events the store counted, the workers alive.

    :meth:`refresh` (async: the store's reads) runs before each exposition; ``collect``
    (called by the registry, not async) yields what it read.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._counts: dict[str, dict[JobStatus, int]] = {}
        self._oldest: dict[str, float] = {}
        self._events: dict[str, dict[str, int]] = {}

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

    def describe(self) -> list[Metric]:
        """Nothing: the families differ with the queues (the registry then calls collect)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families read by the last :meth:`refresh`."""
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
        for queue, counts in self._counts.items():
            for status in JobStatus:
                jobs.add_metric([queue, status.value], counts.get(status, 0))
            oldest.add_metric([queue], self._oldest.get(queue, 0.0))
            for event, count in self._events.get(queue, {}).items():
                events.add_metric([queue, event], count)
        workers = GaugeMetricFamily(
            "tqueues_workers_alive",
            f"Workers that took (or long-polled) in the last {self._metrics.workers_window:g} "
            "seconds, by their worker id.",
            value=self._metrics.workers_alive(),
        )
        yield from (jobs, oldest, events, workers)


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
        if operation is None:
            route = "unmatched"  # 404 and 405 of no route: the path could be anything
        elif (route := routes.get(operation.path, "")) == "":
            route = routes[operation.path] = document_path(operation.path)
        metrics.request(request.method, route, response.status, time.perf_counter() - started)
        return response

    return count_requests


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every metric in the Prometheus text format (OpenMetrics when the
    Accept header asks for it, as Prometheus does)."""
    accept = request.headers.get(hdrs.ACCEPT, "")
    body, content_type = await request.app[metrics_key].exposition(request.app[store_key], accept)
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


__all__ = ["Metrics", "StoreCollector", "http_middleware", "metrics", "metrics_key"]
