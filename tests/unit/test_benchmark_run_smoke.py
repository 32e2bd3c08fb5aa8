"""The side-by-side benchmark's quick mode runs (tqueues only, small, offline).

It starts a real dispatcher and real workers, so the harness cannot rot unnoticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run

ROOT = Path(__file__).resolve().parents[2]


def test_quick_options_are_tqueues_only_and_small() -> None:
    options = run.parse(["--quick"])
    assert options.names == ["tqueues"]
    assert (options.jobs, options.samples, options.repeat) == (300, 50, 1)
    with pytest.raises(SystemExit):
        run.parse(["--quick", "--systems", "rq"])  # a peer needs an install


def test_table_reports_errors_and_na() -> None:
    rows = {
        "tqueues": {
            "label": "tqueues",
            "W1": {"single_per_s": 1234.5, "bulk": "n/a"},
            "W2": {"error": "BenchError: boom"},
            "W3": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0},
        },
        "rq": {"label": "RQ", "error": "cannot install rq"},
    }
    text = run.table(rows)
    assert "| tqueues | 1,234 | n/a | error |" in text
    assert "not run: cannot install rq" in text
    assert "tqueues W2: BenchError: boom" in text


def test_medians_of_repeated_runs() -> None:
    merged = run.medians([{"per_s": 1.0, "note": "a"}, {"per_s": 3.0, "note": "a"},
                          {"per_s": 2.0, "note": "a"}])  # fmt: skip
    assert merged["per_s"] == 2.0 and merged["note"] == "a" and len(merged["runs"]) == 3


@pytest.mark.timeout(60)
def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        process.terminate()  # the benchmark stops its servers and workers on SIGTERM
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"the quick benchmark did not finish in 45 s:\n{stderr[-2000:]}")
    assert process.returncode == 0, stderr[-2000:]
    assert "| tqueues (SQLite, sync FULL) |" in stdout
    results = json.loads(out.read_text())
    row = results["systems"]["tqueues"]
    assert row["W1"]["single_per_s"] > 0
    assert row["W1"].get("bulk_per_s", 0) > 0 or row["W1"]["bulk"].startswith("n/a")
    assert row["W2"]["jobs"] == 300 and row["W2"]["per_s"] > 0 and row["W2"]["startup_s"] > 0
    assert 0 < row["W3"]["p50_ms"] <= row["W3"]["p99_ms"]
    assert row["W3"]["samples"] == 50
    assert results["W4"]["take_ratio"] > 0
    assert results["machine"]["nproc"] >= 1 and results["machine"]["python"]
    assert "tqueues" in row["versions"]
