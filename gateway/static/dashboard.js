// The spend dashboard: fetches /dashboard/api/summary and draws it as plain SVG (no libraries,
// nothing loaded from the internet). State lives in the URL hash (#range=7d&stack=model), so a
// view can be bookmarked and shared.
"use strict";

const COLORS = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#4b5563",
                "#db2777", "#65a30d"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let timer = null;
let last = null;

function state() {
  const params = new URLSearchParams(location.hash.slice(1));
  const key = params.get("key");
  if (key) { sessionStorage.setItem("tollgate.key", key); params.delete("key"); }
  return { range: params.get("range") || $("range").value, stack: params.get("stack") || $("stack").value };
}

function setState(next) {
  const params = new URLSearchParams({ range: next.range, stack: next.stack });
  history.replaceState(null, "", "#" + params.toString());
  load();
}

function usd(v, digits) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  // Small sums keep two significant digits ($0.000054, never $0.0000): a small team's spend
  // and a nearly spent budget must read as what they are.
  const d = digits !== undefined ? digits
    : a >= 100 ? 2 : a >= 1 ? 3 : a >= 0.01 || a === 0 ? 4 : Math.min(9, 1 - Math.floor(Math.log10(a)));
  return "$" + v.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}
const count = (v) => (v === null || v === undefined) ? "–" : v.toLocaleString("en-US");
const pct = (v) => (v === null || v === undefined) ? "–" : (v * 100).toFixed(1) + "%";
const ms = (v) => (v === null || v === undefined) ? "–" : (v >= 1000 ? (v / 1000).toFixed(1) + " s" : v + " ms");

function timeLabel(t, granularity) {
  const d = new Date(t * 1000);
  if (granularity === "day") return d.toLocaleDateString([], { month: "short", day: "numeric" });
  if (granularity === "hour") return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit" });
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// Stacked bars: one bar per bucket, one segment per series.
function stackedBars(target, buckets, series, granularity, format) {
  // Drawn at the container's own pixel size, so text is never stretched.
  const W = Math.max(320, target.clientWidth || 900), H = target.classList.contains("short") ? 180 : 260;
  const L = 64, B = 24, T = 8;
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  const totals = buckets.map((_, i) => series.reduce((s, x) => s + x.values[i], 0));
  const max = niceMax(Math.max(0, ...totals));
  const y = (v) => H - B - (v / max) * (H - B - T);
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    el("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#e3e6ec" }, svg);
    el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, svg).textContent = format(v);
  }
  const slot = (W - L) / Math.max(buckets.length, 1);
  const width = Math.max(1, slot * 0.8);
  buckets.forEach((t, i) => {
    let base = 0;
    series.forEach((s, j) => {
      const v = s.values[i];
      if (v > 0) {
        const rect = el("rect", { x: L + i * slot + (slot - width) / 2, y: y(base + v), width,
          height: Math.max(0.5, y(base) - y(base + v)), fill: s.color || COLORS[j % COLORS.length] }, svg);
        el("title", {}, rect).textContent = `${s.name} · ${timeLabel(t, granularity)}: ${format(v)}`;
        base += v;
      }
    });
  });
  const every = Math.ceil(buckets.length / Math.max(2, Math.floor((W - L) / 110)));
  buckets.forEach((t, i) => {
    if (i % every === 0) {
      el("text", { x: L + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" }, svg).textContent = timeLabel(t, granularity);
    }
  });
  svg.dataset.series = String(series.length);
  target.replaceChildren(svg);
}

function renderSpend(data) {
  const s = data.series;
  const series = s.stacks.map((x, j) => ({ name: x.name, values: x.usd, color: COLORS[j % COLORS.length] }));
  stackedBars($("chart-spend"), s.buckets, series, data.range.granularity, (v) => (v === 0 ? "$0" : usd(v, v >= 1 ? 2 : v >= 0.01 ? 4 : 6)));
  const legend = $("legend");
  legend.replaceChildren(...series.map((x) => {
    const item = document.createElement("span");
    const total = x.values.reduce((a, b) => a + b, 0);
    item.dataset.series = x.name;
    item.dataset.usd = total.toFixed(9);
    const swatch = document.createElement("i");
    swatch.style.background = x.color;
    item.append(swatch, `${x.name} ${usd(total)}`);
    return item;
  }));
  if (!series.length) legend.textContent = "No spend in this range.";
  $("stack-label").textContent = "by " + data.stack;
  const ok = s.requests.map((r, i) => r - s.errors[i]);
  stackedBars($("chart-requests"), s.buckets, [
    { name: "ok", values: ok, color: "#2563eb" },
    { name: "errors", values: s.errors, color: "#dc2626" },
  ], data.range.granularity, (v) => count(Number(v.toFixed(1))));
}

function renderCards(data) {
  const t = data.totals;
  const spend = $("total-spend");
  spend.textContent = usd(t.usd);
  spend.dataset.usd = t.usd.toFixed(9);
  $("spend-note").textContent = `would have cost ${usd(t.counterfactual_usd)} without optimisation`;
  const saved = $("total-saved");
  saved.textContent = usd(t.saved_usd);
  saved.dataset.usd = t.saved_usd.toFixed(9);
  $("saved-note").textContent = t.counterfactual_usd > 0 ? `${pct(t.saved_usd / t.counterfactual_usd)} of the counterfactual` : "";
  $("total-requests").textContent = count(t.requests);
  $("total-requests").dataset.count = String(t.requests);
  $("requests-note").textContent = `${count(t.errors)} errors · ${count(t.denied)} denied`;
  $("hit-rate").textContent = pct(t.cache_hit_rate);
  $("hit-note").textContent = `${count(t.cache_hits)} answered from cache · prompt-cache ${pct(t.prompt_cache_rate)} of input tokens`;
  const l = data.latency_ms, f = data.ttft_ms;
  $("latency").textContent = `${ms(l.p50)} / ${ms(l.p95)} / ${ms(l.p99)}`;
  $("ttft").textContent = `time to first byte p50 ${ms(f.p50)} · p95 ${ms(f.p95)}`;
}

function renderSavings(data) {
  const max = Math.max(1e-12, ...data.savings.map((s) => s.usd));
  $("savings").replaceChildren(...data.savings.map((s) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.kind = s.kind;
    row.dataset.usd = s.usd.toFixed(9);
    row.innerHTML = `<span>${s.kind.replace(/_/g, " ")}</span><div class="track"><div class="fill" style="width:${(100 * Math.max(0, s.usd)) / max}%"></div></div>`;
    const value = document.createElement("span");
    value.className = "num";
    value.textContent = usd(s.usd);
    row.append(value);
    return row;
  }));
}

