// multiagent dashboard: plain JavaScript, no build step. Data from /api/*, live updates from
// /api/stream (server-sent events read through fetch, so the token rides in a header).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
};
const money = (v) => "$" + Number(v || 0).toFixed(6);
const PALETTE = ["#0b5cad", "#d1495b", "#1a7f37", "#b26b00", "#6f42c1", "#00798c"];

// --- access token (header only: never a cookie) ------------------------------------------
const token = () => sessionStorage.getItem("multiagent-token") || "";
const headers = (extra = {}) => (token() ? { ...extra, Authorization: "Bearer " + token() } : extra);
$("#token").value = token();
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("multiagent-token", $("#token").value.trim());
  say("token set");
  refresh();
  connect();
});
const say = (text) => { $("#stream-state").textContent = text; };

async function api(path, options = {}) {
  const reply = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) throw new Error(body.detail ? String(body.detail) : reply.status + " " + reply.statusText);
  return body;
}

// --- tabs (arrow keys move between them, as the ARIA tabs pattern says) ------------------
const tabs = [...document.querySelectorAll("[role=tab]")];
function show(name, focus = false) {
  for (const tab of tabs) {
    const on = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $("#" + tab.getAttribute("aria-controls")).hidden = !on;
    if (on && focus) tab.focus();
  }
  if (name === "threads") loadThreads();
  if (name === "overview") loadOverview();
  if (name === "backpressure") loadBackpressure();
}
tabs.forEach((tab, i) => {
  tab.addEventListener("click", () => { location.hash = tab.getAttribute("aria-controls"); });
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) {
      const next = tabs[(i + step + tabs.length) % tabs.length];
      location.hash = next.getAttribute("aria-controls");
      next.focus();
    }
  });
});
function route() {
  const [page, thread] = decodeURIComponent(location.hash.slice(1) || "overview").split("/");
  show(["overview", "runs", "threads", "backpressure"].includes(page) ? page : "overview");
  if (page === "threads" && thread) openThread(thread);
}
window.addEventListener("hashchange", route);

// --- charts ------------------------------------------------------------------------------
const charts = new Map();
function chart(container, key, title, labels, data) {
  let entry = charts.get(key);
  if (entry && entry.labels.join() !== labels.join()) { entry.plot.destroy(); entry.box.remove(); entry = null; }
  if (!entry) {
    const box = el("figure", { class: "chart", "data-chart": key },
      el("h3", { text: title }));
    container.append(box);
    const width = Math.max(280, (box.clientWidth || 420) - 20);  // the grid cell, once placed
    const plot = new uPlot({
      width, height: 200,
      series: [{}, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 2 }))],
      axes: [{}, { size: 76, values: (u, vals) => vals.map((v) => +v.toPrecision(3)) }],
    }, data, box);
    box.querySelector("canvas").setAttribute("aria-label", title + " chart");
    box.querySelector("canvas").setAttribute("role", "img");
    entry = { plot, box, labels };
    charts.set(key, entry);
  } else {
    entry.plot.setData(data);
  }
}

async function loadOverview() {
  const hours = $("#range").value;
  let data;
  try { data = await api("/api/overview?hours=" + hours); } catch (err) { say(err.message); return; }
  const p = data.points;
  const t = p.map((x) => x.timestamp);
  const col = (k) => p.map((x) => x[k]);
  const box = $("#overview-charts");
  const kinds = data.error_kinds.length ? data.error_kinds : ["errors"];
  chart(box, "calls", "Model calls", ["calls", "cached", "errors"], [t, col("calls"), col("cached"), col("errors")]);
  chart(box, "tokens", "Tokens", ["input", "output"], [t, col("input_tokens"), col("output_tokens")]);
  chart(box, "cost", "Cost (USD)", ["cost"], [t, col("cost_usd")]);
  chart(box, "errors", "Errors by kind", kinds,
    [t, ...kinds.map((k) => p.map((x) => (x.errors_by_kind || {})[k] || 0))]);
  chart(box, "latency", "Latency (s)", ["p50", "p95"], [t, col("latency_p50_s"), col("latency_p95_s")]);
  chart(box, "cache", "Cache hit rate", ["completion", "analysis"],
    [t, col("completion_cache_hit_rate"), col("analysis_cache_hit_rate")]);
  const sum = (k) => p.reduce((a, x) => a + (x[k] || 0), 0);
  $("#totals").textContent = `${sum("calls")} calls · ${sum("input_tokens") + sum("output_tokens")} tokens · ${money(sum("cost_usd"))}`;
}
$("#range").addEventListener("change", loadOverview);

