"""docs/ builds as a Sphinx site with warnings as errors: every page in the table of
contents, every reference resolved (nitpicky), every docstring of the API reference parsed.
The site holds the API reference of the clients, the worker, its Job and the store
interface, and the OpenAPI document the dispatcher serves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tqueues.dispatcher.openapi import document

ROOT = Path(__file__).resolve().parents[2]
#: The build must stay quick enough to run on every ``make test``.
BUILD_SECONDS = 60


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML site, built once for this module's tests."""
    out = tmp_path_factory.mktemp("site")
    started = time.monotonic()
    sphinx = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html"]
    done = subprocess.run(
        [*sphinx, str(ROOT / "docs"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr
    assert time.monotonic() - started < BUILD_SECONDS
    return out


def test_every_page_is_in_the_site(site: Path) -> None:
    pages = {page.stem for page in (ROOT / "docs").glob("*.rst")}
    assert pages <= {page.stem for page in site.glob("*.html")}


@pytest.mark.parametrize(
    "anchor",
    [
        "tqueues.Client",
        "tqueues.Client.put",
        "tqueues.BlockingClient",
        "tqueues.worker.Worker",
        "tqueues.worker.Worker.run",
        "tqueues.worker.Job",
        "tqueues.stores.base.Store",
        "tqueues.stores.base.Store.take",
    ],
)
def test_the_api_reference_documents(site: Path, anchor: str) -> None:
    assert f'id="{anchor}"' in (site / "api.html").read_text()


def test_the_site_holds_the_openapi_document(site: Path) -> None:
    assert json.loads((site / "openapi.json").read_text()) == document()
    page = (site / "openapi.html").read_text()
    assert 'href="openapi.json"' in page
    for path, item in document()["paths"].items():
        assert path in page, f"{path} is missing from the table of operations"
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                assert operation["operationId"] in page


def test_pages_link_to_each_other(site: Path) -> None:
    assert 'href="rest-api.html"' in (site / "client.html").read_text()
    assert 'href="api.html"' in (site / "index.html").read_text()
