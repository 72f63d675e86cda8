#!/usr/bin/env bash
# The query API part of make bench (also runs alone): the dashboard's queries against a
# site of BENCH_QUERY_EVENTS events (default 10,000,000) over 90 days, uncached (the
# site's cache generation bumped before each request) and cached, beside the floor of the
# same server (GET /healthz) in the same run; then the dashboard itself in headless
# Chromium, time to every panel drawn, cold (uncached) and warm.
#
# The data is written straight into what the worker keeps (visits and the path rollup),
# shaped as a drain of that many events would leave them (about 3.2 events per visit), and
# the raw events of those visits (goal conversions and funnel steps are counted from them): draining ten million
# events through the worker here would take longer than the whole benchmark and measure
# the drain, which the main bench already does.
# Results: bench/results/query-<timestamp>.json and bench/results/query-latest.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

EVENTS="${BENCH_QUERY_EVENTS:-10000000}"
RUNS="${BENCH_QUERY_RUNS:-10}"
OUT="$ROOT/bench/results"; mkdir -p "$OUT"
WORK="$STATE/bench-query"; mkdir -p "$WORK"

ensure_redis
[ -z "${DATABASE_URL:-}" ] || DATABASE_URL="${DATABASE_URL%/*}/tally_bench"
ensure_postgres tally_bench
case "$DATABASE_URL" in */tally_bench|*/tally_bench\?*) ;; *) die "refusing to benchmark against $DATABASE_URL" ;; esac
say "building (release)"
cargo build --release --bins --quiet
BIN="$(cargo_bin_dir release)"
PREFIX="tally-bench-query"
RHOST="$(url_host "$REDIS_URL")"; RPORT="$(url_port "$REDIS_URL" 6379)"
port_free() { ! curl -s -o /dev/null "http://127.0.0.1:$1/healthz" || die "port $1 is already in use; stop what listens there"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del >/dev/null
}
trap cleanup EXIT
cleanup

psql "$DATABASE_URL" -q -o /dev/null -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"
DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" migrate > "$WORK/migrate.log" 2>&1 || die "migrations failed"

VISITS=$((EVENTS * 10 / 32))
say "writing $VISITS visits ($EVENTS events) of one site over 90 days, and its path rollup"
t0=$(date +%s)
psql "$DATABASE_URL" -q -o /dev/null <<SQL
INSERT INTO sites (site_id, timezone, version, created_at, updated_at)
VALUES ('big.example', 'Europe/Berlin', 1, now(), now());
-- Visitors come back (a third of visits are returns); sources, devices, countries and
-- pages skewed as real traffic is.
INSERT INTO visits (site_id, visitor, started_at, ended_at, first_event_id, events, pageviews,
                    entry_at, entry_event_id, entry_page, exit_at, exit_event_id, exit_page,
                    hostname, referrer, source, utm_source, device, browser, os, country)
SELECT 'big.example', 'v' || (i % ($VISITS * 2 / 3)),
       t, t + (pv - 1) * interval '47 seconds', gen_random_uuid(), pv + (i % 4 = 0)::int, pv,
       t, gen_random_uuid(), '/p' || (floor(power(random(), 3) * 500))::int,
       t + (pv - 1) * interval '47 seconds', gen_random_uuid(), '/p' || (floor(power(random(), 3) * 500))::int,
       'big.example', NULL,
       (ARRAY[NULL, NULL, 'Google', 'Google', 'Hacker News', 'Twitter', 'blog.example.org', 'DuckDuckGo', 'Reddit'])[1 + (i % 9)],
       CASE WHEN i % 7 = 0 THEN 'newsletter' END,
       (ARRAY['desktop', 'mobile', 'mobile', 'tablet'])[1 + (i % 4)],
       (ARRAY['Chrome', 'Safari', 'Firefox', 'Edge', 'Chrome'])[1 + (i % 5)],
       (ARRAY['Windows', 'iOS', 'Android', 'macOS', 'Linux'])[1 + (i % 5)],
       (ARRAY['US', 'DE', 'FR', 'GB', 'IN', 'BR', 'JP', 'NL', 'ES', 'IT'])[1 + (floor(power(random(), 2) * 10))::int]
