// tether traces: one lane per program, spans on a canvas (only the visible part is drawn),
// lane labels, the detail panel and the agent table in the DOM. Data: GET api/runs/{run}.
"use strict";

const ROW_H = 15, LANE_PAD = 4;
const COLORS = { program: "#d4d4d8", agent: "#9ecae1", chat: "#3182bd", tool: "#31a354", toolrun: "#74c476",
  queue: "#fdae6b", prefill: "#e6550d", decode: "#756bb1", pin: "#fdd49e", request: "#bdbdbd", other: "#969696" };
const MARKS = { "tether.kv.prefix_hit": ["#1a9850", "tri"], "tether.kv.pin": ["#f16913", "diamond"],
  "tether.kv.pin_hit": ["#1a9850", "circle"], "tether.kv.pin_expiry": ["#d7301f", "x"],
  "tether.kv.pin_release": ["#737373", "x"], "tether.kv.host_swap_in": ["#6a51a3", "circle"],
  "tether.kv.reuse": ["#08519c", "diamond"], "tether.engine.preempted": ["#b30000", "tri"] };
const $ = (id) => document.getElementById(id);

const state = { view: null, lanes: [], laneTop: [], total: 0, t0: 0, t1: 1, sel: -1,
  filter: { program: "", agent: "", tool: "" }, drawn: { spans: 0, markers: 0, arrows: 0 }, agentOf: [] };

function fmt(ms) {
  if (ms == null || isNaN(ms)) return "-";
  const a = Math.abs(ms);
  if (a < 1) return (ms * 1000).toFixed(0) + " µs";
  if (a < 1000) return ms.toFixed(1) + " ms";
  if (a < 60000) return (ms / 1000).toFixed(2) + " s";
  const s = Math.round(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + "h " : "") + String(m).padStart(h ? 2 : 1, "0") + "m " + String(s % 60).padStart(2, "0") + "s";
}
const num = (v) => (v == null ? "-" : Number(v).toLocaleString("en-US"));

// ---- loading ----------------------------------------------------------------------------------------
async function loadRuns() {
  const r = await (await fetch("api/runs")).json();
  const sel = $("run");
  sel.innerHTML = "";
  for (const run of r.runs) sel.add(new Option(run.name, run.name));
  const want = new URLSearchParams(location.search).get("run");
  if (want && r.runs.some((x) => x.name === want)) sel.value = want;
  if (!r.runs.length) { $("summary").textContent = "no traces in " + r.root; window.tetherUI.ready = true; return; }
  await loadRun(sel.value);
}

async function loadRun(name) {
  $("summary").textContent = "loading " + name + "…";
  const v = await (await fetch("api/runs/" + encodeURIComponent(name))).json();
  state.view = v;
  const spans = v.spans;
  state.agentOf = spans.map(() => null);
  for (const s of spans) {  // parents come first: an agent is inherited from the nearest span naming one
    const own = s.attrs["gen_ai.agent.name"];
    state.agentOf[s.i] = own != null && s.kind !== "program" ? own : (s.parent != null ? state.agentOf[s.parent] : null);
  }
  state.byLane = v.lanes.map(() => []);
  for (const s of spans) state.byLane[s.lane].push(s);
  state.markersBySpan = new Map();
  for (const m of v.markers) {
    if (!state.markersBySpan.has(m.span)) state.markersBySpan.set(m.span, []);
    state.markersBySpan.get(m.span).push(m);
  }
  fillSelect($("f-agent"), new Set(state.agentOf.filter((a) => a != null)));
  fillSelect($("f-tool"), new Set(spans.filter((s) => s.kind === "tool").map((s) => s.attrs["gen_ai.tool.name"])));
  state.t0 = 0; state.t1 = Math.max(v.duration_ms, 1);
  state.sel = -1;
  $("detail").innerHTML = '<p class="hint">Click a span to see its attributes, tokens and TTFT.</p>';
  applyFilter();
  window.tetherUI.ready = true;
}

function fillSelect(sel, values) {
  const cur = sel.value;
  sel.innerHTML = '<option value="">all</option>';
  for (const v of [...values].sort()) sel.add(new Option(v, v));
  sel.value = [...values].includes(cur) ? cur : "";
}

