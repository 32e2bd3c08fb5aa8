"""The benchmark of what silent WebSocket clients and large listings cost runs (small)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.services import ROOT


def test_ws_memory_smoke() -> None:
    # 40 jobs of 100 kB with a buffer of 64 KiB: the silent client is closed, the listing
    # is one page (4 MB of jobs is less than a page's 4 MiB).
    argv = ["-m", "benchmarks.ws_memory", "--jobs", "40", "--size", "100000"]
    done = subprocess.run(
        [sys.executable, *argv, "--", "--ws_buffer", "65536"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert row["jobs"] == 40 and row["rss_peak_mib"] >= row["rss_before_mib"] > 0
    assert row["clients_closed"] == [
        [1013, "too slow: more than 65536 bytes of changes unread; reconnect"]
    ]
    assert row["list_page_jobs"] == 40 and row["list_next_cursor"] is False
