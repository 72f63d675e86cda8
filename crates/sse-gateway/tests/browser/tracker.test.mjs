// tally.js in a real browser, end to end: a test site (served here) carries the snippet;
// Chromium loads it with a Google referrer, navigates by pushState, sends a custom event,
// downloads a file and follows an outbound link; then the events must be in PostgreSQL,
// each once, with what the server derives (path, UTM, source, browser, visitor id, ...).
// Environment: GATEWAY_URL (serves /tally.js), INGEST_URL (POST /v1/events), DATABASE_URL
// (this run's database, read with psql), ARTIFACTS (screenshot folder), CHROMIUM (optional).
import { chromium } from "playwright-core";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import { gzipSync } from "node:zlib";

const { GATEWAY_URL, INGEST_URL, DATABASE_URL } = process.env;
const ARTIFACTS = process.env.ARTIFACTS || "test-artifacts";
const PAGES = new URL("./tracker-page/", import.meta.url);
const SOURCE = new URL("../../static/tally.js", import.meta.url);
const UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const REFERER = "https://www.google.com/search?q=tally";
const SITE = `tracker-test-${randomBytes(6).toString("hex")}`; // hex only: safe in SQL
const API = `${INGEST_URL}/v1/events`;
const GZIP_LIMIT = 2048;
const COLUMNS = ["event_id", "event_type", "path", "hostname", "referrer", "referrer_source", "utm_source", "utm_medium",
  "utm_campaign", "utm_term", "utm_content", "browser", "os", "device", "country", "user_id", "props"];

class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };

async function until(what, check, timeoutMs = 30000, everyMs = 200) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function psql(sql) {
  return new Promise((resolve, reject) => {
    execFile("psql", ["-X", "-v", "ON_ERROR_STOP=1", "-tAc", sql, DATABASE_URL], { timeout: 10000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`psql: ${(stderr || err.message).trim()}`)) : resolve(stdout.trim()));
  });
}

function serve(handler) {
  return new Promise((resolve, reject) => {
    const server = http.createServer(handler);
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}
const origin = (server) => `http://127.0.0.1:${server.address().port}`;
const html = (res, body) => res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }).end(body);
const attr = (v) => v.replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;");