// ---- filtering and layout --------------------------------------------------------------------------
function matches(s) {
  const f = state.filter;
  if (f.agent && state.agentOf[s.i] !== f.agent && s.kind !== "program") return false;
  if (f.tool && (s.kind === "tool" || s.kind === "toolrun") && s.attrs["gen_ai.tool.name"] !== f.tool) return false;
  return true;
}

function applyFilter() {
  const v = state.view, f = state.filter;
  state.lanes = [];
  v.lanes.forEach((lane, i) => {
    if (f.program && !lane.label.toLowerCase().includes(f.program.toLowerCase())) return;
    const spans = state.byLane[i];
    if (f.agent && !spans.some((s) => state.agentOf[s.i] === f.agent)) return;
    if (f.tool && !spans.some((s) => s.kind === "tool" && s.attrs["gen_ai.tool.name"] === f.tool)) return;
    state.lanes.push(i);
  });
  state.laneTop = [];
  let y = 0;
  for (const i of state.lanes) { state.laneTop.push(y); y += v.lanes[i].rows * ROW_H + LANE_PAD; }
  state.total = y;
  $("spacer").style.height = Math.max(y, 10) + "px";
  const labels = $("labels");
  labels.innerHTML = "";
  state.lanes.forEach((i, k) => {
    const d = document.createElement("div");
    d.className = "lane-label";
    d.dataset.lane = String(i);
    d.style.top = state.laneTop[k] + "px";
    d.style.height = v.lanes[i].rows * ROW_H + LANE_PAD + "px";
    d.textContent = v.lanes[i].label;
    d.title = v.lanes[i].label + " (click: zoom to this program)";
    d.onclick = () => zoomToLane(i);
    labels.appendChild(d);
  });
  summary();
  agentTable();
  draw();
}

function summary() {
  const v = state.view;
  const shown = new Set(state.lanes);
  const n = v.spans.filter((s) => shown.has(s.lane)).length;
  const marks = v.markers.filter((m) => shown.has(v.spans[m.span].lane)).length;
  $("summary").textContent = `run ${v.run}: ${state.lanes.length} of ${v.lanes.length} programs, ${num(n)} spans, ` +
    `${num(marks)} KV events, ${v.arrows.length} reuse arrows, ${num(v.pool_events.length)} eviction steps, ` +
    `${fmt(v.duration_ms)} long`;
  $("legend").innerHTML = Object.entries(COLORS).map(([k, c]) => `<span><i class="sw" style="background:${c}"></i>${k}</span>`).join("") +
    Object.entries(MARKS).map(([k, [c]]) => `<span><i class="sw" style="background:${c};border-radius:50%"></i>${k.replace(/^tether\.(kv|engine)\./, "")}</span>`).join("");
}

function agentTable() {
  const v = state.view, shown = new Set(state.lanes), rows = new Map();
  const row = (a) => rows.get(a) || rows.set(a, { calls: 0, inp: 0, out: 0, cached: 0, reused: 0, llm: 0, tools: 0, toolms: 0 }).get(a);
  for (const s of v.spans) {
    if (!shown.has(s.lane)) continue;
    const a = state.agentOf[s.i];
    if (a == null) continue;
    if (s.kind === "chat") {
      const r = row(a);
      r.calls++; r.inp += s.attrs["gen_ai.usage.input_tokens"] || 0; r.out += s.attrs["gen_ai.usage.output_tokens"] || 0;
      r.cached += s.attrs["gen_ai.usage.cache_read.input_tokens"] || 0; r.reused += s.attrs["tether.usage.reused_tokens"] || 0;
      r.llm += s.e - s.s;
    } else if (s.kind === "tool") { const r = row(a); r.tools++; r.toolms += s.e - s.s; }
  }
  const body = $("agents").tBodies[0];
  body.innerHTML = "";
  for (const [a, r] of [...rows].sort()) {
    const tr = body.insertRow();
    for (const c of [a, num(r.calls), num(r.inp), num(r.out), num(r.cached), num(r.reused),
      r.inp ? (100 * r.cached / r.inp).toFixed(0) + "%" : "-", fmt(r.llm), num(r.tools), fmt(r.toolms)]) tr.insertCell().textContent = c;
  }
}

