// Tally demo page: open a poll, vote, watch the bars move; watch a site's live activity.
// Plain JavaScript and one EventSource for everything watched (the multiplexed stream,
// /v1/stream?topics=...); no build step.
"use strict";

const $ = (id) => document.getElementById(id);
let config = { ingest_url: "", stats_url: "" };
let feed = { items: [], unread: 0 }; // the demo user's notifications (the bell)
let live = null; // the one EventSource
let poll = null; // { id, options: [{id, label}], tally, total, seq, settings, hidden }
let siteId = null;
let resultsToken = null; // opens an after_vote poll's counts once this browser voted

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

const multiChoice = () => (poll.settings?.max_choices || 1) > 1;

function renderPoll() {
  $("poll").hidden = false;
  $("question-text").textContent = poll.question || `Poll ${poll.id}`;
  $("total").textContent = poll.total;
  const bars = $("bars");
  if (bars.childElementCount !== poll.options.length || bars.dataset.multi !== String(multiChoice())) {
    bars.dataset.multi = String(multiChoice());
    bars.replaceChildren(...poll.options.map((o) => {
      const li = document.createElement("li");
      li.className = "bar";
      li.dataset.option = o.id;
      li.innerHTML = multiChoice()
        ? '<label class="label"><input type="checkbox"> <span></span></label><span class="count"></span><div class="track"><div class="fill"></div></div>'
        : '<span class="label"></span><span class="count"></span><div class="track"><div class="fill"></div></div><button type="button">Vote</button>';
      (li.querySelector(".label span") || li.querySelector(".label")).textContent = o.label;
      li.querySelector("button")?.addEventListener("click", () => vote([o.id]));
      return li;
    }));
  }
  for (const li of bars.children) {
    const n = Number(poll.tally[li.dataset.option] || 0);
    li.querySelector(".count").textContent = poll.hidden ? "–" : n;
    li.querySelector(".fill").style.width = !poll.hidden && poll.total ? `${(100 * n) / poll.total}%` : "0";
    const control = li.querySelector("button") || li.querySelector("input");
    control.disabled = Boolean(poll.closed);
  }
  $("multi-vote").hidden = !multiChoice();
  $("multi-vote").disabled = Boolean(poll.closed);
  $("hidden-note").hidden = !poll.hidden;
}

function applyState(s, replace) {
  if (!replace && poll.seq != null && s.seq <= poll.seq) return;
  poll.seq = s.seq;
  poll.tally = s.tally;
  poll.total = s.total;
  poll.closed = s.closed;
  poll.hidden = Boolean(s.hidden);
  if (s.question) poll.question = s.question;
  if (s.options) poll.options = s.options;
  if (s.settings) poll.settings = s.settings;
  else if (!poll.options.length) poll.options = Object.keys(s.tally).sort().map((id) => ({ id, label: id }));
  renderPoll();
}

// One connection for the poll and the site; reconnecting with a new topic list is how a
// topic is added (the browser resumes the ones it had with Last-Event-ID on its own).
function connect() {
  if (live) live.close();
  const topics = [];
  if (poll) topics.push(`poll:${encodeURIComponent(poll.id).replace(/,/g, "%2C")}`);
  if (siteId) topics.push(`site:${encodeURIComponent(siteId).replace(/,/g, "%2C")}`);
  if (config.feed_user) topics.push(`feed:${encodeURIComponent(config.feed_user).replace(/,/g, "%2C")}`);
  if (!topics.length) return;
  const tokenList = [resultsToken, config.feed_token].filter(Boolean).map(encodeURIComponent);
  const tokens = tokenList.length ? `&tokens=${tokenList.join(",")}` : "";
  live = new EventSource(`/v1/stream?topics=${topics.join(",")}${tokens}`);
  const route = (replace) => (e) => {
    const { topic, data } = JSON.parse(e.data);
    if (topic.startsWith("poll:") && poll) applyState(data, replace);
    else if (topic.startsWith("site:")) showSite(data);
    else if (topic.startsWith("feed:") && replace) showFeed(data);
  };
  live.addEventListener("snapshot", route(true));
  live.addEventListener("notification", (e) => {
    const { data } = JSON.parse(e.data);
    feed.items.unshift({ seq: data.seq, notification: data.notification, read: false });
    feed.unread = data.unread;
    renderFeed();
  });
  live.addEventListener("unread", (e) => {
    feed.unread = JSON.parse(e.data).data.unread;
    if (feed.unread === 0) feed.items.forEach((i) => { i.read = true; });
    renderFeed();
  });
  live.addEventListener("tally", route(false));
  live.addEventListener("activity", route(false));
  live.addEventListener("presence", (e) => {
    const { topic, data } = JSON.parse(e.data);
    $(topic.startsWith("poll:") ? "watchers" : "site-watchers").textContent = data.watchers;
  });
  live.onopen = () => {
    if (poll) setStatus($("status"), "live", "live");
    if (siteId) setStatus($("site-status"), "live", "live");
  };
  live.onerror = () => {
    if (poll) setStatus($("status"), "reconnecting…", "down");
    if (siteId) setStatus($("site-status"), "reconnecting…", "down");
  };
}

