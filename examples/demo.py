"""The demo behind ``make demo``: a dispatcher on the embedded store, a worker, example jobs.

Starts ``tqueues_dispatcher`` (data in a temporary directory) and ``tqueues_worker``,
prints the address of the dashboard (``/ui/``, docs/dashboard.rst), enqueues example jobs
over HTTP, follows them on the WebSocket change stream until every job is final, prints
what happened to each, and stops both processes with SIGTERM.

To watch it in the dashboard: ``--pause N`` waits N seconds before enqueuing (time to open
the address), ``--linger N`` keeps the dispatcher N seconds after the jobs ended, e.g.
``make demo DEMO_ARGS="--pause 15 --linger 300"``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FINAL = {"finished", "failed", "buried"}  # buried: out of attempts, kept for an operator


def start(*argv: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


async def wait_for_port(log: Path, process: subprocess.Popen[bytes], timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"listening on http://[^:]+:(\d+)/", log.read_text())
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"the dispatcher exited:\n{log.read_text()}")
        await asyncio.sleep(0.05)
    raise SystemExit(f"the dispatcher did not start:\n{log.read_text()}")


JOBS: list[dict[str, Any]] = [
    *({"method": "examples.tasks:add", "args": [i, i * 10]} for i in range(10)),
    *({"method": "examples.tasks:checksum", "args": [f"file-{i}"], "kwargs": {"rounds": 20000}}
      for i in range(4)),
    {"method": "examples.tasks:resize", "args": ["cat.png", [64, 128, 256]]},
    {"method": "examples.tasks:flaky", "max_attempts": 2},
    {"method": "os:system", "args": ["echo not allowed"], "max_attempts": 1},
]  # fmt: skip


async def run(base: str) -> int:
    async with aiohttp.ClientSession() as http:
        await (await http.put(base, params={"queue": "demo"})).text()
        async with http.ws_connect(base + "ws", params={"queue": "demo"}) as ws:
            assert (await ws.receive_json())["type"] == "synced"
            ids = []
            for job in JOBS:
                async with http.post(base, json={"queue": "demo", **job}) as response:
                    response.raise_for_status()
                    ids.append((await response.json())["id"])
            print(f"enqueued {len(ids)} jobs; following them on the WebSocket stream")
            final: dict[str, dict[str, Any]] = {}
            deadline = time.monotonic() + 60
            while len(final) < len(ids) and time.monotonic() < deadline:
                message = await ws.receive_json(timeout=deadline - time.monotonic())
                job = message["job"]
                print(f"  {message['kind']:>9}  {job['method']:<26} {job['status']}")
                if job["status"] in FINAL:
                    final[job["id"]] = job
    print()
    for job_id in ids:
        job = final.get(job_id, {"status": "not done", "method": "?"})
        outcome = job.get("result") if job["status"] == "finished" else job.get("error")
        print(f"{job['status']:>9}  {job['method']:<26} {str(outcome)[:60]}")
    done = sum(1 for job in final.values() if job["status"] == "finished")
    print(f"\n{done} finished, {len(final) - done} failed, {len(ids) - len(final)} not done")
    return 0 if len(final) == len(ids) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds to wait before enqueuing (to open the dashboard)",
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.0,
        help="seconds the dispatcher stays up once the jobs ended",
    )
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tqueues-demo-") as tmp:
        logs = Path(tmp)
        dispatcher = start(str(BIN / "tqueues_dispatcher"), "--listen", "127.0.0.1:0",
                           "--data", str(logs / "data"), "--retry_base", "0.2",
                           log=logs / "dispatcher.log")  # fmt: skip
        worker = None
        try:
            port = asyncio.run(wait_for_port(logs / "dispatcher.log", dispatcher))
            base = f"http://127.0.0.1:{port}/"
            print(f"dispatcher on {base} (embedded store in {logs / 'data'})")
            print(f"dashboard on {base}ui/ (no token needed on this demo dispatcher)")
            worker = start(str(BIN / "tqueues_worker"), "--endpoint_url", base, "--queue", "demo",
                           "--concurrency", "4", "--allow", "examples.tasks",
                           log=logs / "worker.log")  # fmt: skip
            if options.pause > 0:
                print(f"enqueuing in {options.pause:g} s")
                time.sleep(options.pause)
            status = asyncio.run(run(base))
            if options.linger > 0:
                print(f"\nthe dispatcher stays up {options.linger:g} s more ({base}ui/)")
                time.sleep(options.linger)
        finally:
            for process in (worker, dispatcher):
                if process is not None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
        print("\nworker log (tail):")
        print("".join((logs / "worker.log").read_text().splitlines(True)[-5:]))
        return status


if __name__ == "__main__":
    sys.exit(main())
