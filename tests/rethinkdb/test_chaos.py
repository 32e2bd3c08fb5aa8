"""Chaos on a real 3-server RethinkDB cluster (issue #22, 5): no acknowledged job is lost.

Three dispatchers (one per server first, each given all three servers, ``--replicas 3
--write_acks majority``) and three workers (each given all three dispatchers, each
preferring another first) drain 3,000 jobs that producers in the test put through all
three dispatchers, in batches and one at a time. Mid-load, once enough jobs have run,
one RethinkDB server and one dispatcher are killed with SIGKILL; once the others have
run more jobs without them, both are started again. Then every acknowledged job must end
``finished``, within a deadline, and the runs each job function recorded are counted: a
job may run more than once (at least once) only if it was in flight at the kill, so the
repeats are bounded by what the workers hold at once. The repeats and what the logs say
caused them are printed (``pytest -s``).

Synchronisation is by deadlines, answers and counted runs, never by fixed sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import wait_for
from tests.acceptance.jobs import method, read_runs
from tests.rethinkdb.conftest import SERVERS, Cluster, Proc
from tqueues.client import Client
from tqueues.errors import Unavailable

pytestmark = pytest.mark.rethinkdb

QUEUE = "chaos"
JOBS = 3_000
PRODUCERS = 6  #: two per dispatcher, each starting on another
BATCH = 40  #: jobs of a batch put; every other put is a single job
AHEAD = 600  #: producers wait while this many more jobs are acknowledged than ran
KILL_AT = 700  #: runs recorded when the server and the dispatcher are killed
RESTART_AFTER = 300  #: runs recorded after the kill when both are started again
WORKERS = 3
CONCURRENCY = 8
PREFETCH = 8
TTR = 5.0  #: jobs a lost take or a dead worker's report held come back this fast
KILLED_SERVER = 1  #: ``up`` restarts node 0 without --join: kill another one
KILLED_DISPATCHER = 0
DEADLINE = 60.0  #: seconds for each phase (the whole test takes well under 90 s)
#: Jobs a worker holds at once: running, taken ahead, and run but not yet reported.
IN_FLIGHT = WORKERS * (2 * CONCURRENCY + PREFETCH)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def start_dispatcher(cluster: Cluster, db: str, i: int, port: int) -> Proc:
    """Dispatcher ``i`` on ``port``: server ``i`` first, then the others in turn."""
    order = [(i + k) % SERVERS for k in range(SERVERS)]
    return await Proc.start(
        "tqueues_dispatcher",
        "--listen", f"127.0.0.1:{port}", "--host", cluster.hosts(*order), "--db", db,
        "--replicas", "3", "--write_acks", "majority", "--reap_interval", "0.2",
        "--retry_base", "0",
    )  # fmt: skip


async def start_worker(urls: list[str], i: int) -> Proc:
    """Worker ``i``, given every dispatcher, dispatcher ``i`` first."""
    endpoints = [arg for k in range(len(urls)) for arg in ("--endpoint_url", urls[(i + k) % 3])]
    return await Proc.start(
        "tqueues_worker", *endpoints, "--queue", QUEUE, "--allow", "tests.acceptance.jobs",
        "--concurrency", str(CONCURRENCY), "--prefetch", str(PREFETCH), "--wait", "2",
        "--grace", "2", "--loglevel", "WARNING",
        listening=False,
    )  # fmt: skip


#: What a log line says about a job that may run again, by the words that tell it.
CAUSES = {
    "lost its lease": "the worker lost its lease while running it",
    "outcome refused": "the worker's outcome was refused (its lease had expired)",
    "outcome not delivered": "the worker could not deliver its outcome in time",
    "waited past its lease": "a prefetched job waited past its lease",
    "got no answer was applied; released it": "a claim that got no answer was undone",
    "may be claimed by a take that got no answer": "a claim that got no answer expired",
}


def causes(repeated: list[str], procs: list[Proc]) -> collections.Counter[str]:
    """Why each repeated job ran again, as far as the processes' logs tell (else
    "not in the logs"), counted by cause."""
    lines = [line for proc in procs for line in proc.log if any(c in line for c in CAUSES)]
    counted: collections.Counter[str] = collections.Counter()
    for job_id in repeated:
        found = [
            cause for line in lines if job_id in line for k, cause in CAUSES.items() if k in line
        ]
        counted[found[0] if found else "not in the logs"] += 1
    return counted


class Load:
    """The producers of the test and what they count: jobs acknowledged (put, answered
    200), puts that got no 200 (retried on the next dispatcher), and runs recorded."""

    def __init__(self, urls: list[str], runs_file: Path) -> None:
        self.urls = urls
        self.runs_file = runs_file
        runs_file.touch()
        self.acked: dict[str, int] = {}  #: job id -> n, of every put answered 200
        self.unanswered = 0  #: puts without a 200 (no answer, 503): stored or not
        self.ran = 0  #: runs recorded so far (lines of the runs file)
        self.next_n = 0  #: the next job's number

    async def follow_runs(self) -> None:
        """Count the recorded runs, until cancelled."""
        while True:
            self.ran = self.runs_file.read_bytes().count(b"\n")
            await asyncio.sleep(0.05)  # polling pace

    def claim(self, size: int) -> range:
        """The numbers of the next ``size`` jobs (fewer, or none, at the end)."""
        ns = range(self.next_n, min(self.next_n + size, JOBS))
        self.next_n = ns.stop
        return ns

    async def produce(self, p: int) -> None:
        """Put jobs until JOBS are acknowledged, alternating batches and singles, each
        retried on the next dispatcher (starting at dispatcher ``p``) until one answers 200."""
        clients = [Client(url, timeout=10) for url in self.urls]
        try:
            single = p % 2 == 0
            while self.next_n < JOBS:
                while len(self.acked) - self.ran > AHEAD:
                    await asyncio.sleep(0.05)  # back-pressure: let the workers catch up
                ns = self.claim(1 if single else BATCH)
                single = not single
                jobs = [
                    {"method": method("record_run"), "args": [str(self.runs_file), n]} for n in ns
                ]
                target = p
                while jobs:
                    try:
                        stored = await self.put(clients[target % 3], jobs)
                    except Unavailable:
                        self.unanswered += 1
                        target += 1
                        if target % 3 == p % 3:
                            await asyncio.sleep(0.05)  # retry pace once all three refused
                        continue
                    self.acked |= {job["id"]: n for job, n in zip(stored, ns, strict=True)}
                    break
        finally:
            await asyncio.gather(*(client.close() for client in clients))

    @staticmethod
    async def put(client: Client, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One put of ``jobs``: a single put for one job, else a batch."""
        if len(jobs) == 1:
            return [await client.put(QUEUE, jobs[0]["method"], jobs[0]["args"])]
        return await client.put_many(QUEUE, jobs)