function openPoll(id) {
  poll = { id, options: [], tally: {}, total: 0, seq: null };
  resultsToken = null;
  history.replaceState(null, "", `?poll=${encodeURIComponent(id)}`);
  $("message").textContent = "";
  connect();
}

async function vote(optionIds) {
  const ids = [...optionIds].sort();
  const res = await fetch(`${baseUrl(config.ingest_url)}/v1/polls/${encodeURIComponent(poll.id)}/votes`, {
    method: "POST",
    // A double click is one vote; choosing another option is a new attempt (and a 409).
    headers: { "content-type": "application/json", "idempotency-key": `${voterId}:${poll.id}:${ids.join("+")}` },
    body: JSON.stringify(ids.length === 1 ? { option_id: ids[0], user_id: voterId } : { option_ids: ids, user_id: voterId }),
  });
  const body = await res.json().catch(() => ({}));
  const messages = { 202: "Thanks, your vote is in.", 409: "You have already voted.", 410: "This poll is closed.", 429: "Slow down a little." };
  $("message").textContent = messages[res.status] || `Could not vote: ${(body.details || [body.error || res.status]).join(", ")}`;
  if (body.results_token && body.results_token !== resultsToken) {
    resultsToken = body.results_token;
    connect();
  }
}

async function createPoll(event) {
  event.preventDefault();
  const options = $("options").value.split("\n").map((s) => s.trim()).filter(Boolean);
  const res = await fetch(`${baseUrl(config.ingest_url)}/v1/polls`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${$("admin-token").value}` },
    body: JSON.stringify({
      question: $("question").value,
      options,
      max_choices: Number($("max-choices").value) || 1,
      results: $("results").value,
      allow_change: $("allow-change").checked,
    }),
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

function showSite(a) {
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
}

// The bell: the newest items with the unread ones marked, and the unread count.
function showFeed(snapshot) {
  feed = { items: snapshot.items, unread: snapshot.unread };
  renderFeed();
}

function renderFeed() {
  $("bell").hidden = false;
  $("unread").hidden = feed.unread === 0;
  $("unread").textContent = feed.unread > 99 ? "99+" : String(feed.unread);
  $("feed-empty").hidden = feed.items.length > 0;
  $("feed-items").replaceChildren(...feed.items.slice(0, 50).map((item) => {
    const li = document.createElement("li");
    li.className = item.read ? "" : "unread";
    li.innerHTML = "<strong></strong><span></span>";
    li.children[0].textContent = item.notification.title || "(expired)";
    li.children[1].textContent = item.notification.body || "";
    return li;
  }));
}

async function readAll() {
  const url = `${baseUrl(config.ingest_url)}/v1/users/${encodeURIComponent(config.feed_user)}/feed/read?token=${encodeURIComponent(config.feed_token)}`;
  await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ all: true }) });
}

function watchSite(id) {
  $("site").hidden = false;
  siteId = id;
  connect();
}

async function main() {
  config = await fetch("/config.json").then((r) => r.json()).catch(() => config);
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("poll-id").value.trim();
    if (id) openPoll(id);
  });
  $("create-form").addEventListener("submit", createPoll);
  $("bell-button").addEventListener("click", () => {
    const open = $("feed").hidden;
    $("feed").hidden = !open;
    $("bell-button").setAttribute("aria-expanded", String(open));
  });
  $("read-all").addEventListener("click", readAll);
  $("multi-vote").addEventListener("click", () => {
    const chosen = [...$("bars").querySelectorAll("li")].filter((li) => li.querySelector("input")?.checked);
    vote(chosen.map((li) => li.dataset.option));
  });
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
  if (config.feed_user) connect();
}

main();
