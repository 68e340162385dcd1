// The Redswitch dashboard page. Live through Server-Sent Events (/api/events): one snapshot, then deltas.
// Every value from the server is data: it reaches the page only through textContent, element attributes set by
// name, or SVG attributes of numbers. Never innerHTML, never insertAdjacentHTML.
"use strict";

const REPLY_TIMEOUT = 10000; // ms, as `redswitch send`

const state = {
  calls: new Map(), // dial_id -> call object as the server sent it
  order: [], // dial_ids, newest first (every call the page holds)
  rows: new Map(), // dial_id -> its <tr>, for the rows drawn now (the window) only
  dirty: new Set(), // dial_ids whose call changed since its row was drawn
  selected: null,
  skew: 0, // server clock minus ours, ms
  pending: [], // controls sent from this page, waiting for their ack or error
};

// The calls table draws only the rows in its panel's view (plus a margin), between two spacer rows that keep the
// scroll height: with a thousand live calls, a table of every row made each delta and each second's durations
// re-lay out the whole table (a script evaluation on the page waited about 30 ms at the median under
// bench/bench_dashboard.py's load). Rows are one line high (CSS), so a row's place is its index times ROW_HEIGHT.
const ROW_HEIGHT = 22; // px, as #calls tbody tr in app.css
const ROW_MARGIN = 10; // rows drawn above and below the view
let drawPending = false;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function cells(row, values) {
  row.replaceChildren(...values.map((v) => (v instanceof Node ? v : el("td", v))));
}

function now() {
  return Date.now() + state.skew;
}

function seconds(ms) {
  if (!ms || ms < 0) return "0s";
  const s = Math.floor(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

function sideText(side) {
  if (!side) return "";
  if (side.state === "hungup") return `hung up ${side.cause}${side.sip_code ? " (" + side.sip_code + ")" : ""}`;
  return side.state;
}

function duration(call) {
  const from = call.answered || call.started;
  const to = call.ended || now();
  return seconds(to - from);
}

function replyText(reply) {
  if (!reply) return "";
  return reply.type === "ack" ? `ack ${reply.event}` : `error ${reply.event}: ${reply.reason}`;
}

// -- live calls ---------------------------------------------------------------------------------------------

function visible(call) {
  const org = document.getElementById("filter-org").value.trim();
  const user = document.getElementById("filter-user").value.trim();
  return (!org || call.org_id.includes(org)) && (!user || call.user_id.includes(user));
}

function buildRow(call) {
  const row = el("tr");
  row.dataset.dialId = call.dial_id;
  row.addEventListener("click", () => select(row.dataset.dialId));
  const sides = call.sides || {};
  const barger = sides["2"] ? `${call.barger_mode || ""} (${sideText(sides["2"])})` : call.barger_mode;
  cells(row, [
    el("td", call.dial_id, "dial-id"),
    call.org_id,
    call.user_id,
    el("td", call.status, "status"),
    el("td", sideText(sides["0"]), "side0"),
    el("td", sideText(sides["1"]), "side1"),
    el("td", barger, "barger"),
    el("td", duration(call), "duration"),
    call.node,
    call.gateway,
    el("td", replyText(call.reply), "reply"),
  ]);
  row.className = `status-${call.status}`;
  if (state.selected === call.dial_id) row.classList.add("selected");
  return row;
}

function spacer(rows) {
  const row = el("tr", null, "spacer");
  const cell = el("td");
  cell.colSpan = 11;
  cell.style.height = `${rows * ROW_HEIGHT}px`;
  row.append(cell);
  return row;
}

// Draw the rows in view: reuse the rows of calls that did not change, build the others.
function drawCalls() {
  drawPending = false;
  const shown = state.order.filter((id) => visible(state.calls.get(id)));
  const panel = document.getElementById("calls-panel");
  const body = document.querySelector("#calls tbody");
  const bodyTop = body.getBoundingClientRect().top - panel.getBoundingClientRect().top + panel.scrollTop;
  const top = Math.max(0, panel.scrollTop - bodyTop);
  const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - ROW_MARGIN);
  const last = Math.min(shown.length, Math.ceil((top + panel.clientHeight) / ROW_HEIGHT) + ROW_MARGIN);
  const drawn = new Map();
  for (const id of shown.slice(first, last)) {
    const kept = state.rows.get(id);
    drawn.set(id, kept && !state.dirty.has(id) ? kept : buildRow(state.calls.get(id)));
  }
  state.rows = drawn;
  state.dirty.clear();
  body.replaceChildren(spacer(first), ...drawn.values(), spacer(shown.length - last));
  document.getElementById("calls-count").textContent = countText(shown.length);
}

function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(drawCalls);
}

function renderCall(call) {
  if (!state.calls.has(call.dial_id)) state.order.unshift(call.dial_id);
  state.calls.set(call.dial_id, call);
  state.dirty.add(call.dial_id);
}

