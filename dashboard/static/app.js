// cowork dashboard: the instances, the guests' traffic as it happens, and
// what each task spent. Plain JS, no library. Everything in a record came
// from a hostile guest (or a server it chose): it only ever reaches the
// page as text (textContent, SVG text nodes), never as HTML.
"use strict";

// The token stays in this variable alone: the address bar and the
// session's history lose it once the page has loaded (see SECURITY.md:
// the browser may have noted the URL already). A reload then needs the
// URL `cowork dashboard` printed; the page reconnects without one.
const token = document.querySelector('meta[name="cowork-token"]').content;
if (location.search) history.replaceState(null, "", location.pathname + location.hash);
const $ = (id) => document.getElementById(id);

// The columns of the traffic table. get(e) is the cell's text for event e
// ({instance, parent, run, log, record}). An optional column shows once
// some record has a value for it: to show a new field of audit.Record,
// add one line here.
const COLUMNS = [
  { id: "time", label: "Time", get: (e) => clock(e.record.time) },
  { id: "instance", label: "Instance", get: (e) => e.instance },
  { id: "verdict", label: "Verdict", get: (e) => e.record.verdict || (e.record.kind === "run" ? "run" : "") },
  { id: "kind", label: "Kind", get: (e) => e.record.kind },
  { id: "host", label: "Host", get: hostOf },
  { id: "port", label: "Port", get: (e) => split(e.record.dst)[1], num: true },
  { id: "addr", label: "Address", get: (e) => split(e.record.dst)[0] },
  { id: "out", label: "↑ Out", get: (e) => bytesOf(e.record.bytes_out), num: true },
  { id: "in", label: "↓ In", get: (e) => bytesOf(e.record.bytes_in), num: true },
  { id: "reason", label: "Rule or reason", get: reasonOf },
  { id: "task", label: "Task", get: (e) => (e.run ? "run " + e.run : e.record.session ? "session " + e.record.session : "") },
  // Provenance: the guest process the guest agent says made the flow
  // (record.owner, a claim), and the exec or ask it belongs to.
  { id: "exec", label: "Exec", get: (e) => pick(e.record, "owner.exec"), optional: true },
  { id: "pid", label: "PID", get: (e) => pick(e.record, "owner.pid"), optional: true, num: true },
  { id: "command", label: "Command", get: (e) => pick(e.record, "owner.cmd", "owner.comm"), optional: true },
  // Spend of an API call through the relay, once the log records it.
  { id: "tokens", label: "Tokens", get: (e) => tokensOf(e.record.usage), optional: true, num: true },
  { id: "cost", label: "Cost", get: (e) => (e.record.usage && e.record.usage.cost_usd ? usd(e.record.usage.cost_usd) : ""), optional: true, num: true },
];

const MAX_ROWS = 2000; // records shown, and held while paused or hidden
const MAX_TASKS = 200;

const state = {
  events: [], // newest first
  instances: [],
  tasks: new Map(),
  seen: new Set(), // optional columns some record filled
  selected: null, // the selected event's id
  task: "", // the task charted; "" for all
  paused: false,
  pending: [], // events not yet shown: the newest MAX_ROWS to 2 * MAX_ROWS
  held: 0, // events come while paused
  dropped: 0, // events not kept in pending, while paused or hidden
};

// ---- formatting

function clock(t) {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
}
function split(dst) {
  if (!dst) return ["", ""];
  const i = dst.lastIndexOf(":");
  if (i < 0) return [dst, ""];
  return [dst.slice(0, i).replace(/^\[|\]$/g, ""), dst.slice(i + 1)];
}
function bytesOf(n) {
  if (!n) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + u[i];
}
function count(n) { return (n || 0).toLocaleString(); }
function usd(n) { return "$" + (n || 0).toFixed(n >= 100 ? 0 : n >= 1 ? 2 : 4); }
function tokensOf(u) {
  if (!u) return "";
  return count((u.input_tokens || 0) + (u.output_tokens || 0) + (u.cache_creation_input_tokens || 0) + (u.cache_read_input_tokens || 0));
}
function pick(r, ...paths) {
  for (const p of paths) {
    let v = r;
    for (const k of p.split(".")) v = v == null ? undefined : v[k];
    if (v !== undefined && v !== null && v !== "") return String(v);
  }
  return "";
}
function hostOf(e) {
  const r = e.record;
  if (r.kind === "run" && r.run_info) return r.run_info.what + " " + r.run_info.command;
  if (r.kind === "tool" && r.tool) return r.tool.name + " " + r.tool.id;
  if (r.kind === "dns") return [r.name, r.qtype, r.rcode].filter(Boolean).join(" ");
  return r.name || split(r.dst)[0] || "";
}
function reasonOf(e) {
  const r = e.record;
  const parts = [];
  if (r.rule) parts.push(r.rule);
  if (r.kind === "dns" && r.answers) parts.push("→ " + r.answers.join(", "));
  if (r.method) parts.push(r.method + " " + (r.url || "") + (r.status ? " " + r.status : ""));
  if (r.kind === "run" && r.run_info) parts.push("exit " + r.run_info.exit_code);
  if (r.suppressed) parts.push("(" + r.suppressed + " more like it)");
  if (r.error) parts.push("error: " + r.error);
  if (r.clipped) parts.push("(clipped)");
  return parts.join("  ");
}

