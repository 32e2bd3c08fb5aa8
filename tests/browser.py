"""The headless browsers of the tests and benchmarks that drive the dashboard.

:func:`chromium` starts Debian's ``chromium`` through ``chromedriver`` (installed by
``tests/services/ensure-chromium`` from ``tests/run`` when missing and possible) with a
fresh profile and the switches that keep it from calling out: this machine's closed
network refuses Chromium's background connections, which otherwise stall it.
:func:`missing` says why it cannot start (the tests skip with that reason).

Firefox is driven from Node.js instead: ``tests/firefox/dashboard.mjs`` runs Debian's
``firefox-esr`` with ``puppeteer-core`` over WebDriver BiDi, which Firefox speaks itself
(no geckodriver, which no package registry here ships). ``tests/services/ensure-firefox``
installs both when missing and possible; :func:`firefox_command` is the command that runs
the script, :func:`firefox_missing` says why it cannot.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

#: Where Debian puts them; else whatever PATH has.
BROWSERS = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "chromedriver")
SWITCHES = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)


#: Debian's Firefox ESR; else whatever PATH has.
FIREFOXES = ("/usr/bin/firefox-esr", "firefox-esr", "firefox")
#: The script that drives Firefox, and the Node.js packages it needs (``npm ci`` there).
FIREFOX_SCRIPT = Path(__file__).parent / "firefox" / "dashboard.mjs"
FIREFOX_PACKAGE = Path(__file__).parent / "firefox" / "node_modules" / "puppeteer-core"


def _first(names: tuple[str, ...]) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


def missing() -> str | None:
    """Why the browser cannot be started here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'tqueues[test]')"
    if _first(BROWSERS) is None:
        return "no chromium (tests/services/ensure-chromium installs Debian's as root)"
    if _first(DRIVERS) is None:
        return "no chromedriver (Debian's chromium-driver; see tests/services/ensure-chromium)"
    return None


@contextlib.contextmanager
def chromium(*, performance_log: bool = False) -> Iterator[Chrome]:
    """A headless Chromium with a fresh profile, quit (and its profile removed) on exit.
    With ``performance_log``, the DevTools network events are kept for
    ``driver.get_log("performance")`` (bytes sent). Raises RuntimeError naming what is
    missing (see :func:`missing`)."""
    reason = missing()
    if reason is not None:
        raise RuntimeError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for switch in SWITCHES:
        options.add_argument(switch)
    options.binary_location = str(_first(BROWSERS))
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    with tempfile.TemporaryDirectory(prefix="tqueues-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(str(_first(DRIVERS))))
        try:
            yield driver
        finally:
            driver.quit()


def firefox_missing() -> str | None:
    """Why the Firefox script cannot run here (None: it can)."""
    if _first(FIREFOXES) is None:
        return "no firefox-esr (tests/services/ensure-firefox installs Debian's as root)"
    if shutil.which("node") is None:
        return "no Node.js (tests/services/ensure-firefox installs Debian's as root)"
    if not (FIREFOX_PACKAGE / "package.json").is_file():
        return "no puppeteer-core in tests/firefox (tests/services/ensure-firefox runs npm ci)"
    return None


def firefox_command(config: dict[str, object]) -> list[str]:
    """The command that runs ``tests/firefox/dashboard.mjs`` with ``config`` (its one JSON
    argument; ``firefox`` is filled in). Raises RuntimeError naming what is missing."""
    reason = firefox_missing()
    if reason is not None:
        raise RuntimeError(reason)
    config = {"firefox": _first(FIREFOXES), **config}
    return [str(shutil.which("node")), str(FIREFOX_SCRIPT), json.dumps(config)]
