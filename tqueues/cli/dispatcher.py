from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from tqueues import eventloop
from tqueues.cli.usage import UsageError, parse_command_line
from tqueues.errors import TqueuesError
from tqueues.limits import DEFAULT_LISTEN, DEFAULT_MAX_WAIT
from tqueues.logs import setup_logging
from tqueues.settings import DispatcherSettings

# The command's usage, as docopt reads it (and --help prints it): the module's docstring,
# built so that its defaults are those of tqueues.limits.
__doc__ = f"""TQueues job dispatcher.

Serves the TQueues HTTP API. Jobs are kept in the embedded SQLite store under --data,
or in RethinkDB when --rethinkdb or any of --host, --port, --db, --user or --password
is given.

Usage:
  tqueues_dispatcher [options]
  tqueues_dispatcher -h | --help
  tqueues_dispatcher --version

Options:
  --listen HOST:PORT          Address to serve HTTP on [default: {DEFAULT_LISTEN}].
  --data DIR                  Directory of the embedded store [default: ./tqueues-data].
  --sync MODE                 Embedded store durability: FULL (sync every commit) or
                              NORMAL (survives process crashes) [default: FULL].
  --host HOSTS                RethinkDB server (default localhost), or several servers
                              of one cluster, comma-separated HOST[:PORT] items, tried
                              in turn when the one in use cannot be reached.
  --port PORT                 RethinkDB port of the servers named without one
                              (default 28015).
  --db DB                     RethinkDB database (default tqueues).
  --user USER                 RethinkDB user.
  --password PASSWORD         RethinkDB password.
  --rethinkdb URL             RethinkDB as one URL, rethinkdb://USER:PASSWORD@HOST:PORT/DB
                              (also read from TQUEUES_RETHINKDB), with HOST:PORT,HOST:PORT
                              for several servers; the options above override its parts.
  --pool_size N               RethinkDB connections per process (default 4).
  --durability MODE           RethinkDB write durability: hard (on disk before the write
                              is acknowledged) or soft (in memory) (default hard).
  --replicas N                RethinkDB replicas of each table the dispatcher creates
                              (default 1).
  --write_acks MODE           RethinkDB write acknowledgements of each table it creates:
                              majority (of the replicas) or single (default majority).
  --token TOKEN               Bearer token for every request (admin); also
                              TQUEUES_TOKEN. At least 16 characters.
  --token_file FILE           Read the admin token from FILE.
  --producer_token TOKEN      Token that may only create queues, enqueue and read jobs;
                              also TQUEUES_PRODUCER_TOKEN (and --producer_token_file FILE).
  --producer_token_file FILE  Read the producer token from FILE.
  --worker_token TOKEN        Token that may only take, update and end jobs; also
                              TQUEUES_WORKER_TOKEN (and --worker_token_file FILE).
  --worker_token_file FILE    Read the worker token from FILE.
  --monitor_token TOKEN       Token that may only read /metrics, /health and the stats;
                              also TQUEUES_MONITOR_TOKEN (and --monitor_token_file FILE).
  --monitor_token_file FILE   Read the monitor token from FILE.
  --insecure                  Allow --listen beyond loopback without any token.
  --allowed_domains DOMAINS   Comma-separated origins allowed by CORS,
                              e.g. 'https://foo.com,https://bar.com'.
  --max_wait SECONDS          Longest long-poll a take may ask for [default: {DEFAULT_MAX_WAIT:g}].
  --max_body BYTES            Largest request body (and job stream message); larger ones
                              are answered 413 [default: 1048576].
  --header_timeout SECONDS    A request's line and headers must arrive within this long
                              of its first byte, else 408 and the connection is closed
                              [default: 10].
  --max_connections N         Connections served at once; past it a new one replaces the
                              longest idle one, or is answered 503 (default: sized from
                              the open-files limit, which is raised to its hard limit).
  --reap_interval SECONDS     How often expired leases and due jobs are swept [default: 0.5].
  --retry_base SECONDS        Wait before the first retry of a failed job; doubles on each
                              further retry [default: 1].
  --history_keep SECONDS      How long the per-minute throughput history of each queue
                              is kept [default: 604800].
  --ws_buffer BYTES           Bytes of changes a /ws client may leave unread before it
                              is closed [default: 8388608].
  --loglevel LEVEL            DEBUG, INFO, WARNING or ERROR [default: INFO].
  --log_format FORMAT         text (a line a record) or json (an object a line, with
                              the records' fields as fields) [default: text].
  --access_log                Log every request at INFO (logger tqueues.access): method,
                              path (access_token values as ***), status, duration.
  -h --help                   Show this screen.
  --version                   Show version.

Examples:
  tqueues_dispatcher --data /var/lib/tqueues
  tqueues_dispatcher --host localhost --db foo --port 28015 --user foo --password bar
  tqueues_dispatcher --host db1,db2,db3:28016 --replicas 3 --db foo
  tqueues_dispatcher --listen {DEFAULT_LISTEN} --allowed_domains 'https://foo.com,https://bar.com'
"""