function renderKeys(data) {
  const body = $("top-keys").querySelector("tbody");
  body.replaceChildren(...data.top_keys.map((k) => {
    const tr = document.createElement("tr");
    const who = document.createElement("td");
    who.textContent = k.name;
    who.title = `key id ${k.key_id}`;
    if (k.team) {
      const team = document.createElement("span");
      team.className = "muted";
      team.textContent = ` · ${k.team}`;
      who.append(team);
    }
    tr.append(who);
    for (const [text, cls] of [[usd(k.usd), "num"], [count(k.requests), "num"], [count(k.tokens), "num"]]) {
      const td = document.createElement("td");
      td.textContent = text;
      td.className = cls;
      tr.append(td);
    }
    tr.dataset.key = k.key_id;
    tr.dataset.usd = k.usd.toFixed(9);
    return tr;
  }));
  if (!data.top_keys.length) body.innerHTML = `<tr><td colspan="4" class="muted">No calls in this range.</td></tr>`;
}

function renderRules(data) {
  // The running rules: what each shadow rule would have saved over the range (enforce it to
  // have it), and each quality guard's agreement, SUSPENDED when it took its rule's route away.
  const body = $("rules").querySelector("tbody");
  const rules = data.rules || [];
  body.replaceChildren(...rules.map((r) => {
    const tr = document.createElement("tr");
    const cells = [r.rule, r.mode,
      r.shadow ? `${usd(r.shadow.would_save_usd)} (${count(r.shadow.calls)} calls)` : "",
      r.guard ? `${r.guard.suspended ? "SUSPENDED · " : ""}agreement ${pct(r.guard.agreement)} over ${count(r.guard.window)}` : ""];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 2) td.className = "num";
      if (i === 3 && r.guard && r.guard.suspended) td.className = "error";
      tr.append(td);
    });
    tr.dataset.rule = r.rule;
    if (r.shadow) tr.dataset.wouldSave = r.shadow.would_save_usd.toFixed(9);
    if (r.guard) tr.dataset.suspended = String(r.guard.suspended);
    return tr;
  }));
  if (!rules.length) body.innerHTML = `<tr><td colspan="4" class="muted">No rules configured.</td></tr>`;
}

