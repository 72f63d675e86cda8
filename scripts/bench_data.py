#!/usr/bin/env python3
"""Generates the drain benchmark's events once, in two forms of the same rows:
RESP commands that LPUSH queue messages (for `redis-cli --pipe`) and a CSV for a plain
COPY into the events table (the PostgreSQL ceiling).

Profiles:
  live     what a backlog of real traffic looks like: events in arrival order over 30
           minutes, visitors in sessions of 1-8 page views on one site, sites and paths
           Zipf-distributed (a few pages get most views), 100,000 visitors, 15% clicks.
  uniform  the worst case for rollups: every field uniformly random, timestamps over two
           days, so almost every event lands in a rollup row of its own (imports, replays).

Usage: bench_data.py PROFILE N QUEUE_KEY OUT_RESP OUT_CSV
       bench_data.py votes N OUT_LINES   (vote bodies of N distinct users, one per line)
"""
import bisect
import itertools
import json
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
start_s = 1763114400  # 2025-11-14T10:00:00Z
received_ms = start_s * 1000
SITES, PATHS, VISITORS = 20, 500, 100_000


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
        msg = {"v": 1, "event_id": eid, "site_id": site, "event_type": etype, "ts": ts,
               "path": path, "user_id": user, "received_at_ms": received_ms}
        chunk.append(json.dumps(msg, separators=(",", ":")).encode())
        csv.write("%s,%s,%s,%s,%s,%s,,2025-11-14T10:00:00Z\n" % (eid, site, etype, ts, path, user))
        if len(chunk) == 1000 or i == n - 1:
            parts = [b"LPUSH", qb] + chunk
            resp.write(b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts))
            chunk = []
