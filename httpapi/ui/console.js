// outbox console: reads the JSON API (/status, /status/history, /dlq) and
// acts through it. No framework and no network beyond this origin. Every
// value from the server is written with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "outbox-admin-token";
const POLL_MS = 2000;
const PAYLOAD_PREVIEW = 4000; // characters of pretty-printed payload shown before "Show all"

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}
function setText(id, v) { $(id).textContent = v == null ? "" : String(v); }
function fmtTime(s) {
  if (!s) return "–";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString(undefined, { hour12: false });
}
function fmtNum(n) { return n == null ? "–" : Number(n).toLocaleString(); }
function aggKey(a) { return a ? a.aggregatetype + "/" + a.aggregateid : ""; }

// ---- the admin token: asked once, kept for this tab only ----
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
let afterToken = null;
function askToken(why, then) {
  afterToken = then || null;
  if (why) setText("token-why", why);
  $("token-dialog").hidden = false;
  $("token-input").value = "";
  $("token-input").focus();
}
function showTokenState() {
  $("token-forget").hidden = !token();
  $("token-set").textContent = token() ? "Admin token ✓" : "Admin token…";
}

class HTTPError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || ("HTTP " + status));
    this.status = status;
    this.problem = problem;
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  let doc = null;
  const text = await resp.text();
  try { doc = text ? JSON.parse(text) : null; } catch (_) { doc = null; }
  if (!resp.ok) throw new HTTPError(resp.status, doc);
  return doc;
}

// adminCall runs fn; on 401 it asks for the token and runs fn again.
async function adminCall(fn) {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof HTTPError && e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
      return new Promise((resolve, reject) => {
        askToken(token() ? "That token was refused. Enter the admin token (OUTBOX_ADMIN_TOKEN)." :
          "This server protects dead letters with OUTBOX_ADMIN_TOKEN. Enter it to continue; it is kept in this tab only.",
          () => fn().then(resolve, reject));
      });
    }
    throw e;
  }
}

function showError(e) {
  const box = $("error");
  if (!e) { box.hidden = true; return; }
  box.textContent = e.message || String(e);
  box.hidden = false;
}

// ---- views ----
const views = ["overview", "dlq", "parked"];
function route() {
  const name = (location.hash || "#overview").slice(1).split("/")[0];
  const view = views.includes(name) ? name : "overview";
  for (const v of views) {
    $(v).hidden = v !== view;
    $("nav-" + v).classList.toggle("active", v === view);
  }
  showError(null);
  if (view === "dlq") {
    loadDeadLetters(false);
    const id = (location.hash.split("/")[1] || "");
    if (id) openDeadLetter(id);
  }
  if (view === "parked") loadParked(false);
}

// ---- overview ----
let lastOK = 0;
async function pollOverview() {
  try {
    const [st, hist] = await Promise.all([api("GET", "/status"), api("GET", "/status/history")]);
    renderStatus(st || {});
    renderHistory(hist || {});
    lastOK = Date.now();
    setText("live", "live · " + new Date().toLocaleTimeString(undefined, { hour12: false }));
    $("live").classList.remove("stale");
  } catch (e) {
    setText("live", "not reachable: " + (e.message || e));
    $("live").classList.add("stale");
  }
}

function renderStatus(st) {
  const b = $("ov-breaker");
  b.textContent = st.breaker || "–";
  b.className = "big state-" + (st.breaker || "");
  setText("ov-active", st.relay_active ? "relay active" : (st.relay_running ? "standby (another relay holds the lease)" : "relay not running"));
  setText("ov-lag-events", fmtNum(st.lag_events));
  setText("ov-lag-seconds", st.lag_seconds == null ? "–" : st.lag_seconds.toFixed(1));
  setText("ov-backlog", fmtNum(st.backlog));
  setText("ov-inflight", fmtNum(st.in_flight));
  setText("ov-peak", fmtNum(st.peak_in_flight));
  setText("ov-published", fmtNum(st.published));
  setText("ov-retried", fmtNum(st.retried));
  setText("ov-failed", fmtNum(st.failed_rounds));
  setText("ov-dead", fmtNum(st.dead_lettered));
  setText("ov-parked", fmtNum(st.parked_aggregates));
  const be = $("ov-broker-error");
  be.hidden = !st.broker_unreachable;
  be.textContent = st.broker_unreachable ? "Broker unreachable: " + st.broker_unreachable : "";

  const health = $("ov-health");
  health.replaceChildren();
  for (const name of Object.keys(st.health || {}).sort()) {
    const r = st.health[name];
    health.append(el("tr", { "data-check": name },
      el("td", {}, name + (r.critical ? " (critical)" : "")),
      el("td", { class: r.ok ? "ok" : "bad" }, r.ok ? "ok" : "failing"),
      el("td", {}, r.error || ""),
      el("td", { class: "muted" }, fmtTime(r.checked_at))));
  }
  const restarts = $("ov-restarts");
  restarts.replaceChildren();
  const workers = Object.keys(st.restarts || {}).sort();
  if (!workers.length) restarts.append(el("tr", {}, el("td", { class: "muted", colspan: "2" }, "no restarts")));
  for (const w of workers) restarts.append(el("tr", {}, el("td", {}, w), el("td", { class: st.restarts[w] ? "bad" : "" }, st.restarts[w])));
  const stuck = $("ov-stuck");
  stuck.replaceChildren();
  if (!(st.stuck || []).length) stuck.append(el("li", { class: "muted" }, "none"));
  for (const s of st.stuck || []) stuck.append(el("li", {}, aggKey(s.aggregate) + " since " + fmtTime(s.since) + ": ", el("span", { class: "errtext" }, s.error || "")));
}

