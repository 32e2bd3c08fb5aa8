"""The store benchmarks of issue #21 run (on small sizes), so they cannot rot:
``longpoll_takers`` (puts while long-poll takers wait) and ``startup_check`` (what the
check of the data file at start costs)."""

from __future__ import annotations

import re
import subprocess
import sys

from benchmarks.services import ROOT


def run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_longpoll_takers_smoke() -> None:
    # A real dispatcher, 100 takers parked, 10 single puts and a batch of 10.
    out = run("benchmarks.longpoll_takers", "--takers", "100", "--puts", "10", "--sync", "NORMAL")
    found = re.search(
        r"100 waiting takers .*: ([\d,.]+) single puts/s \(10 puts\).*takers woken (\d+), "
        r"jobs handed over (\d+), taken (\d+)",
        out,
    )
    assert found, out
    rate, woken, handed, taken = found.groups()
    assert float(rate.replace(",", "")) > 0
    # the singles handed over, the batch's jobs each waking one taker
    assert (int(woken), int(handed), int(taken)) == (10, 10, 20), out


def test_startup_check_smoke() -> None:
    out = run("benchmarks.startup_check", "--jobs", "2000")
    assert re.search(r"PRAGMA quick_check: [\d.]+ s \(ok\)", out), out
    assert re.search(r"SQLiteStore.open, its check included: [\d.]+ s", out), out
