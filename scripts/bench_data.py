#!/usr/bin/env python3
"""Generates the drain benchmark's events once, in two forms of the same rows:
RESP commands that LPUSH queue messages (for `redis-cli --pipe`) and a CSV for a plain
COPY into the events table (the PostgreSQL ceiling).

Both profiles are tracker-shaped: a page URL (the worker derives path, hostname and UTM
fields), a referrer for half the visitors, and browser, OS, device and country as
ingest-api derives them; the CSV holds the rows as the worker stores them.

Profiles:
  live     what a backlog of real traffic looks like: events in arrival order over 30
           minutes, visitors in sessions of 1-8 page views on one site, sites and paths
           Zipf-distributed (a few pages get most views), 100,000 visitors, 15% clicks.
  uniform  the worst case for rollups: every field uniformly random, timestamps over two
           days, so almost every event lands in a rollup row of its own (imports, replays).

Events start at BENCH_DATA_START (epoch seconds; default 2025-11-14T10:00:00Z).

Usage: bench_data.py PROFILE N QUEUE_KEY OUT_RESP OUT_CSV
       bench_data.py votes N OUT_LINES   (vote bodies of N distinct users, one per line)
"""
import bisect
import itertools
import json
import os
import random
import sys
import uuid

if sys.argv[1] == "votes":
    with open(sys.argv[3], "w") as out:
        for i in range(int(sys.argv[2])):
            out.write('{"option_id":"o%d","user_id":"voter-%d"}\n' % (i % 3 + 1, i))
    sys.exit(0)

profile, n, queue, resp_path, csv_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rng = random.Random(42)
start_s = int(os.environ.get("BENCH_DATA_START", 1763114400))  # default 2025-11-14T10:00:00Z
received_ms = start_s * 1000
SITES, PATHS, VISITORS = 20, 500, 100_000
# (referrer URL, source name, stored referrer) per visitor; None: direct.
REFERRERS = [None, None, ("https://www.google.com/", "Google", "google.com"),
             ("https://news.ycombinator.com/item?id=1", "Hacker News", "news.ycombinator.com/item"),
             None, ("https://t.co/abc", "Twitter", "t.co/abc"), ("https://blog.example.org/post/", "blog.example.org", "blog.example.org/post")]
# (browser, os, device from the User-Agent, viewport width).
AGENTS = [("Chrome", "Windows", "desktop", 1536), ("Safari", "iOS", "mobile", 390), ("Chrome", "Android", "mobile", 412),
          ("Firefox", "Linux", "desktop", 1920), ("Safari", "macOS", "desktop", 1440), ("Edge", "Windows", "desktop", 1280),
          ("Safari", "iOS", "tablet", 820)]
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP"]


def zipf_picker(k):
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(k)))
    return lambda: bisect.bisect_left(cum, rng.random() * cum[-1])


def iso(sec):
    import time
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sec))


def live_rows():
    pick_site, pick_path = zipf_picker(SITES), zipf_picker(PATHS)
    span = 30 * 60
    sessions = []  # [site, visitor, views left]
    for i in range(n):
        if not sessions or rng.random() < 0.25:
            sessions.append([pick_site(), rng.randrange(VISITORS), rng.randint(1, 8)])
        s = sessions[rng.randrange(len(sessions))]
        s[2] -= 1
        if s[2] == 0:
            sessions.remove(s)
        if len(sessions) > 2000:
            sessions.pop(0)
        sec = start_s + i * span // n + rng.randrange(3)
        yield s[0], s[1], pick_path(), sec


def uniform_rows():
    for _ in range(n):
        yield rng.randrange(SITES), rng.randrange(VISITORS), rng.randrange(PATHS), start_s + rng.randrange(2 * 86400)


rows = live_rows() if profile == "live" else uniform_rows()
qb = queue.encode()


def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


with open(resp_path, "wb") as resp, open(csv_path, "w") as csv:
    chunk = []
    for i, (site, visitor, path, sec) in enumerate(rows):
        eid = str(uuid.UUID(int=(0x0192E4A0_0000_7000_8000_000000000000 | i)))
        etype = "click" if rng.random() < 0.15 else "page_view"
        site, path, user, ts = "site-%d" % site, "/page/%d" % path, "visitor-%d" % visitor, iso(sec)
        # A tracker's event, as ingest-api queues it: the page URL (the worker derives
        # path, hostname and UTM from it), the referrer, the viewport, and what ingest-api
        # derived from the connection.
        host = "%s.example" % site
        utm = rng.random() < 0.1
        url = "https://%s%s" % (host, path) + ("?utm_source=newsletter&utm_medium=email&utm_campaign=c%d" % (visitor % 7) if utm else "")
        ref = REFERRERS[visitor % len(REFERRERS)]
        agent = AGENTS[visitor % len(AGENTS)]
        width = agent[3]
        msg = {"v": 1, "event_id": eid, "site_id": site, "event_type": etype, "ts": ts,
               "user_id": user, "received_at_ms": received_ms, "url": url, "screen_width": width,
               "browser": agent[0], "os": agent[1], "device": agent[2], "country": COUNTRIES[visitor % len(COUNTRIES)]}
        if ref:
            msg["referrer"] = ref[0]
        chunk.append(json.dumps(msg, separators=(",", ":")).encode())
        source = "newsletter" if utm else (ref[1] if ref else "")
        referrer = ref[2] if ref else ""
        utm_cols = "newsletter,email,c%d,," % (visitor % 7) if utm else ",,,,"
        csv.write("%s,%s,%s,%s,%s,%s,,%s,%s,%s,%s,%s,%s,%s,%s,%s\n" % (
            eid, site, etype, ts, path, user, iso(start_s), host, referrer, source, utm_cols,
            agent[0], agent[1], "mobile" if width < 576 else ("tablet" if width < 992 else "desktop"),
            COUNTRIES[visitor % len(COUNTRIES)]))
        if len(chunk) == 1000 or i == n - 1:
            parts = [b"LPUSH", qb] + chunk
            resp.write(b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts))
            chunk = []
