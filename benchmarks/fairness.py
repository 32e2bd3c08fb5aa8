"""Long jobs and two workers: does the first worker hold jobs the second could run?

``python -m benchmarks.fairness [--jobs 8] [--seconds 1] [--concurrency 2] [--delay 0.3]``
queues ``jobs`` jobs that each take ``seconds``, starts a worker (``--concurrency``) and,
``delay`` seconds later, a second one, and prints how long until every job has finished
and how many each worker ran (from the ``worker`` the dispatcher records on each job).
With ``jobs = 2 * 2 * concurrency`` the best is two rounds: ``2 * seconds`` plus start-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.services import Dispatcher, Processes, dispatcher_env

QUEUE = "fairness"


def _call(url: str, method: str = "GET", body: object = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--delay", type=float, default=0.3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tqueues-fairness-") as tmp:
        processes = Processes(Path(tmp))
        try:
            dispatcher = Dispatcher(processes, Path(tmp), queues=[QUEUE]).start()
            jobs = [
                {"method": "benchmarks.peers.tasks_tqueues:pause", "args": [options.seconds]}
                for _ in range(options.jobs)
            ]
            _call(f"{dispatcher.url}queues/{QUEUE}/jobs", "POST", {"jobs": jobs})
            argv = [str(Path(sys.executable).parent / "tqueues_worker"), "--endpoint_url",
                    dispatcher.url, "--queue", QUEUE, "--allow", "benchmarks.peers",
                    "--concurrency", str(options.concurrency), "--loglevel", "WARNING"]  # fmt: skip
            started = time.monotonic()
            first = processes.start(argv, log="first.log", env=dispatcher_env())
            time.sleep(options.delay)
            second = processes.start(argv, log="second.log", env=dispatcher_env())
            deadline = started + 60 + options.jobs * options.seconds
            while True:
                page = _call(f"{dispatcher.url}queues/{QUEUE}/jobs?limit=1000")
                assert isinstance(page, dict)
                statuses = Counter(job["status"] for job in page["jobs"])
                if statuses["finished"] == options.jobs:
                    break
                if time.monotonic() > deadline or statuses["failed"] or statuses["buried"]:
                    sys.exit(f"the jobs did not all finish: {dict(statuses)}")
                time.sleep(0.02)
            took = time.monotonic() - started
            # The dispatcher records each taker as host:pid.
            ran = Counter(int(job["worker"].rpartition(":")[2]) for job in page["jobs"])
        finally:
            processes.stop_all()
    print(f"{options.jobs} jobs of {options.seconds:g} s, 2 workers of concurrency "
          f"{options.concurrency} (the second {options.delay:g} s later): all finished "
          f"after {took:.2f} s; ran by the first: {ran[first.pid]}, by the second: "
          f"{ran[second.pid]}")  # fmt: skip


if __name__ == "__main__":
    main()
