"""The worker side: :class:`Worker` takes jobs, :class:`Job` runs one and reports back.

``Worker`` is an async iterator of ``Job``; ``Job`` is an async context manager::

    async with Worker("http://127.0.0.1:8080/", ["default"], allow=["myapp.tasks"]) as worker:
        async for job in worker:
            async with job:        # runs the method, keeping its lease alive
                pass               # job.result / job.exception are set here
                                   # on exit: finished, failed or given back

:meth:`Worker.run` does that for ``concurrency`` jobs at once, with graceful shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from tqueues.client import Client
from tqueues.client.stream import TakeStream
from tqueues.errors import NotFound, QueueNotFound, TqueuesError
from tqueues.limits import MAX_TAKE
from tqueues.reporting import LOST, TRANSIENT, Reporter
from tqueues.retry import Backoff
from tqueues.running import Job, busy_threads, ttr_of

log = logging.getLogger(__name__)


def _average(average: float | None, sample: float, weight: float = 0.2) -> float:
    """An exponentially weighted running average (the first sample starts it)."""
    return sample if average is None else average + weight * (sample - average)


#: Seconds a take is assumed to take (for the prefetch) until one has been measured.
ASSUMED_ROUND_TRIP = 0.005


class _Slot:
    """One job's place among the ``concurrency`` of :meth:`Worker.run`, freed once: when
    the job's method has returned, or when its task ends, whichever comes first."""

    def __init__(self, slots: asyncio.Semaphore, worker: Worker) -> None:
        self.slots = slots
        self.worker = worker
        self.task: asyncio.Task[None] | None = None
        self.freed = False
        self.started = worker._loop_time()

    def ended(self, task: asyncio.Task[None]) -> None:
        """The job's task ended (done callback): the slot is free if it was not yet."""
        self.free()

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            self.worker._in_method.discard(self.task)
            self.worker.ran(self.worker._loop_time() - self.started)
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
    :meth:`prefetch_target`. Raises ValueError for no queues or a negative prefetch.
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
        #: The long-poll takes go over this WebSocket (one small frame each way, and the
        #: jobs a put hands over go out the moment they are claimed); None once the
        #: dispatcher turned out not to have it (an older one): then over HTTP.
        self._takes: TakeStream | None = self.client.take_stream()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        #: Sends the outcomes of this worker's jobs, many in one request when they pile up;
        #: in :meth:`run` on one queue, each such request also takes the next jobs.
        self.reporter = Reporter(self.client, taker=self if len(self.queues) == 1 else None)
        self.counts: collections.Counter[str] = collections.Counter()
        self._stopping = asyncio.Event()
        self._interruptible: set[asyncio.Future[Any]] = set()  #: what stop() cancels
        #: Jobs taken and not started: (document, loop time it arrived).
        self._prefetched: collections.deque[tuple[dict[str, Any], float]] = collections.deque()
        self._next_queue = 0
        self._feeding = False  #: run() is on: takes ask for what keeps the worker busy
        self._in_method: set[asyncio.Task[None]] = set()  #: run()'s jobs in their method
        self._asking = 0  #: jobs asked for by requests in flight
        self._arrived = asyncio.Event()  #: set whenever such a request ends
        self._job_seconds: float | None = None  #: running average of a method's run time
        self._round_trip: float | None = None  #: running average of a take along a report
        self._along_since: float | None = None  #: when the report taking jobs along left
        self._ran_dry = False  #: the last take got fewer jobs than it asked for

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Deliver the outcomes still queued, give back any prefetched jobs and close the
        HTTP session."""
        self._feeding = False  # nothing more is taken along with the last outcomes
        await self.reporter.flush()
        by_queue: dict[str, list[dict[str, Any]]] = {}
        while self._prefetched:
            doc, _ = self._prefetched.popleft()
            release = {"id": doc["id"], "lease": doc.get("lease"), "action": "release"}
            by_queue.setdefault(doc["queue"], []).append(release)
        for queue, releases in by_queue.items():
            with contextlib.suppress(TqueuesError):  # else their leases expire: they run again
                await self.client.report(queue, releases)
        if self._takes is not None:
            await self._takes.close()
        await self.client.close()

    def stop(self) -> None:
        """Stop taking jobs (running ones carry on); safe to call from a signal handler."""
        self._stopping.set()
        for waiting in list(self._interruptible):
            waiting.cancel()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

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
        busy for one round trip to the dispatcher (``concurrency * round trip / run
        time``, both running averages; the round trip taken as ASSUMED_ROUND_TRIP until
        measured, rounded to the nearest), at most ``prefetch``. Short jobs get the whole
        prefetch; jobs that outlast ``concurrency`` round trips get none, so that they do
        not wait in this worker while another is idle (a freed slot then waits one round
        trip for its next job). None until a job's run time is known: a worker that has
        not seen a job end holds no more jobs than it has slots."""
        if self._job_seconds is None:
            return 0
        round_trip = ASSUMED_ROUND_TRIP if self._round_trip is None else self._round_trip
        enough = self.concurrency * round_trip / max(self._job_seconds, 1e-6)
        return min(self.prefetch, math.floor(enough + 0.5))

    def wanted(self) -> int:
        """How many more jobs :meth:`run` can hold: ``concurrency`` plus the prefetch
        target, less those running their method, waiting to start, or asked for by a
        request in flight."""
        held = len(self._in_method) + len(self._prefetched) + self._asking
        return max(0, min(self.concurrency + self.prefetch_target() - held, MAX_TAKE))

    def ran(self, seconds: float) -> None:
        """A job's method returned after ``seconds``."""
        self._job_seconds = _average(self._job_seconds, seconds)

    def take_along(self, queue: str) -> int:
        """How many jobs an outcome report for ``queue`` should take (counted as asked):
        none once a take came back short (the queue ran dry: a long-poll take waits for
        the next job, so that a job put meanwhile is handed straight to it)."""
        along = self._feeding and not self.stopping and not self._ran_dry
        count = self.wanted() if along else 0
        self._asking += count
        if count:
            self._along_since = self._loop_time()
        return count

    def taken_along(self, queue: str, asked: int, docs: Sequence[dict[str, Any]]) -> None:
        """The report that asked for ``asked`` jobs ended with ``docs`` (maybe none)."""
        since, self._along_since = self._along_since, None
        if since is not None and docs:
            self._round_trip = _average(self._round_trip, self._loop_time() - since)
        self._received(asked, len(docs), docs)

    def _received(self, asked: int, got: int, ready: Sequence[dict[str, Any]]) -> None:
        """A request that asked for ``asked`` jobs ended with ``got``; ``ready`` of them
        wait for a slot (the rest start at once)."""
        self._asking -= asked
        if asked:
            self._ran_dry = got < asked
        now = self._loop_time()
        self._prefetched.extend((doc, now) for doc in ready)
        self._arrived.set()

    # -- taking ------------------------------------------------------------------------------

    async def take(self) -> dict[str, Any] | None:
        """The next job document, or None once stopping (or, in burst mode, when empty)."""
        backoff = Backoff()  # 0.1 s to 5 s, with jitter
        while not self.stopping:
            if self._prefetched:
                doc, arrived = self._prefetched.popleft()
                if self._loop_time() - arrived > ttr_of(doc) / 3:
                    extended = await self._extend_lease(doc)
                    if extended is None:
                        continue
                    doc = extended
                self.counts["taken"] += 1
                return doc
            if self._asking:  # a request in flight brings jobs, or ends empty: wait for it
                self._arrived.clear()
                await self._until_stopped(self._arrived.wait())
                continue
            try:
                doc = await self._until_stopped(self._take_any())
            except (*TRANSIENT, QueueNotFound) as exc:
                # A queue that does not exist yet is waited for, like a dispatcher that is
                # not up yet: workers may start before whoever creates their queues.
                if self.burst and isinstance(exc, QueueNotFound):
                    return None
                pause = backoff.next()
                # One line a person reads: what failed (the client's message names the
                # URL and the reason in words) and when the next try is.
                log.warning(
                    "cannot take: %s; retrying in %.1f s",
                    exc.message,
                    pause,
                    extra={"action": "take_retry"},
                )
                await self._until_stopped(asyncio.sleep(pause))
                continue
            backoff.reset()
            if doc is not None:
                self.counts["taken"] += 1
                return doc
            if self.burst:
                return None
        return None

    async def _until_stopped(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` unless the worker stops first (:meth:`stop` cancels it: then
        None). Awaited directly, so whatever ends it resumes the caller at once."""
        if self.stopping:
            if inspect.iscoroutine(coro):
                coro.close()
            return None
        task = asyncio.ensure_future(coro)
        self._interruptible.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            caller = asyncio.current_task()
            if self.stopping and task.cancelled() and not (caller and caller.cancelling()):
                return None  # stop() cancelled it, not our caller's cancellation
            raise
        finally:
            self._interruptible.discard(task)

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()

    async def _extend_lease(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A taken job that waited more than a third of its ttr before it could start: its
        lease extended, or None if that is refused (the lease expired and the job is
        someone else's now)."""
        try:
            await self.client.update(doc["queue"], doc["id"], {}, lease=doc.get("lease"))
        except LOST as exc:
            log.warning(
                "job %s waited past its lease and was not started: %s",
                doc["id"],
                exc.message,
                extra={"action": "lease_lost"},
            )
            return None
        except TRANSIENT:
            pass  # the lease may still hold; at worst the job runs twice (at least once)
        return doc

    async def _take_any(self) -> dict[str, Any] | None:
        """One take (a long-poll unless in burst mode) of what keeps the worker busy; of
        several queues, from the first that has jobs, starting at the next one in turn."""
        wait = 0.0 if self.burst else self.wait
        count = max(self.wanted(), 1) if self._feeding else 1
        self._asking += count
        docs: list[dict[str, Any]] = []
        try:
            order = self.queues
            if len(self.queues) > 1 and not self.strict_order:
                start = self._next_queue
                self._next_queue = (start + 1) % len(self.queues)
                order = self.queues[start:] + self.queues[:start]
            docs = await self._take_docs(order, count, wait)
        finally:
            self._received(count, len(docs), docs[1:])
        return docs[0] if docs else None

    async def _take_docs(
        self, queues: Sequence[str], count: int, wait: float
    ) -> list[dict[str, Any]]:
        """One take of ``queues`` (in that order): on the take stream, or over HTTP when
        the dispatcher has none."""
        if self._takes is not None:
            try:
                return await self._takes.take(queues, count, wait=wait, worker=self.worker_id)
            except NotFound as exc:
                if isinstance(exc, QueueNotFound):
                    raise
                log.info(
                    "the dispatcher has no take stream; taking over HTTP",
                    extra={"action": "take_stream_missing"},
                )
                self._takes = None
        if len(queues) == 1:
            return await self.client.take_many(queues[0], count, wait=wait, worker=self.worker_id)
        return await self.client.take_any(queues, count, wait=wait, worker=self.worker_id)

    async def run_job(self, job: Job, ran: Callable[[], None] | None = None) -> None:
        """Run one job to its reported outcome, counting it; ``ran`` is called as soon as
        its method has returned, before the outcome is delivered."""
        async with job:
            if ran is not None:
                ran()
        self.counts["failed" if job.exception else "finished"] += 1

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
        in_method = self._in_method  #: jobs whose method has not returned
        self._feeding = True
        most = 2 * self.concurrency + self.prefetch  #: jobs running, and reporting
        try:
            while not self.stopping:
                # A stop must not wait for a free slot: the grace period starts now.
                if not slots.locked():
                    await slots.acquire()  # a free slot: returns at once
                elif not await self._until_stopped(slots.acquire()):
                    break
                while len(running) >= most and not self.stopping:
                    await self._until_stopped(
                        asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    )
                doc = await self.take() if not self.stopping else None
                if doc is None:
                    slots.release()
                    if self.burst and running:
                        await asyncio.wait(running)
                        continue
                    break
                slot = _Slot(slots, self)
                task = asyncio.create_task(self.run_job(self._job(doc), slot.free))
                slot.task = task
                running.add(task)
                in_method.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(slot.ended)
        finally:
            await self._shutdown(running, in_method)
        log.info(
            "worker %s stopped: %s",
            self.worker_id,
            ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "no jobs",
            extra={"action": "worker_stopped"},
        )
        return self.counts

    async def _shutdown(
        self, running: set[asyncio.Task[None]], in_method: set[asyncio.Task[None]]
    ) -> None:
        if running:
            log.info(
                "waiting up to %gs for %d running job(s)",
                self.grace,
                len(running),
                extra={"action": "draining"},
            )
            _, pending = await asyncio.wait(running, timeout=self.grace)
            given_back = len(pending & in_method)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                self.counts["given_back"] += given_back
        await self.close()


__all__ = ["Job", "Worker", "busy_threads"]