function removeCall(dialId) {
  if (!state.calls.delete(dialId)) return;
  const index = state.order.indexOf(dialId);
  if (index >= 0) state.order.splice(index, 1);
  state.dirty.delete(dialId);
}

function countText(shown) {
  let live = 0;
  for (const call of state.calls.values()) if (call.status === "live" || call.status === "dialling") live++;
  return `(${live} up, ${shown} shown)`;
}

function renderQueued() {
  const body = document.querySelector("#queued tbody");
  const rows = [];
  for (const call of state.calls.values()) {
    if (call.status !== "queued") continue;
    const row = el("tr");
    row.dataset.dialId = call.dial_id;
    const queue = call.queue || {};
    cells(row, [call.dial_id, call.org_id, call.user_id, queue.reason || "", queue.position || "", seconds(now() - call.started)]);
    rows.push(row);
  }
  body.replaceChildren(...rows);
  document.getElementById("queued-count").textContent = `(${rows.length})`;
}

function tick() {
  for (const [dialId, row] of state.rows) {
    const call = state.calls.get(dialId);
    const cell = row.querySelector(".duration");
    if (call && cell && !call.ended) cell.textContent = duration(call);
  }
}

// -- failures, dead list, nodes, rates ---------------------------------------------------------------------

function addFailures(failures) {
  const body = document.querySelector("#failures tbody");
  for (const f of failures) {
    const row = el("tr");
    cells(row, [clock(f.at), f.dial_id, f.what, f.cause, f.reason]);
    body.prepend(row);
  }
  while (body.children.length > 100) body.lastElementChild.remove();
}

function renderDead(dead) {
  document.getElementById("dead-count").textContent = `(${dead.length} entries)`;
  const rows = dead.recent.map((d) => {
    const row = el("tr");
    cells(row, [d.time, d.dial_id, d.cause, d.reason]);
    return row;
  });
  document.querySelector("#dead tbody").replaceChildren(...rows);
}

function renderNodes(nodes) {
  const rows = nodes.map((n) => {
    const row = el("tr");
    const health = n.down_ms > 0 ? `down (skipped ${seconds(n.down_ms)} more)` : n.listener ? "up" : "no listener";
    cells(row, [n.name, n.calls, el("td", health, n.down_ms > 0 || !n.listener ? "bad" : "good"), n.listener || "none", n.listener ? seconds(n.lease_age_ms) : ""]);
    return row;
  });
  document.querySelector("#nodes tbody").replaceChildren(...rows);
}

const SVG = "http://www.w3.org/2000/svg";

function renderChart(rates) {
  const width = 600;
  const height = 120;
  const series = rates.series;
  const top = Math.max(1, ...series.starts, ...series.answers, ...series.failures);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
  svg.setAttribute("class", "chart");
  for (const kind of ["starts", "answers", "failures"]) {
    const values = series[kind];
    const step = width / Math.max(1, values.length - 1);
    const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - (v / top) * (height - 4)).toFixed(1)}`);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", kind);
    svg.appendChild(line);
  }
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("x", "2");
  label.setAttribute("y", String(height + 12));
  label.textContent = `peak ${top}/s`;
  svg.appendChild(label);
  document.getElementById("chart").replaceChildren(svg);

  const causes = Object.entries(rates.causes).sort((a, b) => b[1] - a[1]).map(([cause, n]) => {
    const row = el("tr");
    cells(row, [cause, n]);
    return row;
  });
  document.querySelector("#causes tbody").replaceChildren(...causes);
  for (const [id, dims] of [["gateways", rates.gateway], ["orgs", rates.org]]) {
    const rows = Object.entries(dims).sort().map(([name, c]) => {
      const row = el("tr");
      cells(row, [name, c.starts, c.answers, c.failures]);
      return row;
    });
    document.querySelector(`#${id} tbody`).replaceChildren(...rows);
  }
  const total = (xs) => xs.reduce((a, b) => a + b, 0);
  document.getElementById("summary").textContent =
    `${total(series.starts)} started, ${total(series.answers)} answered, ${total(series.failures)} failed in the last minute`;
}

// -- one call: timeline and controls ------------------------------------------------------------------------

async function select(dialId) {
  state.selected = dialId;
  for (const [id, row] of state.rows) row.classList.toggle("selected", id === dialId);
  document.getElementById("call-panel").hidden = false;
  document.getElementById("call-id").textContent = dialId;
  document.getElementById("control-log").replaceChildren();
  await loadTimeline(dialId);
}

function eventItem(event, at) {
  const e = event || {};
  const rest = Object.entries(e).filter(([k]) => k !== "type").map(([k, v]) => `${k}=${v}`).join(" ");
  const item = el("li");
  if (at) item.append(el("time", clock(at)), " ");
  item.append(el("span", e.type || e.text || "", "kind"), " ", el("span", rest));
  return item;
}

