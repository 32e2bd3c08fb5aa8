"""Running one taken job: :class:`Job`, the async context manager that calls the job's
method, keeps its lease alive and reports how the run ended.

``tqueues.worker`` re-exports it (``tqueues.worker.Job``); :class:`~tqueues.worker.Worker`
is what takes jobs and runs many of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import traceback as tb_module
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from tqueues import codec
from tqueues.client import Client
from tqueues.errors import ImportTargetError, MethodNotAllowed
from tqueues.limits import DEFAULT_TTR
from tqueues.loading import InvalidMethodName, resolve
from tqueues.reporting import LOST, TRANSIENT, Reporter, deliver, shielded

log = logging.getLogger("tqueues.worker")  # the worker's log: one name for its jobs too
_busy_threads = 0
_busy_lock = threading.Lock()


def ttr_of(doc: dict[str, Any]) -> float:
    """A taken job document's ttr, in seconds (DEFAULT_TTR when it has none)."""
    return float(doc.get("ttr") or DEFAULT_TTR)


def busy_threads() -> int:
    """How many plain (blocking) job functions are running in threads right now.

    A thread cannot be cancelled: after a shutdown has given such a job back, the process
    may exit without waiting for it (the job runs again elsewhere).
    """
    return _busy_threads


def _in_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    global _busy_threads
    with _busy_lock:
        _busy_threads += 1
    try:
        return func(*args, **kwargs)
    finally:
        with _busy_lock:
            _busy_threads -= 1


class JobCancelled(Exception):
    """How a run stopped by request ended (:meth:`Job.request_cancel`)."""


