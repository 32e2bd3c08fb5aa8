from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TextIO

import aiohttp

from tqueues.cli.usage import UsageError, parse_command_line
from tqueues.client import Client, JSONDict
from tqueues.errors import DispatcherUnavailable, TqueuesError, ValidationError
from tqueues.limits import DEFAULT_MAX_WAIT, DEFAULT_URL, MAX_KICK
from tqueues.settings import WRITE_ACKS, RethinkDBSettings, SettingsError

# The command's usage, as docopt reads it (and --help prints it): the module's docstring,
# built so that its defaults are those of tqueues.limits.
__doc__ = f"""TQueues admin command line.

Talks to a dispatcher's REST API. Job JSON is one job, {{"method": "pkg.mod:func",
"args": [...], "kwargs": {{...}}, "priority": N, "delay": S, ...}}, or a list of jobs; it
comes from the <json> argument, from --file FILE, or from standard input (--file -, the
default when <json> is absent). Answers are printed as JSON, one job per line, except the
tables of stats and queues.

take reserves jobs under their lease (a job not finished within its ttr goes back to the
queue); of several queues, from the first that has jobs (beanstalkd's reserve on the
tubes it watches); consume takes a job and finishes it at once, as tpq's consume does. take, consume
and peek exit with status 1 when no job came, as tpq does on an empty queue. --wait 0 does
not wait, as wait=0 everywhere in tqueues; tpq's --wait=0 (wait forever) is --wait forever.
pause stops takes from handing out the queue's jobs (puts are still accepted) until
resume, or for --for seconds (beanstalkd's pause-tube); stats shows it.

Usage:
  tqueues put [options] <queue> [<json>] [--file FILE] [--after JOB]... [--key KEY]
  tqueues take [options] <queue>... [--wait SECONDS] [--count N]
  tqueues consume [options] <queue> [--wait SECONDS]
  tqueues peek [options] <queue> [<id>] [--status STATUS]
  tqueues kick [options] <queue> [<bound>] [--status STATUS]
  tqueues kick [options] <queue> --all [--status STATUS]
  tqueues kick [options] <queue> --id ID
  tqueues bury [options] <queue> <id> [--reason TEXT]
  tqueues cancel [options] <queue> <id>
  tqueues delete [options] <queue> <id>
  tqueues truncate [options] <queue>
  tqueues pause [options] <queue> [--for SECONDS]
  tqueues resume [options] <queue>
  tqueues stats [options] [<queue>...] [--json]
  tqueues history [options] <queue> [--minutes N] [--json]
  tqueues explain [options] <queue> <id> [--json]
  tqueues workers [options] [--queue QUEUE] [--json]
  tqueues workers (quiet | stop) [options] <worker>
  tqueues schedules [options] <queue> [--json]
  tqueues schedules create [options] <queue> <schedule> (--cron EXPR | --every SECONDS)
                           [--timezone TZ] [--catch_up POLICY] [--paused] [<json>]
                           [--file FILE]
  tqueues schedules (pause | resume | run | delete) [options] <queue> <schedule>
  tqueues queues [options] [--json]
  tqueues rethinkdb reconfigure [--rethinkdb URL] [--replicas N] [--write_acks MODE]
                                [--backfill SECONDS]
  tqueues -h | --help
  tqueues --version

Options:
  --url URL          The dispatcher; also TQUEUES_URL (default {DEFAULT_URL}).
  --token TOKEN      Bearer token (also TQUEUES_TOKEN).
  --timeout SECONDS  Seconds each call may take, beyond any --wait [default: 30].
  --file FILE        Read the job JSON from FILE; - is standard input.
  --key KEY          put: a unique job: while a job of the queue with this key is
                     pending, delayed or started, the put stores nothing and prints
                     that job with "duplicate": true (a job put has false).
  --wait SECONDS     Seconds to wait for a job on an empty queue; 0 or a negative
                     number: do not wait (tpq's -1); forever: until a job comes
                     (tpq's 0). Longer than the dispatcher's --max_wait is several
                     long-polls in a row [default: 0].
  --count N          Take up to N jobs [default: 1].
  --status STATUS    peek: the next pending (the default), delayed or buried job;
                     kick: only buried, failed or delayed jobs (failed ones only so).
  --all              Kick every job of --status there is (in rounds of 10,000).
  --id ID            Kick this one job (buried, failed or delayed) instead of N.
  --after JOB        put: a job the job waits for (an id of a job of <queue>, or
                     QUEUE/ID); repeat it for each. The job stays waiting until
                     they all finished (buried if one fails for good).
  --reason TEXT      Why the job is buried (kept in its error).
  --for SECONDS      pause: how long the pause lasts (default: until resumed).
  --json             Print JSON instead of a table.
  --queue QUEUE      workers: only those taking from QUEUE.
  --cron EXPR        schedules create: a job at every tick of this cron expression
                     (minute hour day month weekday).
  --timezone TZ      schedules create: the IANA time zone --cron is read in
                     [default: UTC].
  --every SECONDS    schedules create: a job every SECONDS seconds.
  --catch_up POLICY  schedules create: ticks missed while no dispatcher ran: latest
                     (one job), all (one each) or skip (none) [default: latest].
  --paused           schedules create: created paused (resume starts it).
  --minutes N        history: the last N minutes, a row per minute with events
                     (UTC) [default: 60].
  --rethinkdb URL    rethinkdb reconfigure: the database, as
                     rethinkdb://USER:PASSWORD@HOST:PORT,HOST:PORT/DB (also
                     TQUEUES_RETHINKDB; default rethinkdb://localhost:28015/tqueues).
  --replicas N       rethinkdb reconfigure: replicas of every table [default: 1].
  --write_acks MODE  rethinkdb reconfigure: majority or single [default: majority].
  --backfill SECONDS rethinkdb reconfigure: how long to wait for the new replicas to
                     hold a full copy of their tables; 0: return once they accept
                     writes [default: 600].
  -h --help          Show this screen.
  --version          Show version.

Exit status: 0 done, 1 no job (take, consume, peek), 2 an error (one line on stderr:
what failed and, when the dispatcher cannot be reached, whether anything was done).

rethinkdb reconfigure talks to RethinkDB, not to a dispatcher: it gives every table of
the database (the catalog and each queue's) one shard, N replicas and the write
acknowledgements, as dispatchers started with --replicas and --write_acks create them,
and returns once every replica holds a full copy (exit status 2 if that takes longer
than --backfill seconds: the settings are applied and the copying goes on).

Examples:
  export TQUEUES_URL={DEFAULT_URL}
  tqueues put emails '{{"method": "app.mail:send", "args": ["bob@example.com"]}}'
  tqueues put reports --key daily-2026-12-06 '{{"method": "app.reports:daily"}}'
  echo '[{{"method": "app.x:f"}}, {{"method": "app.x:g"}}]' | tqueues put work
  tqueues consume emails --wait 5
  tqueues take urgent normal --wait 10
  tqueues stats
  tqueues history emails --minutes 180
  tqueues explain emails 01a24c9b491373bf8e0d61d783f5c56c
  tqueues cancel emails 01a24c9b491373bf8e0d61d783f5c56c
  tqueues workers
  tqueues workers quiet web-1:4242
  tqueues schedules create reports nightly --cron '30 2 * * *' --timezone Europe/Madrid \
      '{{"method": "app.reports:nightly"}}'
  tqueues schedules run reports nightly
  tqueues kick emails 100
  tqueues kick emails --all --status failed
  tqueues pause emails --for 600
  tqueues resume emails
  tqueues rethinkdb reconfigure --rethinkdb rethinkdb://db1,db2,db3/tqueues --replicas 3
"""

