#!/usr/bin/env python3
"""The hand-made part of make fuzz: attacks a hostile client would try, each with what
must hold. Prints one line per attack with its numbers; exits non-zero on any failure.

Environment: INGEST_URL, STATS_URL, STATS_TOKEN, INGEST_PID, STATS_LOG, FUZZ_SHORT (1:
smaller counts, for make test)."""

import asyncio
import os
import sys
import threading
import time
import urllib.parse

SHORT = os.environ.get("FUZZ_SHORT") == "1"
INGEST = urllib.parse.urlparse(os.environ["INGEST_URL"])
STATS = urllib.parse.urlparse(os.environ["STATS_URL"])
STATS_TOKEN = os.environ["STATS_TOKEN"]
INGEST_PID = int(os.environ["INGEST_PID"])
# Memory ingest-api may grow by under attack, over its resting size: request buffers of
# the connections in flight, never a per-request residue.
RSS_BOUND_MIB = 64
failures = []


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """Samples a process's RSS every 20 ms while in the `with` block."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def __enter__(self):
        self.before = rss_kib(self.pid)
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.after = rss_kib(self.pid)


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAILED: {what}")


async def request(url, raw, read_timeout=30):
    """Sends `raw` bytes on a new connection; returns (status, body bytes)."""
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(raw)
        await writer.drain()
    except (ConnectionError, OSError):
        pass  # the server may answer and close before reading it all
    try:
        data = await asyncio.wait_for(reader.read(), read_timeout)
    except (ConnectionError, OSError):
        data = b""
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return status, body


def http(method, path, headers=None, body=b"", host="x"):
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}", "connection: close"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def gather_limited(coros, limit):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def distinct_huge_poll_ids():
    n = 500 if SHORT else 2000
    vote = b'{"option_id":"o1","user_id":"u"}'
    json_headers = {"content-type": "application/json"}
    with PeakRss(INGEST_PID) as mem:
        statuses = await gather_limited(
            (request(INGEST, http("POST", f"/v1/polls/{i:08d}{'p' * (1 << 20)}/votes", json_headers, vote))
             for i in range(n)), 16)
        # Ids just over the 100-character limit reach the handler: refused before they
        # key the per-poll limiter.
        long_ids = await gather_limited(
            (request(INGEST, http("POST", f"/v1/polls/{i:08d}{'q' * 10_000}/votes", json_headers, vote))
             for i in range(n)), 16)
    grew = (mem.peak - mem.before) / 1024
    codes = sorted(set(s for s, _ in statuses))
    print(f"{n} distinct 1 MiB poll ids: statuses {codes} (0: the connection closed on the sender); {n} distinct 10 kB ids: "
          f"{sorted(set(s for s, _ in long_ids))}; ingest-api RSS {mem.before / 1024:.0f} MiB before, "
          f"peak {mem.peak / 1024:.0f} MiB, {mem.after / 1024:.0f} MiB after")
    # actix-web refuses a request head over its buffer with 431 and closes the connection,
    # which a client still sending its megabyte sees as a reset.
    check(set(codes) <= {0, 431}, f"1 MiB ids answered {codes}")
    check(all(s == 404 for s, _ in long_ids), f"10 kB ids answered {set(s for s, _ in long_ids)}")
    check(grew < RSS_BOUND_MIB, f"ingest-api grew {grew:.0f} MiB under huge ids (bound {RSS_BOUND_MIB})")


async def batch_of_empty_events():
    # 100,000 `{}` padded to 2,000,000 bytes in all (just under the 2 MiB body limit).
    event = b"{}" + b" " * 17 + b","
    body = b'{"events":[' + event * 99_999 + b"{}]}"
    rounds = 5 if SHORT else 20
    with PeakRss(INGEST_PID) as mem:
        answers = await gather_limited(
            (request(INGEST, http("POST", "/v1/events", {"content-type": "application/json"}, body))
             for _ in range(rounds)), 4)
    grew = (mem.peak - mem.before) / 1024
    statuses = sorted(set(s for s, _ in answers))
    print(f"{rounds} batches of 100,000 {{}} ({len(body) / 1048576:.1f} MiB each): statuses {statuses}; "
          f"ingest-api RSS peak {mem.peak / 1024:.0f} MiB ({grew:+.0f} MiB)")
    check(statuses == [400], f"a batch of 100,000 events answered {statuses}")
    check(all(b"at most 1000 events" in b for _, b in answers), "the 400 names the 1000-event bound")
    check(grew < RSS_BOUND_MIB, f"ingest-api grew {grew:.0f} MiB under 2 MiB batches (bound {RSS_BOUND_MIB})")


async def nul_bytes_in_stats_parameters():
    paths = ["/api/stats?site_id=%00", "/v1/stats?site_id=fuzz-site&event_type=%00",
             "/v1/stats?site_id=%00&from=2026-01-01", "/v1/sites/%00/timeseries?metric=views",
             "/v1/sites/fuzz-site/timeseries?metric=views&path=%00", "/v1/polls/%00"]
    log = os.environ["STATS_LOG"]
    lines_before = sum(1 for _ in open(log, "rb"))
    auth = {"authorization": f"Bearer {STATS_TOKEN}"}
    answers = []
    for _ in range(10):
        for p in paths:
            answers.append(await request(STATS, http("GET", p, auth)))
        answers.append(await request(STATS, http(
            "POST", "/grafana/query", {**auth, "content-type": "application/json"},
            b'{"range":{"from":"2026-11-01T00:00:00Z","to":"2026-11-02T00:00:00Z"},'
            b'"targets":[{"target":"views","refId":"A","payload":{"site_id":"a\\u0000b"}}]}')))
    time.sleep(0.5)
    lines = sum(1 for _ in open(log, "rb")) - lines_before
    statuses = sorted(set(s for s, _ in answers))
    print(f"{len(answers)} requests with NUL in a stats parameter: statuses {statuses}; "
          f"{lines} log lines written")
    check(statuses == [400], f"NUL parameters answered {statuses}")
    check(lines <= 2 * len(answers), f"{lines} log lines for {len(answers)} bad requests")


async def slow_clients_beside_normal_traffic():
    n = 200 if SHORT else 1000
    opened = []

    async def slow(kind):
        reader, writer = await asyncio.open_connection(INGEST.hostname, INGEST.port)
        opened.append(1)
        if kind == "head":
            data = b"POST /v1/events HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 1000
            prefix = b""
        else:
            data = b" " * 1000
            prefix = b"POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
        writer.write(prefix)
        started = time.monotonic()
        ended = None
        for byte in data:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except (ConnectionError, OSError):
                ended = time.monotonic() - started
                break
            try:
                got = await asyncio.wait_for(reader.read(1024), 1.0)
                if got == b"" or got.startswith(b"HTTP/1.1 4"):
                    ended = time.monotonic() - started
                    break
            except asyncio.TimeoutError:
                pass
            except (ConnectionError, OSError):
                ended = time.monotonic() - started
                break
            if time.monotonic() - started > 60:
                break
        writer.close()
        return ended

    event = (b'{"site_id":"fuzz-site","event_type":"page_view","timestamp":"2026-11-30T10:00:00Z","path":"/n"}')

    async def normal_traffic():
        await asyncio.sleep(1)  # the slow clients are connected and trickling
        latencies, statuses = [], []
        for _ in range(100 if SHORT else 300):
            t = time.monotonic()
            s, _ = await request(INGEST, http("POST", "/v1/events", {"content-type": "application/json"}, event))
            latencies.append(time.monotonic() - t)
            statuses.append(s)
        return latencies, statuses

    results = await asyncio.gather(
        asyncio.gather(*(slow("head" if i % 2 else "body") for i in range(n))), normal_traffic())
    ends, (latencies, statuses) = results
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    cut = [e for e in ends if e is not None]
    print(f"{n} slow clients (half trickling headers, half bodies, a byte a second): {len(cut)} cut off by the "
          f"server, the last after {max(cut) if cut else 0:.1f} s; meanwhile {len(statuses)} normal requests: "
          f"statuses {sorted(set(statuses))}, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, p99 {p99:.1f} ms")
    check(len(cut) == n, f"only {len(cut)} of {n} slow clients were cut off within 60 s")
    check(set(statuses) == {202}, f"normal requests beside slow clients answered {set(statuses)}")


async def main():
    await distinct_huge_poll_ids()
    await batch_of_empty_events()
    await nul_bytes_in_stats_parameters()
    await slow_clients_beside_normal_traffic()


asyncio.run(main())
if failures:
    sys.exit(1)
