// The demo page in a real browser: open a poll, see a vote cast by another client move the
// bar without a reload, vote from the page, and watch a site's live panel.
// Environment: GATEWAY_URL, INGEST_URL, ADMIN_TOKEN, ARTIFACTS (screenshot folder).
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const { GATEWAY_URL, INGEST_URL, ADMIN_TOKEN } = process.env;
const ARTIFACTS = process.env.ARTIFACTS || "test-artifacts";
mkdirSync(ARTIFACTS, { recursive: true });

async function post(path, body, headers = {}) {
  const res = await fetch(`${INGEST_URL}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function until(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const created = await post("/v1/polls", { question: "Tabs or spaces?", options: ["Tabs", "Spaces"] }, { authorization: `Bearer ${ADMIN_TOKEN}` });
assert.equal(created.status, 201, JSON.stringify(created.body));
const pollId = created.body.poll_id;
// The worker marks vote shards restored shortly after it starts; until then votes are 503.
await until("votes accepted", async () => (await post(`/v1/polls/${pollId}/votes`, { option_id: "o1", user_id: "warm-up" })).status === 202);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on("pageerror", (e) => { throw e; });
  const streams = [];
  page.on("request", (r) => { if (r.url().includes("/stream")) streams.push(new URL(r.url()).pathname); });
  await page.goto(`${GATEWAY_URL}/?poll=${pollId}`);
  const count = (label) => page.locator("#bars li", { hasText: label }).locator(".count").textContent();
  await page.waitForSelector("#status.live");
  await until("the snapshot", async () => (await count("Tabs")) === "1");
  assert.equal(await page.textContent("#question-text"), "Tabs or spaces?");
  assert.equal(await count("Spaces"), "0");

  // A vote from another client moves the bar live, without a reload.
  const navigations = [];
  page.on("framenavigated", (f) => navigations.push(f.url()));
  assert.equal((await post(`/v1/polls/${pollId}/votes`, { option_id: "o2", user_id: "second-client" })).status, 202);
  await until("the other client's vote on the page", async () => (await count("Spaces")) === "1");
  const width = await page.locator("#bars li", { hasText: "Spaces" }).locator(".fill").evaluate((e) => e.style.width);
  assert.equal(width, "50%");
  assert.deepEqual(navigations, [], "no reload");

  // Voting from the page itself.
  await page.locator("#bars li", { hasText: "Spaces" }).getByRole("button", { name: "Vote" }).click();
  await until("the page's own vote", async () => (await count("Spaces")) === "2");
  assert.match(await page.textContent("#message"), /your vote is in/);
  await page.locator("#bars li", { hasText: "Tabs" }).getByRole("button", { name: "Vote" }).click();
  await until("the duplicate refusal", async () => /already voted/.test(await page.textContent("#message")));
  assert.equal(await page.textContent("#total"), "3");
  await page.screenshot({ path: `${ARTIFACTS}/demo-desktop.png`, fullPage: true });

  // The live site panel opens and shows its first snapshot.
  await page.fill("#site-id", "demo-site");
  await page.click("#site-form button");
  await page.waitForSelector("#site-status.live");
  // The poll and the site share one multiplexed stream (a tab holds one connection).
  assert.ok(streams.length > 0 && streams.every((p) => p === "/v1/stream"), `streams opened: ${streams}`);
  await until("the page's watcher count", async () => Number(await page.textContent("#watchers")) >= 1);

  // The bell: a notification to the demo user appears live, and "Mark all read" clears it.
  await page.waitForSelector("#bell:not([hidden])");
  const sent = await until("the notification accepted", async () => {
    const r = await post("/v1/notifications", { recipients: ["demo-user"], title: "Deploy finished", body: "v2 is live", channels: ["in_app"] }, { authorization: `Bearer ${ADMIN_TOKEN}` });
    return r.status === 202 ? r : null;
  });
  assert.ok(sent.body.notification_id);
  await until("the unread count on the bell", async () => (await page.textContent("#unread")) === "1" && await page.isVisible("#unread"));
  await page.click("#bell-button");
  assert.match(await page.textContent("#feed-items li.unread"), /Deploy finished/);
  await page.screenshot({ path: `${ARTIFACTS}/demo-bell.png` });
  await page.click("#read-all");
  await until("the bell cleared", async () => !(await page.isVisible("#unread")));
  assert.equal(await page.locator("#feed-items li.unread").count(), 0);

  // And on a phone.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
  await phone.goto(`${GATEWAY_URL}/?poll=${pollId}`);
  await phone.waitForSelector("#status.live");
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal scrolling on a phone (${overflow}px)`);
  await phone.screenshot({ path: `${ARTIFACTS}/demo-phone.png`, fullPage: true });
  console.log(`browser test passed; screenshots in ${ARTIFACTS}`);
} finally {
  await browser.close();
}