STATUSES = (
    "pending", "waiting", "delayed", "started", "finished", "buried", "failed", "cancelled",
)  # fmt: skip
EMPTY = 1  #: the exit status when no job came.
ERROR = 2
KICK_STATUSES = ("buried", "failed", "delayed")
#: history: the columns shown first, when those events happened; any others follow, sorted.
HISTORY_FIRST = ("put", "taken", "finished", "failed")
#: The longest long-poll asked of the dispatcher (its default --max_wait); a longer --wait
#: is several in a row. A dispatcher that allows less refuses it: the command asks for half.
LONG_POLL = DEFAULT_MAX_WAIT
FOREVER = ("forever", "inf", "infinity")


def _number(args: Mapping[str, Any], name: str, *, integer: bool = False) -> float:
    raw = args[name]
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a number, not {raw!r}") from None
    if value < 0 or value != value:
        raise ValidationError(f"{name} must not be negative")
    return value


def _until(state: Mapping[str, Any]) -> str:
    """Until when a paused queue (its settings or statistics) stays so, in words."""
    until = state.get("paused_until")
    if until is None:
        return "until resumed"
    when = datetime.datetime.fromtimestamp(until, datetime.UTC)
    return f"until {when.isoformat(timespec='seconds').replace('+00:00', 'Z')}"


