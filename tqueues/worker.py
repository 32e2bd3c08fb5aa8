"""The worker side: :class:`Worker` takes jobs, :class:`Job` runs one and reports back.

``Worker`` is an async iterator of ``Job``; ``Job`` is an async context manager::

    async with Worker("http://127.0.0.1:8080/", ["default"], allow=["myapp.tasks"]) as worker:
        async for job in worker:
            async with job:        # runs the method, keeping its lease alive
                pass               # job.result / job.exception are set here
                                   # on exit: finished, failed or given back

:meth:`Worker.run` does that for ``concurrency`` jobs at once, with graceful shutdown.

A Worker is its run loop and three parts, each with its own contract:
:class:`~tqueues.take_loop.TakeLoop` (where the next job comes from),
:class:`~tqueues.prefetch.Prefetch` (how many jobs to hold and ask for, and those held
ready) and :class:`~tqueues.shutdown.Shutdown` (the stop signal and the grace period).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import tqueues
from tqueues.client import Client
from tqueues.client.stream import TakeStream
from tqueues.heartbeat import INTERVAL as HEARTBEAT
from tqueues.heartbeat import Heartbeat
from tqueues.prefetch import Prefetch, loop_time
from tqueues.reporting import Reporter
from tqueues.running import Job, busy_threads
from tqueues.shutdown import Shutdown, give_back
from tqueues.take_loop import TakeLoop

log = logging.getLogger(__name__)


class _Slot:
    """One job's place among the ``concurrency`` of :meth:`Worker.run`, freed once: when
    the job's method has returned, or when its task ends, whichever comes first."""

    def __init__(self, slots: asyncio.Semaphore, prefetch: Prefetch) -> None:
        self.slots = slots
        self.prefetch = prefetch
        self.task: asyncio.Task[None] | None = None
        self.freed = False
        self.started = loop_time()

    def ended(self, task: asyncio.Task[None]) -> None:
        """The job's task ended (done callback): the slot is free if it was not yet."""
        self.free()

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            self.prefetch.in_method.discard(self.task)
            self.prefetch.ran(loop_time() - self.started)
            self.slots.release()


