"""The dashboard at ``/ui/`` in real browsers: headless Chromium (Debian's, through
selenium) and headless Firefox (Debian's ESR, through puppeteer-core over WebDriver BiDi:
``tests/firefox/dashboard.mjs``) against a real dispatcher and worker.

Logs in with a token; a job put over HTTP shows on the queue page within a second; its
progress (the worker's ``update``) shows live on the job page; a buried job kicked with the
button becomes pending; a worker shows on the workers page; a read-only token finds the
action buttons disabled, and the API refuses the action anyway; without a token no page
shows data. Firefox runs the same scenarios but the reconnection, the filters and the
monitor token, in one browser (each start costs seconds). Screenshots of every page go to
a temporary folder, printed at the start (``TQUEUES_SCREENSHOTS`` names another), Firefox's
in its ``firefox`` folder; they are never committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests import browser
from tests.acceptance.conftest import Cluster
from tests.acceptance.jobs import method

if TYPE_CHECKING:
    from selenium.webdriver import Chrome


ADMIN = "dashboard-admin-token-0123"
PRODUCER = "dashboard-producer-token-01"
WORKER = "dashboard-worker-token-0123"
MONITOR = "dashboard-monitor-token-012"
TOKENS = (
    "--token", ADMIN, "--producer_token", PRODUCER, "--worker_token", WORKER,
    "--monitor_token", MONITOR,
)  # fmt: skip
LIVE = 1.0  # seconds: how soon a change must show
SLOW = 10.0  # seconds: for what waits on processes
FIREFOX_TIMEOUT = 120.0  # seconds: the whole Firefox run, its start included


@pytest.fixture(scope="module")
def screenshots(pytestconfig: pytest.Config) -> Path:
    """The folder of this run's screenshots (printed, so a reviewer can look)."""
    folder = Path(
        os.environ.get("TQUEUES_SCREENSHOTS") or tempfile.mkdtemp(prefix="tqueues-dashboard-")
    )
    folder.mkdir(parents=True, exist_ok=True)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def chrome() -> Iterator[Chrome]:
    """Headless Chromium, shared by the module's tests (skips them when it cannot start)."""
    reason = browser.missing()
    if reason is not None:
        pytest.skip(reason)
    with browser.chromium() as driver:
        yield driver


def until(driver: Chrome, timeout: float, what: str, predicate: Any) -> Any:
    """Wait (polling, with a deadline) until ``predicate(driver)`` is truthy."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(predicate)
    except TimeoutException:
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}")


def css(selector: str) -> Any:
    """A predicate: the first element the selector finds, once there and shown (the
    pages redraw: one replaced while looked at counts as not there yet)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def found(driver: Chrome) -> Any:
        try:
            elements = driver.find_elements(By.CSS_SELECTOR, selector)
            return elements[0] if elements and elements[0].is_displayed() else None
        except StaleElementReferenceException:
            return None

    return found


def text_of(selector: str, wanted: str) -> Any:
    """A predicate: the element's text holds ``wanted``."""
    from selenium.common.exceptions import StaleElementReferenceException

    def holds(driver: Chrome) -> bool:
        try:
            element = css(selector)(driver)
            return element is not None and wanted in element.text
        except StaleElementReferenceException:
            return False

    return holds


def log_in(chrome: Chrome, url: str, token: str) -> None:
    """Open the dashboard in a fresh tab state and log in with ``token``."""
    chrome.get(url + "ui/")
    chrome.execute_script("sessionStorage.clear()")
    chrome.get(url + "ui/")
    field = until(chrome, SLOW, "the login box", css("#token"))
    field.send_keys(token)
    chrome.find_element("css selector", "#login-form button").click()
    until(chrome, SLOW, "the role to show", text_of("#who", "role:"))


def go(chrome: Chrome, url: str, fragment: str) -> None:
    chrome.get(f"{url}ui/#{fragment}")


async def put(session: aiohttp.ClientSession, url: str, queue: str, body: dict[str, Any]) -> str:
    async with session.post(f"{url}queues/{queue}/jobs", json=body) as response:
        assert response.status == 201, await response.text()
        job_id: str = (await response.json())["id"]
        return job_id