function renderBudgets(data) {
  const box = $("budgets");
  if (!data.budgets.length) { box.innerHTML = `<p class="muted">No USD budgets on a team, a key or the whole gateway.</p>`; return; }
  box.replaceChildren(...data.budgets.map((b) => {
    const div = document.createElement("div");
    div.className = "budget";
    div.dataset.budget = b.name;
    // Names come from keys and budgets: set as text, never as markup.
    const who = b.scope === "global" ? "everyone" : `${b.scope} ${b.subject}`;
    const head = document.createElement("div");
    head.className = "head";
    const name = document.createElement("strong");
    name.textContent = b.name;
    const scope = document.createElement("span");
    scope.className = "muted";
    scope.textContent = `${who} · ${b.window.kind}`;
    head.append(name, scope);
    const line = document.createElement("div");
    line.className = "muted";
    line.textContent = `${usd(b.spent_usd)} of ${usd(b.limit_usd)} · `;
    const when = document.createElement("span");
    if (b.spent_usd >= b.limit_usd) {
      when.className = "over";
      when.textContent = "exhausted";
      div.dataset.refusing = "true";
    } else if (b.refused > 0) {
      when.className = "over";
      when.textContent = `refusing calls: ${count(b.refused)} refused this window, ${usd(b.limit_usd - b.spent_usd)} left is less than they need`;
      div.dataset.refusing = "true";
    } else {
      when.textContent = b.projected_exhaustion
        ? `runs out ${new Date(b.projected_exhaustion * 1000).toLocaleString()}`
        : "not projected to run out this window";
    }
    line.append(when);
    div.append(head, line);
    const W = Math.max(300, box.clientWidth || 600), H = 110, L = 4, T = 6, B = 6;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H }, div);
    const max = Math.max(b.limit_usd, b.spent_usd) * 1.05 || 1;
    const x = (t) => L + ((t - b.window.start) / Math.max(1, b.window.end - b.window.start)) * (W - 2 * L);
    const y = (v) => H - B - (v / max) * (H - T - B);
    el("line", { x1: L, x2: W - L, y1: y(b.limit_usd), y2: y(b.limit_usd), stroke: "#b91c1c", "stroke-dasharray": "4 3" }, svg);
    const remaining = (burn) => burn.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    if (b.burn.length) el("polyline", { points: remaining(b.burn), fill: "none", stroke: "#2563eb", "stroke-width": 2 }, svg);
    if (b.projected_exhaustion && b.spent_usd < b.limit_usd) {
      const now = data.generated_at;
      el("line", { x1: x(now), y1: y(b.spent_usd), x2: x(b.projected_exhaustion), y2: y(b.limit_usd), stroke: "#2563eb", "stroke-dasharray": "2 3" }, svg);
    }
    return div;
  }));
}

async function load() {
  const s = state();
  $("range").value = s.range;
  $("stack").value = s.stack;
  document.body.dataset.state = "loading";
  const headers = {};
  const key = sessionStorage.getItem("tollgate.key");
  if (key) headers.authorization = "Bearer " + key;
  let response;
  try {
    response = await fetch(`/dashboard/api/summary?range=${encodeURIComponent(s.range)}&stack=${encodeURIComponent(s.stack)}`, { headers });
  } catch (err) {
    return fail(`The gateway did not answer: ${err}`);
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 || response.status === 403) {
    $("content").hidden = true;
    $("login").hidden = false;
    $("login-reason").textContent = (body.error && body.error.message) || "This dashboard needs a key.";
    document.body.dataset.state = "login";
    return;
  }
  if (!response.ok) return fail((body.error && body.error.message) || `HTTP ${response.status}`);
  $("login").hidden = true;
  $("error").hidden = true;
  $("content").hidden = false;
  last = body;
  render(body);
  $("updated").textContent = `updated ${new Date(body.generated_at * 1000).toLocaleTimeString()} · refreshes every ${body.refresh_seconds} s`;
  document.body.dataset.range = body.range.name;
  document.body.dataset.state = "ready";
  clearTimeout(timer);
  timer = setTimeout(load, body.refresh_seconds * 1000);
}

function render(body) {
  renderCards(body);
  renderSpend(body);
  renderSavings(body);
  renderKeys(body);
  renderRules(body);
  renderBudgets(body);
}

let resizing = null;
window.addEventListener("resize", () => {
  clearTimeout(resizing);
  resizing = setTimeout(() => { if (last) render(last); }, 150);
});

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  document.body.dataset.state = "error";
  clearTimeout(timer);
  timer = setTimeout(load, 30000);
}

$("range").addEventListener("change", () => setState({ ...state(), range: $("range").value }));
$("stack").addEventListener("change", () => setState({ ...state(), stack: $("stack").value }));
$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("tollgate.key", $("key").value.trim());
  load();
});
window.addEventListener("hashchange", load);
load();