// --- live runs ---------------------------------------------------------------------------
function runCard(run) {
  const graph = el("ol", { class: "graph", "aria-label": "graph of " + run.workflow });
  for (const node of run.graph.nodes) {
    const item = el("li", { text: node });
    if (node === run.node) item.setAttribute("aria-current", "step");
    graph.append(item);
  }
  const streams = el("div", { class: "streams" });
  for (const s of run.streams) {
    streams.append(el("section", { class: "stream", "data-agent": s.agent },
      el("h4", { text: `${s.agent || s.node} · ${s.node}` }), el("pre", { text: s.text })));
  }
  const left = run.budget_left_usd === null ? "no budget" : money(run.budget_left_usd) + " left";
  return el("article", { class: "run", "data-thread": run.thread_id },
    el("header", {},
      el("strong", { text: run.thread_id }), el("span", { text: run.workflow }),
      el("span", { text: "at " + (run.node || "start") }),
      el("span", { class: "tokens", text: `${run.tokens_in + run.tokens_out} tokens` }),
      el("span", { text: money(run.cost_usd) }), el("span", { text: left })),
    graph, streams);
}

let finishedSignature = "";
function renderRuns(runs) {
  const running = $("#running");
  running.replaceChildren(...(runs.running.length ? runs.running.map(runCard)
    : [el("p", { class: "empty", text: "No run is running." })]));
  const body = $("#finished tbody");
  body.replaceChildren(...runs.finished.map((r) => el("tr", { "data-thread": r.thread_id },
    el("td", {}, el("a", { href: "#threads/" + encodeURIComponent(r.thread_id), text: r.thread_id })),
    el("td", { text: r.workflow }), el("td", { class: "status-" + r.status, text: r.status }),
    el("td", { text: String(r.tokens_in + r.tokens_out) }), el("td", { text: money(r.cost_usd) }))));
  const signature = runs.finished.map((r) => r.thread_id + r.status).join();
  if (signature !== finishedSignature) {
    finishedSignature = signature;
    if (!$("#threads").hidden) loadThreads();
  }
}