// ---- drawing ------------------------------------------------------------------------------------------
function sizeCanvas(c, h) {
  const gutter = $("labels").offsetWidth || 210, dpr = window.devicePixelRatio || 1;
  const width = Math.max(50, (c.id === "lanes" ? $("scroller").clientWidth : c.parentElement.clientWidth) - gutter);
  c.style.width = width + "px"; c.style.height = h + "px";
  c.width = Math.floor(width * dpr); c.height = Math.max(1, Math.floor(h * dpr));
  const g = c.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
  return [g, width];
}
const xOf = (t, w) => ((t - state.t0) / (state.t1 - state.t0)) * w;

function draw() {
  if (!state.view) return;
  drawAxis(); drawPool(); drawLanes();
}

function drawAxis() {
  const [g, w] = sizeCanvas($("axis"), 22);
  g.clearRect(0, 0, w, 22); g.fillStyle = "#555"; g.font = "11px system-ui, sans-serif";
  const span = state.t1 - state.t0, step = niceStep(span / Math.max(2, w / 110));
  for (let t = Math.ceil(state.t0 / step) * step; t <= state.t1; t += step) {
    const x = xOf(t, w); g.fillRect(x, 14, 1, 8); g.fillText(tick(t, step), x + 3, 12);
  }
}
function tick(t, step) {  // a label precise enough to tell neighbouring ticks apart
  if (step >= 1000 || t < 1000) return fmt(t);
  const d = Math.min(6, Math.max(0, -Math.floor(Math.log10(step / 1000)))), m = Math.floor(t / 60000);
  return (m ? m + "m " : "") + ((t - m * 60000) / 1000).toFixed(d) + " s";
}
function niceStep(x) { const p = Math.pow(10, Math.floor(Math.log10(x))); for (const m of [1, 2, 5, 10]) if (m * p >= x) return m * p; return 10 * p; }

function drawPool() {
  const v = state.view, H = 70, [g, w] = sizeCanvas($("pool"), H);
  g.clearRect(0, 0, w, H);
  const pts = v.counter;
  if (!pts.length) { g.fillStyle = "#999"; g.fillText("no KV pool samples in this run", 6, 14); return; }
  const total = Math.max(...pts.map((p) => p[4])) || 1, peak = Math.max(...pts.map((p) => p[1]));
  // scale to the pool, or to the peak when the run used little of it (the dashed line is then off-scale)
  const top = peak > 0.5 * total ? total : Math.max(1, peak * 1.25), y = (b) => H - 4 - (b / top) * (H - 16);
  const area = (idx, color) => {
    g.beginPath(); g.moveTo(xOf(pts[0][0], w), H - 4);
    let last = null;
    for (const p of pts) { const x = xOf(p[0], w); if (x < -50 || x > w + 50) { last = p; continue; }
      if (last) { g.lineTo(xOf(last[0], w), y(last[idx])); last = null; } g.lineTo(x, y(p[idx])); }
    g.lineTo(xOf(pts[pts.length - 1][0], w), H - 4); g.closePath(); g.fillStyle = color; g.fill();
  };
  area(1, "rgba(49,130,189,0.55)"); area(2, "rgba(241,105,19,0.8)");
  g.strokeStyle = "#888"; g.setLineDash([3, 3]); g.beginPath(); g.moveTo(0, y(total)); g.lineTo(w, y(total)); g.stroke(); g.setLineDash([]);
  g.fillStyle = "#c0392b";
  let ev = 0;
  for (const e of v.pool_events) { const x = xOf(e.t, w); if (x < 0 || x > w) continue; ev++;
    g.fillRect(x, H - 4 - Math.min(14, 2 + 2 * Math.log2(1 + e.blocks)), 1, Math.min(14, 2 + 2 * Math.log2(1 + e.blocks))); }
  g.fillStyle = "#333"; g.font = "11px system-ui, sans-serif";
  g.fillText(`blocks used (blue), pinned (orange); pool ${num(total)} blocks${top < total ? ", axis to " + num(Math.round(top)) : " (dashed)"}; ` +
    `red ticks: evictions (${num(ev)} steps in view)`, 6, 12);
  $("pool-now").textContent = `max used ${num(peak)} / ${num(total)}`;
  state.drawn.counter = pts.length;
}

