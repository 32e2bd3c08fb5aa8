from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from tqueues import eventloop
from tqueues.cli.usage import UsageError, parse_command_line
from tqueues.errors import TqueuesError
from tqueues.limits import DEFAULT_URL
from tqueues.loading import unfindable
from tqueues.logs import setup_logging
from tqueues.settings import WorkerSettings
from tqueues.worker import Worker, busy_threads

# The command's usage, as docopt reads it (and --help prints it): the module's docstring,
# built so that its defaults are those of tqueues.limits.
__doc__ = f"""TQueues worker.

Takes jobs from the dispatcher and runs the method each names
(package.module:function), N at a time.

Usage:
  tqueues_worker (--queue QUEUE)... [--allow PREFIX]... [--endpoint_url URL]... [options]
  tqueues_worker -h | --help
  tqueues_worker --version

Options:
  --endpoint_url URL     TQueues dispatcher endpoint (default: $TQUEUES_URL or
                         {DEFAULT_URL}). Repeat it, or give a comma-separated
                         list, for several dispatchers of one cluster: the worker moves
                         to the next when the one it uses stops answering.
  --queue QUEUE          Queue to take jobs from; repeat it for several queues (each
                         take asks the first that has jobs, starting at the next
                         queue in turn).
  --strict_order         Start every take at the first --queue: a later queue gets
                         jobs taken only while the earlier ones are empty (RQ's order).
  --allow PREFIX         Run only methods from modules under PREFIX; repeatable. Also
                         $TQUEUES_ALLOW (comma-separated). This or --allow_any
                         is required. Job modules are imported from the current
                         directory first (as python -m does), then $PYTHONPATH.
  --allow_any            Let jobs run any importable function (anyone who can enqueue
                         can then run code on this worker).
  --token TOKEN          Bearer token for the dispatcher; also $TQUEUES_WORKER_TOKEN
                         or $TQUEUES_TOKEN.
  --token_file FILE      Read the token from FILE.
  --concurrency N        Jobs run at once [default: 1].
  --prefetch N           At most N jobs held taken, ready to start, beyond those
                         running; none before a job has ended, fewer or none once
                         jobs outlast a round trip to the dispatcher (default: 3 x
                         the concurrency). 0: take a job only for a free slot.
  --timeout SECONDS      Longest a job may run; past it the run fails with a
                         TimeoutError (default: no limit).
  --wait SECONDS         How long each take waits for a job (long-poll) [default: 30].
  --grace SECONDS        On SIGTERM/SIGINT, how long running jobs get to finish before
                         they are given back [default: 30].
  --burst                Exit once the queues are empty.
  --heartbeat SECONDS    How often the worker tells the dispatcher's registry what it
                         runs (it hears an operator's quiet or stop in the answer)
                         [default: 5].
  --loglevel LEVEL       DEBUG, INFO, WARNING or ERROR [default: INFO]. At INFO each
                         job's life: taken, then finished or failed with its duration.
  --log_format FORMAT    text (a line a record) or json (an object a line, with the
                         job id, queue, event and timings as fields) [default: text].
  -h --help              Show this screen.
  -v --version           Show version.

Examples:
  tqueues_worker --endpoint_url {DEFAULT_URL} --queue testqueue --allow myapp.tasks
"""

log = logging.getLogger("tqueues.worker")


async def work(settings: WorkerSettings) -> int:
    """Run a worker until SIGTERM/SIGINT (or, with --burst, until the queues are empty)."""
    worker = Worker(
        settings.endpoint_urls,
        settings.queues,
        concurrency=settings.concurrency,
        prefetch=settings.prefetch,
        wait=settings.wait,
        grace=settings.grace,
        allow=settings.allow,
        burst=settings.burst,
        heartbeat=settings.heartbeat,
        strict_order=settings.strict_order,
        token=settings.token,
        timeout=settings.timeout,
    )
    if not settings.allow:
        log.warning(
            "--allow_any: jobs may run any importable function",
            extra={"action": "no_allow_list"},
        )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    log.info(
        "worker %s taking from %s at %s",
        worker.worker_id,
        ", ".join(settings.queues),
        ", ".join(settings.endpoint_urls),
        extra={"action": "started"},
    )
    await worker.run()
    if busy_threads():
        # Their jobs were given back; waiting for the threads would hang the shutdown.
        log.warning("exiting with %d blocking job function(s) still running; their jobs "
                    "were given back and will run again", busy_threads(),
                    extra={"action": "abandoned_threads"})  # fmt: skip
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def import_from_here() -> str:
    """Put the current directory first on the import path, as ``python -m`` does (and RQ's
    and Celery's workers): a worker started in a project's directory imports its job
    modules without PYTHONPATH. A console script's own ``sys.path[0]`` is the directory of
    the script. The absolute path, so that a job that changes directory changes nothing;
    returns it (nothing is added if the directory no longer exists: then "")."""
    try:
        here = os.getcwd()
    except OSError:  # removed since the worker was started in it
        return ""
    if here in sys.path:
        sys.path.remove(here)
    sys.path.insert(0, here)
    return here


def check_allow(allow: Sequence[str], here: str) -> None:
    """Log a WARNING, one line each, for the ``--allow`` prefixes that name no importable
    module (a prefix may be a package prefix that is not itself a module: not a refusal)."""
    for prefix, why in unfindable(allow):
        log.warning(
            "--allow %s: cannot be imported from here (%s); its jobs cannot run here until "
            "it can: start the worker in the directory they are imported from (now %s) or "
            "set PYTHONPATH",
            prefix,
            why,
            here,
            extra={"action": "allow_not_found"},
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``tqueues_worker``: parse the options, work until stopped; the exit status."""
    try:
        args = parse_command_line(__doc__ or "", sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        # As docopt does: Python prints the message on stderr and exits 1.
        raise SystemExit(f"tqueues_worker: {exc}\n{exc.usage}") from None
    try:
        settings = WorkerSettings.from_docopt(args)
        setup_logging(settings.loglevel, settings.log_format)
        check_allow(settings.allow, import_from_here())
        return eventloop.run(work(settings))
    except TqueuesError as exc:
        print(f"tqueues_worker: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