// --- backpressure ------------------------------------------------------------------------
function renderBackpressure(bp) {
  $("#bp-shared").textContent = bp.shared_by_redis
    ? "Limits shared by every process through Redis." : "Limits of the processes reporting here (no Redis configured).";
  const box = $("#limiters");
  if (!bp.limiters.length) return;
  $(".empty", box)?.remove();
  for (const lim of bp.limiters) {
    const key = lim.provider + "/" + lim.model;
    let card = box.querySelector(`[data-limiter="${CSS.escape(key)}"]`);
    if (!card) {
      card = el("article", { class: "limiter", "data-limiter": key }, el("h2", { text: key }), el("dl"), el("div", { class: "charts" }));
      box.append(card);
    }
    const paused = lim.paused_until ? new Date(lim.paused_until * 1000).toLocaleTimeString() : "not paused";
    $("dl", card).replaceChildren(
      ...[["limit", lim.limit ?? "–"], ["in flight", lim.in_flight], ["paused until", paused],
        ["429s", lim.rate_limited], ["processes", lim.processes]]
        .flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
    const s = lim.series;
    const charts = $(".charts", card);
    chart(charts, key + ":limit", "Limit and in flight", ["limit", "in flight"], [s.t, s.limit, s.in_flight]);
    chart(charts, key + ":goodput", "Goodput (answered calls/s)", ["goodput"], [s.t, s.goodput]);
    chart(charts, key + ":429", "429 responses", ["429s"], [s.t, s.rate_limited]);
  }
}
async function loadBackpressure() {
  try { renderBackpressure(await api("/api/backpressure?minutes=15")); } catch (err) { say(err.message); }
}

// --- threads: list, time travel, actions -------------------------------------------------
async function loadThreads() {
  let data;
  try { data = await api("/api/threads"); } catch (err) { say(err.message); return; }
  $("#thread-list tbody").replaceChildren(...data.threads.map((t) => el("tr", {},
    el("td", {}, el("button", { type: "button", "data-open": t.thread_id, text: t.thread_id,
      onclick: () => { location.hash = "threads/" + encodeURIComponent(t.thread_id); } })),
    el("td", { text: t.workflow }), el("td", { class: "status-" + t.status, text: t.status }),
    el("td", { text: t.subject || "" }), el("td", { text: money(t.cost_usd) }))));
}

async function openThread(id, checkpoint = null) {
  const box = $("#thread-detail");
  let data;
  const query = checkpoint ? "?checkpoint_id=" + encodeURIComponent(checkpoint) : "";
  try { data = await api("/api/threads/" + encodeURIComponent(id) + query); } catch (err) {
    box.replaceChildren(el("p", { class: "empty", text: err.message })); return;
  }
  const st = data.state;
  const points = el("div", { class: "checkpoints", role: "group", "aria-label": "checkpoints (time travel)" });
  for (const cp of data.history) {
    points.append(el("button", { type: "button", "aria-pressed": String(cp.checkpoint_id === st.checkpoint_id),
      text: "step " + cp.step, title: cp.created_at, onclick: () => openThread(id, cp.checkpoint_id) }));
  }
  const actions = el("div", { class: "actions" });
  const latest = !checkpoint || (data.history[0] && data.history[0].checkpoint_id === st.checkpoint_id);
  if (latest && st.status === "awaiting_approval") {
    actions.append(el("button", { type: "button", id: "approve", text: "Approve", onclick: () => act(id, "approve") }),
      el("button", { type: "button", id: "reject", text: "Reject", onclick: () => act(id, "reject") }));
  } else if (latest && !["completed", "rejected"].includes(st.status)) {
    actions.append(el("button", { type: "button", id: "resume", text: "Resume", onclick: () => act(id, "resume") }));
  }
  box.replaceChildren(
    el("h2", { text: `${st.thread_id} · ${st.workflow} · ` }, el("span", { id: "thread-status", class: "status-" + st.status, text: st.status })),
    el("p", { class: "note", text: `checkpoint ${st.checkpoint_id} · step ${st.step} · ${st.created_at}` }),
    points, actions, el("pre", { class: "state-json", text: JSON.stringify(st.values, null, 2) }));
}

async function act(id, action) {
  if (!token()) { say("actions need the access token"); $("#token").focus(); return; }
  try {
    await api(`/api/threads/${encodeURIComponent(id)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ feedback: "" }),
    });
    say(action + " sent for " + id);
  } catch (err) { say(err.message); return; }
  followThread(id, 0);
}

// after an action, follow the thread until it settles (the run continues on the server)
async function followThread(id, tries) {
  await openThread(id);
  const status = $("#thread-status")?.textContent;
  if (["completed", "rejected", "failed", "budget_exceeded"].includes(status) || tries > 120) {
    loadThreads();
    return;
  }
  setTimeout(() => followThread(id, tries + 1), 1000);
}

// --- the live stream ---------------------------------------------------------------------
let stream = null;
async function connect() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  try {
    const reply = await fetch("/api/stream", { headers: headers(), signal: controller.signal });
    if (!reply.ok) { say("live updates: " + reply.status + " (token?)"); return; }
    say("live");
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let troubled = false;  // a problem event was shown: the next live event clears it
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const lines = block.split("\n");
        const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        const live = JSON.parse(data);
        if (lines.includes("event: problem")) { say("live updates: " + live.detail); troubled = true; continue; }
        if (troubled) { say("live"); troubled = false; }
        renderRuns(live.runs);
        renderBackpressure(live.backpressure);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
  }
  if (stream === controller) { say("reconnecting…"); setTimeout(connect, 1000); }
}

function refresh() { route(); }
window.addEventListener("DOMContentLoaded", () => { route(); connect(); });