def _paused(stats: Mapping[str, Any]) -> str:
    """The stats table's paused column: ``no``, or until when."""
    return _until(stats) if stats.get("paused") else "no"


def wait_seconds(raw: str) -> float:
    """``--wait``: seconds (math.inf for ``forever``); 0 for 0 or a negative number (tpq's
    ``--wait=-1``: do not wait). Raises ValidationError for anything else."""
    if raw.strip().lower() in FOREVER:
        return math.inf
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError(
            f"--wait must be a number of seconds or forever, not {raw!r}"
        ) from None
    if not math.isfinite(value):
        raise ValidationError(f"--wait must be a number of seconds or forever, not {raw!r}")
    return max(value, 0.0)


async def waiting(
    wait: float, take: Callable[[float], Awaitable[list[JSONDict]]]
) -> list[JSONDict]:
    """What ``take(seconds)`` (one long-poll) gives within ``wait`` seconds (math.inf: until
    it gives something): long-polls of at most LONG_POLL seconds in a row, each for what
    is left of ``wait``, until one gives jobs or the time is up. A dispatcher whose
    --max_wait is lower refuses the long-poll (400 naming ``wait``): the next asks for
    half as long (down to 1 s, below which the refusal is the answer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    longest = LONG_POLL
    while True:
        seconds = min(max(deadline - loop.time(), 0.0), longest)
        try:
            jobs = await take(seconds)
        except ValidationError as exc:
            if exc.details.get("field") != "wait" or seconds <= 1.0:
                raise
            longest = seconds / 2
            continue
        if jobs or loop.time() >= deadline:
            return jobs


def read_jobs(args: Mapping[str, Any], stdin: TextIO) -> list[dict[str, Any]] | dict[str, Any]:
    """The job (a dict) or jobs (a list) the command line gives; ValidationError if not JSON."""
    if args["<json>"] is not None:
        text, source = args["<json>"], "the argument"
    elif args["--file"] not in (None, "-"):
        try:
            with open(args["--file"], encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise ValidationError(f"cannot read {args['--file']}: {exc.strerror}") from None
        source = args["--file"]
    else:
        text, source = stdin.read(), "standard input"
    try:
        jobs = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"{source} is not valid JSON: {exc}") from None
    if isinstance(jobs, dict) and isinstance(jobs.get("jobs"), list) and len(jobs) == 1:
        jobs = jobs["jobs"]
    if isinstance(jobs, list) and all(isinstance(job, dict) for job in jobs):
        return jobs
    if isinstance(jobs, dict):
        return jobs
    raise ValidationError(f"{source} must be a JSON object (a job) or a list of them")


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """Rows as a plain text table with a header, columns left-aligned, numbers right."""
    cells = [[str(h) for h in header], *[["-" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(r[i], int | float) for r in rows) and rows for i in range(len(header))
    ]
    lines = []
    for row in cells:
        lines.append(
            "  ".join(
                cell.rjust(width) if numeric[i] else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _utc(epoch: float) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, separators=(",", ":")), file=out)


class Admin:
    """One command against one dispatcher; each method returns the exit status."""

    def __init__(self, client: Client, args: Mapping[str, Any], out: TextIO, stdin: TextIO):
        self.client, self.args, self.out, self.stdin = client, args, out, stdin

    @property
    def queue(self) -> str:
        queues = self.args["<queue>"]
        return str(queues[0] if isinstance(queues, list) else queues)

    async def put(self) -> int:
        """Enqueue the job or jobs; print each stored job."""
        jobs = read_jobs(self.args, self.stdin)
        after = self.args.get("--after") or []
        if after:
            if not isinstance(jobs, dict):
                raise ValidationError("put --after applies to one job, not to a list of them")
            jobs = {**jobs, "after": [*jobs.get("after", []), *after]}
        key = self.args.get("--key")
        if key is not None:
            if not isinstance(jobs, dict):
                raise ValidationError(
                    "--key is the key of one job: give each job of a list its own 'key'",
                    field="key",
                )
            jobs = {**jobs, "key": key}
        if isinstance(jobs, dict):
            stored = [await self.client.request("POST", ["queues", self.queue, "jobs"], jobs)]
        else:
            stored = await self.client.put_many(self.queue, jobs)
        for job in stored:
            _print_json(job, self.out)
        return 0

    async def take(self) -> int:
        """Take up to --count jobs of the first of the queues that has any (waiting --wait
        seconds for one); print each with its lease."""
        count = max(int(_number(self.args, "--count", integer=True)), 1)
        wait = wait_seconds(self.args["--wait"])
        queues = [str(queue) for queue in self.args["<queue>"]]

        async def take(seconds: float) -> list[JSONDict]:
            if len(queues) == 1:
                return await self.client.take_many(queues[0], count, wait=seconds)
            return await self.client.take_any(queues, count, wait=seconds)

        jobs = await waiting(wait, take)
        for job in jobs:
            _print_json(job, self.out)
        return 0 if jobs else self._empty()

    async def consume(self) -> int:
        """Take one job and finish it at once; print it."""

        async def take(seconds: float) -> list[JSONDict]:
            return await self.client.take_many(self.queue, 1, wait=seconds)

        jobs = await waiting(wait_seconds(self.args["--wait"]), take)
        if not jobs:
            return self._empty()
        job = jobs[0]
        done = await self.client.finish(self.queue, job["id"], lease=job["lease"])
        _print_json(done, self.out)
        return 0

    async def peek(self) -> int:
        """Print job <id>, or the next job of --status without taking it."""
        if self.args["<id>"]:
            _print_json(await self.client.get(self.queue, self.args["<id>"]), self.out)
            return 0
        status = self.args["--status"] or "pending"
        job = await self.client.peek(self.queue, status)
        if job is None:
            return self._empty(f"no {status} job")
        _print_json(job, self.out)
        return 0

    async def kick(self) -> int:
        """Kick one job (--id: buried, failed or delayed), up to <bound> jobs (default 1:
        buried ones, else delayed ones; of --status only, if given), or --all of --status.
        Buried and failed jobs come back pending with their attempts renewed."""
        if self.args["--id"]:
            _print_json(await self.client.kick_job(self.queue, self.args["--id"]), self.out)
            return 0
        status = self.args["--status"]
        if status is not None and status not in KICK_STATUSES:
            raise ValidationError("kick --status must be buried, failed or delayed")
        if self.args["--all"]:
            if status is None:
                raise ValidationError("kick --all needs --status buried, failed or delayed")
            kicked = await self._kick_all(status)
        else:
            bound = int(_number({"<bound>": self.args["<bound>"] or 1}, "<bound>", integer=True))
            kicked = await self.client.kick(self.queue, bound, status=status)
        what = f"{status} job(s)" if status else "job(s)"
        print(f"kicked {kicked} {what} in {self.queue}", file=self.out)
        return 0

    async def _kick_all(self, status: str) -> int:
        """Kick the jobs of ``status`` the queue holds now, MAX_KICK (the API's bound) at a
        time; how many were kicked. Stops once a round kicks fewer than it asked for, or
        once it kicked as many as there were when it started (jobs that fail again
        meanwhile are not kicked round after round)."""
        remaining = int((await self.client.stats(self.queue))["jobs"][status])
        total = 0
        while remaining > 0:
            asked = min(MAX_KICK, remaining)
            kicked = await self.client.kick(self.queue, asked, status=status)
            total += kicked
            remaining -= kicked
            if kicked < asked:
                break
        return total

    async def bury(self) -> int:
        """Bury job <id> (an operator's call, whoever holds it)."""
        job = await self.client.bury(self.queue, self.args["<id>"], reason=self.args["--reason"])
        _print_json(job, self.out)
        return 0

    async def cancel(self) -> int:
        """Cancel job <id>: at once unless started; a started one is stopped by its worker
        within about a second. Print the job after it (a started one still started, with
        ``cancel_requested``)."""
        _print_json(await self.client.cancel(self.queue, self.args["<id>"]), self.out)
        return 0

    async def delete(self) -> int:
        """Delete job <id> whatever its state; print it as it was."""
        _print_json(await self.client.delete(self.queue, self.args["<id>"]), self.out)
        return 0

    async def truncate(self) -> int:
        """Remove every job of the queue."""
        deleted = await self.client.truncate(self.queue)
        print(f"deleted {deleted} job(s) from {self.queue}", file=self.out)
        return 0

    async def pause(self) -> int:
        """Pause the queue, for --for seconds or until resumed; say until when."""
        seconds = _number(self.args, "--for") if self.args["--for"] is not None else None
        if seconds == 0:
            raise ValidationError("--for must be more than 0 seconds")
        config = await self.client.pause(self.queue, seconds)
        print(f"paused {self.queue} {_until(config)}", file=self.out)
        return 0

    async def resume(self) -> int:
        """End the queue's pause."""
        await self.client.resume(self.queue)
        print(f"resumed {self.queue}", file=self.out)
        return 0

    async def stats(self) -> int:
        """Statistics of the <queue>s (every queue by default): a table, or JSON."""
        names = self.args["<queue>"] or [q["name"] for q in await self.client.list_queues()]
        stats = [await self.client.stats(name) for name in names]
        if self.args["--json"]:
            _print_json(stats[0] if len(self.args["<queue>"]) == 1 else stats, self.out)
            return 0
        rows = [
            [s["queue"], *(s["jobs"].get(status, 0) for status in STATUSES), s["total"], _paused(s)]
            for s in stats
        ]
        print(table(rows, ["queue", *STATUSES, "total", "paused"]), file=self.out)
        counters = [[s["queue"], event, n] for s in stats for event, n in s["counters"].items()]
        if counters:
            print(file=self.out)
            print(table(counters, ["queue", "event", "since start"]), file=self.out)
        return 0

    async def history(self) -> int:
        """The queue's per-minute counts of events over the last --minutes: a table, or
        JSON (see Client.history)."""
        minutes = _number(self.args, "--minutes", integer=True)
        if not 1 <= minutes <= 44_640:
            raise ValidationError("--minutes must be 1 to 44640 (31 days)")
        now = time.time()
        answer = await self.client.history(self.queue, since=now - 60 * minutes, until=now)
        if self.args["--json"]:
            _print_json(answer, self.out)
            return 0
        buckets = answer["buckets"]
        seen = {event for bucket in buckets for event in bucket["counts"]}
        events = [event for event in HISTORY_FIRST if event in seen]
        events += sorted(seen - set(events))
        rows = [
            [
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(bucket["at"])),
                *(bucket["counts"].get(event, 0) for event in events),
            ]
            for bucket in buckets
        ]
        print(table(rows, ["minute (UTC)", *events]), file=self.out)
        return 0

    async def explain(self) -> int:
        """Why job <id> is (not) running: its reasons, one a line, or JSON."""
        answer = await self.client.explain(self.queue, self.args["<id>"])
        if self.args["--json"]:
            _print_json(answer, self.out)
            return 0
        print(f"{answer['queue']}/{answer['id']}: {answer['status']}", file=self.out)
        for reason in answer["reasons"]:
            print(f"  {reason['text']}", file=self.out)
        return 0

    async def workers(self) -> int:
        """The workers (of --queue), a table or JSON; or quiet/stop <worker> (the worker
        as it is now, as JSON)."""
        if self.args["quiet"] or self.args["stop"]:
            worker_id = str(self.args["<worker>"])
            if self.args["quiet"]:
                worker = await self.client.quiet_worker(worker_id)
            else:
                worker = await self.client.stop_worker(worker_id)
            _print_json(worker, self.out)
            return 0
        workers = await self.client.workers(self.args["--queue"])
        if self.args["--json"]:
            _print_json(workers, self.out)
            return 0
        rows = [
            [
                w["id"],
                w["state"],
                ",".join(w["queues"]),
                f"{len(w['running'])}/{w['concurrency']}",
                w["finished"],
                w["failed"],
                f"{w['seen_ago']:.0f}s ago",
                w["command"] or "",
            ]
            for w in workers
        ]
        header = ["worker", "state", "queues", "running", "finished", "failed", "seen", "asked"]
        print(table(rows, header), file=self.out)
        return 0

    async def schedules(self) -> int:
        """The queue's schedules, a table or JSON; or create (the job JSON as for put, one
        job), pause, resume, run (the job made) or delete <schedule> (printed as JSON)."""
        queue, name = self.queue, self.args["<schedule>"]
        if self.args["create"]:
            _print_json(await self._create_schedule(queue, str(name)), self.out)
            return 0
        for action in ("pause", "resume", "run", "delete"):
            if self.args[action]:
                answer = await getattr(self.client, f"{action}_schedule")(queue, str(name))
                _print_json(answer, self.out)
                return 0
        schedules = await self.client.schedules(queue)
        if self.args["--json"]:
            _print_json(schedules, self.out)
            return 0
        rows = [
            [
                s["name"],
                s["cron"] + f" ({s['timezone']})" if s["cron"] else f"every {s['every']:g}s",
                s["job"]["method"],
                s["catch_up"],
                "paused" if s["paused"] else _utc(s["next_tick"]),
                _utc(s["last_tick"]) if s["last_tick"] is not None else "",
            ]
            for s in schedules
        ]
        header = ["schedule", "when", "method", "catch_up", "next tick (UTC)", "last tick"]
        print(table(rows, header), file=self.out)
        return 0

    async def _create_schedule(self, queue: str, name: str) -> JSONDict:
        job = read_jobs(self.args, self.stdin)
        if not isinstance(job, dict):
            raise ValidationError("a schedule makes one job: give a JSON object, not a list")
        job = dict(job)
        method = job.pop("method", None)
        if not isinstance(method, str):
            raise ValidationError("the job JSON needs a 'method' (text)", field="method")
        every = _number(self.args, "--every") if self.args["--every"] is not None else None
        return await self.client.create_schedule(
            queue, name, method, job.pop("args", []), job.pop("kwargs", None),
            cron=self.args["--cron"], every=every, timezone=str(self.args["--timezone"]),
            catch_up=str(self.args["--catch_up"]), paused=bool(self.args["--paused"]), **job,
        )  # fmt: skip

    async def queues(self) -> int:
        """Every queue with its settings: a table, or JSON."""
        queues = await self.client.list_queues()
        if self.args["--json"]:
            _print_json(queues, self.out)
            return 0
        header = [
            "name",
            "ttr",
            "max_attempts",
            "delay",
            "ttl",
            "priority",
            "retention",
            "ttl_action",
        ]
        print(table([[q[h] for h in header] for q in queues], header), file=self.out)
        return 0

    def _empty(self, what: str = "queue empty") -> int:
        print(f"tqueues: {what}: {self.queue}", file=sys.stderr)
        return EMPTY


#: In the order they are looked for: "schedules" before "delete" (schedules delete).
COMMANDS = (
    "schedules",
    "put",
    "take",
    "consume",
    "peek",
    "kick",
    "bury",
    "cancel",
    "delete",
    "truncate",
    "pause",
    "resume",
    "stats",
    "history",
    "explain",
    "workers",
    "queues",
)


async def reconfigure_rethinkdb(args: Mapping[str, Any], out: TextIO) -> int:
    """``tqueues rethinkdb reconfigure``: every table of the database gets one shard,
    ``--replicas`` replicas and ``--write_acks``; one line per table. Raises
    SettingsError for a bad value, StoreUnavailable when RethinkDB refuses or cannot be
    reached, or when the RethinkDB store is not installed (the ``rethinkdb`` extra)."""
    try:
        from tqueues.stores.rethinkdb.pool import Pool
        from tqueues.stores.rethinkdb.queues import reconfigure
    except ImportError as exc:
        raise SettingsError(
            f"this command needs the RethinkDB store, which the 'rethinkdb' extra installs: "
            f"pip install 'tqueues[rethinkdb]' (missing: {exc.name})"
        ) from exc

    url = args["--rethinkdb"] or os.environ.get("TQUEUES_RETHINKDB") or "rethinkdb://"
    settings = RethinkDBSettings.from_url(url)
    replicas = int(_number(args, "--replicas", integer=True))
    if replicas < 1:
        raise SettingsError(f"--replicas must be at least 1, not {args['--replicas']}")
    write_acks = str(args["--write_acks"]).lower()
    if write_acks not in WRITE_ACKS:
        raise SettingsError(f"--write_acks must be majority or single, not {write_acks!r}")
    backfill = _number(args, "--backfill")
    if backfill == float("inf"):
        raise SettingsError("--backfill must be a number of seconds, not infinite")
    pool = Pool(dataclasses.replace(settings, pool_size=1))
    try:
        tables = await reconfigure(
            pool, settings.db, replicas=replicas, write_acks=write_acks, backfill=backfill
        )
    finally:
        await pool.close()
    for name in tables:
        print(f"{settings.db}.{name}: {replicas} replica(s), write_acks {write_acks}", file=out)
    return 0


async def run(args: Mapping[str, Any], out: TextIO = sys.stdout, stdin: TextIO = sys.stdin) -> int:
    """Run the command ``args`` (as docopt parsed it); the exit status."""
    if args["rethinkdb"]:
        return await reconfigure_rethinkdb(args, out)
    url = args["--url"] or os.environ.get("TQUEUES_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"--url must be an http:// or https:// URL, not {url!r}")
    token = args["--token"] or os.environ.get("TQUEUES_TOKEN") or None
    timeout = _number(args, "--timeout")
    async with Client(url, token=token, timeout=timeout) as client:
        admin = Admin(client, args, out, stdin)
        command = next(name for name in COMMANDS if args[name])
        status: int = await getattr(admin, command)()
        return status


def what_next(exc: DispatcherUnavailable) -> str:
    """What became of a command whose request got no answer (``exc``, which says why,
    in words): nothing, when no connection could be made; else perhaps everything (the
    dispatcher may have done it before the answer was lost), which matters for a put."""
    if isinstance(exc.__cause__, aiohttp.ClientConnectorError):
        return "gave up, nothing was sent (is the dispatcher running? --url or TQUEUES_URL)"
    return "gave up; it may have been done all the same (check before doing it again)"


def main(argv: Sequence[str] | None = None) -> int:
    """``tqueues``: parse the command line, run the command; the exit status."""
    try:
        args = parse_command_line(
            __doc__ or "", sys.argv[1:] if argv is None else argv, commands=True
        )
    except UsageError as exc:
        print(f"tqueues: {exc}\n{exc.usage}", file=sys.stderr)
        return ERROR
    try:
        return asyncio.run(run(args))
    except DispatcherUnavailable as exc:
        print(f"tqueues: {exc.message}; {what_next(exc)}", file=sys.stderr)
        return ERROR
    except TqueuesError as exc:
        print(f"tqueues: {exc.code}: {exc.message}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
