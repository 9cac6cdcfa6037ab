// The operators' page: live calls (server-sent events), recent calls, one call's view.
// Plain DOM, no framework, no build step. Everything from the network is set as text.
"use strict";

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmtDuration(s) {
  s = Math.max(0, Math.round(s || 0));
  const m = Math.floor(s / 60), r = s % 60;
  return `${m}:${String(r).padStart(2, "0")}`;
}
const pct = (f) => (f === null || f === undefined ? "–" : (100 * f).toFixed(1) + " %");
const ms = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(1) + " ms");

async function api(path, options) {
  const resp = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (!resp.ok && resp.status !== 204) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.status === 204 ? null : resp.json();
}

async function hangup(uuid) {
  try {
    await api(`api/calls/${encodeURIComponent(uuid)}/hangup`, { method: "POST", headers: { "X-Softswitch-UI": "1" } });
  } catch (err) {
    alert(`Hangup failed: ${err.message}`);
  }
}

// --- live calls -------------------------------------------------------------------------------

let liveCalls = [];
let liveTotal = 0;

function renderLive() {
  const body = $("#live-table tbody");
  const rows = liveCalls.map((c) => {
    const row = el("tr", { "data-uuid": c.call_uuid, class: "live-row", onclick: () => { location.hash = `#call/${c.call_uuid}`; } },
      el("td", { class: `state state-${c.state}` }, c.state),
      el("td", {}, c.direction),
      el("td", {}, c.from),
      el("td", {}, c.to),
      el("td", { class: "duration" }, c.answered_at ? fmtDuration(c.duration) : `(${fmtDuration(c.age)})`),
      el("td", { class: "codec" }, c.codec || "–"),
      el("td", { class: "loss" }, pct(c.loss_fraction)),
      el("td", { class: "jitter" }, ms(c.jitter_ms)),
      el("td", { class: "rtt" }, ms(c.rtt_ms)),
      el("td", {}, el("button", { class: "hangup", "data-uuid": c.call_uuid, onclick: (e) => { e.stopPropagation(); hangup(c.call_uuid); } }, "Hang up")));
    return row;
  });
  body.replaceChildren(...rows);
  $("#live-count").textContent = String(liveTotal);
  $("#live-empty").hidden = liveCalls.length > 0;
}

let source = null;
function connect() {
  if (source) source.close();
  source = new EventSource("api/events");
  source.addEventListener("live", (ev) => {
    const data = JSON.parse(ev.data);
    const wasLive = current && liveCalls.some((c) => c.call_uuid === current);
    liveCalls = data.calls;
    liveTotal = data.total;
    document.body.dataset.liveUpdated = String(data.time);
    $("#stream-state").textContent = `live · ${new Date(data.time * 1000).toLocaleTimeString()}`;
    renderLive();
    // A call on view refreshes while live, and once more when it ends.
    if (current && (wasLive || liveCalls.some((c) => c.call_uuid === current))) scheduleCallRefresh();
  });
  source.onerror = () => { $("#stream-state").textContent = "reconnecting…"; };
}

// --- recent calls -----------------------------------------------------------------------------

async function loadRecent() {
  const form = new FormData($("#recent-filters"));
  const query = new URLSearchParams();
  for (const [k, v] of form.entries()) if (v) query.set(k, v);
  query.set("limit", "100");
  const data = await api(`api/calls?${query}`);
  const rows = data.calls.map((c) => el("tr", { "data-uuid": c.call_uuid, onclick: () => { location.hash = `#call/${c.call_uuid}`; } },
    el("td", {}, c.initiation_time || ""),
    el("td", {}, c.direction),
    el("td", {}, c.from_number),
    el("td", {}, c.to_number),
    el("td", {}, c.call_status),
    el("td", { title: c.hangup_cause_name || "" }, c.hangup_cause || c.hangup_cause_name || ""),
    el("td", {}, c.sip_status ?? ""),
    el("td", {}, c.call_duration ?? ""),
    el("td", { class: "reason" }, c.reason || "")));
  $("#recent-table tbody").replaceChildren(...rows);
}

// --- one call ---------------------------------------------------------------------------------

let current = null;
let refreshTimer = null;

function scheduleCallRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; if (current) loadCall(current); }, 1000);
}

