// The tqueues dashboard (docs/dashboard.rst): plain JavaScript, no library, no build step.
//
// Every datum comes from the dispatcher's REST API, with the token the user typed (kept in
// sessionStorage: this tab only). Live updates come from the change stream
// /ws?queue=Q&start=now: no snapshot; on "synced" (at the start and after each reconnect)
// the page reads what it shows through the API, then applies the changes as they come, so
// nothing is missed and nothing loads a whole queue. Counts and ages are re-read at most
// once a second while changes arrive (changes say where a job went, not deletions).
"use strict";

const PAGE = 50; // jobs a page of the queue page shows
const NEW_ROWS = 100; // most live rows kept above a page
const STATUSES = ["pending", "waiting", "delayed", "started", "finished", "failed", "buried", "cancelled"];
const JOB_FIELDS = new Set([
  "id", "queue", "method", "args", "kwargs", "status", "priority", "ttr", "max_attempts",
  "attempts", "lease_expires", "result", "error", "traceback", "ready_at", "created_at",
  "started_at", "finished_at", "worker", "rev", "event", "ttl", "expires_at", "urgent",
  "lease", "key", "duplicate", "after", "has_dependents", "cancel_requested",
]);

const state = { token: sessionStorage.getItem("tqueues.token") || "", who: null };
let cleanups = []; // what the current page must stop (sockets, timers) when left
let pageId = 0; // bumped on every navigation: late answers of a page left are dropped

// -- small helpers --------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  seconds = Math.max(0, seconds);
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

function when(epoch) {
  if (!epoch) return "–";
  return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

const now = () => Date.now() / 1000;
const json = (value) => JSON.stringify(value, null, 2);
const may = (operation) => !!state.who && state.who.operations.includes(operation);
const enc = encodeURIComponent;
// Whether a queue's settings say it is paused now (a pause for a while ends by itself).
const isPaused = (settings) => !!settings.paused && (settings.paused_until == null || settings.paused_until > now());

function toast(text, isError) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = isError ? "toast error shown" : "toast shown";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = "toast"; }, 5000);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (response.status === 401) {
    showLogin("The token is not (or no longer) valid on this dispatcher.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// A button that calls the API if the token's role may do `operation`; disabled otherwise.
function action(label, operation, run, opts) {
  const allowed = may(operation);
  const button = h("button", {
    type: "button", class: opts && opts.danger ? "danger" : undefined, disabled: !allowed,
    title: allowed ? undefined : `a ${state.who ? state.who.role : "?"} token may not ${operation}`,
    "data-action": operation,
  }, label);
  button.addEventListener("click", async () => {
    if (opts && opts.confirm && !window.confirm(opts.confirm)) return;
    button.disabled = true;
    try {
      const answer = await run();
      toast(opts && opts.done ? opts.done(answer) : `${label}: done`);
      if (opts && opts.after) opts.after(answer);
    } catch (error) {
      toast(`${label}: ${error.message}`, true);
    } finally {
      button.disabled = !allowed;
    }
  });
  return button;
}

// A note beside action buttons none of which the token's role may press.
function readOnlyNote(box) {
  if (box.querySelector("button:enabled")) return box;
  box.append(h("span", { class: "hint" }, ` Read-only: a ${state.who.role} token may not do these.`));
  return box;
}

// -- the change stream --------------------------------------------------------------------------

const liveSockets = new Set();

function setLive() {
  const badge = document.getElementById("live");
  const open = [...liveSockets].filter((s) => s.synced).length;
  badge.textContent = liveSockets.size === 0 ? "" : open === liveSockets.size ? "live" : "reconnecting…";
  badge.className = liveSockets.size === 0 ? "live" : open === liveSockets.size ? "live on" : "live off";
}

// Watch `queue`'s changes from now on: onSynced() when the stream is in place (read what
// you show then), onChange(message) for each change. Reconnects with backoff; each
// reconnect calls onSynced() again, so a change made while it was away is read back.
function watch(queue, onChange, onSynced) {
  const entry = { synced: false, closed: false, socket: null, delay: 500 };
  liveSockets.add(entry);
  const open = () => {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("queue", queue);
    url.searchParams.set("start", "now");
    if (state.token) url.searchParams.set("access_token", state.token);
    const socket = new WebSocket(url);
    entry.socket = socket;
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "synced") {
        entry.synced = true;
        entry.delay = 500;
        setLive();
        onSynced();
      } else if (message.type === "change") {
        onChange(message);
      }
    };
    socket.onclose = () => {
      entry.synced = false;
      setLive();
      if (!entry.closed) {
        setTimeout(open, entry.delay);
        entry.delay = Math.min(entry.delay * 2, 10000);
      }
    };
  };
  open();
  setLive();
  cleanups.push(() => {
    entry.closed = true;
    liveSockets.delete(entry);
    if (entry.socket) entry.socket.close();
    setLive();
  });
}