const servers = [];
let browser;
try {
  for (const [k, v] of Object.entries({ GATEWAY_URL, INGEST_URL, DATABASE_URL })) if (!v) fail(`${k} is not set`);
  mkdirSync(ARTIFACTS, { recursive: true });

  // The tracker as served: the committed file, a JavaScript type, and small.
  const res = await fetch(`${GATEWAY_URL}/tally.js`).catch((e) => fail(`GET ${GATEWAY_URL}/tally.js: ${e.cause?.message || e.message}`));
  if (res.status !== 200) fail(`GET ${GATEWAY_URL}/tally.js answered ${res.status}`);
  const type = res.headers.get("content-type") || "";
  if (!/javascript/.test(type)) fail(`GET /tally.js has content-type "${type}", expected a JavaScript type`);
  const script = await res.text();
  if (script !== readFileSync(SOURCE, "utf8")) fail("the served /tally.js differs from crates/sse-gateway/static/tally.js (stale build?)");
  const gzipped = gzipSync(Buffer.from(script), { level: 9 }).length;
  console.log(`tally.js: ${Buffer.byteLength(script)} bytes, ${gzipped} bytes gzipped (limit ${GZIP_LIMIT})`);
  if (gzipped >= GZIP_LIMIT) fail(`tally.js is ${gzipped} bytes gzipped, must be under ${GZIP_LIMIT}`);

  // Two origins on loopback: the site, and where its outbound link goes.
  const outbound = await serve((req, res) => html(res, readFileSync(new URL("outbound.html", PAGES), "utf8")));
  servers.push(outbound);
  const OUTBOUND_URL = `${origin(outbound)}/landing?from=tally`;
  const site = await serve((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/docs/file.pdf") {
      // An attachment: the browser downloads it and the page stays where it is.
      return res.writeHead(200, { "content-type": "application/pdf", "content-disposition": 'attachment; filename="file.pdf"' })
        .end("%PDF-1.4\n%%EOF\n");
    }
    if (path === "/favicon.ico") return res.writeHead(404).end();
    const vars = { TALLY_SRC: `${GATEWAY_URL}/tally.js`, SITE, API, OUTBOUND: OUTBOUND_URL };
    html(res, readFileSync(new URL("index.html", PAGES), "utf8").replace(/\{\{(\w+)\}\}/g, (_, k) => attr(vars[k])));
  });
  servers.push(site);
  const SITE_URL = `${origin(site)}/`;

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-blink-features=AutomationControlled"],
  });
  // Headless Chromium's own user agent says HeadlessChrome, which the server drops as a bot.
  const context = await browser.newContext({ userAgent: UA, viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const sent = []; // the tracker's requests, as the browser issued them
  context.on("request", (r) => {
    if (r.url() !== API || r.method() !== "POST") return;
    const body = r.postData();
    let event;
    try { event = JSON.parse(body); } catch { event = { event_type: `(not JSON: ${body})` }; }
    sent.push({ event, type: r.headers()["content-type"] });
  });
  // What the endpoint answered, where the browser still reports it (not for the keepalive
  // request of the outbound click: its page is gone, and Playwright calls it aborted).
  const answers = [];
  context.on("response", async (r) => {
    if (r.url() !== API || r.request().method() !== "POST") return;
    const cors = r.headers()["access-control-allow-origin"];
    if (r.status() !== 202 || !cors) answers.push(`${r.status()} (Access-Control-Allow-Origin: ${cors}) ${await r.text().catch(() => "")}`);
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  const sentCount = (n, what) => until(what, () => sent.length >= n, 10000, 50);

  await page.goto(SITE_URL, { referer: REFERER });
  await sentCount(1, "the page view of /");
  await page.click("#go-pricing");
  await sentCount(2, "the page view of /pricing");
  await page.click("#go-about");
  await sentCount(3, "the page view of /about");
  await page.click("#signup");
  await sentCount(4, "the signup event");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  await sentCount(5, "the file_download event");
  if (download.suggestedFilename() !== "file.pdf") fail(`downloaded ${download.suggestedFilename()}, expected file.pdf`);

  // Nothing stored on the visitor's side.
  const stored = await page.evaluate(() => ({ referrer: document.referrer, cookie: document.cookie, local: localStorage.length, session: sessionStorage.length }));
  if (stored.cookie !== "" || stored.local !== 0 || stored.session !== 0) fail(`the tracker stored something in the browser: ${JSON.stringify(stored)}`);
  await page.screenshot({ path: `${ARTIFACTS}/tracker.png`, fullPage: true });

  await Promise.all([page.waitForURL(OUTBOUND_URL), page.click("#outbound")]);
  await sentCount(6, "the outbound_link event");
  const cookies = await context.cookies();
  if (cookies.length) fail(`the browser holds cookies: ${JSON.stringify(cookies)}`);
  await page.close(); // like closing the tab: the keepalive request goes on
  if (errors.length) fail(`errors on the page: ${errors.map((e) => e.message).join("; ")}`);

  // What the browser sent: one request per event, text/plain, no identifiers.
  const problems = [];
  const expect = (ok, msg) => { if (!ok) problems.push(msg); };
  const sentIds = sent.map((s) => s.event.event_id);
  expect(answers.length === 0, `the events endpoint did not take every event with 202 and Access-Control-Allow-Origin: ${answers.join("; ")}`);
  expect(sent.length === 6, `the browser sent ${sent.length} events, expected 6 (a fetch that failed is sent again by ` +
    `sendBeacon): ${sent.map((s) => s.event.event_type).join(", ")}`);
  expect(new Set(sentIds).size === sent.length, `event_ids sent are not unique: ${sentIds}`);
  for (const { event, type } of sent) {
    const what = `sent ${event.event_type} ${event.url}`;
    expect(/^text\/plain/.test(type || ""), `${what}: content-type ${type}, expected text/plain`);
    expect(event.site_id === SITE, `${what}: site_id ${event.site_id}`);
    expect(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(event.event_id), `${what}: event_id ${event.event_id} is not a UUID v4`);
    expect(!Number.isNaN(Date.parse(event.timestamp)) && event.timestamp.endsWith("Z"), `${what}: timestamp ${event.timestamp}`);
    expect(event.screen_width === 1280, `${what}: screen_width ${event.screen_width}`);
    expect(!("automated" in event), `${what}: marked automated although navigator.webdriver is false`);
    expect(!("path" in event) && !("user_id" in event), `${what}: sends path or user_id`);
  }

  // What the server stored.
  const sql = `SELECT coalesce(json_agg(t ORDER BY t.ts, t.event_id), '[]') FROM (SELECT ts, ${COLUMNS.join(", ")} FROM events WHERE site_id = '${SITE}') t`;
  const rows = await until("the 6 events in PostgreSQL", async () => {
    let out;
    try { out = await psql(sql); } catch (e) {
      if (/does not exist/.test(e.message)) fail(`${e.message} (the events table lacks a column this test reads)`);
      console.log(`retrying: ${e.message}`); // e.g. the database still starting
      return null;
    }
    const rows = JSON.parse(out || "[]");
    return rows.length >= 6 && rows;
  });

  console.log(`stored for ${SITE}:`);
  for (const r of rows) {
    console.log(`  ${r.event_type.padEnd(13)} ${String(r.path).padEnd(9)} source=${r.referrer_source} utm=${[r.utm_source, r.utm_medium, r.utm_campaign].join("/")} ` +
      `${r.browser}/${r.os}/${r.device} visitor=${r.user_id} props=${JSON.stringify(r.props)}`);
  }
  expect(rows.length === 6, `${rows.length} rows stored, expected 6`);
  expect(new Set(rows.map((r) => r.event_id)).size === rows.length, "an event_id is stored twice");
  expect(JSON.stringify(rows.map((r) => r.event_id).sort()) === JSON.stringify([...sentIds].sort()),
    `the stored event_ids are not the ones minted in the browser: ${rows.map((r) => r.event_id)} vs ${sentIds}`);
  const one = (type, path) => {
    const found = rows.filter((r) => r.event_type === type && (path === undefined || r.path === path));
    expect(found.length === 1, `expected one ${type}${path ? ` for ${path}` : ""}, found ${found.length}`);
    return found[0] || {};
  };
  const home = one("page_view", "/");
  const pricing = one("page_view", "/pricing");
  one("page_view", "/about");
  const signup = one("signup", "/about");
  const file = one("file_download", "/about");
  const out = one("outbound_link", "/about");
  expect(home.referrer_source === "Google", `page_view of / has referrer_source ${home.referrer_source}, expected Google (referrer ${home.referrer})`);
  expect(pricing.utm_source === "newsletter" && pricing.utm_medium === "email" && pricing.utm_campaign === "launch",
    `page_view of /pricing has utm ${pricing.utm_source}/${pricing.utm_medium}/${pricing.utm_campaign}, expected newsletter/email/launch`);
  expect(JSON.stringify(signup.props) === JSON.stringify({ plan: "pro" }), `signup props ${JSON.stringify(signup.props)}`);
  expect(file.props?.url === `${SITE_URL}docs/file.pdf`, `file_download props ${JSON.stringify(file.props)}`);
  expect(out.props?.url === OUTBOUND_URL, `outbound_link props ${JSON.stringify(out.props)}, expected url ${OUTBOUND_URL}`);
  const visitor = rows[0]?.user_id;
  expect(typeof visitor === "string" && visitor !== "", `user_id (the visitor id) is empty: ${visitor}`);
  for (const r of rows) {
    const what = `${r.event_type} ${r.path}`;
    expect(r.user_id === visitor, `${what}: user_id ${r.user_id}, expected the same visitor ${visitor} on every row`);
    expect(r.hostname === "127.0.0.1", `${what}: hostname ${r.hostname}`);
    expect(r.browser === "Chrome" && r.os === "Linux" && r.device === "desktop", `${what}: browser/os/device ${r.browser}/${r.os}/${r.device}, expected Chrome/Linux/desktop`);
  }
  if (problems.length) fail(`${problems.length} problem(s):\n  - ${problems.join("\n  - ")}`);
  console.log(`tracker test passed: 6 events stored once each for one visitor; screenshot in ${ARTIFACTS}/tracker.png`);
} catch (e) {
  console.error(`tracker test FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  for (const s of servers) { s.closeAllConnections(); s.close(); }
}
