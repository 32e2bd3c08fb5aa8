"""The Dockerfile's HEALTHCHECK, run as written against a dispatcher started as the image
starts it (listening beyond loopback, so with a token, which ``/health`` needs too): it
passes with the token the environment gives (TQUEUES_TOKEN, or a narrower role's), and it
fails without one or when no dispatcher answers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cluster

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
ADMIN = "an-admin-token-of-24-chars"
WORKER = "a-worker-token-of-24-chars"


def healthcheck() -> list[str]:
    """The exec-form command of the Dockerfile's HEALTHCHECK, run by this interpreter (the
    image's ``python``)."""
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", DOCKERFILE, re.M | re.S)
    assert match is not None, "the Dockerfile has no exec-form HEALTHCHECK"
    argv: list[str] = json.loads(match.group(1))
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


async def probe(port: int, **env: str) -> int:
    """The exit status of the HEALTHCHECK against ``127.0.0.1:port``, with ``env`` added to
    an environment without TQUEUES_ variables."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TQUEUES_")}
    environ["TQUEUES_HEALTH_URL"] = f"http://127.0.0.1:{port}/health"
    process = await asyncio.create_subprocess_exec(
        *healthcheck(),
        env=environ | env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


def test_the_probe_s_default_is_the_image_s_dispatcher() -> None:
    assert "'http://127.0.0.1:8080/health'" in healthcheck()[-1]
    assert re.search(r'^CMD \["--listen", "0\.0\.0\.0:8080"', DOCKERFILE, re.M)


@pytest.mark.parametrize(
    ("env", "status"),
    [
        ({"TQUEUES_TOKEN": ADMIN}, 0),
        ({"TQUEUES_WORKER_TOKEN": WORKER}, 0),
        ({}, 1),
    ],
    ids=["admin-token", "worker-token", "no-token"],
)
async def test_the_healthcheck_on_the_image_s_dispatcher(
    cluster: Cluster, env: dict[str, str], status: int
) -> None:
    dispatcher = await cluster.dispatcher(
        None, "--listen", "0.0.0.0:0", "--token", ADMIN, "--worker_token", WORKER
    )
    port = int(dispatcher.url.rstrip("/").rsplit(":", 1)[1])
    assert await probe(port, **env) == status


async def test_the_healthcheck_fails_without_a_dispatcher() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert await probe(port, TQUEUES_TOKEN=ADMIN) != 0