// el makes an element; text is set as text, never parsed.
function el(tag, text, cls) {
  const n = document.createElement(tag);
  if (text !== undefined && text !== null) n.textContent = String(text);
  if (cls) n.className = cls;
  return n;
}
function svg(tag, attrs, text) {
  const n = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) n.setAttribute(k, attrs[k]);
  if (text !== undefined) n.textContent = String(text);
  return n;
}

// ---- the traffic table

function visibleColumns() {
  return COLUMNS.filter((c) => !c.optional || state.seen.has(c.id));
}

function matches(e) {
  const inst = $("f-instance").value, verdict = $("f-verdict").value, kind = $("f-kind").value;
  const text = $("f-text").value.trim().toLowerCase();
  const r = e.record;
  if (inst && e.instance !== inst && e.parent !== inst) return false;
  if (verdict && r.verdict !== verdict) return false;
  if (kind === "dns" && r.kind !== "dns") return false;
  if (kind === "relay" && r.kind !== "relay") return false;
  if (kind === "run" && r.kind !== "run" && !e.run) return false;
  if (kind === "flows" && ["dns", "relay", "run", "publish", "unpublish", "tool"].includes(r.kind)) return false;
  if (text) {
    if (e.search === undefined) {
      e.search = COLUMNS.map((c) => c.get(e)).concat([r.claimed_name || "", r.url || "", e.parent || ""]).join(" ").toLowerCase();
    }
    if (!e.search.includes(text)) return false;
  }
  return true;
}

function renderHead() {
  const head = $("flows-head");
  head.replaceChildren(...visibleColumns().map((c) => {
    const th = el("th", c.label, c.num ? "num" : "");
    th.scope = "col";
    return th;
  }));
}

function row(e) {
  const tr = el("tr");
  tr.id = "row-" + e.id;
  tr.setAttribute("role", "row");
  tr.setAttribute("aria-selected", String(e.id === state.selected));
  if (e.record.verdict === "deny") tr.classList.add("deny");
  for (const c of visibleColumns()) {
    const td = el("td", null, "c-" + c.id + (c.num ? " num" : ""));
    const v = c.get(e);
    if (c.id === "verdict" && v) td.append(el("span", v, "badge " + v));
    else td.textContent = v;
    if (c.id === "host" && e.record.claimed_name && e.record.name_mismatch) {
      td.append(" ", el("span", "⚠ " + (e.record.claimed_from || "claim") + " says " + e.record.claimed_name, "mismatch"));
    }
    if (v && v.length > 40) td.title = v;
    tr.append(td);
  }
  tr.addEventListener("click", () => select(e.id, true));
  tr.addEventListener("dblclick", () => showDetail(e));
  return tr;
}

function renderRows() {
  renderHead();
  const rows = [];
  for (const e of state.events) if (matches(e)) rows.push(row(e));
  $("flows-body").replaceChildren(...rows);
  updateCount();
}

function updateCount() {
  const shown = $("flows-body").rows.length;
  $("no-records").hidden = state.events.length > 0;
  let s = shown === state.events.length ? count(shown) + " records" : count(shown) + " of " + count(state.events.length) + " records";
  if (state.paused) s += " · paused, " + count(state.held) + " new";
  if (state.dropped) s += " · " + count(state.dropped) + " not shown (only the newest " + count(MAX_ROWS) + " are kept while paused or in a background tab)";
  $("count").textContent = "· " + s;
}