class Worker:
    """Takes jobs from ``queues`` of the dispatcher at ``endpoint_url``; an async iterator of Job.

    ``endpoint_url`` may be a list: dispatchers of one cluster (one RethinkDB database);
    the worker uses one, and moves to the next when it cannot be reached or stops
    answering (see :class:`~tqueues.client.Client`). A take or an outcome report that got
    no answer is retried there, with the same meaning, since leases are stored in the
    database: an outcome already applied is refused as lost, a take that went unanswered
    leaves its jobs to their leases' expiry (they are run once, later).

    Long-polls (``wait`` seconds per request) and never busy-polls; when the dispatcher
    cannot be reached it retries with exponential backoff (0.1 s to 5 s, with jitter).
    ``token`` authenticates to the dispatcher. ``timeout`` (seconds) bounds each run: a
    run that takes longer is cancelled and reported as failed with a TimeoutError (a plain
    function's thread cannot be stopped: its outcome is then ignored).
    ``allow`` restricts the modules a job's method may come from (empty: any). With
    ``burst``, iteration ends once the queues are empty. Of several queues, each take asks
    for jobs of the first that has any, starting at the next queue in turn (one request),
    or always at the first with ``strict_order``.
    ``prefetch`` (default three times
    ``concurrency``) caps the jobs :meth:`run` holds taken beyond the running ones; see
    :meth:`prefetch_target`. While :meth:`run` runs, a heartbeat every ``heartbeat``
    seconds (5; more often if the dispatcher asks; every second while jobs run) tells the
    dispatcher's worker registry what this worker runs, and passes on an operator's quiet
    (:meth:`quiet`) or stop (:meth:`stop`), and the running jobs cancelled
    (:meth:`cancel_running`). Raises ValueError for no queues or a negative prefetch.
    """

    def __init__(
        self,
        endpoint_url: str | Sequence[str],
        queues: Sequence[str],
        *,
        concurrency: int = 1,
        wait: float = 30.0,
        grace: float = 30.0,
        allow: Sequence[str] = (),
        timeout: float | None = None,
        burst: bool = False,
        client: Client | None = None,
        token: str | None = None,
        worker_id: str | None = None,
        prefetch: int | None = None,
        strict_order: bool = False,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if not queues:
            raise ValueError("a worker needs at least one queue")
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.wait = wait
        self.grace = grace
        self.allow = tuple(allow)
        self.timeout = timeout
        self.burst = burst
        #: Of several queues, each take starts at the first (as RQ's workers do: a later
        #: queue gets a turn only while the earlier ones are empty) instead of the next in
        #: turn.
        self.strict_order = strict_order
        #: The most jobs :meth:`run` holds taken beyond the ``concurrency`` running ones,
        #: ready to start (by default three times the concurrency: a worker holds four
        #: times its concurrency, as Celery's default prefetch multiplier does); fewer once
        #: jobs are seen to outlast a round trip (see :meth:`prefetch_target`).
        self.prefetch = 3 * concurrency if prefetch is None else prefetch
        if self.prefetch < 0:
            raise ValueError("prefetch must not be negative")
        self.client = client or Client(endpoint_url, token=token)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.counts: collections.Counter[str] = collections.Counter()
        #: How many jobs to hold, and those held ready (:mod:`tqueues.prefetch`).
        self.held = Prefetch(concurrency, self.prefetch)
        #: The stop signal, and the grace period (:mod:`tqueues.shutdown`).
        self.shutdown = Shutdown()
        #: Where the next job comes from (:mod:`tqueues.take_loop`).
        self.takes = TakeLoop(
            self.client,
            self.queues,
            prefetch=self.held,
            shutdown=self.shutdown,
            counts=self.counts,
            worker_id=self.worker_id,
            wait=wait,
            burst=burst,
            strict_order=strict_order,
        )
        #: Sends the outcomes of this worker's jobs, many in one request when they pile up;
        #: in :meth:`run` on one queue, each such request also takes the next jobs.
        self.reporter = Reporter(self.client, taker=self if len(self.queues) == 1 else None)
        self.started_at = time.time()  #: when this worker was made (epoch seconds).
        #: The jobs :meth:`run` runs now, with when each started (epoch seconds).
        self.running: dict[asyncio.Task[None], tuple[Job, float]] = {}
        #: Tells the dispatcher's registry about this worker while :meth:`run` runs, and
        #: passes on what an operator asks (:meth:`obey`).
        self.heartbeat = Heartbeat(
            self.client,
            self.worker_id,
            self.describe,
            self.obey,
            interval=heartbeat,
            cancel=self.cancel_running,
            busy=lambda: bool(self.running),
        )

    @property
    def _takes(self) -> TakeStream | None:
        """The take stream, or None once the dispatcher turned out not to have one."""
        return self.takes.stream

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Deliver the outcomes still queued, give back any prefetched jobs and close the
        HTTP session."""
        self.held.feeding = False  # nothing more is taken along with the last outcomes
        await self.reporter.flush()
        await give_back(self.client, self.held.drain())
        await self.takes.close()
        await self.client.close()

    def stop(self) -> None:
        """Stop taking jobs (running ones carry on); safe to call from a signal handler."""
        self.shutdown.stop()

    def quiet(self) -> None:
        """Take no more jobs (running ones carry on) but do not exit: :meth:`run` returns
        only after :meth:`stop`. Safe to call from a signal handler."""
        self.shutdown.quiet()

    @property
    def stopping(self) -> bool:
        """Whether this worker takes no more jobs (stopped or quiet)."""
        return self.shutdown.stopping

    # -- the registry ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This worker as its heartbeat tells the dispatcher (see :mod:`tqueues.heartbeat`)."""
        activity = "stopping" if self.shutdown.stopped else "quiet" if self.stopping else "running"
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": tqueues.__version__,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": [
                {"queue": job.queue, "id": job.id, "started_at": started}
                for job, started in self.running.values()
            ],
            "started_at": self.started_at,
            "finished": self.counts["finished"],
            "failed": self.counts["failed"],
            "activity": activity,
        }

    def obey(self, command: str) -> None:
        """Do what an operator asked through the registry: "quiet" (:meth:`quiet`) or
        "stop" (:meth:`stop`); other commands are ignored."""
        if command == "stop":
            self.stop()
        elif command == "quiet":
            self.quiet()
        self.heartbeat.soon()

    def cancel_running(self, ids: Sequence[str]) -> None:
        """Stop the running jobs of ``ids`` (cancelled: the heartbeat's answer says so):
        see :meth:`Job.request_cancel <tqueues.running.Job.request_cancel>`."""
        wanted = set(ids)
        for job, _ in list(self.running.values()):
            if job.id in wanted:
                job.request_cancel()

    def __aiter__(self) -> Worker:
        return self

    async def __anext__(self) -> Job:
        doc = await self.take()
        if doc is None:
            raise StopAsyncIteration
        return self._job(doc)

    def _job(self, doc: dict[str, Any]) -> Job:
        return Job(self.client, doc, allow=self.allow, timeout=self.timeout, reporter=self.reporter)

    # -- what a take asks for (the Taker of the Reporter) ------------------------------------

    def prefetch_target(self) -> int:
        """How many taken jobs are worth holding ready to start: enough to keep the slots
        busy for one round trip to the dispatcher, at most ``prefetch``; none until a job
        has ended (see :meth:`Prefetch.target <tqueues.prefetch.Prefetch.target>`)."""
        return self.held.target()

    def wanted(self) -> int:
        """How many more jobs :meth:`run` can hold: ``concurrency`` plus the prefetch
        target, less those running their method, waiting to start, or asked for by a
        request in flight."""
        return self.held.wanted()

    def ran(self, seconds: float) -> None:
        """A job's method returned after ``seconds``."""
        self.held.ran(seconds)

    def take_along(self, queue: str) -> int:
        """How many jobs an outcome report for ``queue`` should take (counted as asked):
        none once a take came back short (the queue ran dry: a long-poll take waits for
        the next job, so that a job put meanwhile is handed straight to it)."""
        return self.held.ask_along(stopping=self.stopping)

    def taken_along(self, queue: str, asked: int, docs: Sequence[dict[str, Any]]) -> None:
        """The report that asked for ``asked`` jobs ended with ``docs`` (maybe none)."""
        self.held.taken_along(asked, docs)

    # -- taking and running ------------------------------------------------------------------

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        if self.stopping:
            self.heartbeat.soon()  # a quiet worker's running jobs: the registry sees each end

    async def _stay_quiet(self, running: set[asyncio.Task[None]]) -> None:
        """Quiet: give back the jobs held ready, let the running ones end (no grace period
        cuts them short), then wait for :meth:`stop`."""
        self.held.feeding = False
        await give_back(self.client, self.held.drain())
        log.info("worker %s is quiet: it takes no more jobs", self.worker_id,
                 extra={"action": "quiet"})  # fmt: skip
        stopped = asyncio.ensure_future(self.shutdown.until_shut_down())
        try:
            while running and not stopped.done():
                await asyncio.wait({*running, stopped}, return_when=asyncio.FIRST_COMPLETED)
            await stopped
        finally:
            stopped.cancel()

    async def take(self) -> dict[str, Any] | None:
        """The next job document, or None once stopping (or, in burst mode, when empty)."""
        return await self.takes.next()

    async def run_job(self, job: Job, ran: Callable[[], None] | None = None) -> None:
        """Run one job to its reported outcome, counting it; ``ran`` is called as soon as
        its method has returned, before the outcome is delivered."""
        async with job:
            if ran is not None:
                ran()
        self.counts[
            "cancelled" if job.cancelled else "failed" if job.exception else "finished"
        ] += 1

    async def run(self) -> collections.Counter[str]:
        """Run jobs, ``concurrency`` at a time, until :meth:`stop` (or, in burst mode, empty).

        A slot is free again once its job's method has returned: the next jobs start
        while the outcome is being delivered (at most ``concurrency + prefetch`` outcomes
        wait for delivery at a time). On stop: take nothing more, give running jobs ``grace``
        seconds to finish (and deliver their outcomes), then cancel them (each gives its
        job back), then close. Returns the counts.
        """
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()  #: jobs running or reporting
        in_method = self.held.in_method  #: jobs whose method has not returned
        until_stopped = self.shutdown.until_stopped
        self.held.feeding = True
        most = 2 * self.concurrency + self.prefetch  #: jobs running, and reporting
        beating = asyncio.create_task(self.heartbeat.run(), name="heartbeat")
        try:
            while not self.stopping:
                # A stop must not wait for a free slot: the grace period starts now.
                if not slots.locked():
                    await slots.acquire()  # a free slot: returns at once
                elif not await until_stopped(slots.acquire()):
                    break
                while len(running) >= most and not self.stopping:
                    await until_stopped(asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED))
                doc = await self.take() if not self.stopping else None
                if doc is None:
                    slots.release()
                    if self.burst and running:
                        await asyncio.wait(running)
                        continue
                    break
                slot = _Slot(slots, self.held)
                job = self._job(doc)
                task = asyncio.create_task(self.run_job(job, slot.free))
                slot.task = task
                self.running[task] = (job, time.time())
                task.add_done_callback(self._ended)
                running.add(task)
                in_method.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(slot.ended)
            if self.stopping and not self.shutdown.stopped:
                await self._stay_quiet(running)
        finally:
            await self.shutdown.drain(running, in_method, self.grace, self.counts)
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
            await self.heartbeat.last()
            await self.close()
        log.info(
            "worker %s stopped: %s",
            self.worker_id,
            ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "no jobs",
            extra={"action": "worker_stopped"},
        )
        return self.counts


__all__ = ["Job", "Worker", "busy_threads"]