function drawLanes() {
  const sc = $("scroller"), H = sc.clientHeight, top = sc.scrollTop, [g, w] = sizeCanvas($("lanes"), H);
  const v = state.view;
  g.clearRect(0, 0, w, H);
  g.font = "10px system-ui, sans-serif"; g.textBaseline = "middle";
  let nSpans = 0, nMarks = 0, nArrows = 0;
  const first = Math.max(0, upperBound(state.laneTop, top) - 1);
  const boxes = new Map();
  for (let k = first; k < state.lanes.length && state.laneTop[k] < top + H; k++) {
    const li = state.lanes[k], y0 = state.laneTop[k] - top;
    g.fillStyle = k % 2 ? "#fafafa" : "#fff"; g.fillRect(0, y0, w, v.lanes[li].rows * ROW_H + LANE_PAD);
    for (const s of state.byLane[li]) {
      if (s.e < state.t0 || s.s > state.t1) continue;
      const x0 = Math.max(-2, xOf(s.s, w)), x1 = Math.min(w + 2, xOf(s.e, w)), y = y0 + s.row * ROW_H + 1;
      const bw = Math.max(1, x1 - x0);
      g.globalAlpha = matches(s) ? 1 : 0.18;
      g.fillStyle = COLORS[s.kind] || COLORS.other; g.fillRect(x0, y, bw, ROW_H - 2);
      if (s.error) { g.strokeStyle = "#d7301f"; g.strokeRect(x0 + 0.5, y + 0.5, bw - 1, ROW_H - 3); }
      if (bw > 36) { g.fillStyle = s.kind === "chat" || s.kind === "decode" || s.kind === "prefill" ? "#fff" : "#222";
        g.save(); g.beginPath(); g.rect(x0, y, bw, ROW_H); g.clip(); g.fillText(s.name, x0 + 3, y + ROW_H / 2 - 1); g.restore(); }
      boxes.set(s.i, [x0, y, bw]);
      nSpans++;
      for (const m of state.markersBySpan.get(s.i) || []) {
        const x = xOf(m.t, w); if (x < -4 || x > w + 4) continue;
        mark(g, x, y + ROW_H / 2 - 1, m.name); nMarks++;
      }
    }
    g.globalAlpha = 1;
    if (state.sel >= 0 && v.spans[state.sel].lane === li && boxes.has(state.sel)) {
      const [x, y, bw] = boxes.get(state.sel); g.strokeStyle = "#000"; g.lineWidth = 2; g.strokeRect(x - 1, y - 1, bw + 2, ROW_H); g.lineWidth = 1;
    }
  }
  g.strokeStyle = "#08519c"; g.fillStyle = "#08519c"; g.lineWidth = 2;
  for (const a of v.arrows) {  // reuse: from the producer's span to the consumer's, when both are in view
    const from = boxes.get(a.from), to = boxes.get(a.to);
    if (!from || !to) continue;
    const x0 = from[0] + from[2], y0 = from[1] + 2, x1 = xOf(a.t, w), y1 = to[1] + 2;
    const lift = Math.min(y0, y1) - 10 - Math.min(30, Math.abs(x1 - x0) / 8);  // arc above both spans
    g.beginPath(); g.moveTo(x0, y0); g.bezierCurveTo(x0, lift, x1, lift, x1, y1 - 5); g.stroke();
    g.beginPath(); g.moveTo(x1, y1); g.lineTo(x1 - 4, y1 - 7); g.lineTo(x1 + 4, y1 - 7); g.fill(); nArrows++;
  }
  g.lineWidth = 1;
  state.boxes = boxes;
  state.drawn = { ...state.drawn, spans: nSpans, markers: nMarks, arrows: nArrows };
}