try:
    from tqueues.dispatcher import access, create_app
    from tqueues.dispatcher.server import (
        Guard,
        GuardedAppRunner,
        connection_limit,
        raise_open_files_limit,
    )
except ModuleNotFoundError as error:
    # The dispatcher's own dependencies come with the 'server' extra: say which to install.
    if error.name not in ("aiohttp_cors", "cronsim", "prometheus_client", "pydantic", "uuid_utils"):
        raise
    raise ImportError(
        f"tqueues_dispatcher needs {error.name}, which the 'server' extra installs: "
        "pip install 'tqueues[server]'",
        name=error.name,
    ) from error

log = logging.getLogger("tqueues.dispatcher")
#: Seconds requests still open at shutdown (long-polls) get to end before they are
#: cancelled, and again for the cancellation (aiohttp waits twice).
SHUTDOWN_TIMEOUT = 1.5


def connection_guard(settings: DispatcherSettings) -> tuple[Guard, str]:
    """The limits the server keeps (:mod:`tqueues.dispatcher.server`), after raising the
    open-files limit to its hard limit, and a line that says them."""
    before, open_files = raise_open_files_limit()
    room = connection_limit(open_files)
    max_connections = settings.max_connections or room
    if max_connections > room:
        log.warning(
            "--max_connections %d is more than the open-files limit (%d) leaves room for; "
            "serving at most %d",
            max_connections,
            open_files,
            room,
            extra={"action": "limits"},
        )
        max_connections = room
    raised = f" (raised from {before})" if open_files > before else ""
    said = (
        f"open files limit {open_files}{raised}: at most {max_connections} connections; "
        f"request heads within {settings.header_timeout:g} s"
    )
    return Guard(settings.header_timeout, max_connections), said


async def serve(settings: DispatcherSettings) -> None:
    """Run the dispatcher until SIGTERM or SIGINT."""
    app = create_app(settings)
    guard, limits = connection_guard(settings)
    # On shutdown, open long-polls are cancelled after SHUTDOWN_TIMEOUT (their claims are
    # given back) rather than holding the exit for aiohttp's default of 60 s. An access
    # log only when asked for (it hides ?access_token= values).
    runner = GuardedAppRunner(
        app,
        guard=guard,
        handler_cancellation=True,
        access_log=access.log if settings.access_log else None,
        access_log_class=access.AccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    log.info("%s", limits, extra={"action": "limits"})
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port, reuse_address=True)
        await site.start()
        for sock in getattr(site._server, "sockets", None) or ():
            host, port = sock.getsockname()[:2]
            # Tests and scripts read this line to learn the port when --listen asked for 0.
            log.info("listening on http://%s:%d/", host, port, extra={"action": "listening"})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("shutting down", extra={"action": "stopping"})
    finally:
        await runner.cleanup()
        guard.refusals.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``tqueues_dispatcher``: parse the options, serve until stopped; the exit status.

    SystemExit (status 1) with a one-line message and the usage for an unknown option or
    argument; 2 with a one-line message for a value that cannot be used; 0 after
    SIGTERM/SIGINT.
    """
    try:
        args = parse_command_line(__doc__ or "", sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        # As docopt does: Python prints the message on stderr and exits 1.
        raise SystemExit(f"tqueues_dispatcher: {exc}\n{exc.usage}") from None
    try:
        settings = DispatcherSettings.from_docopt(args)
        setup_logging(settings.loglevel, settings.log_format)
        eventloop.run(serve(settings))
    except TqueuesError as exc:
        print(f"tqueues_dispatcher: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tqueues_dispatcher: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