function kvTable(table, pairs) {
  table.replaceChildren(...pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
}

function drawLadder(messages) {
  const box = $("#ladder");
  $("#ladder-count").textContent = String(messages.length);
  const hosts = [];
  for (const m of messages) for (const h of [m.source, m.destination]) if (!hosts.includes(h)) hosts.push(h);
  if (!messages.length) { box.replaceChildren(el("p", { class: "muted" }, "No SIP messages.")); return; }
  const colW = 360, left = 110, top = 40, rowH = 26;
  const width = left + colW * Math.max(1, hosts.length - 1) + 120;
  const height = top + rowH * messages.length + 20;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "ladder-svg" });
  const x = (h) => left + colW * hosts.indexOf(h);
  hosts.forEach((h) => {
    root.append(svg("text", { x: x(h), y: 16, "text-anchor": "middle", class: "host" }, h));
    root.append(svg("line", { x1: x(h), y1: 24, x2: x(h), y2: height - 8, stroke: "#9aa5b4", "stroke-dasharray": "4 3" }));
  });
  const t0 = messages[0].monotonic;
  messages.forEach((m, i) => {
    const y = top + rowH * i + 12;
    const x1 = x(m.source), x2 = x(m.destination);
    const g = svg("g", { class: `msg dir-${m.direction}`, "data-index": String(i) });
    g.append(svg("text", { x: 4, y: y + 4, class: "msg-time", fill: "#6b7280" }, `+${((m.monotonic - t0) * 1000).toFixed(0)} ms`));
    const color = /^SIP\/2\.0 [456]/.test(m.first_line) ? "#c62828" : (/^SIP\/2\.0/.test(m.first_line) ? "#2e7d32" : "#1f6feb");
    g.append(svg("line", { x1, y1: y, x2, y2: y, stroke: color, "stroke-width": 2 }));
    const dir = x2 >= x1 ? 1 : -1;
    g.append(svg("polygon", { points: `${x2},${y} ${x2 - 8 * dir},${y - 4} ${x2 - 8 * dir},${y + 4}`, fill: color }));
    const label = m.first_line.startsWith("SIP/2.0 ") ? m.first_line.slice(8) : m.first_line.split(" ")[0];
    g.append(svg("text", { x: Math.min(x1, x2) + Math.abs(x2 - x1) / 2, y: y - 4, "text-anchor": "middle", class: "msg-label", fill: color }, label));
    g.append(svg("rect", { x: Math.min(x1, x2), y: y - 14, width: Math.max(20, Math.abs(x2 - x1)), height: 18, fill: "transparent" }));
    g.addEventListener("click", () => {
      root.querySelectorAll(".msg.selected").forEach((s) => s.classList.remove("selected"));
      g.classList.add("selected");
      const pre = $("#message-text");
      pre.hidden = false;
      pre.textContent = `${m.direction === "out" ? "sent" : "received"} ${new Date(m.time * 1000).toISOString()} ` +
        `${m.transport.toUpperCase()} ${m.source} → ${m.destination} (${m.size} bytes)\n\n${m.text}`;
    });
    root.append(g);
  });
  box.replaceChildren(root);
}