// add puts new events in place (newest first), noting optional columns.
function add(events) {
  let newColumn = false;
  for (const e of events) {
    for (const c of COLUMNS) {
      if (c.optional && !state.seen.has(c.id) && c.get(e)) { state.seen.add(c.id); newColumn = true; }
    }
  }
  const body = $("flows-body");
  const inOrder = events.every((e, i) => i === 0 ? !state.events.length || e.record.time >= state.events[0].record.time : e.record.time >= events[i - 1].record.time);
  if (inOrder && !newColumn && events.length < 200) {
    for (const e of events) {
      state.events.unshift(e);
      if (matches(e)) body.insertBefore(row(e), body.firstChild);
    }
  } else {
    state.events = state.events.concat(events); // never spread: a long list overflows the stack
    state.events.sort((a, b) => (a.record.time < b.record.time ? 1 : a.record.time > b.record.time ? -1 : b.id - a.id));
  }
  if (state.events.length > MAX_ROWS) {
    for (const e of state.events.splice(MAX_ROWS)) {
      const tr = document.getElementById("row-" + e.id);
      if (tr) tr.remove();
    }
  }
  if (!inOrder || newColumn || events.length >= 200) renderRows();
  else updateCount();
  for (const e of events) addInstanceOption(e.instance);
}

function flush() {
  state.flushing = false;
  if (state.paused || !state.pending.length) return;
  const events = state.pending;
  state.pending = [];
  add(events);
}

// queue holds e until the next frame. A paused page, or a tab in the
// background (no frames), keeps only the newest MAX_ROWS, as it would
// show: a guest flooding the log meanwhile costs it no more.
function queue(e) {
  state.pending.push(e);
  if (state.pending.length >= 2 * MAX_ROWS) {
    state.dropped += state.pending.length - MAX_ROWS;
    state.pending = state.pending.slice(-MAX_ROWS);
    if (!state.paused) updateCount();
  }
  if (state.paused) { state.held++; updateCount(); return; }
  if (!state.flushing) { state.flushing = true; requestAnimationFrame(flush); }
}

// ---- selection and the record's detail

function shownRows() { return Array.from($("flows-body").rows); }

function select(id, focus) {
  const old = state.selected !== null && document.getElementById("row-" + state.selected);
  if (old) old.setAttribute("aria-selected", "false");
  state.selected = id;
  const tr = document.getElementById("row-" + id);
  const body = $("flows-body");
  if (!tr) { body.removeAttribute("aria-activedescendant"); return; }
  tr.setAttribute("aria-selected", "true");
  body.setAttribute("aria-activedescendant", tr.id);
  tr.scrollIntoView({ block: "nearest" });
  if (focus) body.focus();
  if (!$("detail").hidden) showDetail(eventById(id));
}

function eventById(id) { return state.events.find((e) => e.id === id); }

function move(by) {
  const rows = shownRows();
  if (!rows.length) return;
  let i = rows.findIndex((r) => r.id === "row-" + state.selected);
  i = i < 0 ? 0 : Math.max(0, Math.min(rows.length - 1, i + by));
  select(Number(rows[i].id.slice(4)), true);
}

