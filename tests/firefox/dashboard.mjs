// The dashboard at /ui/ in real headless Firefox (Debian's firefox-esr), driven by
// puppeteer-core over WebDriver BiDi, which Firefox speaks itself: no geckodriver.
//
// Run by test_dashboard_in_firefox (tests/acceptance/test_dashboard.py), which starts the
// dispatcher and the worker and gives this script, as one JSON argument:
//   {firefox, url, admin, producer, queue, held, progress_method, add_method, gate,
//    screenshots, live, slow}
// (`live` and `slow`: seconds, how soon a change must show and how long to wait on
// processes). The same scenarios as the Chromium tests (test_dashboard.py): log in with a
// token; a job put over HTTP shows on the queue page within `live`; its progress shows live
// on the job page; a buried job kicked with the button becomes pending; the worker shows on
// the workers page; a read-only token finds the action buttons disabled and the API
// refuses the action. Screenshots of each page go to `screenshots`.
//
// Prints one JSON object of what it saw (with `page_errors`: what the page threw or logged
// as an error) on standard output and exits 0; on the first expectation not met it says
// which on standard error (after a screenshot `failed.png`) and exits 1.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import puppeteer from "puppeteer-core";

const config = JSON.parse(process.argv[2]);
const seen = { screenshots: [] };

class Failed extends Error {}

function expect(condition, what) {
  if (!condition) throw new Failed(what);
}

/** Wait (polling every 50 ms, up to `timeout` seconds) until `predicate` holds in the page.
 * Polled from here: puppeteer's waitForFunction builds its predicate in the page with
 * Function(), which the dashboard's Content-Security-Policy forbids (Firefox enforces it on
 * that; an evaluation over BiDi is not the page's own script). */