function mark(g, x, y, name) {
  const [c, shape] = MARKS[name] || ["#000", "circle"];
  g.fillStyle = c; g.strokeStyle = c; g.beginPath();
  if (shape === "tri") { g.moveTo(x, y - 5); g.lineTo(x + 4, y + 3); g.lineTo(x - 4, y + 3); g.fill(); }
  else if (shape === "diamond") { g.moveTo(x, y - 5); g.lineTo(x + 4, y); g.lineTo(x, y + 5); g.lineTo(x - 4, y); g.fill(); }
  else if (shape === "x") { g.lineWidth = 2; g.moveTo(x - 4, y - 4); g.lineTo(x + 4, y + 4); g.moveTo(x + 4, y - 4); g.lineTo(x - 4, y + 4); g.stroke(); g.lineWidth = 1; }
  else { g.arc(x, y, 3.5, 0, 2 * Math.PI); g.fill(); }
}

function upperBound(arr, x) { let lo = 0, hi = arr.length; while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m] <= x) lo = m + 1; else hi = m; } return lo; }

// ---- interaction -----------------------------------------------------------------------------------------
function hit(px, py) {
  const w = $("lanes").clientWidth, y = py + $("scroller").scrollTop;
  const k = upperBound(state.laneTop, y) - 1;
  if (k < 0) return -1;
  const li = state.lanes[k], row = Math.floor((y - state.laneTop[k]) / ROW_H);
  let best = -1, bestDur = Infinity;
  const tol = (3 / w) * (state.t1 - state.t0), t = state.t0 + (px / w) * (state.t1 - state.t0);
  for (const s of state.byLane[li]) {
    if (s.row !== row || s.s - tol > t || s.e + tol < t) continue;
    if (s.e - s.s < bestDur) { best = s.i; bestDur = s.e - s.s; }
  }
  return best;
}

function select(i) {
  state.sel = i;
  draw();
  const d = $("detail");
  if (i < 0) { d.innerHTML = '<p class="hint">Click a span to see its attributes, tokens and TTFT.</p>'; return; }
  const v = state.view, s = v.spans[i], a = s.attrs;
  const kids = v.spans.filter((c) => c.parent === i);
  const phase = (k) => kids.filter((c) => c.kind === k).reduce((acc, c) => acc + (c.e - c.s), 0);
  const prefill = kids.find((c) => c.kind === "prefill");
  const ttft = a["tether.engine.ttft_s"] != null ? a["tether.engine.ttft_s"] * 1000
    : (prefill && prefill.attrs["tether.engine.ttft_s"] != null ? prefill.attrs["tether.engine.ttft_s"] * 1000 : null);
  const inp = a["gen_ai.usage.input_tokens"], cached = a["gen_ai.usage.cache_read.input_tokens"];
  d.innerHTML = "";
  const h = document.createElement("h2"); h.textContent = s.name; d.appendChild(h);
  const facts = document.createElement("div"); facts.className = "facts";
  const fact = (k, val) => { const e = document.createElement("div"); e.dataset.fact = k; e.textContent = `${k}: ${val}`; facts.appendChild(e); };
  fact("kind", s.kind); fact("program", v.lanes[s.lane].label); fact("agent", state.agentOf[i] ?? "-");
  fact("duration", fmt(s.e - s.s)); fact("start", fmt(s.s));
  if (inp != null) fact("tokens", `input ${num(inp)}, output ${num(a["gen_ai.usage.output_tokens"])}`);
  if (cached != null) fact("cached tokens", `${num(cached)} (${inp ? Math.round(100 * cached / inp) : 0}% of input)`);
  if (a["tether.usage.reused_tokens"] != null) fact("reused tokens", num(a["tether.usage.reused_tokens"]));
  if (ttft != null) fact("TTFT", fmt(ttft));
  if (kids.some((c) => ["queue", "prefill", "decode"].includes(c.kind)))
    fact("engine", `queue ${fmt(phase("queue"))}, prefill ${fmt(phase("prefill"))}, decode ${fmt(phase("decode"))}`);
  d.appendChild(facts);
  const t = document.createElement("table");
  for (const [k, val] of Object.entries(a).sort()) {
    const r = t.insertRow(); r.insertCell().textContent = k; r.insertCell().textContent = Array.isArray(val) ? JSON.stringify(val) : String(val);
  }
  d.appendChild(t);
  if (s.events.length) {
    const hh = document.createElement("h2"); hh.textContent = "events"; d.appendChild(hh);
    const ul = document.createElement("ul");
    for (const e of s.events.slice(0, 200)) {
      const li = document.createElement("li");
      li.textContent = `${fmt(e.t)} ${e.name} ` + Object.entries(e.attrs).map(([k, x]) => `${k.replace(/^tether\.kv\./, "")}=${x}`).join(" ");
      ul.appendChild(li);
    }
    d.appendChild(ul);
  }
}