// Call `read` now and then at most once per `interval` ms while poke() is called.
function throttled(read, interval) {
  let timer = null;
  let again = false;
  const run = async () => {
    timer = setTimeout(() => { timer = null; if (again) { again = false; run(); } }, interval);
    try { await read(); } catch (error) { if (error.status !== 401) console.warn(error); }
  };
  cleanups.push(() => { clearTimeout(timer); again = false; });
  return () => { if (timer === null) run(); else again = true; };
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  cleanups.push(() => clearInterval(timer));
}

// -- charts ---------------------------------------------------------------------------------------

// A sparkline of per-minute counts (the last hour) as events per second, one polyline per
// series; `series` is [{name, values, class}].
function sparkline(series, label) {
  const width = 180;
  const height = 36;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": label,
    class: "spark",
  });
  const title = svg("title", {});
  title.textContent = label;
  chart.append(title);
  for (const s of series) {
    const step = width / Math.max(1, s.values.length - 1);
    const points = s.values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`);
    chart.append(svg("polyline", { points: points.join(" "), class: s.class, fill: "none" }));
  }
  return chart;
}

// Per-minute buckets of a history answer as 60 values (oldest first) for each event name.
function minutes(history, names) {
  const end = Math.floor(now() / 60) * 60;
  const values = Object.fromEntries(names.map((n) => [n, new Array(60).fill(0)]));
  for (const bucket of history.buckets) {
    const index = 59 - Math.round((end - bucket.at) / 60);
    if (index < 0 || index > 59) continue;
    for (const n of names) values[n][index] += bucket.counts[n] || 0;
  }
  return values;
}

// -- login ---------------------------------------------------------------------------------------

function showLogin(message) {
  for (const cleanup of cleanups.splice(0)) cleanup();
  state.who = null;
  document.getElementById("main").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
  document.getElementById("token").focus();
}

async function logIn() {
  try {
    state.who = await api("GET", "/whoami");
  } catch (error) {
    if (error.status !== 401) showLogin(`The dispatcher did not answer: ${error.message}`);
    return false;
  }
  document.getElementById("login").hidden = true;
  document.getElementById("who").textContent = `role: ${state.who.role}`;
  document.getElementById("logout").hidden = !state.token;
  return true;
}

// -- pages ---------------------------------------------------------------------------------------

function stateCells(counts) {
  return STATUSES.map((s) => h("td", { class: `num st-${s}`, "data-status": s }, String(counts ? counts[s] ?? 0 : "…")));
}

async function overviewPage(main, id) {
  main.append(h("h1", {}, "Queues"));
  const workersLine = h("p", { class: "workers-line" }, "Workers: …");
  main.append(workersLine);
  const body = h("tbody", {});
  main.append(h("table", { class: "queues" },
    h("caption", { class: "sr" }, "Every queue: jobs per state, oldest pending, throughput"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Queue"),
      STATUSES.map((s) => h("th", { scope: "col", class: "num" }, s)),
      h("th", { scope: "col" }, "Oldest pending"),
      h("th", { scope: "col" }, "Finished / failed per s (last hour)"))),
    body));
  let queues;
  if (may("list_queues")) {
    ({ queues } = await api("GET", "/queues"));
  } else { // a monitor token: no list of queues, no job, but every queue's statistics
    queues = (await api("GET", "/stats")).by_queue.map((stats) => ({ name: stats.queue }));
    main.append(h("p", { class: "hint" }, `A ${state.who.role} token sees the counts and the throughput, read every 5 s: it may not open the change stream nor read jobs.`));
  }
  if (id !== pageId) return;
  queues.sort((a, b) => (a.name < b.name ? -1 : 1));
  if (queues.length === 0) body.append(h("tr", {}, h("td", { colspan: 9 }, "No queue yet.")));
  for (const settings of queues) {
    const row = h("tr", { "data-queue": settings.name });
    body.append(row);
    queueRow(row, settings.name, settings);
  }
  if (may("list_workers")) {
    const readWorkers = async () => {
      const { workers } = await api("GET", "/workers");
      const alive = workers.filter((w) => w.state !== "lost").length;
      workersLine.replaceChildren("Workers alive: ", h("a", { href: "#/workers", "data-workers-alive": alive }, String(alive)),
        workers.length > alive ? ` (${workers.length - alive} lost)` : "");
    };
    readWorkers().catch(() => {});
    every(5000, () => readWorkers().catch(() => {})); // heartbeats come every few seconds
  } else {
    workersLine.textContent = `Workers: a ${state.who.role} token may not list them.`;
  }
}

function queueRow(row, name, settings) {
  let counts = null;
  let oldest = null;
  let history = null;
  const cells = stateCells(null);
  const oldestCell = h("td", { class: "num" }, "…");
  const chartCell = h("td", {});
  row.append(h("th", { scope: "row" }, h("a", { href: `#/queue/${enc(name)}` }, name),
    isPaused(settings) ? h("span", { class: "badge" }, " paused") : null), ...cells, oldestCell, chartCell);
  const draw = () => {
    STATUSES.forEach((s, i) => { cells[i].textContent = counts ? String(counts[s] ?? 0) : "–"; });
    oldestCell.textContent = oldest ? age(now() - oldest) : "–";
    if (history) {
      const v = minutes(history, ["finished", "failed"]);
      const perSecond = (values) => values.map((x) => x / 60);
      // The mean of the last 5 minutes, the current one included.
      const last = (values) => (values.slice(55).reduce((a, b) => a + b, 0) / 300).toFixed(2);
      chartCell.replaceChildren(
        sparkline([{ values: perSecond(v.failed), class: "bad" }, { values: perSecond(v.finished), class: "ok" }],
          `${name}: finished and failed per second, last hour`),
        h("span", { class: "rate", title: "finished / failed per second, the last 5 minutes" },
          ` ${last(v.finished)} / ${last(v.failed)} (5 min)`));
    } else {
      chartCell.textContent = may("history") ? "…" : "–";
    }
  };
  const read = async () => {
    const [stats, first, hist] = await Promise.all([
      may("stats") ? api("GET", `/queues/${enc(name)}/stats`) : null,
      may("list_jobs") ? api("GET", `/queues/${enc(name)}/jobs?status=pending&limit=1`) : null,
      may("history") ? api("GET", `/queues/${enc(name)}/history`) : null,
    ]);
    counts = stats ? stats.jobs : null;
    oldest = first && first.jobs.length ? first.jobs[0].created_at : null;
    history = hist;
    draw();
  };
  const refresh = throttled(read, 1000);
  let drawing = false;
  const drawSoon = () => { // once a frame, however many changes came
    if (drawing) return;
    drawing = true;
    requestAnimationFrame(() => { drawing = false; draw(); });
  };
  if (!may("websocket")) { // no change stream for this token: read every 5 s
    refresh();
    every(5000, refresh);
    every(1000, draw);
    return;
  }
  watch(name, (change) => {
    if (counts) { // at once; the re-read corrects it
      if (change.old_status) counts[change.old_status] = Math.max(0, (counts[change.old_status] || 0) - 1);
      counts[change.job.status] = (counts[change.job.status] || 0) + 1;
    }
    if (history && (change.kind === "finished" || change.kind === "failed")) {
      const at = Math.floor(now() / 60) * 60;
      let bucket = history.buckets.find((b) => b.at === at);
      if (!bucket) { bucket = { at, counts: {} }; history.buckets.push(bucket); }
      bucket.counts[change.kind] = (bucket.counts[change.kind] || 0) + 1;
    }
    drawSoon();
    refresh();
  }, refresh);
  every(1000, draw); // the oldest pending job's age grows
}

