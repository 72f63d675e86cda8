// Tally's dashboard: one page, no build step, only the public API behind it
// (POST /v2/query and the funnel reports on stats-api, the site's live stream on this gateway).
// State lives in the URL: ?period=7d or ?from=YYYY-MM-DD&to=YYYY-MM-DD, one f=dimension|value
// per filter, funnel= the funnel shown, chart=pageviews for page views over time, token= when
// the site's stats are private.
"use strict";

const PANELS = [
  { id: "sources", title: "Top sources", dimension: "visit:source" },
  { id: "pages", title: "Top pages", dimension: "event:page", metric: "pageviews", fixed: true },
  // Visits starting and ending on a page (Plausible's unique entrances and exits): counted
  // by the rollups, where visitors by page would read every visit of the range.
  { id: "entry_pages", title: "Entry pages", dimension: "visit:entry_page", metric: "visits", unit: "unique entrances" },
  { id: "exit_pages", title: "Exit pages", dimension: "visit:exit_page", metric: "visits", unit: "unique exits" },
  { id: "countries", title: "Countries", dimension: "visit:country" },
  { id: "devices", title: "Devices", dimension: "visit:device" },
  { id: "browsers", title: "Browsers", dimension: "visit:browser" },
  { id: "os", title: "Operating systems", dimension: "visit:os" },
];
const TOTALS = ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"];
// A goal filter counts the visits that converted: these are the totals that mean something then.
const GOAL_TOTALS = ["visitors", "visits", "conversion_rate"];
const GOALS = { id: "goals", dimension: "event:goal", title: "Goal" };
const ROWS = 9;
const DIMENSION_NAMES = Object.fromEntries([...PANELS, GOALS].map((p) => [p.dimension, p.title.replace(/^Top /, "")]));

const site = decodeURIComponent(location.pathname.split("/")[2] || "");
const params = new URLSearchParams(location.search);
const token = params.get("token");
let statsUrl = "";
let generation = 0; // answers of an older state are dropped

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  node.append(...children);
  return node;
};

function range() {
  const from = params.get("from"), to = params.get("to");
  return from && to ? [from, to] : params.get("period") || "7d";
}

function filters() {
  return params.getAll("f").filter((f) => f.includes("|")).map((f) => {
    const at = f.indexOf("|");
    return ["is", f.slice(0, at), [f.slice(at + 1)]];
  });
}

function setState(change) {
  change(params);
  history.replaceState(null, "", `${location.pathname}?${params}`);
  load();
}

