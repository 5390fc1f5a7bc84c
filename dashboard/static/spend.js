// cowork dashboard: the spend panel, a table of the tasks and a chart of
// the charted one's API calls (or tokens, or cost) a minute, drawn as SVG
// elements. It uses app.js's state and helpers, which load after it and
// before any of this runs. Task labels come from the guest's logs: they
// are set as text, like everything else.
"use strict";

// The spend of a task, as the server adds it up (dashboard.Spend). The
// chart draws the first that any task has; each that any task has is a
// column of the tasks table.
const METRICS = [
  { id: "cost_usd", label: "Cost", fmt: (v) => usd(v) },
  { id: "tokens", label: "Tokens", get: (s) => (s.input_tokens || 0) + (s.output_tokens || 0) + (s.cache_tokens || 0), fmt: (v) => count(v) },
  { id: "calls", label: "API calls", fmt: (v) => count(v) },
];
const metric = (m, s) => (m.get ? m.get(s) : s[m.id] || 0);

function taskLabel(t) {
  if (t.run) return "run " + t.run + (t.what ? " · " + t.what + " " + t.command : "");
  return "session " + t.session;
}

function usedMetrics() {
  const used = METRICS.filter((m) => Array.from(state.tasks.values()).some((t) => metric(m, t.total) > 0));
  return used.length ? used : [METRICS[METRICS.length - 1]];
}

function renderTasks() {
  const metrics = usedMetrics();
  const head = [el("th", "Task"), el("th", "Instance"), ...metrics.slice().reverse().map((m) => el("th", m.label, "num")), el("th", "Last")];
  head.forEach((th) => (th.scope = "col"));
  $("tasks-head").replaceChildren(...head);
  const tasks = Array.from(state.tasks.values()).sort((a, b) => (a.last < b.last ? 1 : -1));
  const all = { key: "", label: "All tasks", instance: "", total: sumTotals(tasks), last: tasks.length ? tasks[0].last : "" };
  const rows = [all, ...tasks].map((t) => {
    const tr = el("tr");
    tr.tabIndex = 0;
    tr.setAttribute("aria-selected", String(state.task === t.key));
    tr.append(el("td", t.label || taskLabel(t)), el("td", t.instance),
      ...metrics.slice().reverse().map((m) => el("td", m.fmt(metric(m, t.total)), "num")), el("td", t.last ? clock(t.last) : ""));
    const choose = () => { state.task = t.key; renderTasks(); focusTask(t.key); };
    tr.addEventListener("click", choose);
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); choose(); }
      else if (ev.key === "ArrowDown" || ev.key === "j") { ev.preventDefault(); if (tr.nextElementSibling) tr.nextElementSibling.focus(); }
      else if (ev.key === "ArrowUp" || ev.key === "k") { ev.preventDefault(); if (tr.previousElementSibling) tr.previousElementSibling.focus(); }
    });
    tr.dataset.key = t.key;
    return tr;
  });
  $("tasks-body").replaceChildren(...rows);
  renderChart(metrics[0]);
}

function focusTask(key) {
  const tr = Array.from($("tasks-body").rows).find((r) => r.dataset.key === key);
  if (tr) tr.focus();
}

function sumTotals(tasks) {
  const s = {};
  for (const t of tasks) for (const k in t.total) s[k] = (s[k] || 0) + t.total[k];
  return s;
}

// series is the charted task's spend a minute, or all tasks' summed.
function series() {
  const tasks = state.task ? [state.tasks.get(state.task)].filter(Boolean) : Array.from(state.tasks.values());
  const byMinute = new Map();
  for (const t of tasks) {
    for (const p of t.series || []) {
      const k = Date.parse(p.t);
      const s = byMinute.get(k) || {};
      for (const f in p) if (f !== "t") s[f] = (s[f] || 0) + p[f];
      byMinute.set(k, s);
    }
  }
  return Array.from(byMinute.entries()).sort((a, b) => a[0] - b[0]);
}

function renderChart(m) {
  const box = $("chart");
  const W = Math.max(200, Math.round(box.clientWidth || 480)), H = 150, pad = { l: 44, r: 8, t: 8, b: 18 };
  box.setAttribute("viewBox", "0 0 " + W + " " + H);
  const pts = series();
  const what = state.task ? taskLabel(state.tasks.get(state.task) || {}) : "all tasks";
  $("chart-what").textContent = "· " + m.label.toLowerCase() + " a minute, " + what;
  const nodes = [];
  const desc = svg("desc", { id: "chart-desc" });
  nodes.push(desc);
  if (!pts.length) {
    desc.textContent = "No API calls yet.";
    nodes.push(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no API calls yet"));
    box.replaceChildren(...nodes);
    return;
  }
  const t0 = pts[0][0], t1 = Math.max(pts[pts.length - 1][0], t0 + 60000) + 60000;
  const vals = pts.map(([, s]) => metric(m, s));
  let total = 0;
  const cum = vals.map((v) => (total += v));
  const max = Math.max(...vals) || 1;
  const x = (t) => pad.l + ((t - t0) / (t1 - t0)) * (W - pad.l - pad.r);
  const y = (v, top) => H - pad.b - (v / top) * (H - pad.t - pad.b);
  const bw = Math.max(1, x(t0 + 60000) - x(t0) - 1);
  nodes.push(svg("line", { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: "axis" }));
  nodes.push(svg("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end" }, m.fmt(max)));
  nodes.push(svg("text", { x: pad.l - 4, y: H - pad.b, "text-anchor": "end" }, m.fmt(0)));
  nodes.push(svg("text", { x: pad.l, y: H - 4 }, clock(t0)));
  nodes.push(svg("text", { x: W - pad.r, y: H - 4, "text-anchor": "end" }, clock(t1)));
  pts.forEach(([t], i) => {
    const r = svg("rect", { x: x(t), y: y(vals[i], max), width: bw, height: Math.max(0, H - pad.b - y(vals[i], max)), class: "bar" });
    r.append(svg("title", {}, clock(t) + ": " + m.fmt(vals[i])));
    nodes.push(r);
  });
  const line = pts.map(([t], i) => x(t + 60000) + "," + y(cum[i], total)).join(" ");
  nodes.push(svg("polyline", { points: x(t0) + "," + y(0, total) + " " + line, class: "cum" }));
  $("chart-what").textContent += ", total " + m.fmt(total);
  desc.textContent = m.label + " a minute for " + what + " from " + clock(t0) + " to " + clock(t1) + ": total " + m.fmt(total) + ", at most " + m.fmt(max) + " in a minute.";
  box.replaceChildren(...nodes);
}

let tasksTimer = 0;
function tasksChanged() {
  if (!tasksTimer) tasksTimer = setTimeout(() => { tasksTimer = 0; renderTasks(); }, 250);
}