function jobRow(job) {
  return h("tr", { "data-job": job.id, "data-status": job.status },
    h("td", {}, h("a", { href: `#/job/${enc(job.queue)}/${enc(job.id)}`, class: "mono" }, job.id.slice(0, 12) + "…")),
    h("td", { class: "mono" }, job.method),
    h("td", {}, h("span", { class: `pill st-${job.status}` }, job.status)),
    h("td", { class: "num" }, String(job.priority)),
    h("td", { class: "num" }, `${job.attempts}/${job.max_attempts}`),
    h("td", {}, when(job.created_at)),
    h("td", { class: "err" }, job.error ? job.error.slice(0, 120) : ""));
}

async function queuePage(main, id, name, params) {
  const status = params.get("status") || "";
  const cursor = params.get("cursor") || "";
  const counts = h("p", { class: "counts" }, "…");
  const pausedBadge = h("span", { class: "badge" });
  const actions = h("div", { class: "actions" });
  const method = h("input", { id: "f-method", type: "search", placeholder: "method contains…" });
  const errorText = h("input", { id: "f-error", type: "search", placeholder: "error contains…" });
  const body = h("tbody", {});
  const pager = h("nav", { class: "pager", "aria-label": "Pages of jobs" });
  const tabs = h("nav", { class: "tabs", "aria-label": "Jobs by state" },
    ["", ...STATUSES].map((s) => h("a", {
      href: `#/queue/${enc(name)}${s ? `?status=${s}` : ""}`, "aria-current": s === status ? "page" : undefined,
    }, s || "all")));
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Queues"), " › "),
    h("h1", {}, `Queue ${name} `, pausedBadge), counts, actions, tabs,
    h("div", { class: "filters" },
      h("label", { for: "f-method" }, "Method"), method,
      h("label", { for: "f-error" }, "Error"), errorText,
      h("span", { class: "hint" }, "(filters the jobs loaded on this page)")),
    h("table", { class: "jobs" },
      h("caption", { class: "sr" }, "Jobs"),
      h("thead", {}, h("tr", {}, ["Id", "Method", "Status", "Priority", "Attempts", "Created", "Error"].map((c) => h("th", { scope: "col" }, c)))),
      body),
    pager);

  const rows = new Map(); // job id -> tr
  const applyFilter = () => {
    const m = method.value.toLowerCase();
    const e = errorText.value.toLowerCase();
    for (const tr of body.rows) {
      const cellMethod = tr.cells[1] ? tr.cells[1].textContent.toLowerCase() : "";
      const cellError = tr.cells[6] ? tr.cells[6].textContent.toLowerCase() : "";
      tr.hidden = !!tr.dataset.job && (!cellMethod.includes(m) || !cellError.includes(e));
    }
  };
  method.addEventListener("input", applyFilter);
  errorText.addEventListener("input", applyFilter);

  // Kick every job of `status`, MAX_KICK (10,000) a request, until a request kicks fewer.
  const kickAll = async (status) => {
    let kicked = 0;
    for (;;) {
      const answer = await api("POST", `/queues/${enc(name)}/kick`, { bound: 10000, status });
      kicked += answer.kicked;
      if (answer.kicked < 10000) return { kicked };
    }
  };
  let paused = false;
  const drawActions = () => {
    actions.replaceChildren(
      paused
        ? action("Resume", "resume", () => api("POST", `/queues/${enc(name)}/resume`), { after: readQueue })
        : action("Pause", "pause", () => api("POST", `/queues/${enc(name)}/pause`), { after: readQueue }),
      action("Kick all buried", "kick", () => kickAll("buried"),
        { done: (a) => `kicked ${a.kicked} buried jobs`, after: () => refresh() }),
      action("Retry all failed", "kick", () => kickAll("failed"),
        { done: (a) => `kicked ${a.kicked} failed jobs`, after: () => refresh() }),
      action("Truncate", "truncate", () => api("POST", `/queues/${enc(name)}/truncate`),
        { danger: true, confirm: `Delete every job of queue ${name}?`, done: (a) => `deleted ${a.deleted} jobs`, after: () => readPage() }));
    readOnlyNote(actions);
  };
  const readQueue = async () => {
    if (!may("list_queues")) { drawActions(); return; }
    const { queues } = await api("GET", "/queues");
    const settings = queues.find((q) => q.name === name) || {};
    paused = isPaused(settings);
    pausedBadge.textContent = !paused ? "" : settings.paused_until ? `paused until ${when(settings.paused_until)}` : "paused";
    drawActions();
  };
  const readCounts = async () => {
    if (!may("stats")) { counts.textContent = `(a ${state.who.role} token may not read the counts)`; return; }
    const stats = await api("GET", `/queues/${enc(name)}/stats`);
    counts.replaceChildren(...STATUSES.map((s) => h("span", { class: `pill st-${s}`, "data-count": s }, `${s} ${stats.jobs[s] ?? 0}`)), ` total ${stats.total}`);
  };
  const readPage = async () => {
    if (!may("list_jobs")) {
      body.replaceChildren(h("tr", {}, h("td", { colspan: 7 }, `A ${state.who.role} token may not read jobs.`)));
      return;
    }
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (status) query.set("status", status);
    if (cursor) query.set("cursor", cursor);
    const page = await api("GET", `/queues/${enc(name)}/jobs?${query}`);
    if (id !== pageId) return;
    body.replaceChildren();
    rows.clear();
    for (const job of page.jobs) {
      const tr = jobRow(job);
      rows.set(job.id, tr);
      body.append(tr);
    }
    if (page.jobs.length === 0) body.append(h("tr", {}, h("td", { colspan: 7 }, "No job here.")));
    const base = `#/queue/${enc(name)}?${status ? `status=${status}&` : ""}`;
    pager.replaceChildren(...[
      cursor ? h("a", { href: base.replace(/[?&]$/, "") }, "« First page") : null,
      page.next_cursor ? h("a", { href: `${base}cursor=${enc(page.next_cursor)}`, rel: "next" }, "Next page »") : null,
    ].filter(Boolean));
    applyFilter();
  };
  const refresh = throttled(async () => { await readCounts(); }, 1000);
  await readQueue();
  if (!may("websocket")) { // no change stream for this token: read every 5 s
    await readPage();
    refresh();
    every(5000, refresh);
    return;
  }
  watch(name, (change) => {
    const job = change.job;
    const tr = rows.get(job.id);
    if (tr) {
      const fresh = jobRow(job);
      if (status && job.status !== status) fresh.classList.add("moved");
      tr.replaceWith(fresh);
      rows.set(job.id, fresh);
    } else if (!status || job.status === status) {
      const fresh = jobRow(job);
      fresh.classList.add("new");
      rows.set(job.id, fresh);
      body.prepend(fresh);
      const live = body.querySelectorAll("tr.new");
      if (live.length > NEW_ROWS) {
        const last = live[live.length - 1];
        rows.delete(last.dataset.job);
        last.remove();
      }
    }
    applyFilter();
    refresh();
  }, () => { readPage().catch((e) => toast(e.message, true)); refresh(); });
}