FROM (SELECT i, pv, now() - interval '90 days' + (i::float8 / $VISITS) * interval '90 days' AS t
      FROM (SELECT i, 1 + (floor(power(random(), 2) * 6))::int AS pv FROM generate_series(1, $VISITS) AS i) s) g;
INSERT INTO rollup_hourly_paths (site_id, event_type, bucket, path_key, path, views)
SELECT 'big.example', 'page_view', h, md5('/p' || p)::uuid, '/p' || p, 1 + (($EVENTS / 1080000.0) * 500.0 / (p + 1))::bigint
FROM generate_series(date_trunc('hour', now() - interval '90 days'), now(), interval '1 hour') AS h,
     generate_series(0, 499) AS p;
-- The raw events of those visits (goal conversions and funnel steps are counted from them): each visit's page views
-- 47 s apart, entry and exit pages first and last, and a signup at the end of a quarter
-- of the visits (the visits with one event more than page views).
INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, received_at)
SELECT gen_random_uuid(), site_id, 'page_view', started_at + k * interval '47 seconds',
       CASE WHEN k = 0 THEN entry_page WHEN k = pageviews - 1 THEN exit_page
            ELSE '/p' || (floor(power(random(), 3) * 500))::int END,
       visitor, started_at
FROM visits, generate_series(0, pageviews - 1) AS k;
INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, received_at)
SELECT gen_random_uuid(), site_id, 'signup', ended_at, NULL, visitor, ended_at
FROM visits WHERE events > pageviews;
-- Their rollups, as the worker would have kept them while writing the visits and events
-- (the site has no goals yet: they are added below, timed).
SELECT tally_rebuild_visit_rollups('big.example');
SELECT tally_rebuild_page_day_rollups('big.example');
VACUUM ANALYZE visits;
VACUUM ANALYZE visit_rollups;
VACUUM ANALYZE rollup_hourly_paths;
VACUUM ANALYZE page_day_rollups;
VACUUM ANALYZE events;
SQL
say "  written in $(( $(date +%s) - t0 )) s"
# What a change of the site's goals costs: the recount of its events' conversions and its
# goal cells, as the batch-worker runs it storing the change (under the site's settings
# lock, held exclusive); and what the drain does meanwhile: one release batch-worker
# drains RECOUNT_DRAIN_EVENTS live events of 20 other sites and 2,000 of the recounted
# one (dated 2025-11-14, outside every range queried below), queued once the lock is held.
RECOUNT_DRAIN_EVENTS="${BENCH_RECOUNT_DRAIN_EVENTS:-200000}"
QUEUE="$PREFIX:{events}:queue"
python3 scripts/bench_data.py live "$RECOUNT_DRAIN_EVENTS" "$QUEUE" "$WORK/recount-drain.resp" "$WORK/recount-drain.csv"
python3 - "$QUEUE" >> "$WORK/recount-drain.resp" <<'PY'
import json, sys, uuid
q = sys.argv[1].encode()
msgs = [json.dumps({"v": 1, "event_id": str(uuid.UUID(int=i + 1)), "site_id": "big.example", "event_type": "page_view",
                    "ts": "2025-11-14T10:%02d:%02dZ" % (i // 60 % 60, i % 60), "path": "/p%d" % (i % 7), "user_id": "late-%d" % (i % 500),
                    "received_at_ms": 1763114400000}).encode() for i in range(2000)]
bulk = lambda b: b"$%d\r\n%s\r\n" % (len(b), b)
for k in range(0, len(msgs), 1000):
    parts = [b"LPUSH", q] + msgs[k:k + 1000]
    sys.stdout.buffer.write(b"*%d\r\n" % len(parts) + b"".join(bulk(p) for p in parts))
PY
port_free 19091
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19091 RUST_LOG=warn RUN_MIGRATIONS=false VISIT_WEEK_BUILD_INTERVAL_MS=3600000 DATABASE_URL="$DATABASE_URL" \
  "$BIN/batch-worker" > "$WORK/worker.log" 2>&1 & WPID=$!; pids+=($WPID)
for _ in $(seq 300); do curl -fsS http://127.0.0.1:19091/readyz >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS http://127.0.0.1:19091/readyz >/dev/null || die "the batch-worker is not ready (see $WORK/worker.log)"
t0=$(date +%s%N)
psql "$DATABASE_URL" -q -o /dev/null -c "BEGIN" -c "SELECT tally_lock_site_settings(ARRAY['big.example'], true)" \
  -c "UPDATE sites SET
        goals = '[{\"goal_id\": \"g_1\", \"display_name\": \"Visit /p1\", \"page_path\": \"/p1\"},
                  {\"goal_id\": \"g_2\", \"display_name\": \"signup\", \"event_name\": \"signup\"},
                  {\"goal_id\": \"g_3\", \"display_name\": \"Visit /p0\", \"page_path\": \"/p0\"}]',
        funnels = '[{\"funnel_id\": \"f_1\", \"name\": \"p0 then signup\", \"steps\": [\"g_3\", \"g_2\"]}]'
      WHERE site_id = 'big.example'" \
  -c "UPDATE visit_rollup_zones z SET goals = tally_goal_matchers(s.goals), funnels = tally_funnel_matchers(s.funnels)
      FROM sites s WHERE s.site_id = z.site_id AND z.site_id = 'big.example'" \
  -c "SELECT tally_rebuild_visit_goals('big.example')" -c "COMMIT" & RECOUNT_PID=$!
until [ "$(psql "$DATABASE_URL" -tAc "SELECT tally_site_settings_changing('big.example')")" = t ]; do
  kill -0 "$RECOUNT_PID" 2>/dev/null || die "the recount ended before its lock was seen"
  sleep 0.05
done
queued_left() {
  redis-cli -h "$RHOST" -p "$RPORT" eval "local n = redis.call('LLEN', KEYS[1]); for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('LLEN', k) end; return n" 1 "$QUEUE" "$PREFIX:{events}:processing:*"
}
t_push=$(date +%s%N)
redis-cli -h "$RHOST" -p "$RPORT" --pipe < "$WORK/recount-drain.resp" > /dev/null
while [ "$(queued_left)" != 0 ]; do
  kill -0 "$WPID" 2>/dev/null || die "the batch-worker exited during the recount (see $WORK/worker.log)"
  sleep 0.05
done
t_drained=$(date +%s%N)
RECOUNT_RUNNING_AFTER_DRAIN=$(kill -0 "$RECOUNT_PID" 2>/dev/null && echo true || echo false)
wait "$RECOUNT_PID" || die "the recount failed"
t_recounted=$(date +%s%N)
WAITED=$(curl -fsS http://127.0.0.1:19091/metrics | awk '/^batch_worker_events_set_aside_total/ {print $2}')
until [ "$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM events_waiting")" = 0 ]; do
  kill -0 "$WPID" 2>/dev/null || die "the batch-worker exited before storing the waiting events (see $WORK/worker.log)"
  sleep 0.05
done
t_waited=$(date +%s%N)
kill "$WPID"; wait "$WPID" 2>/dev/null || true
OTHER_STORED=$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM events WHERE site_id LIKE 'site-%'")
LATE_STORED=$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM events WHERE site_id = 'big.example' AND user_id LIKE 'late-%'")
[ "$OTHER_STORED" = "$RECOUNT_DRAIN_EVENTS" ] && [ "$LATE_STORED" = 2000 ] \
  || die "stored $OTHER_STORED events of other sites (expected $RECOUNT_DRAIN_EVENTS) and $LATE_STORED of the recounted one (expected 2000)"
GOAL_RECOUNT_MS=$(( (t_recounted - t0) / 1000000 ))
DRAIN_DURING_RECOUNT_MS=$(( (t_drained - t_push) / 1000000 ))
WAITING_STORED_AFTER_MS=$(( (t_waited - t_recounted) / 1000000 ))
CONVERSIONS=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(sum(value::bigint), 0) FROM visits, jsonb_each_text(goals) WHERE site_id = 'big.example'")
say "  drained $RECOUNT_DRAIN_EVENTS events of other sites in $DRAIN_DURING_RECOUNT_MS ms during the recount (still running after: $RECOUNT_RUNNING_AFTER_DRAIN); ${WAITED:-0} events waited, stored $WAITING_STORED_AFTER_MS ms after it"
say "  a change of the site's goals recounts $CONVERSIONS conversions in $GOAL_RECOUNT_MS ms"
# What autovacuum does soon after a recount (a fifth of the table's rows changed): frees the
# visits' old row versions and summarises the block ranges the new ones were appended to
# (until then a block-range scan reads every unsummarised range).
psql "$DATABASE_URL" -q -o /dev/null -c "VACUUM ANALYZE visits"
# The site's sealed weeks, as a worker's week builder would have built them (migrations
# 0019, 0021 and 0022: visit cells, page rows and pair cells): a 91-day range reads 12 or
# 13 week rows and the days around them.
# The worker above may have built some of them already (its builder runs once at start):
# marked out of date, so the time below is every week's build.
psql "$DATABASE_URL" -q -o /dev/null -c "UPDATE visit_rollup_weeks SET built_generation = -1 WHERE site_id = 'big.example'"
t0=$(date +%s%N)
WEEK_CELLS=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(sum(tally_build_visit_week(site_id, week)), 0) FROM tally_visit_weeks_to_build(100000)")
WEEKS_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
# And its sealed days' pair cells (migration 0024), the same way: a filtered breakdown then
# reads from visits only the days not sealed yet.
psql "$DATABASE_URL" -q -o /dev/null -c "UPDATE visit_rollup_days SET built_generation = -1 WHERE site_id = 'big.example'"
t0=$(date +%s%N)
DAY_CELLS=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(sum(tally_build_visit_pair_day(site_id, day)), 0) FROM tally_visit_days_to_build(100000)")
DAYS_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
BUILT_DAYS=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM visit_rollup_days WHERE site_id = 'big.example' AND generation = built_generation")
# And the pair cells of its sealed hours of the last two days (migration 0025): a filtered
# breakdown then reads from visits only the last three or four hours.
psql "$DATABASE_URL" -q -o /dev/null -c "UPDATE visit_rollup_hours SET built_generation = -1 WHERE site_id = 'big.example'"
t0=$(date +%s%N)
HOUR_CELLS=$(psql "$DATABASE_URL" -Atc "SELECT coalesce(sum(tally_build_visit_pair_hour(site_id, hour)), 0) FROM tally_visit_hours_to_build(100000)")
HOURS_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
BUILT_HOURS=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM visit_rollup_hours WHERE site_id = 'big.example' AND generation = built_generation")
psql "$DATABASE_URL" -q -o /dev/null -c "VACUUM ANALYZE visit_rollups" -c "VACUUM ANALYZE visit_rollup_weeks" \
  -c "VACUUM ANALYZE page_week_rollups" -c "VACUUM ANALYZE visit_pair_week_rollups" \
  -c "VACUUM ANALYZE visit_rollup_days" -c "VACUUM ANALYZE visit_pair_day_rollups" \
  -c "VACUUM ANALYZE visit_rollup_hours" -c "VACUUM ANALYZE visit_pair_hour_rollups"
say "  its sealed weeks built: $WEEK_CELLS week cells, page rows and pair cells in $WEEKS_MS ms"
say "  its sealed days' pair cells built: $DAY_CELLS cells of $BUILT_DAYS days in $DAYS_MS ms"
say "  its sealed hours' pair cells built: $HOUR_CELLS cells of $BUILT_HOURS hours in $HOURS_MS ms"

port_free 19082
# The statement timeout raised from its 30 s default so slow queries are timed, not cut.
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19082 RUST_LOG=warn DATABASE_URL="$DATABASE_URL" \
  DATABASE_STATEMENT_TIMEOUT_MS=300000 "$BIN/stats-api" > "$WORK/stats-api.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS http://127.0.0.1:19082/readyz >/dev/null 2>&1 && break; sleep 0.1; done

say "the dashboard's queries, $RUNS times each uncached, $((RUNS * 20)) cached"
cat > "$WORK/queries.py" <<'PY'
import http.client, json, socket, statistics, sys, time
runs, rhost, rport, prefix, port, mode = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
def redis(*args):
    s = socket.create_connection((rhost, rport))
    s.sendall(("*%d\r\n" % len(args) + "".join("$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)).encode())
    s.recv(1024); s.close()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
def post(body):
    if "GET" in body:
        return get(body["GET"])
    conn.request("POST", "/v2/query", json.dumps(body), {"content-type": "application/json"})
    r = conn.getresponse(); data = r.read()
    assert r.status == 200, data
    return data
def get(path):
    conn.request("GET", path); r = conn.getresponse(); data = r.read()
    assert r.status == 200, data
    return data
base = {"site_id": "big.example", "date_range": "91d"}
queries = {
    "totals": {"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"]},
    "visitors per day": {"metrics": ["visitors"], "dimensions": ["time:day"], "include": {"time_labels": True}},
    "top sources": {"metrics": ["visitors"], "dimensions": ["visit:source"], "pagination": {"limit": 9}},
    "top pages": {"metrics": ["pageviews"], "dimensions": ["event:page"], "pagination": {"limit": 9}},
    "entry pages (unique entrances)": {"metrics": ["visits"], "dimensions": ["visit:entry_page"], "pagination": {"limit": 9}},
    "exit pages (unique exits)": {"metrics": ["visits"], "dimensions": ["visit:exit_page"], "pagination": {"limit": 9}},
    "countries": {"metrics": ["visitors"], "dimensions": ["visit:country"], "pagination": {"limit": 9}},
    "devices": {"metrics": ["visitors"], "dimensions": ["visit:device"], "pagination": {"limit": 9}},
    "sources, filtered by device": {"metrics": ["visitors"], "dimensions": ["visit:source"], "filters": [["is", "visit:device", ["mobile"]]]},
    "countries, filtered by source": {"metrics": ["visitors"], "dimensions": ["visit:country"], "filters": [["is", "visit:source", ["Google"]]], "pagination": {"limit": 9}},
    "totals, filtered by source": {"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"], "filters": [["is", "visit:source", ["Google"]]]},
    "visitors per day, filtered by source": {"metrics": ["visitors"], "dimensions": ["time:day"], "filters": [["is", "visit:source", ["Google"]]], "include": {"time_labels": True}},
    "goals": {"metrics": ["visitors", "events", "conversion_rate"], "dimensions": ["event:goal"]},
    "sources of converted visits": {"metrics": ["visitors", "conversion_rate"], "dimensions": ["visit:source"], "filters": [["is", "event:goal", ["signup"]]]},
    "funnel": {"GET": "/v1/sites/big.example/funnels/f_1?date_range=91d"},
}
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
# The queries the visit rollups answer (the others read visits or raw events).
# Filtered by one kept dimension: its own cells, or pair week cells and the visits of the
# days outside the range's built weeks.
ROLLUPS = ["totals", "visitors per day", "top sources", "entry pages (unique entrances)", "exit pages (unique exits)", "countries", "devices",
           "sources, filtered by device", "countries, filtered by source", "totals, filtered by source", "visitors per day, filtered by source",
           "goals", "sources of converted visits", "funnel"]
# The queries week rows answer (the rollup queries and the page rows').
WEEKS = ROLLUPS + ["top pages"]
# From the visits table and raw events, these take seconds: one run each.
SLOW_WITHOUT_ROLLUPS = ["goals", "sources of converted visits", "funnel"]
if mode == "answers":
    # Each rollup query's answer, uncached (without the echoed query and timing meta).
    out = {}
    for name in WEEKS:
        redis("INCR", prefix + ":{site:big.example}:gen")
        answer = json.loads(post({**base, **queries[name]}))
        answer.pop("meta", None); answer.pop("query", None)
        out[name] = answer
    print(json.dumps(out, sort_keys=True))
    sys.exit(0)
if mode == "days":
    # The rollup queries with no week built: every range read from its day rows.
    out = {}
    for name in WEEKS:
        times = []
        for _ in range(runs):
            redis("INCR", prefix + ":{site:big.example}:gen")
            t = time.perf_counter(); post({**base, **queries[name]}); times.append((time.perf_counter() - t) * 1000)
        out[name] = {"p50": round(pct(times, 50), 2), "p99": round(pct(times, 99), 2)}
    print(json.dumps({"day_rows_ms": out}))
    sys.exit(0)
if mode == "compare":
    # The same queries answered from the visits table (VISIT_ROLLUPS=false), uncached.
    out = {}
    for name in ROLLUPS:
        times = []
        for _ in range(1 if name in SLOW_WITHOUT_ROLLUPS else 3):
            redis("INCR", prefix + ":{site:big.example}:gen")
            t = time.perf_counter(); post({**base, **queries[name]}); times.append((time.perf_counter() - t) * 1000)
        out[name] = round(pct(times, 50), 1)
    print(json.dumps({"visits_table_p50_ms": out}))
    sys.exit(0)
out = {"queries": {}}
for name, q in queries.items():
    body = {**base, **q}
    uncached = []
    # Queries of the raw events take seconds at this size: three uncached runs (p99 is then
    # the slowest).
    for _ in range(3 if "raw events" in name else runs):
        redis("INCR", prefix + ":{site:big.example}:gen")
        t = time.perf_counter(); post(body); uncached.append((time.perf_counter() - t) * 1000)
    cached = []
    for _ in range(runs * 20):
        t = time.perf_counter(); post(body); cached.append((time.perf_counter() - t) * 1000)
    out["queries"][name] = {"uncached_p50_ms": round(pct(uncached, 50), 2), "uncached_p99_ms": round(pct(uncached, 99), 2),
                            "cached_p50_ms": round(pct(cached, 50), 3), "cached_p99_ms": round(pct(cached, 99), 3)}
floor = []
for _ in range(runs * 5):
    t = time.perf_counter(); get("/healthz"); floor.append((time.perf_counter() - t) * 1000)
out["healthz_p50_ms"] = round(pct(floor, 50), 3); out["healthz_p99_ms"] = round(pct(floor, 99), 3)
print(json.dumps(out))
PY
python3 "$WORK/queries.py" "$RUNS" "$RHOST" "$RPORT" "$PREFIX" 19082 measure > "$WORK/result.json"
grep -q '"uncached_p50_ms"' "$WORK/result.json" || die "the query benchmark failed (see $WORK)"

say "the same rollup queries from day rows alone (no week built), and their answers compared"
python3 "$WORK/queries.py" "$RUNS" "$RHOST" "$RPORT" "$PREFIX" 19082 answers > "$WORK/answers-weeks.json"
psql "$DATABASE_URL" -q -o /dev/null -c "UPDATE visit_rollup_weeks SET built_generation = -1" \
  -c "UPDATE visit_rollup_days SET built_generation = -1" -c "UPDATE visit_rollup_hours SET built_generation = -1"
python3 "$WORK/queries.py" "$RUNS" "$RHOST" "$RPORT" "$PREFIX" 19082 days > "$WORK/days.json"
python3 "$WORK/queries.py" "$RUNS" "$RHOST" "$RPORT" "$PREFIX" 19082 answers > "$WORK/answers-days.json"
psql "$DATABASE_URL" -q -o /dev/null -c "UPDATE visit_rollup_weeks SET built_generation = generation" \
  -c "UPDATE visit_rollup_days SET built_generation = generation" -c "UPDATE visit_rollup_hours SET built_generation = generation"
cmp -s "$WORK/answers-weeks.json" "$WORK/answers-days.json" \
  || die "answers read through week rows differ from those of day rows: see $WORK/answers-*.json"
say "  the same answers, to the last digit, with and without week rows"
jq -s '.[0] + .[1]' "$WORK/result.json" "$WORK/days.json" > "$WORK/result-all.json"
mv "$WORK/result-all.json" "$WORK/result.json"

say "the same visit queries from the visits table (VISIT_ROLLUPS=false), for comparison"
port_free 19083
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19083 RUST_LOG=warn DATABASE_URL="$DATABASE_URL" VISIT_ROLLUPS=false \
  DATABASE_STATEMENT_TIMEOUT_MS=300000 "$BIN/stats-api" > "$WORK/stats-api-visits.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS http://127.0.0.1:19083/readyz >/dev/null 2>&1 && break; sleep 0.1; done
python3 "$WORK/queries.py" "$RUNS" "$RHOST" "$RPORT" "$PREFIX" 19083 compare > "$WORK/compare.json" \
  || die "the visits-table comparison failed (see $WORK)"
jq -s --argjson ms "$GOAL_RECOUNT_MS" --argjson n "$CONVERSIONS" --argjson wc "$WEEK_CELLS" --argjson wms "$WEEKS_MS" \
  --argjson dc "$DAY_CELLS" --argjson dd "$BUILT_DAYS" --argjson dbms "$DAYS_MS" \
  --argjson hc "$HOUR_CELLS" --argjson hh "$BUILT_HOURS" --argjson hbms "$HOURS_MS" \
  --argjson dn "$RECOUNT_DRAIN_EVENTS" --argjson dms "$DRAIN_DURING_RECOUNT_MS" --argjson during "$RECOUNT_RUNNING_AFTER_DRAIN" \
  --argjson waited "${WAITED:-0}" --argjson wafter "$WAITING_STORED_AFTER_MS" \
  '.[0] + .[1] + {goal_change_recount_ms: $ms, goal_change_conversions: $n, week_cells: $wc, week_build_ms: $wms,
                  pair_day_cells: $dc, pair_days: $dd, pair_day_build_ms: $dbms,
                  pair_hour_cells: $hc, pair_hours: $hh, pair_hour_build_ms: $hbms,
                  drain_during_goal_recount: {events: $dn, ms: $dms, events_per_s: ($dn * 1000 / $dms), recount_still_running_when_drained: $during,
                                              events_waited: $waited, waiting_stored_ms_after_recount: $wafter}}' \
  "$WORK/result.json" "$WORK/compare.json" > "$WORK/result-all.json"
mv "$WORK/result-all.json" "$WORK/result.json"

say "the dashboard in headless Chromium: every panel drawn, cold and warm"
[ -x /usr/bin/chromium ] || apt_install chromium
command -v node >/dev/null || apt_install nodejs npm
BROWSER_DIR="$ROOT/crates/sse-gateway/tests/browser"
[ -d "$BROWSER_DIR/node_modules/playwright-core" ] || (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
port_free 19081
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19081 RUST_LOG=warn PUBLIC_STATS_URL=http://127.0.0.1:19082 \
  "$BIN/sse-gateway" > "$WORK/sse-gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -fsS http://127.0.0.1:19081/readyz >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$WORK/paint.cjs" <<'JS'
// Time from navigation to the first meaningful paint (body[data-painted]: totals, chart and
// visit panels) and to every panel drawn (body[data-loaded]: goals and funnel too), per
// period: cold (the site's cached answers dropped first) and warm
// (the same page again).
const { chromium } = require("playwright-core");
const { execFileSync } = require("node:child_process");
const [host, port, genKey] = process.argv.slice(2);
(async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  const out = {};
  for (const period of ["7d", "91d"]) {
    const times = { cold_ms: [], warm_ms: [], cold_painted_ms: [], warm_painted_ms: [] };
    for (let i = 0; i < 3; i++) {
      for (const kind of ["cold_ms", "warm_ms"]) {
        if (kind === "cold_ms") execFileSync("redis-cli", ["-h", host, "-p", port, "INCR", genKey]);
        const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
        const t = Date.now();
        await page.goto(`http://127.0.0.1:19081/dashboard/big.example?period=${period}`);
        await page.waitForSelector("body[data-painted]", { timeout: 120000 });
        times[kind.replace("_ms", "_painted_ms")].push(Date.now() - t);
        await page.waitForSelector("body[data-loaded]", { timeout: 120000 });
        times[kind].push(Date.now() - t);
        await page.close();
      }
    }
    out[period] = times;
  }
  await browser.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
JS
NODE_PATH="$BROWSER_DIR/node_modules" node "$WORK/paint.cjs" "$RHOST" "$RPORT" "$PREFIX:{site:big.example}:gen" > "$WORK/paint.json" \
  || die "the dashboard did not draw (see $WORK)"
jq -s '.[0] + {dashboard_paint: .[1]}' "$WORK/result.json" "$WORK/paint.json" > "$WORK/result-all.json"
mv "$WORK/result-all.json" "$WORK/result.json"
GEN_KEY_OK=$(redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*gen*" | head -1)
[ -n "$GEN_KEY_OK" ] || say "warning: no generation key was seen; the uncached runs may have hit the cache"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
jq --argjson events "$EVENTS" --argjson visits "$VISITS" --arg at "$STAMP" \
  '. + {at: $at, events: $events, visits: $visits, days: 90}' "$WORK/result.json" > "$OUT/query-$STAMP.json"
cp "$OUT/query-$STAMP.json" "$OUT/query-latest.json"
{
  echo "# Query API benchmark $STAMP"
  echo
  echo "One site, $EVENTS events ($VISITS visits) over 90 days, Europe/Berlin; \`date_range: 91d\`; one stats-api (release), one connection; uncached: the site's cache generation bumped before each request. Same run: \`GET /healthz\` of the same server p50 $(jq .healthz_p50_ms "$WORK/result.json") ms."
  echo
  echo "| query | uncached p50 | uncached p99 | cached p50 | cached p99 | from day rows alone (no week, pair day or pair hour built), uncached p50 / p99 | from visits (VISIT_ROLLUPS=false), uncached p50 |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  jq -r '.visits_table_p50_ms as $v | .day_rows_ms as $d | .queries | to_entries[] | "| \(.key) | \(.value.uncached_p50_ms) ms | \(.value.uncached_p99_ms) ms | \(.value.cached_p50_ms) ms | \(.value.cached_p99_ms) ms | \(if $d[.key] then "\($d[.key].p50) / \($d[.key].p99) ms" else "" end) | \(if $v[.key] then "\($v[.key]) ms" else "" end) |"' "$WORK/result.json"
  echo
  echo "Sealed weeks built as the worker builds them (migrations 0019, 0021 and 0022): $(jq .week_cells "$WORK/result.json") week cells, page week rows and pair week cells in $(jq .week_build_ms "$WORK/result.json") ms; the pair cells of its sealed days (migration 0024): $(jq .pair_day_cells "$WORK/result.json") cells of $(jq .pair_days "$WORK/result.json") days in $(jq .pair_day_build_ms "$WORK/result.json") ms; the pair cells of its sealed hours of the last two days (migration 0025): $(jq .pair_hour_cells "$WORK/result.json") cells of $(jq .pair_hours "$WORK/result.json") hours in $(jq .pair_hour_build_ms "$WORK/result.json") ms. Answers read through week rows, pair day rows and pair hour rows equal those of day rows alone (for the breakdowns filtered by another dimension: of the visits alone), compared for every rollup query above and top pages."
  echo
  echo "A change of the site's goals (three goals, one funnel) recounts its events' conversions and funnel steps and rebuilds its goal and funnel cells in the transaction storing the change: $(jq .goal_change_recount_ms "$WORK/result.json") ms for $(jq .goal_change_conversions "$WORK/result.json") conversions."
  echo
  echo "Meanwhile (the site's settings lock held exclusive, as the worker storing the change holds it) one release batch-worker drained $(jq .drain_during_goal_recount.events "$WORK/result.json") events of 20 other sites in $(jq .drain_during_goal_recount.ms "$WORK/result.json") ms ($(jq '.drain_during_goal_recount.events_per_s | floor' "$WORK/result.json") events/s; the recount still running when they were all stored: $(jq .drain_during_goal_recount.recount_still_running_when_drained "$WORK/result.json")); $(jq .drain_during_goal_recount.events_waited "$WORK/result.json") events of the recounted site (and of sites sharing its lock bucket) waited in \`events_waiting\` and were all stored $(jq .drain_during_goal_recount.waiting_stored_ms_after_recount "$WORK/result.json") ms after the recount committed."
  echo
  echo "The dashboard (release sse-gateway and stats-api, headless Chromium), three loads each: navigation to the first meaningful paint (totals, chart and visit panels drawn) and to every panel drawn (goals and funnel too):"
  echo
  echo "| period | cold: painted | cold: every panel | warm: painted | warm: every panel |"
  echo "| --- | --- | --- | --- | --- |"
  jq -r '.dashboard_paint | to_entries[] | "| \(.key) | \(.value.cold_painted_ms | map(tostring) | join(", ")) ms | \(.value.cold_ms | map(tostring) | join(", ")) ms | \(.value.warm_painted_ms | map(tostring) | join(", ")) ms | \(.value.warm_ms | map(tostring) | join(", ")) ms |"' "$WORK/result.json"
} > "$OUT/query-latest.md"
cat "$OUT/query-latest.md"