async function loadTimeline(dialId) {
  const answer = await fetch(`/api/calls/${encodeURIComponent(dialId)}`, { credentials: "same-origin" });
  const timeline = document.getElementById("timeline");
  const history = document.getElementById("history");
  const record = document.getElementById("record");
  if (!answer.ok) {
    timeline.replaceChildren(el("li", `cannot load: ${answer.status}`));
    history.replaceChildren();
    record.replaceChildren();
    return;
  }
  const data = await answer.json();
  if (data.dial_id !== state.selected) return;
  timeline.replaceChildren(...data.events.map((entry) => eventItem(entry.event, entry.at)));
  history.replaceChildren(...data.history.map((event) => eventItem(event, 0)));
  const items = [];
  for (const [k, v] of Object.entries(data.record)) items.push(el("dt", k), el("dd", v));
  record.replaceChildren(...items);
}

function logControl(text, cls) {
  const item = el("li", `${new Date().toLocaleTimeString()} ${text}`, cls);
  document.getElementById("control-log").prepend(item);
  return item;
}

async function send(verb) {
  const dialId = state.selected;
  if (!dialId) return;
  const message = { type: verb };
  if (verb === "barge") {
    message.phone_number = document.getElementById("barge-phone").value.trim();
    message.caller_id = document.getElementById("barge-caller-id").value.trim() || message.phone_number;
  }
  if (verb === "hangup" && !window.confirm(`Hang up ${dialId}?`)) return;
  const item = logControl(`${verb}: sending…`, "pending");
  item.dataset.verb = verb;
  const answer = await fetch(`/api/calls/${encodeURIComponent(dialId)}/control`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(message),
  });
  let data = {};
  try {
    data = await answer.json();
  } catch (e) {
    data = { error: `HTTP ${answer.status}` };
  }
  if (!answer.ok) {
    item.textContent = `${verb}: refused: ${data.error || answer.status}`;
    item.className = "error";
    return;
  }
  if (data.receivers === 0) {
    item.textContent = `${verb}: sent, but nothing heard it (no bridge running?)`;
    item.className = "error";
    return;
  }
  item.textContent = `${verb}: sent${data.signed ? " (signed)" : ""}, waiting for its ack…`;
  const waiting = { dialId, verb, item };
  state.pending.push(waiting);
  setTimeout(() => {
    const index = state.pending.indexOf(waiting);
    if (index < 0) return;
    state.pending.splice(index, 1);
    item.textContent = `${verb}: no ack or error within ${REPLY_TIMEOUT / 1000} s`;
    item.className = "error";
  }, REPLY_TIMEOUT);
}

function onReplies(replies) {
  for (const reply of replies) {
    const index = state.pending.findIndex((p) => p.dialId === reply.dial_id && p.verb === reply.event);
    if (index < 0) continue;
    const { item, verb } = state.pending[index];
    state.pending.splice(index, 1);
    item.textContent = reply.type === "ack" ? `${verb}: ack` : `${verb}: error: ${reply.reason}`;
    item.className = reply.type;
  }
  if (state.selected && replies.some((r) => r.dial_id === state.selected)) loadTimeline(state.selected);
}

// -- the event stream ---------------------------------------------------------------------------------------

function apply(data, snapshot) {
  state.skew = data.now - Date.now();
  if (snapshot) {
    for (const id of [...state.calls.keys()]) removeCall(id);
    document.querySelector("#failures tbody").replaceChildren();
  }
  for (const call of data.calls || []) renderCall(call);
  for (const id of data.removed || []) removeCall(id);
  if (data.failures) addFailures(data.failures);
  if (data.replies && !snapshot) onReplies(data.replies);
  if (data.nodes) renderNodes(data.nodes);
  if (data.dead) renderDead(data.dead);
  if (data.rates) renderChart(data.rates);
  if (data.calls || data.removed || snapshot) {
    renderQueued();
    scheduleDraw();
  }
  if (state.selected && (data.calls || []).some((c) => c.dial_id === state.selected)) loadTimeline(state.selected);
}

function stalled(reason) {
  const status = document.getElementById("connection");
  status.textContent = `data stopped: ${reason}`;
  status.className = "bad";
}

function connect() {
  const status = document.getElementById("connection");
  const source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => {
    const data = JSON.parse(e.data);
    status.textContent = "live";
    status.className = "good";
    apply(data, true);
    if (data.feed_error) stalled(data.feed_error);
  });
  source.addEventListener("delta", (e) => apply(JSON.parse(e.data), false));
  source.addEventListener("feed-error", (e) => stalled(JSON.parse(e.data).reason));
  source.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "bad";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const input of [document.getElementById("filter-org"), document.getElementById("filter-user")]) {
    input.addEventListener("input", scheduleDraw);
  }
  document.getElementById("calls-panel").addEventListener("scroll", scheduleDraw, { passive: true });
  for (const button of document.querySelectorAll("button[data-verb]")) {
    button.addEventListener("click", () => send(button.dataset.verb));
  }
  setInterval(tick, 1000); // redraws durations; the data itself only ever comes from the event stream
  connect();
});