async function jobPage(main, id, queue, jobId) {
  const fields = h("dl", { class: "fields" });
  const progress = h("section", { "aria-labelledby": "progress-title" });
  const events = h("ol", { class: "events" });
  const explanation = h("p", { class: "explain" });
  const actions = h("div", { class: "actions" });
  main.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "Queues"), " › ", h("a", { href: `#/queue/${enc(queue)}` }, queue), " › "),
    h("h1", { class: "mono" }, `Job ${jobId}`), actions, explanation,
    h("h2", { id: "progress-title" }, "Progress (reported by the worker through update)"), progress,
    h("h2", {}, "Job"), fields,
    h("h2", {}, "Events"), events,
    h("p", { class: "hint" }, "The events of the job's stored timestamps, and those seen live since this page opened."));
  const path = `/queues/${enc(queue)}/jobs/${enc(jobId)}`;
  const seen = new Set();
  const event = (at, what) => {
    const key = `${what}@${at}`;
    if (!at || seen.has(key)) return;
    seen.add(key);
    const item = h("li", { "data-event": what }, h("time", {}, when(at)), " ", what);
    const after = [...events.children].find((li) => li.dataset.at > at);
    item.dataset.at = at;
    events.insertBefore(item, after || null);
  };
  const draw = (job) => {
    const rowsOf = [
      ["Method", h("code", {}, job.method)], ["Status", h("span", { class: `pill st-${job.status}`, id: "job-status" }, job.status)],
      ["Args", h("pre", {}, json(job.args))], ["Kwargs", h("pre", {}, json(job.kwargs))],
      ["Priority", job.priority], ["Attempts", `${job.attempts} of ${job.max_attempts}`], ["TTR", `${job.ttr} s`],
      ["Worker", job.worker || "–"], ["Created", when(job.created_at)], ["Ready at", when(job.ready_at)],
      ["Started", when(job.started_at)], ["Finished", when(job.finished_at)],
      ["Lease expires", when(job.lease_expires)], ["Last event", `${job.event} (revision ${job.rev})`],
      ["Result", job.result === null || job.result === undefined ? "–" : h("pre", { id: "job-result" }, json(job.result))],
      ["Error", job.error || "–"], ["Traceback", job.traceback ? h("pre", { class: "tb" }, job.traceback) : "–"],
      ["Key", job.key ? h("code", { id: "job-key" }, job.key) : "–"],
      ["Waits for", job.after && job.after.length
        ? h("span", { id: "job-after" }, ...job.after.flatMap((name, i) => {
          const [q, ...rest] = name.split("/");
          const link = h("a", { href: `#/job/${enc(q)}/${enc(rest.join("/"))}`, class: "mono" }, name);
          return i ? [", ", link] : [link];
        }))
        : "–"],
    ];
    if (job.cancel_requested) rowsOf.push(["Cancel", "requested: its worker stops it at its next heartbeat"]);
    fields.replaceChildren(...rowsOf.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const extra = Object.fromEntries(Object.entries(job).filter(([k]) => !JOB_FIELDS.has(k)));
    const value = typeof extra.progress === "number" ? extra.progress : null;
    progress.replaceChildren(...[
      value === null ? null : h("progress", { max: value > 1 ? 100 : 1, value, "aria-label": "progress" }),
      Object.keys(extra).length ? h("pre", { id: "job-progress" }, json(extra)) : h("p", { id: "job-progress" }, "Nothing reported."),
    ].filter(Boolean));
    event(job.created_at, "put");
    event(job.started_at, `taken${job.worker ? ` by ${job.worker}` : ""}`);
    if (job.finished_at) event(job.finished_at, job.status === "finished" ? "finished" : job.event);
  };
  const explain = async () => {
    try {
      const answer = await api("GET", `${path}/explain`);
      explanation.textContent = answer.summary;
    } catch { explanation.textContent = ""; }
  };
  const read = async () => {
    try {
      const job = await api("GET", path);
      if (id === pageId) draw(job);
    } catch (error) {
      if (error.status === 404) fields.replaceChildren(h("p", { class: "error" }, "This job does not exist (any more)."));
      else throw error;
    }
    await explain();
  };
  const after = () => read().catch(() => {});
  actions.append(
    action("Kick", "kick_job", () => api("POST", `${path}/kick`, {}), { after }),
    action("Bury", "bury", () => api("POST", `${path}/bury`, { reason: "buried from the dashboard" }), { after }),
    action("Release", "release", () => api("POST", `${path}/release`, {}), { after }),
    action("Cancel", "cancel", () => api("POST", `${path}/cancel`, {}),
      { danger: true, confirm: `Cancel job ${jobId}? A running job is stopped; a cancelled job is never retried.`, after }),
    action("Delete", "delete", () => api("DELETE", path), { danger: true, confirm: `Delete job ${jobId}?`, after }));
  readOnlyNote(actions);
  const refreshExplain = throttled(explain, 1000);
  watch(queue, (change) => {
    if (change.job.id !== jobId) return;
    draw(change.job);
    event(now(), change.kind === "updated" ? "updated (progress)" : change.kind);
    refreshExplain();
  }, () => { read().catch((e) => toast(e.message, true)); });
}