async def test_dashboard_pages_live_and_actions(
    cluster: Cluster, chrome: Chrome, screenshots: Path, tmp_path: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *TOKENS)
    url = dispatcher.url
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for queue in ("ui", "held"):
            async with session.put(f"{url}queues/{queue}") as response:
                assert response.status in (200, 201)
        worker = await cluster.worker(url, "ui", "--token", WORKER)

        # Without a token: the login box and nothing else.
        chrome.get(url + "ui/")
        chrome.execute_script("sessionStorage.clear()")
        chrome.get(url + "ui/#/queue/ui")
        until(chrome, SLOW, "the login box", css("#token"))
        assert chrome.find_element("id", "main").text == ""
        chrome.save_screenshot(str(screenshots / "login.png"))

        log_in(chrome, url, ADMIN)
        until(chrome, SLOW, "queue ui on the overview", css('tr[data-queue="ui"] a'))
        until(chrome, SLOW, "the stream to be live", text_of("#live", "live"))

        # A job put over HTTP shows on the queue page within a second.
        go(chrome, url, "/queue/ui")
        until(chrome, SLOW, "the queue page", text_of("main h1", "Queue ui"))
        until(chrome, SLOW, "the stream to be live", text_of("#live", "live"))
        gate = tmp_path / "gate"
        job_id = await put(
            session, url, "ui", {"method": method("gated_progress"), "args": [str(gate)]}
        )
        until(chrome, LIVE, "the new job on the queue page", css(f'tr[data-job="{job_id}"]'))
        chrome.save_screenshot(str(screenshots / "queue.png"))

        # Its progress, as the worker reports it, shows live on the job page.
        go(chrome, url, f"/job/ui/{job_id}")
        until(chrome, SLOW, "the reported progress", text_of("#job-progress", '"progress": 50'))
        chrome.save_screenshot(str(screenshots / "job.png"))
        gate.touch()
        until(chrome, SLOW, "the job to finish", text_of("#job-status", "finished"))
        until(chrome, LIVE, "the last progress", text_of("#job-progress", '"progress": 100'))
        assert "through the gate" in chrome.find_element("id", "job-result").text

        # A buried job, kicked with the button, becomes pending.
        buried = await put(session, url, "held", {"method": method("coro_add"), "args": [1, 2]})
        async with session.post(f"{url}queues/held/jobs/{buried}/bury", json={}) as response:
            assert response.status == 200, await response.text()
        go(chrome, url, f"/job/held/{buried}")
        until(chrome, SLOW, "the buried job", text_of("#job-status", "buried"))
        until(chrome, SLOW, "the stream to be live", text_of("#live", "live"))
        chrome.find_element("css selector", 'button[data-action="kick_job"]').click()
        until(chrome, SLOW, "the kicked job to be pending", text_of("#job-status", "pending"))
        async with session.get(f"{url}queues/held/jobs/{buried}") as response:
            assert (await response.json())["status"] == "pending"

        # Buried again, then kicked with the queue's "Kick all buried".
        async with session.post(f"{url}queues/held/jobs/{buried}/bury", json={}) as response:
            assert response.status == 200, await response.text()
        go(chrome, url, "/queue/held?status=buried")
        row = f'tr[data-job="{buried}"]'
        until(chrome, SLOW, "the buried job on the queue page", css(row))
        until(chrome, SLOW, "the stream to be live", text_of("#live", "live"))
        chrome.find_element("css selector", 'button[data-action="kick"]').click()
        until(chrome, SLOW, "the job to move to pending", text_of(row, "pending"))

        # A job with a key that waits for another: its key and what it waits for show, as
        # fields (not as reported progress); cancelled with the button (after its
        # confirmation), it ends cancelled.
        doomed = await put(
            session, url, "held",
            {"method": method("coro_add"), "args": [3, 4], "key": "nightly", "after": [buried]},
        )  # fmt: skip
        go(chrome, url, f"/job/held/{doomed}")
        until(chrome, SLOW, "the job to cancel", text_of("#job-status", "waiting"))
        assert chrome.find_element("id", "job-key").text == "nightly"
        assert chrome.find_element("id", "job-after").text == f"held/{buried}"
        assert chrome.find_element("id", "job-progress").text == "Nothing reported."
        chrome.find_element("css selector", 'button[data-action="cancel"]').click()
        chrome.switch_to.alert.accept()
        until(chrome, SLOW, "the job to be cancelled", text_of("#job-status", "cancelled"))
        async with session.get(f"{url}queues/held/jobs/{doomed}") as response:
            assert (await response.json())["status"] == "cancelled"

        # The worker (its heartbeats) on the workers page.
        go(chrome, url, "/workers")
        until(chrome, SLOW, "the worker on the workers page", text_of("tr[data-worker]", "running"))
        row = chrome.find_element("css selector", "tr[data-worker]")
        assert str(worker.pid) in row.text and "ui" in row.text
        chrome.save_screenshot(str(screenshots / "workers.png"))

        go(chrome, url, "/")
        finished = 'tr[data-queue="ui"] td[data-status="finished"]'
        until(chrome, SLOW, "the counts", text_of(finished, "1"))
        chrome.save_screenshot(str(screenshots / "overview.png"))