function drawPlot(media) {
  const box = $("#call-plot");
  const series = (media && media.series) || [];
  if (series.length < 2) { box.replaceChildren(el("p", { class: "muted" }, "No RTP figures yet.")); return; }
  const W = 420, H = 140, pad = 30;
  const t0 = series[0][0], t1 = series[series.length - 1][0] || t0 + 1;
  const maxJ = Math.max(5, ...series.map((p) => p[2] || 0));
  const maxL = Math.max(0.05, ...series.map((p) => p[1] || 0));
  const sx = (t) => pad + (W - 2 * pad) * (t - t0) / Math.max(1e-6, t1 - t0);
  const root = svg("svg", { width: W, height: H, class: "plot-svg" });
  root.append(svg("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, stroke: "#9aa5b4" }));
  const line = (idx, max, color) => series.map((p) => `${sx(p[0]).toFixed(1)},${(H - pad - (H - 2 * pad) * (p[idx] || 0) / max).toFixed(1)}`).join(" ");
  root.append(svg("polyline", { points: line(2, maxJ, "#1f6feb"), fill: "none", stroke: "#1f6feb", class: "jitter-line" }));
  root.append(svg("polyline", { points: line(1, maxL, "#c62828"), fill: "none", stroke: "#c62828", class: "loss-line" }));
  root.append(svg("text", { x: pad, y: 12, fill: "#1f6feb" }, `jitter (0–${maxJ.toFixed(1)} ms)`));
  root.append(svg("text", { x: W / 2 + 10, y: 12, fill: "#c62828" }, `loss (0–${(100 * maxL).toFixed(1)} %)`));
  root.append(svg("text", { x: pad, y: H - 10, fill: "#6b7280" }, `${(t1 - t0).toFixed(0)} s`));
  box.replaceChildren(el("div", { class: "plot" }, root));
}

async function loadCall(uuid) {
  let data;
  try {
    data = await api(`api/calls/${encodeURIComponent(uuid)}`);
  } catch (err) {
    $("#call-uuid").textContent = `${uuid} (${err.message})`;
    return;
  }
  if (current !== uuid) return;
  const r = data.record;
  $("#call-uuid").textContent = uuid;
  const btn = $("#call-hangup");
  btn.hidden = !data.live;
  btn.onclick = () => hangup(uuid);
  kvTable($("#call-record"), [
    ["status", data.live ? data.live.state : r.call_status], ["direction", r.direction],
    ["from", r.from_number], ["to", r.to_number], ["started", r.initiation_time], ["rang", r.ring_time],
    ["answered", r.answer_time], ["ended", r.end_time], ["duration", r.call_duration],
    ["cause", r.hangup_cause], ["API cause", r.hangup_cause_name], ["API cause code", r.hangup_cause_code],
    ["hangup source", r.hangup_source],
    ["SIP status", r.sip_status], ["reason", r.reason], ["Call-ID", r.sip_call_id], ["request", r.request_uuid],
    ["API", r.dialect],
  ]);
  const media = data.trace.media || {};
  const st = media.stats || {};
  kvTable($("#call-media"), [["codec", st.codec], ["packets received", st.packets_received],
    ["packets sent", st.packets_sent], ["lost", st.lost], ["loss", st.loss_fraction !== undefined ? pct(st.loss_fraction) : null],
    ["jitter", st.jitter_ms !== undefined ? ms(st.jitter_ms) : null], ["RTT", st.rtt_ms !== undefined && st.rtt_ms !== null ? ms(st.rtt_ms) : null]]);
  drawPlot(media);
  const amd = media.amd || r.machine_detection;
  $("#call-amd").replaceChildren(amd ? el("pre", { class: "doc" }, JSON.stringify(amd, null, 1)) : el("p", { class: "muted" }, "No machine detection."));
  const digits = media.digits || [];
  $("#call-digits").replaceChildren(digits.length
    ? el("p", {}, "DTMF received: ", el("code", {}, digits.map((d) => d.digit).join("")))
    : el("p", { class: "muted" }, "No DTMF received."));
  drawLadder(data.trace.messages || []);
  if (data.trace.dropped) $("#ladder").append(el("p", { class: "bad" }, `${data.trace.dropped} message(s) past the trace bounds not kept`));
  $("#call-deliveries tbody").replaceChildren(...data.deliveries.map((d) => el("tr", {},
    el("td", {}, d.kind), el("td", {}, d.event), el("td", {}, `${d.method} ${d.url}`),
    el("td", { class: d.status === "failed" ? "bad" : "" }, d.status),
    el("td", {}, d.tries.map((a) => `#${a.attempt}: ${a.status ?? a.error ?? "?"} (${Math.round(a.duration_ms || 0)} ms)`).join(", ")))));
  const docs = media.documents || [];
  $("#call-documents").replaceChildren(...(docs.length ? docs.map((d) => el("div", {},
    el("p", {}, `${d.event}: ${d.url} `, el("span", { class: d.ok ? "" : "bad" }, d.ok ? `HTTP ${d.status}` : (d.error || `HTTP ${d.status}`))),
    d.body ? el("pre", { class: "doc" }, d.body) : null)) : [el("p", { class: "muted" }, "No documents fetched.")]));
}

// --- navigation -------------------------------------------------------------------------------

function route() {
  const hash = location.hash || "#live";
  const [view, arg] = hash.slice(1).split("/");
  $("#view-live").hidden = view !== "live";
  $("#view-recent").hidden = view !== "recent";
  $("#view-call").hidden = view !== "call";
  $("#nav-live").classList.toggle("active", view === "live");
  $("#nav-recent").classList.toggle("active", view === "recent");
  current = view === "call" ? decodeURIComponent(arg || "") : null;
  if (view === "recent") loadRecent().catch((e) => console.error(e));
  if (current) {
    $("#message-text").hidden = true;
    loadCall(current);
  }
}

$("#recent-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadRecent(); });
window.addEventListener("hashchange", route);
route();
connect();