async function until(page, timeout, what, predicate, ...args) {
  const deadline = performance.now() + timeout * 1000;
  for (;;) {
    try {
      if (await page.evaluate(predicate, ...args)) return;
    } catch (error) {
      // The page navigating under the evaluation: look again.
      if (!/context|destroyed|navigat/i.test(String(error))) throw error;
    }
    if (performance.now() >= deadline) throw new Failed(`timed out after ${timeout}s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// In-page predicates: the first element the selector finds is shown (and holds the text).
const shown = (selector) => {
  const element = document.querySelector(selector);
  return element !== null && element.getClientRects().length > 0;
};
const holds = (selector, wanted) => {
  const element = document.querySelector(selector);
  return element !== null && element.getClientRects().length > 0 && element.innerText.includes(wanted);
};
const textOf = (page, selector) => page.$eval(selector, (element) => element.innerText);

async function screenshot(page, name) {
  const path = join(config.screenshots, name);
  await page.screenshot({ path, fullPage: true });
  seen.screenshots.push(path);
}

/** Open the page at `fragment` (a route of the page's own: no reload). */
async function go(page, fragment) {
  await page.evaluate((hash) => {
    window.location.hash = hash;
  }, fragment);
}

/** Open the dashboard with a fresh tab state (no token kept) at `fragment`. */
async function fresh(page, fragment) {
  await page.goto(`${config.url}ui/#${fragment}`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await until(page, config.slow, "the login box", shown, "#token");
}

async function logIn(page, token) {
  await fresh(page, "/");
  await page.type("#token", token);
  await page.click("#login-form button");
  await until(page, config.slow, "the role to show", holds, "#who", "role:");
}

/** The REST API with the admin token: the answer's JSON, after checking its status. */
async function api(method, path, body, status) {
  const response = await fetch(`${config.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${config.admin}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  expect(response.status === status, `${method} ${path} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

async function put(queue, body) {
  return (await api("POST", `queues/${queue}/jobs`, body, 201)).id;
}

/** The action buttons on the page: their actions and whether each is disabled. */
async function buttons(page) {
  return page.$$eval("button[data-action]", (found) =>
    found.map((button) => ({ action: button.dataset.action, disabled: button.disabled })),
  );
}

async function scenarios(page) {
  const { queue, held, live, slow } = config;

  // Without a token: the login box and nothing else.
  await fresh(page, `/queue/${queue}`);
  seen.main_without_token = await textOf(page, "#main");
  await screenshot(page, "login.png");

  await logIn(page, config.admin);
  await until(page, slow, `queue ${queue} on the overview`, shown, `tr[data-queue="${queue}"] a`);
  await until(page, slow, "the stream to be live", holds, "#live", "live");

  // A job put over HTTP shows on the queue page within `live` seconds.
  await go(page, `/queue/${queue}`);
  await until(page, slow, "the queue page", holds, "main h1", `Queue ${queue}`);
  await until(page, slow, "the stream to be live", holds, "#live", "live");
  const jobId = await put(queue, { method: config.progress_method, args: [config.gate] });
  const putAt = performance.now();
  await until(page, live, "the new job on the queue page", shown, `tr[data-job="${jobId}"]`);
  seen.job_shown_after_ms = Math.round(performance.now() - putAt);
  seen.job = jobId;
  await screenshot(page, "queue.png");

  // Its progress, as the worker reports it, shows live on the job page.
  await go(page, `/job/${queue}/${jobId}`);
  await until(page, slow, "the reported progress", holds, "#job-progress", '"progress": 50');
  await screenshot(page, "job.png");
  writeFileSync(config.gate, "");
  await until(page, slow, "the job to finish", holds, "#job-status", "finished");
  await until(page, live, "the last progress", holds, "#job-progress", '"progress": 100');
  seen.job_result = await textOf(page, "#job-result");

  // A buried job, kicked with the button, becomes pending.
  const buried = await put(held, { method: config.add_method, args: [1, 2] });
  await api("POST", `queues/${held}/jobs/${buried}/bury`, {}, 200);
  await go(page, `/job/${held}/${buried}`);
  await until(page, slow, "the buried job", holds, "#job-status", "buried");
  await until(page, slow, "the stream to be live", holds, "#live", "live");
  await page.click('button[data-action="kick_job"]');
  await until(page, slow, "the kicked job to be pending", holds, "#job-status", "pending");
  seen.kicked = buried;

  // The worker (its heartbeats) on the workers page.
  await go(page, "/workers");
  await until(page, slow, "the worker on the workers page", holds, "tr[data-worker]", "running");
  seen.worker_row = await textOf(page, "tr[data-worker]");
  await screenshot(page, "workers.png");

  await go(page, "/");
  const finished = `tr[data-queue="${queue}"] td[data-status="finished"]`;
  await until(page, slow, "the counts", holds, finished, "1");
  await screenshot(page, "overview.png");

  // A read-only token: every action button disabled, and the API refuses the action.
  const stuck = await put(held, { method: config.add_method, args: [3, 4] });
  await api("POST", `queues/${held}/jobs/${stuck}/bury`, {}, 200);
  await logIn(page, config.producer);
  await go(page, `/job/${held}/${stuck}`);
  await until(page, slow, "the buried job", holds, "#job-status", "buried");
  seen.read_only_job_buttons = await buttons(page);
  await screenshot(page, "job-read-only.png");
  await go(page, `/queue/${held}`);
  await until(page, slow, "the queue page", shown, `tr[data-job="${stuck}"]`);
  seen.read_only_queue_buttons = await buttons(page);
  await screenshot(page, "queue-read-only.png");
  seen.read_only_kick = await page.evaluate(async (url) => {
    const response = await fetch(url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${sessionStorage.getItem("tqueues.token")}`,
        "Content-Type": "application/json",
      },
      body: "{}",
    });
    return { status: response.status, body: await response.json() };
  }, `${config.url}queues/${held}/jobs/${stuck}/kick`);
  seen.stuck = stuck;
}

const started = performance.now();
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: config.firefox,
  headless: true,
  // The window's size, not an emulated viewport (ESR's BiDi lacks the emulation commands).
  defaultViewport: null,
  args: ["--width=1280", "--height=800"],
});
seen.browser = await browser.version();
seen.launch_ms = Math.round(performance.now() - started);
let status = 0;
let page = null;
try {
  page = await browser.newPage();
  // What the page's own script threw or logged as an error: none is expected.
  seen.page_errors = [];
  page.on("pageerror", (error) => seen.page_errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") seen.page_errors.push(`console: ${message.text()}`);
  });
  await scenarios(page);
  seen.scenarios_ms = Math.round(performance.now() - started) - seen.launch_ms;
  process.stdout.write(`${JSON.stringify(seen)}\n`);
} catch (error) {
  status = 1;
  if (page !== null) await screenshot(page, "failed.png").catch(() => {});
  process.stderr.write(`${error instanceof Failed ? error.message : error.stack}\n`);
  process.stderr.write(`seen so far: ${JSON.stringify(seen)}\n`);
} finally {
  await browser.close();
}
process.exit(status);