@pytest.mark.timeout(240)
async def test_acknowledged_jobs_survive_a_server_and_a_dispatcher_killed_under_load(
    cluster: Cluster, db: str, procs: list[Proc], tmp_path: Path
) -> None:
    began = time.monotonic()
    ports = [free_port() for _ in range(3)]
    dispatchers = list(
        await asyncio.gather(*(start_dispatcher(cluster, db, i, ports[i]) for i in range(3)))
    )
    procs.extend(dispatchers)
    urls = [proc.url for proc in dispatchers]
    async with Client(urls[0], timeout=10) as admin:
        await admin.create_queue(QUEUE, ttr=TTR, max_attempts=100)
    workers = list(await asyncio.gather(*(start_worker(urls, i) for i in range(WORKERS))))
    procs.extend(workers)

    load = Load(urls, tmp_path / "runs")
    follower = asyncio.create_task(load.follow_runs())
    producers = [asyncio.create_task(load.produce(p)) for p in range(PRODUCERS)]
    try:
        await wait_for(
            lambda: load.ran >= KILL_AT, timeout=DEADLINE, what=f"{KILL_AT} runs before the kill"
        )
        # -- the kill: one server (not node 0) and one dispatcher, with SIGKILL --------------
        cluster.kill(KILLED_SERVER)
        dispatchers[KILLED_DISPATCHER].kill()
        await dispatchers[KILLED_DISPATCHER].proc.wait()
        killed = time.monotonic()
        acked_at_kill, ran_at_kill = len(load.acked), load.ran
        await wait_for(
            lambda: load.ran >= ran_at_kill + RESTART_AFTER,
            timeout=DEADLINE,
            what=f"{RESTART_AFTER} runs without the killed server and dispatcher",
        )
        down_for = time.monotonic() - killed
        # -- both started again: the server on its data, the dispatcher on its port ---------
        restarted, _ = await asyncio.gather(
            start_dispatcher(cluster, db, KILLED_DISPATCHER, ports[KILLED_DISPATCHER]),
            asyncio.to_thread(cluster.up),
        )
        procs.append(restarted)
        await asyncio.wait_for(asyncio.gather(*producers), DEADLINE)
    finally:
        for task in producers:
            task.cancel()
        await asyncio.gather(*producers, return_exceptions=True)
    acked = load.acked
    assert len(acked) == JOBS and sorted(acked.values()) == list(range(JOBS))
    assert acked_at_kill < JOBS, "the kill did not land while jobs were still being put"

    # -- every acknowledged job ends finished ------------------------------------------------
    async with Client(urls, timeout=10) as client:

        async def all_finished() -> bool:
            if not set(read_runs(load.runs_file)) >= set(acked):
                return False
            with contextlib.suppress(Unavailable):
                stats = await client.stats(QUEUE)
                return bool(stats["jobs"].get("finished") == stats["total"] >= JOBS)
            return False

        await wait_for(
            all_finished, timeout=DEADLINE, what="every acknowledged job to run and end finished"
        )
        drained = time.monotonic() - killed
        results: dict[str, Any] = {}
        taken: dict[str, int] = {}  #: how many times each job was taken
        cursor: str | None = None
        while True:
            page = await client.list_jobs(QUEUE, status="finished", cursor=cursor, limit=1000)
            results |= {job["id"]: job["result"] for job in page["jobs"]}
            taken |= {job["id"]: job["attempts"] for job in page["jobs"]}
            if (cursor := page["next_cursor"]) is None:
                break
    follower.cancel()
    await asyncio.gather(follower, return_exceptions=True)
    runs = read_runs(load.runs_file)
    assert set(acked) - set(results) == set(), "acknowledged jobs not finished"
    for job_id in acked:  # the stored result is the token of one of the job's real runs
        assert results[job_id] in runs[job_id], (job_id, results[job_id], runs[job_id])
    # Jobs put but not acknowledged (no answer, stored anyway) ran and finished too.
    assert set(runs) == set(results)

    # -- at least once: repeats only for jobs in flight at the kill ----------------------------
    repeated = sorted(job_id for job_id, tokens in runs.items() if len(tokens) > 1)
    extra_runs = sum(len(runs[job_id]) - 1 for job_id in repeated)
    why = causes(repeated, procs)
    # Taken more than once, run once: a take whose answer was lost (the killed dispatcher's,
    # or one whose claim got no answer from the killed server) left its jobs to their
    # leases' expiry, or had them released.
    retaken = sum(1 for job_id, n in taken.items() if n > 1 and len(runs[job_id]) == 1)
    # The kills were felt: the killed server's dispatcher moved to another server, and the
    # killed dispatcher's worker to another dispatcher.
    moved = [sum("failed; connecting to" in line for line in proc.log) for proc in dispatchers]
    failed_over = [sum("cannot be reached; using" in line for line in w.log) for w in workers]
    print(
        f"\nchaos: {len(acked)} jobs acknowledged ({acked_at_kill} when server {KILLED_SERVER} "
        f"and dispatcher {KILLED_DISPATCHER} were killed, {ran_at_kill} run by then), "
        f"{len(results) - len(acked)} more stored by {load.unanswered} puts without a 200; "
        f"both down {down_for:.1f}s; server moves of the dispatchers {moved}, dispatcher "
        f"moves of the workers {failed_over}; every job finished {drained:.1f}s after the "
        f"kill, {time.monotonic() - began:.1f}s in all; {retaken} job(s) taken again but "
        f"run once; {len(repeated)} job(s) ran more than once ({extra_runs} extra run(s); "
        f"bound {IN_FLIGHT}): "
        + (", ".join(f"{n} {cause}" for cause, n in why.most_common()) or "none")
    )
    assert len(repeated) <= IN_FLIGHT, (len(repeated), why)
    assert moved[KILLED_SERVER] > 0, "\n".join(dispatchers[KILLED_SERVER].log[-20:])
    assert failed_over[KILLED_DISPATCHER] > 0, "\n".join(workers[KILLED_DISPATCHER].log[-20:])
    # A job in flight at the kill may lose its lease once per kill (server, dispatcher).
    assert all(len(runs[job_id]) <= 3 for job_id in repeated), {i: runs[i] for i in repeated}
