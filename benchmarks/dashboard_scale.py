"""The dashboard with a deep queue: time to first paint, time until the data shows, and
bytes sent, for the overview and the queue page, in headless Chromium.

Fills a fresh embedded store with N pending jobs (bulk puts through the store, 10,000 at a
time), starts a real ``tqueues_dispatcher`` on it (with a token), then opens each page in a
fresh headless Chromium (``tests/browser.py``) with the token already in the tab's session
storage, and measures, from the navigation's start:

- ``first_paint_ms``: the browser's first contentful paint (the page's frame);
- ``data_ms``: when the numbers show (the overview's pending count; the queue page's
  first row of jobs), seen by a MutationObserver installed before the page loads;
- ``bytes``: what the dispatcher sent the browser until then and for 2 s more (HTTP
  bodies and headers, as Chromium counts them, plus the WebSocket frames' payloads).

For comparison it gives the size of what the original stream (``/ws?queue=Q``, its
snapshot) would send for the same queue: N times one ``initial`` message.

    .venv/bin/python -m benchmarks.dashboard_scale                    # 1,000,000 jobs
    .venv/bin/python -m benchmarks.dashboard_scale --jobs 10000      # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.services import Dispatcher, Processes
from tests import browser
from tqueues import codec
from tqueues.jobs import NewJob, QueueConfig
from tqueues.stores.sqlite import SQLiteStore

BATCH = 10_000
TOKEN = "dashboard-benchmark-token-0123456789"
QUEUE = "deep"
SETTLE = 2.0  # seconds of bytes counted after the data showed
#: Pages and the element whose text shows their data (not the "…" placeholder).
PAGES = {
    "overview": ("#/", f'tr[data-queue="{QUEUE}"] td[data-status="pending"]'),
    "queue": (f"#/queue/{QUEUE}", "tr[data-job]"),
    "queue_pending": (f"#/queue/{QUEUE}?status=pending", "tr[data-job]"),
}

#: Installed before each page loads: records performance.now() when the selector first
#: holds data.
WATCHER = """
window.__shown = null;
const selector = %s;
const look = () => {
  const el = document.querySelector(selector);
  if (window.__shown === null && el && el.textContent.trim() && el.textContent.trim() !== "…") {
    window.__shown = performance.now();
  }
};
new MutationObserver(look).observe(document, {subtree: true, childList: true, characterData: true});
"""


async def fill(data: Path, jobs: int) -> tuple[float, int]:
    """Put ``jobs`` pending jobs in queue QUEUE of a new store in ``data``; the seconds it
    took and the bytes of one snapshot message of such a job."""
    store = SQLiteStore(data)
    started = time.perf_counter()
    async with store:
        await store.create_queue(QueueConfig(QUEUE))
        job = NewJob(queue=QUEUE, method="myapp.tasks:resize", args=["img-0001.png", 640])
        for start in range(0, jobs, BATCH):
            await store.put_many([job] * min(BATCH, jobs - start))
        page = await store.list_jobs(QUEUE, limit=1)
        message = len(codec.dumps({"type": "initial", "job": page.jobs[0].to_dict()}))
    return time.perf_counter() - started, message


def measure(url: str, page: str, selector: str, settle: float = SETTLE) -> dict[str, Any]:
    """One page in a fresh browser: first paint, data shown, bytes until then and for
    ``settle`` seconds more (see the module)."""
    with browser.chromium(performance_log=True) as chrome:
        chrome.get(url + "ui/dashboard.css")  # the origin, for its session storage
        chrome.execute_script(f"sessionStorage.setItem('tqueues.token', {json.dumps(TOKEN)})")
        chrome.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": WATCHER % json.dumps(selector)}
        )
        chrome.get_log("performance")  # drop what came before
        chrome.get(url + "ui/" + page)
        deadline = time.monotonic() + 60
        shown = None
        while shown is None and time.monotonic() < deadline:
            shown = chrome.execute_script("return window.__shown")
            time.sleep(0.02)
        time.sleep(settle)  # the bytes that follow the data (a measuring window, no sync)
        paint = chrome.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "return p ? p.startTime : null"
        )
        sent = 0
        for entry in chrome.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.loadingFinished":
                sent += int(message["params"]["encodedDataLength"])
            elif message["method"] == "Network.webSocketFrameReceived":
                sent += len(message["params"]["response"]["payloadData"].encode())
    return {
        "page": page,
        "first_paint_ms": round(paint) if paint is not None else None,
        "data_ms": round(shown) if shown is not None else None,
        "bytes": sent,
    }


def main(jobs: int, settle: float = SETTLE) -> dict[str, Any]:
    """Fill, serve, measure each page of PAGES; the numbers (see :func:`report`)."""
    with tempfile.TemporaryDirectory(prefix="tqueues-dashboard-bench-") as tmp:
        workdir = Path(tmp)
        fill_s, message = asyncio.run(fill(workdir / "data", jobs))
        (workdir / "logs").mkdir()
        processes = Processes(workdir / "logs")
        try:
            dispatcher = Dispatcher(processes, workdir, ["--token", TOKEN]).start()
            rows = {
                name: measure(dispatcher.url, page, selector, settle)
                for name, (page, selector) in PAGES.items()
            }
        finally:
            processes.stop_all()
    return {
        "jobs": jobs,
        "fill_s": round(fill_s, 1),
        "pages": rows,
        "old_snapshot_bytes": jobs * message,
    }


def report(result: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    lines = [
        f"{result['jobs']:,} pending jobs (filled in {result['fill_s']} s)",
        "",
        "| page | first paint (ms) | data shown (ms) | bytes sent |",
        "|---|---:|---:|---:|",
    ]
    for name, row in result["pages"].items():
        lines.append(f"| {name} | {row['first_paint_ms']} | {row['data_ms']} | {row['bytes']:,} |")
    lines.append(
        f"\nthe original /ws snapshot of this queue: {result['old_snapshot_bytes']:,} bytes"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path, help="also write the result here")
    options = parser.parse_args()
    if (reason := browser.missing()) is not None:
        raise SystemExit(f"cannot run: {reason}")
    outcome = main(options.jobs)
    print(report(outcome))
    if options.json:
        options.json.write_text(json.dumps(outcome, indent=2))