async function ask(path, init = {}) {
  const headers = { ...init.headers };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${statsUrl}${path}`, { ...init, headers });
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer.error || `stats answered ${res.status}`);
  return answer;
}

const query = (body) => ask(`/v2/query?site_id=${encodeURIComponent(site)}`, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ site_id: site, ...body }),
});
const sitePath = `/v1/sites/${encodeURIComponent(site)}`;

const day = (s) => new Date(`${s}T00:00:00Z`);
const iso = (d) => d.toISOString().slice(0, 10);
const addDays = (s, n) => iso(new Date(day(s).getTime() + n * 86400000));

/// The period just before [first, last], as long.
function previous([first, last]) {
  const days = Math.round((day(last) - day(first)) / 86400000) + 1;
  return [addDays(first, -days), addDays(first, -1)];
}

function format(metric, v) {
  if (v === undefined || v === null) return "–";
  if (metric === "bounce_rate" || metric === "conversion_rate") return `${v}%`;
  if (metric === "visit_duration") return v >= 60 ? `${Math.floor(v / 60)}m ${v % 60}s` : `${v}s`;
  if (metric === "views_per_visit") return String(v);
  return v >= 10000 ? `${(v / 1000).toFixed(1)}k` : String(v);
}

function showError(e) {
  const p = $("#error");
  p.hidden = !e;
  p.textContent = e ? e.message : "";
}

function renderFilters() {
  const nav = $("#filters");
  nav.replaceChildren(...filters().map(([, dimension, [value]]) => {
    const b = el("button", { type: "button", "data-filter": dimension, title: "Remove this filter" },
      `${DIMENSION_NAMES[dimension] || dimension} is ${value} ✕`);
    b.onclick = () => setState((p) => {
      const keep = p.getAll("f").filter((f) => f !== `${dimension}|${value}`);
      p.delete("f");
      keep.forEach((f) => p.append("f", f));
    });
    return b;
  }));
}

function renderTotals(metrics, now, before) {
  $("#totals").classList.toggle("goal", metrics === GOAL_TOTALS);
  document.querySelectorAll("[data-stat]").forEach((box) => { box.hidden = !metrics.includes(box.dataset.stat); });
  metrics.forEach((metric, i) => {
    const box = $(`[data-stat="${metric}"]`);
    const v = now[i], b = before[i];
    $("b", box).textContent = format(metric, v);
    box.dataset.value = v;
    const em = $("em", box);
    if (b) {
      const change = Math.round(((v - b) / b) * 100);
      em.textContent = `${change > 0 ? "↑" : change < 0 ? "↓" : ""}${Math.abs(change)}%`;
      em.className = (metric === "bounce_rate" ? -change : change) >= 0 ? "up" : "down";
    } else {
      em.textContent = "";
    }
  });
}

// What the chart draws: visitors, or page views when their total is chosen (a goal filter
// counts converted visitors only).
const CHARTS = { visitors: "Visitors", pageviews: "Page views" };

function renderChart(metric, labels, now, before) {
  const svg = $("#chart svg");
  const max = Math.max(1, ...now, ...before);
  const x = (i) => (labels.length > 1 ? (i / (labels.length - 1)) * 800 : 400);
  const y = (v) => 195 - (v / max) * 185;
  const line = (values, cls) => {
    const points = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const node = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    node.setAttribute("points", points);
    node.setAttribute("class", cls);
    node.setAttribute("vector-effect", "non-scaling-stroke");
    return node;
  };
  svg.replaceChildren(line(before, "before"), line(now, "now"));
  $("#chart .axis").replaceChildren(el("span", {}, labels[0] || ""), el("span", {}, `peak ${Math.max(0, ...now)}`),
    el("span", {}, labels[labels.length - 1] || ""));
  svg.dataset.points = JSON.stringify(now);
  svg.dataset.metric = metric;
  svg.setAttribute("aria-label", `${CHARTS[metric]} per bucket: ${now.join(", ")}`);
  $("#chart").setAttribute("aria-label", `${CHARTS[metric]} over time`);
  document.querySelectorAll("[data-stat]").forEach((box) => {
    box.classList.toggle("charted", box.dataset.stat === metric);
  });
}

function renderPanel(panel, answer) {
  const section = $(`[data-panel="${panel.id}"]`);
  const list = $("ol", section);
  const rows = answer.results;
  const max = Math.max(1, ...rows.map((r) => r.metrics[0]));
  list.replaceChildren(...rows.map((r) => {
    const [value] = r.dimensions;
    const n = r.metrics[0];
    const number = el("b", {}, format(panel.metric || "visitors", n));
    if (r.metrics.length > 1) number.append(" ", el("small", {}, format("conversion_rate", r.metrics[1])));
    const item = el("li", { "data-value": value, "data-number": n, style: `--share:${(n / max) * 100}%` },
      el("span", {}, value), number);
    if (!panel.fixed) {
      item.tabIndex = 0;
      item.onclick = item.onkeydown = (e) => {
        if (e.type === "keydown" && e.key !== "Enter") return;
        // One value per dimension: a second click on the same panel replaces the first.
        setState((p) => {
          const keep = p.getAll("f").filter((f) => !f.startsWith(`${panel.dimension}|`));
          p.delete("f");
          keep.forEach((f) => p.append("f", f));
          p.append("f", `${panel.dimension}|${value}`);
        });
      };
    }
    return item;
  }));
  if (!rows.length) list.replaceChildren(el("li", { class: "empty" }, answer.note || "No data"));
  section.dataset.loaded = generation;
}

/// The funnel panel: the chosen funnel (the first by default) over the resolved range.
async function loadFunnel(resolved, mine) {
  const section = $('[data-panel="funnel"]');
  const { funnels = [] } = await ask(`${sitePath}/funnels`);
  if (mine !== generation) return;
  section.hidden = !funnels.length;
  if (!funnels.length) return;
  const chosen = funnels.find((f) => f.funnel_id === params.get("funnel")) || funnels[0];
  const select = $("select", section);
  select.replaceChildren(...funnels.map((f) => el("option", { value: f.funnel_id }, f.name)));
  select.value = chosen.funnel_id;
  select.onchange = () => setState((p) => p.set("funnel", select.value));
  const report = await ask(`${sitePath}/funnels/${encodeURIComponent(chosen.funnel_id)}?date_range=${resolved.join(",")}`);
  if (mine !== generation) return;
  const entering = Math.max(1, report.entering_visitors);
  $("ol", section).replaceChildren(...report.steps.map((s, i) => el("li",
    { "data-value": s.label, "data-number": s.visitors, style: `--share:${(s.visitors / entering) * 100}%` },
    el("span", {}, `${i + 1}. ${s.label}`),
    el("b", {}, format("visitors", s.visitors), " ", el("small", {}, i ? `${s.conversion_rate}% · −${s.dropoff}` : `of ${report.all_visitors}`)))));
  section.dataset.funnel = chosen.funnel_id;
  section.dataset.converted = report.conversion_rate;
  $(".note", section).textContent = `${report.conversion_rate}% of all visitors completed it` +
    (filters().length ? " (over all visits: filters do not apply to funnels)" : "");
}

async function load() {
  const mine = ++generation;
  renderFilters();
  const f = filters();
  const r = range();
  const form = $("#range");
  form.period.value = Array.isArray(r) ? "custom" : r;
  form.from.hidden = form.to.hidden = !Array.isArray(r);
  if (Array.isArray(r)) [form.from.value, form.to.value] = r;
  const goalFiltered = f.some(([, d]) => d === GOALS.dimension);
  const totalMetrics = goalFiltered ? GOAL_TOTALS : TOTALS;
  try {
    const totals = await query({ metrics: totalMetrics, date_range: r, filters: f });
    if (mine !== generation) return;
    const resolved = totals.query.date_range.map((t) => t.slice(0, 10));
    const before = previous(resolved);
    const grain = resolved[0] === resolved[1] ? "time:hour" : "time:day";
    const charted = !goalFiltered && params.get("chart") === "pageviews" ? "pageviews" : "visitors";
    const series = (dr) => query({ metrics: [charted], date_range: dr, filters: f, dimensions: [grain], include: { time_labels: true } });
    // In parallel with the panels' queries; its failure is reported with theirs. Goals and
    // funnels read raw events (seconds on a large site): the rest is drawn without them.
    const funnel = loadFunnel(resolved, mine).then(() => null, (e) => e);
    const goalsAnswer = query({ metrics: ["visitors", "conversion_rate"], date_range: resolved, filters: f, dimensions: [GOALS.dimension] });
    goalsAnswer.catch(() => {});
    const [prevTotals, nowSeries, prevSeries, ...panels] = await Promise.all([
      query({ metrics: totalMetrics, date_range: before, filters: f }),
      series(resolved),
      series(before),
      ...PANELS.map((p) => (goalFiltered && p.fixed
        // Page views are not counted per converted visit (yet): say so rather than mislead.
        ? Promise.resolve({ results: [], note: "Not available with a goal filter" })
        : query({
          metrics: [p.metric || "visitors"], date_range: resolved, filters: f,
          dimensions: [p.dimension], pagination: { limit: ROWS },
        }))),
    ]);
    if (mine !== generation) return;
    showError(null);
    renderTotals(totalMetrics, totals.results[0].metrics, prevTotals.results[0].metrics);
    const values = (answer) => {
      const by = new Map(answer.results.map((row) => [row.dimensions[0], row.metrics[0]]));
      return answer.meta.time_labels.map((t) => by.get(t) || 0);
    };
    renderChart(charted, nowSeries.meta.time_labels, values(nowSeries), values(prevSeries));
    PANELS.forEach((p, i) => renderPanel(p, panels[i]));
    // First meaningful paint: the totals, the chart and the visit panels.
    document.body.dataset.painted = mine;
    const goals = await goalsAnswer;
    if (mine !== generation) return;
    $('[data-panel="goals"]').hidden = !goals.results.length && !goalFiltered;
    renderPanel(GOALS, goals);
    const funnelError = await funnel;
    if (funnelError) throw funnelError;
    if (mine !== generation) return;
    document.body.dataset.loaded = mine;
  } catch (e) {
    if (mine === generation) showError(e);
  }
}

function live() {
  const q = token ? `?token=${encodeURIComponent(token)}` : "";
  const source = new EventSource(`/v1/sites/${encodeURIComponent(site)}/stream${q}`);
  source.addEventListener("activity", (e) => {
    const data = JSON.parse(e.data);
    const b = $("[data-live]");
    b.textContent = data.visitors_last_5m ?? 0;
    $("#live").classList.toggle("on", (data.visitors_last_5m ?? 0) > 0);
  });
}

async function start() {
  $("#site").textContent = site;
  document.title = `${site} · Tally`;
  $("#panels").replaceChildren(...PANELS.map((p) =>
    el("section", { "data-panel": p.id },
      el("h2", {}, p.title, ...(p.unit ? [" ", el("small", {}, p.unit)] : [])), el("ol"))));
  Object.keys(CHARTS).forEach((metric) => {
    const box = $(`[data-stat="${metric}"]`);
    box.tabIndex = 0;
    box.title = `Show ${CHARTS[metric].toLowerCase()} over time`;
    box.onclick = box.onkeydown = (e) => {
      if (e.type === "keydown" && e.key !== "Enter") return;
      setState((p) => (metric === "visitors" ? p.delete("chart") : p.set("chart", metric)));
    };
  });
  const form = $("#range");
  form.period.onchange = () => {
    if (form.period.value === "custom") {
      form.from.hidden = form.to.hidden = false;
      return;
    }
    setState((p) => { p.delete("from"); p.delete("to"); p.set("period", form.period.value); });
  };
  form.from.onchange = form.to.onchange = () => {
    if (form.from.value && form.to.value) {
      setState((p) => { p.delete("period"); p.set("from", form.from.value); p.set("to", form.to.value); });
    }
  };
  const config = await fetch("/config.json").then((r) => r.json()).catch(() => ({}));
  statsUrl = (config.stats_url || "").replace(/\/$/, "");
  load();
  live();
}

start();