class Job:
    """One taken job: runs its method in ``async with`` and reports the outcome.

    On entry the lease is kept alive (a touch every ``ttr / 3`` seconds) and the method is
    called with the job's ``args`` and ``kwargs`` plus ``tq_parent_job=self``; coroutine
    functions are awaited, plain functions run in a thread. On exit the job is finished
    with the method's return value, or failed with the error and traceback, or, if the
    worker is being cancelled, given back untried. A run whose method this worker may not
    run or cannot load fails as any other (retried, then buried; logged as a WARNING);
    only a name no worker runs (:class:`~tqueues.loading.InvalidMethodName`) is reported
    as a permanent failure.

    A job cancelled while it runs (:meth:`request_cancel`, which the worker calls when
    its heartbeat hears of it) stops: a coroutine method gets ``asyncio.CancelledError``
    where it awaits; a plain function sees :attr:`cancelled` become true and should
    return. Either way the run is reported as stopped (a permanent failure, which the
    dispatcher ends ``cancelled`` for a job asked to stop), whatever the method returned.

    The outcome goes through ``reporter`` (a Worker's, batching the outcomes of its jobs)
    when given, else in a request of its own; either way ``async with`` ends once it is
    stored (or refused, or given up after ``ttr`` seconds of transport errors).
    """

    def __init__(
        self,
        client: Client,
        doc: dict[str, Any],
        *,
        allow: Sequence[str] = (),
        timeout: float | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.client = client
        self.reporter = reporter
        self.data = doc
        self.id: str = doc["id"]
        self.queue: str = doc["queue"]
        self.lease: str | None = doc.get("lease")
        self.method: str = doc["method"]
        self.args: list[Any] = list(doc.get("args") or [])
        self.kwargs: dict[str, Any] = dict(doc.get("kwargs") or {})
        self.ttr: float = ttr_of(doc)
        self.allow = tuple(allow)
        self.timeout = timeout
        self.result: Any = None
        self.exception: BaseException | None = None
        self.lease_lost = False
        #: Why the method could not be loaded (None: it was, or was not tried yet).
        self.load_error: ImportTargetError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._touch_timer: asyncio.TimerHandle | None = None
        self._toucher: asyncio.Task[None] | None = None
        self._started = 0.0  #: time.monotonic() when the run started
        self._task: asyncio.Task[Any] | None = None  #: the task running the method
        self._awaiting = False  #: a coroutine method is being awaited
        self._cancel_sent = False  #: our cancel of the task, not yet caught
        self._cancelled = False
        self._returned = False  #: the method returned (or raised): too late to stop it

    @property
    def cancelled(self) -> bool:
        """True once the job was asked to stop (cancelled while it runs): a plain
        function checks it and returns."""
        return self._cancelled

    def request_cancel(self) -> None:
        """The job was cancelled: set :attr:`cancelled` and, while a coroutine method runs,
        cancel it (``asyncio.CancelledError`` inside it). Idempotent; on the event loop.
        Ignored once the method has returned: its outcome stands (a finish wins)."""
        if self._cancelled or self._returned:
            return
        self._cancelled = True
        log.info("%r cancelled by request", self, extra=self._fields("cancel_requested"))
        if self._awaiting and self._task is not None:
            self._cancel_sent = True
            self._task.cancel("the job was cancelled")

    def __repr__(self) -> str:
        return f"<Job {self.queue}/{self.id} {self.method}>"

    # -- called by the job's method ----------------------------------------------------------

    def update(self, fields: dict[str, Any]) -> Any:
        """Merge ``fields`` into the job on the dispatcher (and extend the lease).

        From a coroutine: ``await tq_parent_job.update({...})``. From a plain function (run
        in a thread): ``tq_parent_job.update({...})`` blocks until it is stored.
        """
        coro = self._update(fields)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None or self._loop is None:
            return coro
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _update(self, fields: dict[str, Any]) -> dict[str, Any]:
        doc = await self.client.update(self.queue, self.id, fields, lease=self.lease)
        self.data = {**doc, "lease": self.lease}
        return doc

    # -- running -----------------------------------------------------------------------------

    def _start_touching(self) -> None:
        """The first ``ttr / 3`` has passed (a timer, not a task, until then: most jobs end
        sooner, and a task per job costs the worker more than the job)."""
        self._touch_timer = None
        self._toucher = asyncio.get_running_loop().create_task(self._touch_forever())

    async def _touch_forever(self) -> None:
        interval = max(self.ttr / 3, 0.05)
        while True:
            try:
                await self.client.update(self.queue, self.id, {}, lease=self.lease)
            except LOST as exc:
                self.lease_lost = True
                log.warning(
                    "%r: lost its lease: %s", self, exc.message, extra={"action": "lease_lost"}
                )
                return
            except TRANSIENT as exc:
                log.warning(
                    "%r: cannot touch its lease: %s",
                    self,
                    exc.message,
                    extra={"action": "touch_failed"},
                )
            await asyncio.sleep(interval)

    async def _call(self) -> Any:
        try:
            func, is_coroutine = resolve(self.method, self.allow)
        except ImportTargetError as exc:
            self.load_error = exc
            raise
        kwargs = {**self.kwargs, "tq_parent_job": self}
        if is_coroutine:
            self._awaiting = True
            try:
                return await func(*self.args, **kwargs)
            finally:
                self._awaiting = False
        result = await asyncio.to_thread(_in_thread, func, *self.args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _fields(self, event: str, **more: Any) -> dict[str, Any]:
        """The fields of a record of this job's life (``extra=``): ``action`` ``job_<event>``,
        ``event``, ``job_id``, ``queue``, ``method``, ``attempt`` and ``more``."""
        return {"action": f"job_{event}", "event": event, "job_id": self.id,
                "queue": self.queue, "method": self.method,
                "attempt": self.data.get("attempts"), **more}  # fmt: skip

    async def __aenter__(self) -> Job:
        self._loop = asyncio.get_running_loop()
        self._started = time.monotonic()
        if log.isEnabledFor(logging.INFO):
            log.info("%r taken", self, extra=self._fields("taken"))
        self._task = asyncio.current_task()
        self._touch_timer = self._loop.call_later(max(self.ttr / 3, 0.05), self._start_touching)
        # The method runs in this task (asyncio.wait_for would start one more per job, and
        # the job would begin a turn of the event loop later).
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                self.result = await self._call()
            self._caught_cancel()  # a method that swallowed it
            codec.dumps_storable(self.result)  # refuse a result the dispatcher would refuse
        except asyncio.CancelledError:
            if self._caught_cancel():  # our cancel alone: the job stops, reported so
                self.exception = JobCancelled("cancelled while it ran")
                return self
            await self._stop_touching()
            await self._give_back()
            raise
        except TimeoutError as exc:
            timed_out = deadline.expired()  # not a TimeoutError of the method's own
            self.exception = (
                TimeoutError(f"the job ran longer than its {self.timeout:g}s timeout")
                if timed_out
                else exc
            )
        except Exception as exc:
            self.exception = exc
        self._returned = True
        if self._cancelled and self.exception is None:  # it returned once asked to stop
            self.exception = JobCancelled("cancelled while it ran")
        return self

    def _caught_cancel(self) -> bool:
        """Take back our cancel of the task (:meth:`request_cancel`), once; True if it was
        the only one pending (not a shutdown's too)."""
        if not self._cancel_sent or self._task is None:
            return False
        self._cancel_sent = False
        return self._task.uncancel() == 0

    async def _stop_touching(self) -> None:
        if self._touch_timer is not None:
            self._touch_timer.cancel()
            self._touch_timer = None
        if self._toucher is not None:
            self._toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._toucher
            self._toucher = None

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_touching()
        if isinstance(e, asyncio.CancelledError):
            await self._give_back()
            return
        failure = e if isinstance(e, Exception) else self.exception
        duration = round(time.monotonic() - self._started, 6)  # seconds the run took
        if self._cancelled:
            log.info("%r cancelled", self, extra=self._fields("cancelled", duration=duration))
            error = "JobCancelled: cancelled while it ran"
            await self._report("fail", {"error": error, "traceback": None, "permanent": True})
        elif failure is not None:
            text = "".join(tb_module.format_exception(failure))
            error = f"{type(failure).__name__}: {failure}"
            # Only a name no worker runs fails for good. A method this worker may not run
            # (its --allow) or cannot load (its import path, its version of the code) is
            # its set-up, not the job's fault: retried (maybe by another worker), then
            # buried for an operator to kick back once the workers are fixed.
            permanent = failure is self.load_error and isinstance(failure, InvalidMethodName)
            if failure is self.load_error and not permanent:
                self._log_cannot_run(error)
            elif log.isEnabledFor(logging.INFO):
                fields = self._fields("failed", duration=duration, error=error)
                log.info("%r failed in %.3fs: %s", self, duration, error, extra=fields)
            await self._report("fail", {"error": error, "traceback": text, "permanent": permanent})
        else:
            if log.isEnabledFor(logging.INFO):
                fields = self._fields("finished", duration=duration)
                log.info("%r finished in %.3fs", self, duration, extra=fields)
            await self._report("finish", {"result": self.result})

    def _log_cannot_run(self, error: str) -> None:
        """A WARNING, in one line, that this worker may not or cannot load the job's method,
        what becomes of the job, and where to look."""
        attempt, most = self.data.get("attempts"), self.data.get("max_attempts")
        last = isinstance(attempt, int) and isinstance(most, int) and attempt >= most
        fate = "buried" if last else "retried"
        where = (
            "this worker's --allow"
            if isinstance(self.load_error, MethodNotAllowed)
            else "this worker's import path (its working directory, PYTHONPATH) and code"
        )
        log.warning(
            "%r cannot run here: %s; %s (attempt %s of %s); check %s",
            self,
            error,
            fate,
            attempt,
            most,
            where,
            extra={**self._fields("failed"), "action": "method_unavailable"},
        )

    async def _give_back(self) -> None:
        log.info("%r given back", self, extra=self._fields("released"))
        await self._report("release", {})

    async def _report(self, action: str, fields: dict[str, Any]) -> None:
        """Send the outcome (``action`` with ``fields``), retrying transport errors until the
        lease would have expired.

        Shielded from cancellation. If it still cannot be sent, the lease expires on the
        dispatcher and the job runs again: at-least-once, never lost.
        """
        if self.reporter is not None:
            await self.reporter.report(
                self.queue, self.id, self.lease, action, fields, what=repr(self), ttr=self.ttr
            )
            return
        method = getattr(self.client, action)
        await shielded(
            deliver(
                lambda: method(self.queue, self.id, lease=self.lease, **fields),
                repr(self),
                self.ttr,
            )
        )