async function workersPage(main, id) {
  main.append(h("h1", {}, "Workers"));
  if (!may("list_workers")) {
    main.append(h("p", {}, `A ${state.who.role} token may not list the workers.`));
    return;
  }
  const body = h("tbody", {});
  main.append(h("table", { class: "workers" },
    h("caption", { class: "sr" }, "Workers seen in the last 5 minutes"),
    h("thead", {}, h("tr", {}, ["Worker", "State", "Queues", "Concurrency", "Running jobs", "Last heartbeat", "Finished / failed", ""].map((c) => h("th", { scope: "col" }, c)))),
    body),
  h("p", { class: "hint" }, "Workers report every few seconds (heartbeats); this page reads them every 2 s."));
  const read = async () => {
    const { workers } = await api("GET", "/workers");
    if (id !== pageId) return;
    body.replaceChildren(...workers.map((w) => h("tr", { "data-worker": w.id },
      h("th", { scope: "row", class: "mono" }, w.id, h("div", { class: "hint" }, `${w.host} pid ${w.pid}, tqueues ${w.version}`)),
      h("td", {}, h("span", { class: `pill w-${w.state}` }, w.state)),
      h("td", {}, w.queues.join(", ")),
      h("td", { class: "num" }, String(w.concurrency)),
      h("td", {}, w.running.length === 0 ? "none" : h("ul", {}, w.running.map((r) => h("li", {},
        h("a", { href: `#/job/${enc(r.queue)}/${enc(r.id)}`, class: "mono" }, `${r.queue}/${r.id.slice(0, 8)}…`), ` ${age(now() - r.started_at)}`)))),
      h("td", {}, `${age(w.seen_ago)} ago`),
      h("td", { class: "num" }, `${w.finished} / ${w.failed}`),
      h("td", {},
        action("Quiet", "quiet_worker", () => api("POST", `/workers/${enc(w.id)}/quiet`), { after: () => read() }),
        action("Stop", "stop_worker", () => api("POST", `/workers/${enc(w.id)}/stop`), { danger: true, confirm: `Stop worker ${w.id}?`, after: () => read() })))));
    if (workers.length === 0) body.append(h("tr", {}, h("td", { colspan: 8 }, "No worker seen in the last 5 minutes.")));
  };
  await read();
  every(2000, () => read().catch(() => {}));
}

// -- routing --------------------------------------------------------------------------------------

async function route() {
  for (const cleanup of cleanups.splice(0)) cleanup();
  const id = ++pageId;
  const main = document.getElementById("main");
  main.replaceChildren();
  if (!state.who && !(await logIn())) return;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = (parts[0] === "workers") === (link.dataset.nav === "workers");
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  try {
    if (parts[0] === "queue" && parts[1]) {
      document.title = `${parts[1]} · tqueues`;
      await queuePage(main, id, parts[1], params);
    } else if (parts[0] === "job" && parts[2]) {
      document.title = `job ${parts[2].slice(0, 8)} · tqueues`;
      await jobPage(main, id, parts[1], parts[2]);
    } else if (parts[0] === "workers") {
      document.title = "workers · tqueues";
      await workersPage(main, id);
    } else {
      document.title = "tqueues";
      await overviewPage(main, id);
    }
  } catch (error) {
    if (error.status !== 401 && id === pageId) main.append(h("p", { class: "error", role: "alert" }, error.message));
  }
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("tqueues.token", state.token);
  document.getElementById("token").value = "";
  route();
});
document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("tqueues.token");
  state.token = "";
  showLogin("Logged out.");
});
window.addEventListener("hashchange", route);
route();
