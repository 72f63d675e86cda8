// Tally demo page: open a poll, vote, watch the bars move; watch a site's live activity.
// Plain JavaScript and EventSource; no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let config = { ingest_url: "", stats_url: "" };
let pollSource = null;
let siteSource = null;
let poll = null; // { id, options: [{id, label}], tally, total, seq }

// The voter's id: one per browser, so a reload is still the same voter.
const voterId = localStorage.getItem("tally-voter") || crypto.randomUUID();
localStorage.setItem("tally-voter", voterId);

function baseUrl(configured) {
  if (!configured) return "";
  if (configured.startsWith(":")) return `${location.protocol}//${location.hostname}${configured}`;
  return configured.replace(/\/$/, "");
}

function setStatus(el, text, cls) {
  el.textContent = text;
  el.className = `status ${cls}`;
}

function renderPoll() {
  $("poll").hidden = false;
  $("question-text").textContent = poll.question || `Poll ${poll.id}`;
  $("total").textContent = poll.total;
  const bars = $("bars");
  if (bars.childElementCount !== poll.options.length) {
    bars.replaceChildren(...poll.options.map((o) => {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.option = o.id;
      li.innerHTML = '<span class="label"></span><span class="count"></span><div class="track"><div class="fill"></div></div><button type="button">Vote</button>';
      li.querySelector(".label").textContent = o.label;
      li.querySelector("button").addEventListener("click", () => vote(o.id));
      return li;
    }));
  }
  for (const li of bars.children) {
    const n = Number(poll.tally[li.dataset.option] || 0);
    li.querySelector(".count").textContent = n;
    li.querySelector(".fill").style.width = poll.total ? `${(100 * n) / poll.total}%` : "0";
    li.querySelector("button").disabled = Boolean(poll.closed);
  }
}

function applyState(data, replace) {
  const s = JSON.parse(data);
  if (!replace && poll.seq != null && s.seq <= poll.seq) return;
  poll.seq = s.seq;
  poll.tally = s.tally;
  poll.total = s.total;
  poll.closed = s.closed;
  if (s.question) poll.question = s.question;
  if (s.options) poll.options = s.options;
  else if (!poll.options.length) poll.options = Object.keys(s.tally).sort().map((id) => ({ id, label: id }));
  renderPoll();
}

function openPoll(id) {
  if (pollSource) pollSource.close();
  poll = { id, options: [], tally: {}, total: 0, seq: null };
  history.replaceState(null, "", `?poll=${encodeURIComponent(id)}`);
  $("message").textContent = "";
  pollSource = new EventSource(`/v1/polls/${encodeURIComponent(id)}/stream`);
  pollSource.addEventListener("snapshot", (e) => applyState(e.data, true));
  pollSource.addEventListener("tally", (e) => applyState(e.data, false));
  pollSource.onopen = () => setStatus($("status"), "live", "live");
  pollSource.onerror = () => setStatus($("status"), "reconnecting…", "down");
}

async function vote(optionId) {
  const res = await fetch(`${baseUrl(config.ingest_url)}/v1/polls/${encodeURIComponent(poll.id)}/votes`, {
    method: "POST",
    // A double click is one vote; choosing another option is a new attempt (and a 409).
    headers: { "content-type": "application/json", "idempotency-key": `${voterId}:${poll.id}:${optionId}` },
    body: JSON.stringify({ option_id: optionId, user_id: voterId }),
  });
  const messages = { 202: "Thanks, your vote is in.", 409: "You have already voted.", 410: "This poll is closed.", 429: "Slow down a little." };
  $("message").textContent = messages[res.status] || `Could not vote (${res.status}).`;
}

async function createPoll(event) {
  event.preventDefault();
  const options = $("options").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const res = await fetch(`${baseUrl(config.ingest_url)}/v1/polls`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${$("admin-token").value}` },
    body: JSON.stringify({ question: $("question").value, options }),
  });
  const body = await res.json().catch(() => ({}));
  if (res.status !== 201) {
    $("message").textContent = `Could not create the poll: ${(body.details || [body.error || res.status]).join(", ")}`;
    $("poll").hidden = false;
    return;
  }
  $("poll-id").value = body.poll_id;
  $("create").open = false;
  openPoll(body.poll_id);
}

function watchSite(id) {
  if (siteSource) siteSource.close();
  $("site").hidden = false;
  siteSource = new EventSource(`/v1/sites/${encodeURIComponent(id)}/stream`);
  const show = (e) => {
    const a = JSON.parse(e.data);
    $("visitors").textContent = a.visitors_last_5m;
    $("rate").textContent = a.events_per_second.toFixed(1);
    $("events5m").textContent = a.events_last_5m;
    $("paths").replaceChildren(...a.top_paths.map((p) => {
      const li = document.createElement("li");
      li.innerHTML = "<span></span><span></span>";
      li.children[0].textContent = p.path;
      li.children[1].textContent = p.views;
      return li;
    }));
  };
  siteSource.addEventListener("snapshot", show);
  siteSource.addEventListener("activity", show);
  siteSource.onopen = () => setStatus($("site-status"), "live", "live");
  siteSource.onerror = () => setStatus($("site-status"), "reconnecting…", "down");
}

async function main() {
  config = await fetch("/config.json").then((r) => r.json()).catch(() => config);
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("poll-id").value.trim();
    if (id) openPoll(id);
  });
  $("create-form").addEventListener("submit", createPoll);
  $("site-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("site-id").value.trim();
    if (id) watchSite(id);
  });
  const params = new URLSearchParams(location.search);
  if (params.get("poll")) {
    $("poll-id").value = params.get("poll");
    openPoll(params.get("poll"));
  }
  if (params.get("site")) {
    $("site-id").value = params.get("site");
    watchSite(params.get("site"));
  }
}

main();