async def test_a_read_only_token_cannot_act(
    cluster: Cluster, chrome: Chrome, screenshots: Path
) -> None:
    dispatcher = await cluster.dispatcher(None, *TOKENS)
    url = dispatcher.url
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:
        async with session.put(f"{url}queues/ro") as response:
            assert response.status in (200, 201)
        job_id = await put(session, url, "ro", {"method": method("coro_add"), "args": [1, 2]})
        async with session.post(f"{url}queues/ro/jobs/{job_id}/bury", json={}) as response:
            assert response.status == 200

    log_in(chrome, url, PRODUCER)
    go(chrome, url, f"/job/ro/{job_id}")
    until(chrome, SLOW, "the buried job", text_of("#job-status", "buried"))
    buttons = chrome.find_elements("css selector", "button[data-action]")
    enabled = {b.get_attribute("data-action") for b in buttons if b.is_enabled()}
    assert {b.get_attribute("data-action") for b in buttons} >= {"kick_job", "delete", "cancel"}
    assert enabled == {"cancel"}  # a producer may cancel its jobs, nothing else here
    chrome.save_screenshot(str(screenshots / "job-read-only.png"))

    go(chrome, url, "/queue/ro")
    row = f'tr[data-job="{job_id}"]'
    until(chrome, SLOW, "the queue page", css(row))
    buttons = chrome.find_elements("css selector", "button[data-action]")
    assert {b.get_attribute("data-action") for b in buttons} >= {"kick", "truncate"}
    assert all(not b.is_enabled() for b in buttons)

    # The filters hide the loaded jobs whose method or error does not hold the text.
    method_filter = chrome.find_element("id", "f-method")
    method_filter.send_keys("no such method")
    until(chrome, LIVE, "the job to be filtered out", lambda driver: css(row)(driver) is None)
    method_filter.clear()
    method_filter.send_keys("coro_add")
    until(chrome, LIVE, "the job to be shown again", css(row))

    # The API refuses the action anyway, asked from the page with the page's token.
    answer = chrome.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(arguments[0], {method: "POST", headers: {"Authorization": "Bearer " +
            sessionStorage.getItem("tqueues.token"), "Content-Type": "application/json"},
            body: "{}"}).then(async (r) => done([r.status, await r.text()]));""",
        f"{url}queues/ro/jobs/{job_id}/kick",
    )
    assert answer[0] == 403, answer
    assert json.loads(answer[1])["error"] == "forbidden"


async def test_the_page_reconnects_and_shows_what_changed_meanwhile(
    cluster: Cluster, chrome: Chrome
) -> None:
    """The dispatcher restarts under an open queue page: the page says it reconnects, and
    once back, re-reads its page of jobs, so a job put meanwhile shows."""
    first = await cluster.dispatcher(None, *TOKENS)
    listen = first.url.removeprefix("http://").rstrip("/")
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.put(f"{first.url}queues/rc") as response:
            assert response.status in (200, 201)
        log_in(chrome, first.url, ADMIN)
        go(chrome, first.url, "/queue/rc")
        until(chrome, SLOW, "the stream to be live", text_of("#live", "live"))
        first.proc.stop()
        until(chrome, SLOW, "the page to see the stream go", text_of("#live", "reconnecting"))
        again = await cluster.dispatcher(first.data, *TOKENS, "--listen", listen)
        job_id = await put(session, again.url, "rc", {"method": method("coro_add"), "args": [1]})
        until(chrome, SLOW, "the stream to be back", text_of("#live", "live"))
        until(chrome, LIVE, "the job put meanwhile", css(f'tr[data-job="{job_id}"]'))


async def test_a_monitor_token_sees_the_counts_and_no_job(
    cluster: Cluster, chrome: Chrome, screenshots: Path
) -> None:
    """The monitor role reads statistics, never a job: the overview shows every queue's
    counts (from GET /stats), the queue page its counts, no job and no enabled button."""
    dispatcher = await cluster.dispatcher(None, *TOKENS)
    url = dispatcher.url
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:
        async with session.put(f"{url}queues/mon") as response:
            assert response.status in (200, 201)
        for _ in range(3):
            await put(session, url, "mon", {"method": method("coro_add"), "args": [1, 2]})

    log_in(chrome, url, MONITOR)
    pending = 'tr[data-queue="mon"] td[data-status="pending"]'
    until(chrome, SLOW, "the counts on the overview", text_of(pending, "3"))
    chrome.save_screenshot(str(screenshots / "overview-monitor.png"))
    go(chrome, url, "/queue/mon")
    until(chrome, SLOW, "the counts on the queue page", text_of('[data-count="pending"]', "3"))
    until(chrome, SLOW, "the page to say no job", text_of("table.jobs", "may not read jobs"))
    buttons = chrome.find_elements("css selector", "button[data-action]")
    assert buttons and all(not b.is_enabled() for b in buttons)


@pytest.mark.skipif(browser.firefox_missing() is not None, reason=str(browser.firefox_missing()))
async def test_dashboard_in_firefox(cluster: Cluster, screenshots: Path, tmp_path: Path) -> None:
    """The scenarios above in headless Firefox: ``tests/firefox/dashboard.mjs`` logs in,
    watches a job put over HTTP appear and its progress move, kicks a buried job with the
    button, finds the worker, then, with the producer token, finds every button disabled and
    has the page's own request refused. It fails on the first thing not seen in time; here
    what it saw is checked against the API."""
    dispatcher = await cluster.dispatcher(None, *TOKENS)
    url = dispatcher.url
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for queue in ("ui", "held"):
            async with session.put(f"{url}queues/{queue}") as response:
                assert response.status in (200, 201)
        worker = await cluster.worker(url, "ui", "--token", WORKER)
        folder = screenshots / "firefox"
        folder.mkdir(exist_ok=True)
        config = {
            "url": url, "admin": ADMIN, "producer": PRODUCER, "queue": "ui", "held": "held",
            "progress_method": method("gated_progress"), "add_method": method("coro_add"),
            "gate": str(tmp_path / "gate"), "screenshots": str(folder), "live": LIVE,
            "slow": SLOW,
        }  # fmt: skip
        command = browser.firefox_command(config)
        run = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            out, err = await asyncio.wait_for(run.communicate(), FIREFOX_TIMEOUT)
        except TimeoutError:
            run.kill()
            await run.wait()
            pytest.fail(f"the Firefox run took over {FIREFOX_TIMEOUT:g}s")
        assert run.returncode == 0, f"{command[1]} failed:\n{err.decode()}"
        seen = json.loads(out)
        print(f"{seen['browser']}: started in {seen['launch_ms']} ms,", end=" ")
        print(f"scenarios {seen['scenarios_ms']} ms")

        assert seen["browser"].startswith("firefox/")
        assert seen["page_errors"] == []
        assert seen["main_without_token"] == ""
        assert seen["job_shown_after_ms"] <= LIVE * 1000
        assert "through the gate" in seen["job_result"]
        async with session.get(f"{url}queues/ui/jobs/{seen['job']}") as response:
            assert (await response.json())["status"] == "finished"
        async with session.get(f"{url}queues/held/jobs/{seen['kicked']}") as response:
            assert (await response.json())["status"] == "pending"
        assert str(worker.pid) in seen["worker_row"] and "ui" in seen["worker_row"]

        job_buttons = seen["read_only_job_buttons"]
        assert {b["action"] for b in job_buttons} >= {"kick_job", "delete", "cancel"}
        # a producer may cancel its jobs, nothing else on the page
        assert {b["action"] for b in job_buttons if not b["disabled"]} == {"cancel"}
        queue_buttons = seen["read_only_queue_buttons"]
        assert {b["action"] for b in queue_buttons} >= {"kick", "truncate"}
        assert all(b["disabled"] for b in queue_buttons)
        assert seen["read_only_kick"]["status"] == 403
        assert seen["read_only_kick"]["body"]["error"] == "forbidden"
        async with session.get(f"{url}queues/held/jobs/{seen['stuck']}") as response:
            assert (await response.json())["status"] == "buried"

        names = {Path(path).name for path in seen["screenshots"]}
        assert names >= {"login.png", "queue.png", "job.png", "workers.png", "overview.png"}
        for path in seen["screenshots"]:
            assert Path(path).read_bytes().startswith(b"\x89PNG"), path