function zoom(f, center) {
  const c = center ?? (state.t0 + state.t1) / 2, span = Math.max(0.01, (state.t1 - state.t0) * f);
  state.t0 = c - (c - state.t0) * f; state.t1 = state.t0 + span; draw();
}
function zoomToLane(li) {
  const spans = state.byLane[li]; if (!spans.length) return;
  const s = Math.min(...spans.map((x) => x.s)), e = Math.max(...spans.map((x) => x.e)), pad = (e - s) * 0.02 + 0.01;
  state.t0 = s - pad; state.t1 = e + pad; draw();
}

function wire() {
  const lanes = $("lanes");
  lanes.addEventListener("click", (ev) => { const r = lanes.getBoundingClientRect(); select(hit(ev.clientX - r.left, ev.clientY - r.top)); });
  lanes.addEventListener("wheel", (ev) => {
    if (!ev.ctrlKey && !ev.shiftKey) return;  // plain wheel: scroll the lanes
    ev.preventDefault();
    const r = lanes.getBoundingClientRect(), t = state.t0 + ((ev.clientX - r.left) / r.width) * (state.t1 - state.t0);
    if (ev.ctrlKey) zoom(ev.deltaY > 0 ? 1.25 : 0.8, t);
    else { const d = (ev.deltaY / r.width) * (state.t1 - state.t0); state.t0 += d; state.t1 += d; draw(); }
  }, { passive: false });
  let drag = null;
  lanes.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, t0: state.t0, t1: state.t1 }; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const d = ((drag.x - ev.clientX) / lanes.clientWidth) * (drag.t1 - drag.t0);
    if (Math.abs(ev.clientX - drag.x) > 3) { state.t0 = drag.t0 + d; state.t1 = drag.t1 + d; requestAnimationFrame(draw); }
  });
  $("scroller").addEventListener("scroll", () => requestAnimationFrame(drawLanes));
  window.addEventListener("resize", () => requestAnimationFrame(draw));
  $("zoom-in").onclick = () => zoom(0.5); $("zoom-out").onclick = () => zoom(2);
  $("zoom-fit").onclick = () => { state.t0 = 0; state.t1 = Math.max(state.view.duration_ms, 1); draw(); };
  $("run").onchange = () => loadRun($("run").value);
  $("f-program").oninput = (e) => { state.filter.program = e.target.value; applyFilter(); };
  $("f-agent").onchange = (e) => { state.filter.agent = e.target.value; applyFilter(); };
  $("f-tool").onchange = (e) => { state.filter.tool = e.target.value; applyFilter(); };
}

// What tests (and curious users) can ask of the page.
window.tetherUI = {
  ready: false,
  stats: () => ({ lanes: state.lanes.length, spans: state.view ? state.view.spans.length : 0,
    markers: state.view ? state.view.markers.length : 0, arrows: state.view ? state.view.arrows.length : 0,
    counter: state.view ? state.view.counter.length : 0, drawn: { ...state.drawn } }),
  // the page position of span i's box, if drawn now (to click it like a user would)
  boxOf: (i) => { const b = state.boxes && state.boxes.get(i); if (!b) return null;
    const r = $("lanes").getBoundingClientRect(); return { x: r.left + b[0], y: r.top + b[1], w: b[2], h: ROW_H - 2 }; },
  find: (pred) => state.view.spans.filter((s) => pred(s)).map((s) => s.i),
  span: (i) => state.view.spans[i],
  zoomToLane, select,
  setWindow: (t0, t1) => { state.t0 = t0; state.t1 = t1; draw(); },
};

wire();
loadRuns().catch((e) => { $("summary").textContent = "error: " + e; window.tetherUI.ready = true; window.tetherUI.error = String(e); });