function flatten(v, prefix, out) {
  if (v && typeof v === "object" && !Array.isArray(v)) {
    for (const k of Object.keys(v)) flatten(v[k], prefix ? prefix + "." + k : k, out);
  } else if (Array.isArray(v)) {
    out.push([prefix, v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ")]);
  } else {
    out.push([prefix, String(v)]);
  }
  return out;
}

function showDetail(e) {
  if (!e) return;
  const dl = $("detail-body");
  const pairs = [["instance", e.instance]];
  if (e.parent) pairs.push(["throwaway of", e.parent]);
  if (e.run) pairs.push(["run", e.run]);
  pairs.push(["log", e.log]);
  flatten(e.record, "", pairs);
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", k), el("dd", v));
  $("detail").hidden = false;
}

function hideDetail() {
  $("detail").hidden = true;
  $("flows-body").focus();
}

// ---- instances

function addInstanceOption(name) {
  const sel = $("f-instance");
  if (!name || Array.from(sel.options).some((o) => o.value === name)) return;
  const o = el("option", name);
  o.value = name;
  sel.append(o);
}

function renderInstances(list) {
  state.instances = list;
  $("no-instances").hidden = list.length > 0;
  $("instances-body").replaceChildren(...list.map((i) => {
    const tr = el("tr");
    const name = el("td", i.name);
    if (i.parent) name.append(el("span", " throwaway of " + i.parent, "muted"));
    const label = i.state + (i.state === "running" ? (i.ready ? ", ready" : ", booting") : "");
    const st = el("td");
    st.append(el("span", label, "badge state-" + i.state));
    if (i.note) st.append(" ", el("span", i.note, "muted"));
    const pol = el("td", i.policy);
    const lists = [];
    if (i.allow) lists.push("allow: " + i.allow.join(", "));
    if (i.deny) lists.push("deny: " + i.deny.join(", "));
    if (lists.length) pol.title = lists.join("\n");
    const n = i.network;
    tr.append(name, st, el("td", i.cpus), el("td", bytesOf(i.memory_bytes)), pol,
      el("td", n ? count(n.flows) : "", "num"), el("td", n ? count(n.blocked) : "", "num"), el("td", n ? count(n.dns_queries) : "", "num"));
    addInstanceOption(i.name);
    return tr;
  }));
}

// ---- the stream

function connect() {
  const es = new EventSource("/events?token=" + encodeURIComponent(token));
  const conn = $("conn");
  $("reconnect").hidden = true;
  es.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
  es.onerror = () => {
    conn.className = "down";
    if (es.readyState !== EventSource.CLOSED) { conn.textContent = "disconnected; reconnecting…"; return; }
    // Refused for good (503: too many pages; 403: the dashboard was
    // started again, with a new token): the browser will not retry.
    conn.textContent = "stopped: too many dashboard pages are open (close one, then reconnect), or the dashboard was restarted (open the new URL it printed)";
    $("reconnect").hidden = false;
  };
  es.addEventListener("hello", () => {
    // A new connection sends everything again.
    state.events = []; state.pending = []; state.held = 0; state.dropped = 0; state.tasks.clear();
    renderRows(); renderTasks();
  });
  es.addEventListener("instances", (m) => renderInstances(JSON.parse(m.data)));
  es.addEventListener("task", (m) => {
    const t = JSON.parse(m.data);
    state.tasks.set(t.key, t);
    if (state.tasks.size > MAX_TASKS) { // as the server's book: the least recently active go
      const oldest = Array.from(state.tasks.values()).reduce((a, b) => (a.last < b.last ? a : b));
      state.tasks.delete(oldest.key);
    }
    tasksChanged();
  });
  es.addEventListener("record", (m) => queue(JSON.parse(m.data)));
}

// ---- keyboard

function typing(t) { return t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA"); }

function togglePause() {
  state.paused = !state.paused;
  $("pause").setAttribute("aria-pressed", String(state.paused));
  $("pause").textContent = state.paused ? "Resume" : "Pause";
  if (state.paused) state.dropped = 0;
  else { state.held = 0; flush(); }
  updateCount();
}

document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (typing(ev.target)) {
    if (ev.key === "Escape") { ev.target.blur(); $("flows-body").focus(); }
    else if (ev.key === "Enter" && ev.target.id === "f-text") { ev.preventDefault(); $("flows-body").focus(); move(0); }
    return;
  }
  const inTable = ev.target === $("flows-body");
  switch (ev.key) {
    case "/": ev.preventDefault(); $("f-text").focus(); $("f-text").select(); break;
    case "?": $("help-toggle").click(); break;
    case "p": togglePause(); break;
    case "t": ev.preventDefault(); focusTask(state.task); break;
    case "Escape": if (!$("detail").hidden) hideDetail(); break;
    default:
      if (!inTable) return;
      if (ev.key === "j" || ev.key === "ArrowDown") move(1);
      else if (ev.key === "k" || ev.key === "ArrowUp") move(-1);
      else if (ev.key === "g" || ev.key === "Home") move(-Infinity);
      else if (ev.key === "G" || ev.key === "End") move(Infinity);
      else if (ev.key === "PageDown") move(20);
      else if (ev.key === "PageUp") move(-20);
      else if (ev.key === "Enter") showDetail(eventById(state.selected));
      else return;
      ev.preventDefault();
  }
});

$("flows-body").addEventListener("focus", () => { if (state.selected === null || !document.getElementById("row-" + state.selected)) move(0); });
for (const id of ["f-instance", "f-verdict", "f-kind"]) $(id).addEventListener("change", renderRows);
$("f-text").addEventListener("input", () => { clearTimeout(state.typingTimer); state.typingTimer = setTimeout(renderRows, 120); });
$("filters").addEventListener("submit", (ev) => ev.preventDefault());
$("pause").addEventListener("click", togglePause);
$("detail-close").addEventListener("click", hideDetail);
$("reconnect").addEventListener("click", connect);
$("help-toggle").addEventListener("click", () => {
  const open = $("help").hidden;
  $("help").hidden = !open;
  $("help-toggle").setAttribute("aria-expanded", String(open));
});
window.addEventListener("resize", () => tasksChanged());

renderRows();
renderTasks();
connect();
