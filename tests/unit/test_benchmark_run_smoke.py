"""The side-by-side benchmark's quick mode runs (tqueues only, small, offline).

It starts a real dispatcher and real workers, so the harness cannot rot unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.services import Dispatcher, Processes
from tests.conftest import rethinkdb_settings

ROOT = Path(__file__).resolve().parents[2]


def test_quick_options_are_tqueues_only_and_small() -> None:
    options = run.parse(["--quick"])
    assert options.names == ["tqueues"]
    assert (options.jobs, options.samples, options.repeat) == (300, 50, 1)
    with pytest.raises(SystemExit):
        run.parse(["--quick", "--systems", "rq"])  # a peer needs an install


def test_worker_concurrency_is_an_option() -> None:
    assert run.parse([]).concurrency == 10
    options = run.parse(["--concurrency", "50"])
    where = types.SimpleNamespace(url="http://127.0.0.1:1/", urls=None, port=1)  # none started
    commands = run.SYSTEMS["tqueues"].workers(where, 2, options.concurrency)  # type: ignore[arg-type]
    assert len(commands) == 2
    for argv in commands:
        assert argv[argv.index("--concurrency") + 1] == "50", argv


def test_table_reports_errors_and_na() -> None:
    rows = {
        "tqueues": {
            "label": "tqueues",
            "W1": {"single_per_s": 1234.5, "stream_per_s": 2345.6, "bulk": "n/a",
                   "single_async_per_s": 1001.0},
            "W2": {"error": "BenchError: boom"},
            "W3": {"p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0,
                   "stream": {"p50_ms": 0.5, "p99_ms": 1.5}},
        },
        "celery": {"label": "Celery", "W1": {"single_per_s": 99.0, "bulk": "n/a"},
                   "W2": {"per_s": 5.0, "startup_s": 1.0},
                   "W3": {"p50_ms": 4.0, "p95_ms": 5.0, "p99_ms": 6.0}},
        "rq": {"label": "RQ", "error": "cannot install rq"},
    }  # fmt: skip
    text = run.table(rows)
    assert "| tqueues | 1,234 | 2,346 | n/a | error |" in text
    assert "| 1.00 | 2.00 | 3.00 | 0.50 | 1.50 |" in text
    assert "| Celery | 99 | n/a | n/a | 5 | 1.00 | 4.00 | 5.00 | 6.00 | n/a | n/a |" in text
    assert "not run: cannot install rq" in text
    assert "tqueues W2: BenchError: boom" in text
    assert "* tqueues W1 enqueue with the asyncio client: 1,001 jobs/s" in text


def test_medians_of_repeated_runs() -> None:
    merged = run.medians([{"per_s": 1.0, "note": "a"}, {"per_s": 3.0, "note": "a"},
                          {"per_s": 2.0, "note": "a"}])  # fmt: skip
    assert merged["per_s"] == 2.0 and merged["note"] == "a" and len(merged["runs"]) == 3


def test_w3_pools_the_samples_of_its_rounds() -> None:
    rounds = [run.latencies([1.0, 2.0, 3.0]), run.latencies([4.0, 5.0]), run.latencies([6.0])]
    for ms, one in zip(([0.1], [0.2], [0.3, 0.4]), rounds, strict=True):
        one["stream"] = run.latencies(ms)
    pooled = run.pooled(rounds)
    assert pooled["samples"] == 6 and pooled["p50_ms"] == 3.5 and pooled["max_ms"] == 6.0
    assert pooled["stream"]["samples"] == 4 and pooled["stream"]["max_ms"] == 0.4
    del rounds[1]["stream"]  # not in every round: not pooled
    assert "stream" not in run.pooled(rounds)
    assert run.pooled([{"error": "BenchError: boom"}]) == {"error": "BenchError: boom"}


@pytest.mark.timeout(60)
def test_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    argv = ["-m", "benchmarks.run", "--quick", "--concurrency", "5", "--json", str(out)]
    process = subprocess.Popen(
        [sys.executable, *argv],
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
    assert results["options"]["concurrency"] == 5 and row["model"] == "asyncio, --concurrency 5"
    assert row["W1"]["single_per_s"] > 0 and row["W1"]["stream_per_s"] > 0
    assert row["W1"]["single_async_per_s"] > 0
    assert "(SQLite, sync FULL) W1 enqueue with the asyncio client: " in stdout
    assert row["W1"].get("bulk_per_s", 0) > 0 or row["W1"]["bulk"].startswith("n/a")
    assert row["W2"]["jobs"] == 300 and row["W2"]["per_s"] > 0 and row["W2"]["startup_s"] > 0
    work = row["W2"]["store_work"]  # the dispatcher's group commit, from its /metrics
    assert work["operations"] >= work["commits"] > 0, work
    assert 0 < row["W3"]["p50_ms"] <= row["W3"]["p99_ms"]
    assert row["W3"]["samples"] == 50
    assert row["W3"]["stream"]["samples"] == 50 and row["W3"]["stream"]["p50_ms"] > 0
    assert results["W4"]["take_ratio"] > 0
    assert results["machine"]["nproc"] >= 1 and results["machine"]["python"]
    assert "tqueues" in row["versions"]


def test_rethinkdb_leg_runs_only_where_a_server_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(run.RETHINKDB_ENV, raising=False)
    assert "tqueues-rethinkdb" not in run.parse([]).names
    with pytest.raises(SystemExit):
        run.parse(["--systems", "tqueues-rethinkdb"])  # no server named
    with pytest.raises(SystemExit):
        run.parse(["--rethinkdb", "localhost"])  # no port
    assert run.parse(["--rethinkdb", "db1:28015"]).names[-1] == "tqueues-rethinkdb"
    monkeypatch.setenv(run.RETHINKDB_ENV, "db1:28015")
    options = run.parse([])
    assert options.rethinkdb == "db1:28015" and "tqueues-rethinkdb" in options.names
    assert run.parse(["--quick"]).names == ["tqueues"]


def test_benchmark_dispatcher_ignores_tqueues_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A TQUEUES_RETHINKDB or a token in the caller's environment would move the embedded
    # store's rows to another store or refuse the load: the command line alone counts.
    monkeypatch.setenv("TQUEUES_RETHINKDB", "rethinkdb://127.0.0.1:1/nowhere")
    monkeypatch.setenv("TQUEUES_TOKEN", "t" * 32)
    processes = Processes(tmp_path)
    try:
        with Dispatcher(processes, tmp_path, queues=["bench"]).start() as dispatcher:
            request = urllib.request.Request(
                f"{dispatcher.url}queues/bench/jobs",
                data=json.dumps({"method": "a.b:c", "args": [1]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 201
        assert (tmp_path / "data").is_dir()  # the embedded store, where --data says
    finally:
        processes.stop_all()


@pytest.mark.timeout(240)
def test_quick_run_on_rethinkdb(tmp_path: Path) -> None:
    # The RethinkDB leg (W1-W3 through a dispatcher on it, W4 on its store), small; every
    # database it made is dropped.
    address = rethinkdb_settings("tqueues_bench_check")
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--systems", "tqueues-rethinkdb",
         "--rethinkdb", f"{address.host}:{address.port}", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    row = results["systems"]["tqueues-rethinkdb"]
    assert row["W1"]["single_per_s"] > 0 and row["W1"]["bulk_per_s"] > 0, row
    assert row["W2"]["jobs"] == 300 and row["W2"]["per_s"] > 0, row
    work = row["W2"]["store_work"]  # the dispatcher's own write queries and claims
    assert work["write_requests"] >= work["write_queries"] > 0, work
    assert work["claim_requests"] >= work["claim_groups"] > 0, work
    assert row["W3"]["samples"] == 50 and row["W3"]["p50_ms"] > 0, row
    assert row["versions"]["rethinkdb server"], row
    assert results["W4_rethinkdb"]["take_ratio"] > 0, results["W4_rethinkdb"]
    assert results["W4"] is None  # no embedded-store system was asked for

    async def databases() -> list[str]:
        from tqueues.stores.rethinkdb.documents import r

        conn = await r.connect(host=address.host, port=address.port)
        try:
            return list(await r.db_list().run(conn))
        finally:
            await conn.close()

    assert not [db for db in asyncio.run(databases()) if db.startswith("tqbench_")]


def test_an_unreachable_rethinkdb_server_is_the_rows_error(tmp_path: Path) -> None:
    # Nothing listens on port 1: the row and W4 say so; the run itself does not fail.
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--systems", "tqueues-rethinkdb",
         "--rethinkdb", "127.0.0.1:1", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # --quick: a system that failed is an error
    results = json.loads(out.read_text())
    assert (
        "cannot reach RethinkDB at 127.0.0.1:1" in results["systems"]["tqueues-rethinkdb"]["error"]
    )
    assert "127.0.0.1:1" in results["W4_rethinkdb"]["error"]
    assert "not run: " in done.stdout and "Traceback" not in done.stderr


@pytest.mark.timeout(240)
def test_server_cost_benchmark_on_rethinkdb() -> None:
    # benchmarks/rethinkdb_indexes.py (the driver alone) prints a row for each table
    # variant and number of feeds, with the server's CPU a job where its pid is known;
    # its writes with the durability asked for (soft here: the suite's run is shorter).
    address = rethinkdb_settings("tqueues_bench_check")
    argv = [sys.executable, "-m", "benchmarks.rethinkdb_indexes", "--jobs", "200", "--batch",
            "10", "--single", "20", "--durability", "soft",
            "--rethinkdb", f"{address.host}:{address.port}"]  # fmt: skip
    pid_file = os.environ.get("TQUEUES_TEST_RETHINKDB_PIDFILE")
    if pid_file:
        argv += ["--server_pid", Path(pid_file).read_text().strip()]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "10 documents a query, 2 queries at once, durability soft" in done.stdout
    rows = re.findall(
        r"^(bare|take order|tqueues) +(\d) feeds +([\d,]+) jobs/s(.*)$", done.stdout, re.MULTILINE
    )
    assert [(name, feeds) for name, feeds, _, _ in rows] == [
        (name, feeds) for name in ("bare", "take order", "tqueues") for feeds in "013"
    ], done.stdout
    assert all(int(rate.replace(",", "")) > 0 for _, _, rate, _ in rows), done.stdout
    single = r"^(bare|take order|tqueues) +single inserts +[\d,]+/s, median ([\d.]+) ms"
    singles = re.findall(single, done.stdout, re.MULTILINE)
    assert [name for name, _ in singles] == ["bare", "take order", "tqueues"], done.stdout
    assert all(float(median) > 0 for _, median in singles), done.stdout
    if pid_file:
        costs = [re.search(r"server +([\d.]+) ms CPU a job", rest) for *_, rest in rows]
        assert all(cost and float(cost.group(1)) > 0 for cost in costs), done.stdout