function renderHistory(h) {
  const samples = h.samples || [];
  const spans = breakerSpans(samples);
  chart("chart-rate", "axis-rate", samples, [(s) => s.rate], spans);
  chart("chart-latency", "axis-latency", samples, [(s) => s.latency_p50_ms, (s) => s.latency_max_ms], spans);
  chart("chart-lag", "axis-lag", samples, [(s) => s.lag_events], spans);
  const list = $("ov-transitions");
  list.replaceChildren();
  const tr = (h.breaker_transitions || []).slice().reverse();
  if (!tr.length) list.append(el("li", { class: "muted" }, "no transitions since start"));
  for (const t of tr) list.append(el("li", {}, fmtTime(t.t) + "  ", el("span", { class: "state-" + t.from }, t.from), " → ", el("span", { class: "state-" + t.to }, t.to)));
}

// breakerSpans are the sample index ranges with the breaker not closed.
function breakerSpans(samples) {
  const spans = [];
  let start = -1;
  samples.forEach((s, i) => {
    const open = s.breaker && s.breaker !== "closed";
    if (open && start < 0) start = i;
    if (!open && start >= 0) { spans.push([start, i]); start = -1; }
  });
  if (start >= 0) spans.push([start, samples.length - 1]);
  return spans;
}

const SVG = "http://www.w3.org/2000/svg";
function chart(id, axisId, samples, series, spans) {
  const svg = $(id);
  svg.replaceChildren();
  const W = 300, H = 90, pad = 4;
  const n = samples.length;
  let top = 0;
  for (const f of series) for (const s of samples) top = Math.max(top, f(s) || 0);
  top = top > 0 ? top * 1.15 : 1;
  const x = (i) => n <= 1 ? W : (i / (n - 1)) * W;
  const y = (v) => H - pad - ((v || 0) / top) * (H - 2 * pad);
  for (const [a, b] of spans) {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("class", "open");
    r.setAttribute("x", x(a)); r.setAttribute("y", 0);
    r.setAttribute("width", Math.max(x(b) - x(a), 2)); r.setAttribute("height", H);
    svg.append(r);
  }
  series.forEach((f, k) => {
    if (!n) return;
    const pts = samples.map((s, i) => x(i).toFixed(1) + "," + y(f(s)).toFixed(1));
    if (k === 0) {
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("class", "area");
      area.setAttribute("points", "0," + H + " " + pts.join(" ") + " " + x(n - 1).toFixed(1) + "," + H);
      svg.append(area);
    }
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", k === 0 ? "l1" : "l2");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  });
  const axis = $(axisId);
  const last = n ? series.map((f) => (f(samples[n - 1]) || 0)) : [];
  axis.replaceChildren(
    el("span", {}, n ? "−" + Math.round((Date.parse(samples[n - 1].t) - Date.parse(samples[0].t)) / 1000) + " s" : "no samples yet"),
    el("span", {}, n ? "now " + last.map((v) => v.toFixed(v < 10 ? 2 : 0)).join(" / ") + " · max " + (top / 1.15).toFixed(top < 10 ? 2 : 0) : ""));
}

// ---- dead letters ----
let nextAfter = null;
function filterQuery() {
  const form = $("dlq-filter");
  const q = new URLSearchParams();
  for (const name of ["aggregate_type", "aggregate_id", "type", "status"]) {
    const v = form.elements[name].value.trim();
    if (v) q.set(name, v);
  }
  for (const name of ["since", "until"]) {
    const v = form.elements[name].value;
    if (v) q.set(name, new Date(v).toISOString().replace(/\.\d{3}Z$/, "Z"));
  }
  return q;
}

async function loadDeadLetters(more) {
  const q = filterQuery();
  q.set("limit", "50");
  q.set("payload", "false"); // the list shows no payload: the detail fetches it
  if (more && nextAfter != null) q.set("after", String(nextAfter));
  try {
    const page = await adminCall(() => api("GET", "/dlq?" + q.toString()));
    const rows = $("dlq-rows");
    if (!more) rows.replaceChildren();
    for (const d of page.items) {
      const m = d.message || {};
      rows.append(el("tr", { "data-id": d.id, onclick: () => { location.hash = "#dlq/" + d.id; } },
        el("td", {}, d.id),
        el("td", {}, el("span", { class: "badge " + d.status }, d.status)),
        el("td", {}, m.aggregatetype + "/" + m.aggregateid),
        el("td", {}, m.sequence),
        el("td", {}, m.type),
        el("td", {}, d.failure_count),
        el("td", {}, fmtTime(d.last_failed_at)),
        el("td", { class: "errtext" }, truncate(d.error || (d.parked_behind ? "parked behind " + d.parked_behind : ""), 100))));
    }
    nextAfter = page.next_after;
    $("dlq-more").hidden = page.next_after == null;
    $("dlq-empty").hidden = rows.children.length > 0;
    showError(null);
  } catch (e) { showError(e); }
}

function truncate(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }

let current = null; // the dead letter shown
async function openDeadLetter(id) {
  try {
    const d = await adminCall(() => api("GET", "/dlq/" + encodeURIComponent(id)));
    current = d;
    renderDeadLetter(d);
    for (const tr of $("dlq-rows").children) tr.classList.toggle("selected", tr.dataset.id === String(d.id));
  } catch (e) { showError(e); }
}

function renderDeadLetter(d) {
  const m = d.message || {};
  $("dl-detail").hidden = false;
  setText("dl-id", "#" + d.id);
  const st = $("dl-status");
  st.textContent = d.status;
  st.className = "badge " + d.status;
  setText("dl-aggregate", m.aggregatetype + "/" + m.aggregateid);
  setText("dl-type", m.type);
  setText("dl-seq", m.sequence);
  setText("dl-event-id", m.id);
  setText("dl-error", d.error || "–");
  setText("dl-failures", d.failure_count);
  setText("dl-first", fmtTime(d.first_failed_at));
  setText("dl-last", fmtTime(d.last_failed_at));
  setText("dl-replays", d.replay_count);
  setText("dl-behind", d.parked_behind || "–");
  setText("dl-resolution", d.resolved_at ? (d.resolution || d.status) + " at " + fmtTime(d.resolved_at) : "–");
  let pretty;
  try { pretty = JSON.stringify(m.payload, null, 2); } catch (_) { pretty = String(m.payload); }
  if (pretty === undefined) pretty = "null";
  setText("dl-payload-size", "(" + fmtNum(pretty.length) + " characters)");
  const pre = $("dl-payload");
  const expand = $("dl-expand");
  if (pretty.length > PAYLOAD_PREVIEW) {
    pre.textContent = pretty.slice(0, PAYLOAD_PREVIEW) + "\n… (" + fmtNum(pretty.length - PAYLOAD_PREVIEW) + " more characters)";
    expand.hidden = false;
    expand.onclick = () => { pre.textContent = pretty; expand.hidden = true; };
  } else {
    pre.textContent = pretty;
    expand.hidden = true;
  }
  const parked = d.status === "parked";
  $("dl-replay").disabled = !parked;
  $("dl-skip").disabled = !parked;
  $("plan").hidden = true;
}

// dryRun asks the server what a replay or skip would do, and shows it
// with a confirmation; nothing changes until Confirm.
async function dryRun(action) {
  if (!current) return;
  $("dl-result").hidden = true;
  try {
    const plan = await adminCall(() => api("POST", "/dlq/" + current.id + "/" + action + "?dry_run=true"));
    const p = $("plan");
    setText("plan-title", "Dry run: " + action + " " + aggKey(plan.aggregate) + " — nothing has changed yet");
    setText("plan-summary", "The relay would skip " + (plan.skip || []).length + " event(s) and republish " +
      (plan.republish || []).length + " in order, then unpark the aggregate.");
    const steps = $("plan-steps");
    steps.replaceChildren();
    for (const d of plan.skip || []) steps.append(el("li", {}, "skip #" + d.id + " " + d.message.type + " seq " + d.message.sequence));
    for (const d of plan.republish || []) steps.append(el("li", {}, "republish #" + d.id + " " + d.message.type + " seq " + d.message.sequence));
    p.dataset.action = action;
    $("plan-confirm").textContent = "Confirm " + action;
    p.hidden = false;
    showError(null);
  } catch (e) { showError(e); }
}

async function confirmPlan() {
  const action = $("plan").dataset.action;
  const reason = $("plan-reason").value.trim();
  try {
    await adminCall(() => api("POST", "/dlq/" + current.id + "/" + action, reason ? { reason } : undefined));
    $("plan").hidden = true;
    const res = $("dl-result");
    res.textContent = action + " requested; the relay carries it out in order.";
    res.hidden = false;
    watchResolution(current.id);
  } catch (e) { showError(e); }
}

// watchResolution reloads the entry until the relay has carried out the
// request (or 30 s pass).
function watchResolution(id) {
  const until = Date.now() + 30000;
  const tick = async () => {
    try {
      const d = await api("GET", "/dlq/" + id);
      if (current && current.id === d.id) { current = d; renderDeadLetter(d); }
      if (d.status !== "parked") {
        const res = $("dl-result");
        res.textContent = "Done: " + d.status + (d.resolution ? " (" + d.resolution + ")" : "") + ".";
        res.hidden = false;
        loadDeadLetters(false);
        return;
      }
    } catch (_) { /* keep trying */ }
    if (Date.now() < until) setTimeout(tick, 1000);
  };
  setTimeout(tick, 500);
}

// ---- parked aggregates ----
let parkedNext = null;
async function loadParked(more) {
  const q = new URLSearchParams({ limit: "50", events: "20" });
  if (more && parkedNext != null) q.set("offset", String(parkedNext));
  try {
    const doc = await adminCall(() => api("GET", "/dlq/parked?" + q.toString()));
    const list = $("parked-list");
    if (!more) list.replaceChildren();
    for (const it of doc.items) {
      const p = it.parked || {};
      const events = el("ol", {});
      for (const e of it.events) {
        events.append(el("li", {}, el("a", { href: "#dlq/" + e.id }, "#" + e.id), " " + e.type + " seq " + e.sequence + " ",
          e.error ? el("span", { class: "errtext" }, truncate(e.error, 120)) : el("span", { class: "muted" }, "waiting behind the failed event")));
      }
      if (p.parked_events > it.events.length) {
        events.append(el("li", { class: "muted" }, "… and " + fmtNum(p.parked_events - it.events.length) + " more waiting (",
          el("a", { href: "#dlq" }, "dead letters"), " lists them all)"));
      }
      list.append(el("div", { class: "panel parked-agg" },
        el("h2", {}, aggKey(it.aggregate) + " ", el("span", { class: "muted" }, "parked " + fmtTime(p.parked_at) + ", " + p.parked_events + " event(s)" +
          (p.pending_action ? "; " + p.pending_action + " requested" : ""))),
        events));
    }
    parkedNext = doc.next_offset;
    $("parked-more").hidden = doc.next_offset == null;
    $("parked-empty").hidden = list.children.length > 0;
    showError(null);
  } catch (e) { showError(e); }
}

// ---- wiring ----
document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = $("token-input").value.trim();
    $("token-input").value = "";
    $("token-dialog").hidden = true;
    if (v) sessionStorage.setItem(TOKEN_KEY, v);
    showTokenState();
    const then = afterToken;
    afterToken = null;
    if (then) then();
  });
  $("token-cancel").addEventListener("click", () => { $("token-dialog").hidden = true; afterToken = null; });
  $("token-set").addEventListener("click", () => askToken(null, null));
  $("token-forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showTokenState(); });
  $("dlq-filter").addEventListener("submit", (ev) => { ev.preventDefault(); loadDeadLetters(false); });
  $("dlq-filter").addEventListener("reset", () => setTimeout(() => loadDeadLetters(false), 0));
  $("dlq-more").addEventListener("click", () => loadDeadLetters(true));
  $("parked-more").addEventListener("click", () => loadParked(true));
  $("dl-replay").addEventListener("click", () => dryRun("replay"));
  $("dl-skip").addEventListener("click", () => dryRun("skip"));
  $("plan-confirm").addEventListener("click", confirmPlan);
  $("plan-cancel").addEventListener("click", () => { $("plan").hidden = true; });
  $("dl-close").addEventListener("click", () => { $("dl-detail").hidden = true; current = null; location.hash = "#dlq"; });
  window.addEventListener("hashchange", route);
  showTokenState();
  route();
  pollOverview();
  setInterval(pollOverview, POLL_MS);
});
