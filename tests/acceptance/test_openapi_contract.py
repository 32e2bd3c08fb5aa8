"""The OpenAPI document against a real dispatcher: schemathesis (every check, a fixed seed,
a few examples per operation) finds no request the document allows that the server
refuses, nor one it forbids that the server accepts; and the document generates a
Python client (openapi-python-client) that imports. Both offline, well under a minute.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.acceptance.conftest import BIN, Cluster, child_env

TOKEN = "schemathesis-token-0123456789"
#: What schemathesis cannot be told through the document alone, deliberately:
#: - the original ``/`` API answers 501 for a missing queue (documented; schemathesis
#:   counts every 5xx as a server error);
#: - a plain GET on a WebSocket route answers 426 (documented; OpenAPI has no way to say
#:   that a request the document allows still needs the Upgrade handshake);
#: - a schedule's cron expression and time zone must be ones cronsim and the IANA
#:   database know, which no JSON Schema can say (a 400 naming the field otherwise);
#: - a put's ``after`` must name jobs that exist (a 400 naming the entry otherwise), and
#:   the integers inside its free JSON (``args``, ``kwargs``) must lie within
#:   ±(2**53-1) (a 400 naming the field: RethinkDB and JavaScript would round them),
#:   which the document says in words only: JSON Schema cannot bound the integers of a
#:   free value without also bounding floats such as 1e300, which are accepted.
CONFIG = """
[[operations]]
include-operation-id = "create_schedule"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404", "409"]

[[operations]]
include-operation-id = "put"
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id = "legacy_put"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-operation-id-regex = "^(websocket|jobStream|takeStream)$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "426", "429", "5xx"]

[[operations]]
include-tag = "/"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "501"]
"""


async def test_schemathesis_finds_no_mismatch(cluster: Cluster, tmp_path: Path) -> None:
    # --max_wait 1: a take the document allows waits at most a second.
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN, "--max_wait", "1")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [
            str(BIN / "schemathesis"), "--config-file", str(config), "run",
            dispatcher.url + "openapi.json", "--checks", "all",
            "-H", f"Authorization: Bearer {TOKEN}", "--seed", "23", "--max-examples", "5",
            "--generation-database", "none", "--no-color", "--workers", "1",
            "--phases", "examples,coverage,fuzzing", "--request-timeout", "10",
        ],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]


async def test_the_document_generates_a_client_that_imports(
    cluster: Cluster, tmp_path: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, "--token", TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(dispatcher.url + "openapi.json") as response:
            document = await response.json()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    (tmp_path / "config.yml").write_text("project_name_override: tq_client\npost_hooks: []\n")
    run = subprocess.run(
        [
            str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json",
            "--config", "config.yml", "--meta", "none", "--output-path", "tq_client",
        ],
        cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Unable to" not in output and "Failure" not in output, output
    sys.path.insert(0, str(tmp_path))
    try:
        models = importlib.import_module("tq_client.models")
        for schema in ("Job", "NewJob", "JobBatch", "JobPage", "StoredJobs", "TakenJob"):
            assert hasattr(models, schema), schema
        put = importlib.import_module("tq_client.api.default.put")
        assert callable(put.sync_detailed)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "tq_client" or n.startswith("tq_client.")]:
            del sys.modules[name]
