"""A real Prometheus scrapes a real dispatcher while a real worker runs its jobs.

Debian's ``prometheus`` (installed by ``tests/services/ensure-prometheus`` when missing)
is started on a free loopback port with a temporary configuration (scrape interval 1 s,
the dispatcher's ``/metrics`` with the monitor role's token) and storage directory; the
test asks Prometheus's HTTP API for the series and their values.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.acceptance.conftest import Api, Cluster, Proc, wait_for

ADMIN, MONITOR = "prometheus-test-admin-token", "prometheus-test-monitor-token"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="Debian's prometheus is not installed (tests/services/ensure-prometheus installs "
    "it as root with apt-get)",
)
CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: tqueues
    metrics_path: /metrics
    authorization:
      type: Bearer
      credentials: {token}
    static_configs:
      - targets: ["{target}"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    return directory


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


async def query(session: aiohttp.ClientSession, api: str, promql: str) -> list[dict[str, Any]]:
    """The instant vector ``promql`` evaluates to now (Prometheus's /api/v1/query)."""
    async with session.get(f"{api}/api/v1/query", params={"query": promql}) as response:
        answer = await response.json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_prometheus_scrapes_the_dispatcher_and_finds_the_series(
    cluster: Cluster, prometheus_dir: Path, procs: list[Proc]
) -> None:
    # Given a dispatcher with a monitor token, scraped every second by Prometheus
    dispatcher = await cluster.dispatcher(None, "--token", ADMIN, "--monitor_token", MONITOR)
    target = dispatcher.url.removeprefix("http://").rstrip("/")
    config = prometheus_dir / "prometheus.yml"
    config.write_text(CONFIG.format(token=MONITOR, target=target))
    port = free_port()
    assert PROMETHEUS is not None
    prometheus = Proc.start(
        "prometheus",
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={prometheus_dir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        prometheus_dir,
    )  # fmt: skip
    procs.append(prometheus)
    api = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession() as session, aiohttp.ClientSession(headers=headers) as tq:

        async def target_up() -> bool:
            if not prometheus.running():
                pytest.fail(f"prometheus exited:\n{prometheus.log()}")
            try:
                async with session.get(f"{api}/api/v1/targets") as response:
                    targets = (await response.json())["data"]["activeTargets"]
            except (aiohttp.ClientError, KeyError):
                return False
            return any(t["health"] == "up" for t in targets)

        await wait_for(target_up, timeout=20, interval=0.2, what="Prometheus to scrape /metrics")

        # When a real worker runs 6 jobs (one fails once, then runs again) and 3 wait in
        # a queue nobody takes from
        dispatcher_api = Api(tq, dispatcher.url)
        for queue in ("work", "idle"):
            await dispatcher_api.create_queue(queue)
        for i in range(5):
            await dispatcher_api.put("work", "coro_add", i, 1)
        await dispatcher_api.put("work", "coro_raise", 0, max_attempts=2)
        for i in range(3):
            await dispatcher_api.put("idle", "coro_add", i, 1)
        await cluster.worker(dispatcher.url, "work", "--token", ADMIN)

        # Then Prometheus has the series with their values
        expected = {
            'tqueues_job_events_total{queue="work",event="put"}': 6,
            'tqueues_job_events_total{queue="work",event="taken"}': 7,
            'tqueues_job_events_total{queue="work",event="finished"}': 5,
            'tqueues_job_events_total{queue="work",event="failed"}': 1,
            'tqueues_job_events_total{queue="work",event="buried"}': 1,
            'tqueues_job_retries_total{queue="work"}': 1,
            'tqueues_jobs{queue="work",state="finished"}': 5,
            'tqueues_jobs{queue="work",state="buried"}': 1,
            'tqueues_jobs{queue="idle",state="pending"}': 3,
            'tqueues_job_run_seconds_count{queue="work"}': 7,
            'tqueues_job_wait_seconds_count{queue="work"}': 7,
            "tqueues_workers_alive": 1,
            'up{job="tqueues"}': 1,
        }
        found: dict[str, float] = {}

        async def all_found() -> bool:
            for promql in expected:
                result = await query(session, api, promql)
                found[promql] = float(result[0]["value"][1]) if result else float("nan")
            return found == {k: float(v) for k, v in expected.items()}

        try:
            await wait_for(all_found, timeout=20, interval=0.5, what="the series in Prometheus")
        finally:
            print("found in Prometheus:", found)
        oldest = await query(session, api, 'tqueues_queue_oldest_pending_age_seconds{queue="idle"}')
        assert float(oldest[0]["value"][1]) > 0
        http = await query(
            session, api, 'tqueues_http_requests_total{route="/metrics",status="200"}'
        )
        assert float(http[0]["value"][1]) >= 1
        # A scrape without the token is refused: Prometheus's token is what let it in.
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(dispatcher.url + "metrics") as response:
                assert response.status == 401
                assert (await response.json())["error"] == "unauthorized"
