"""The benchmarks run (on small sizes), so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import dashboard_scale, deep_queue
from benchmarks.services import ROOT
from tests import browser


async def test_deep_queue_smoke(tmp_path: Path) -> None:
    rows = await deep_queue.main([200, 2000], cycles=50, synchronous="NORMAL")
    assert [row["queued"] for row in rows] == [200, 2000]
    assert all(row["take_us_p50"] > 0 and row["finish_us_p50"] > 0 for row in rows)
    assert "take ratio" in deep_queue.report(rows)


@pytest.mark.parametrize("queues", ["1", "2"])
def test_drain_cpu_smoke(queues: str) -> None:
    # The real console scripts drain 300 jobs (of one queue, or two with workers of both);
    # the tool prints the rate and the CPU split.
    argv = ["-m", "benchmarks.drain_cpu", "--jobs", "300", "--queues", queues, "--", "--sync"]
    done = subprocess.run(
        [sys.executable, *argv, "NORMAL"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"W2 drain: [\d,]+ jobs/s", done.stdout), done.stdout
    # the event loop's and the store's threads (--sync NORMAL: no sync thread), each worker
    assert done.stdout.count("dispatcher thread") >= 2, done.stdout
    assert done.stdout.count("µs of CPU per job of the whole drain") == 2, done.stdout


def test_w1_floor_smoke() -> None:
    # Three aiohttp servers, the real dispatcher (NORMAL, FULL), a TCP echo: 50 calls each.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.w1_floor", "--calls", "50"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = re.findall(r"^\| (.+?) \| ([\d,]+) \| ", done.stdout, re.MULTILINE)
    assert [name for name, _ in rows] == [
        "aiohttp, answer",
        "aiohttp, thread",
        "aiohttp, sync",
        "tqueues_dispatcher --sync NORMAL",
        "tqueues_dispatcher --sync FULL",
        "(TCP round trip, no HTTP)",
        "(4 KiB overwrite + fdatasync, no server)",
    ], done.stdout
    assert all(int(rate.replace(",", "")) > 0 for _, rate in rows), done.stdout


def test_fairness_smoke() -> None:
    # Two real workers share four short jobs; the tool says who ran how many.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.fairness", "--jobs", "4", "--seconds", "0.05"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"ran by the first: (\d+), by the second: (\d+)", done.stdout)
    assert found and sum(map(int, found.groups())) == 4, done.stdout


@pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
def test_dashboard_scale_smoke() -> None:
    """The dashboard benchmark runs end to end on a small queue and finds the data shown."""
    result = dashboard_scale.main(2000, settle=0.2)
    for row in result["pages"].values():
        assert row["data_ms"] is not None and row["first_paint_ms"] is not None
        assert 0 < row["bytes"] < 500_000
    assert result["old_snapshot_bytes"] > 2000 * 100
    assert "data shown" in dashboard_scale.report(result)
