#!/usr/bin/env bash
# The export part of make bench (also runs alone): an export job of BENCH_EXPORT_EVENTS raw
# events (default 2,000,000) of one site, from POST /v1/sites/{id}/exports to the job done
# (one release batch-worker), and its download from stats-api; beside, in the same run,
# the ceiling: PostgreSQL producing the same CSV (the same COPY of the same rows) into
# /dev/null, and the download's floor (the CSV read back from PostgreSQL alone).
# Results: bench/results/export-<timestamp>.json and bench/results/export-latest.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

EVENTS="${BENCH_EXPORT_EVENTS:-2000000}"
OUT="$ROOT/bench/results"; mkdir -p "$OUT"
WORK="$STATE/bench-export"; mkdir -p "$WORK"

ensure_redis
[ -z "${DATABASE_URL:-}" ] || DATABASE_URL="${DATABASE_URL%/*}/tally_bench_export"
ensure_postgres tally_bench_export
case "$DATABASE_URL" in */tally_bench_export|*/tally_bench_export\?*) ;; *) die "refusing to benchmark against $DATABASE_URL" ;; esac
say "building (release)"
cargo build --release --bins --quiet
BIN="$(cargo_bin_dir release)"
PREFIX="tally-bench-export"
RHOST="$(url_host "$REDIS_URL")"; RPORT="$(url_port "$REDIS_URL" 6379)"
elapsed() { awk -v t0="$1" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.2f", t1 - t0 }'; }
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

say "writing $EVENTS raw events of one site over the last 28 days"
t0=$(date +%s)
psql "$DATABASE_URL" -q -o /dev/null <<SQL
SELECT tally_event_partition(d::date) FROM generate_series(now() - interval '30 days', now(), interval '1 day') d;
INSERT INTO events (event_id, site_id, event_type, ts, path, user_id, props, received_at, hostname,
                    referrer, referrer_source, utm_source, utm_medium, utm_campaign, device, browser, os, country)
SELECT gen_random_uuid(), 'big.example', CASE WHEN i % 20 = 0 THEN 'signup' ELSE 'page_view' END,
       now() - interval '28 days' + (i::float8 / $EVENTS) * interval '28 days',
       '/p' || (floor(power(random(), 3) * 500))::int, 'v' || (i % ($EVENTS / 3)),
       CASE WHEN i % 20 = 0 THEN '{"plan": "pro", "seats": 3}'::jsonb END, now(), 'big.example',
       CASE WHEN i % 9 = 2 THEN 'https://www.google.com/' END,
       (ARRAY[NULL, NULL, 'Google', 'Google', 'Hacker News', 'Twitter', 'blog.example.org', 'DuckDuckGo', 'Reddit'])[1 + (i % 9)],
       CASE WHEN i % 7 = 0 THEN 'newsletter' END, CASE WHEN i % 7 = 0 THEN 'email' END,
       CASE WHEN i % 7 = 0 THEN 'december' END,
       (ARRAY['desktop', 'mobile', 'mobile', 'tablet'])[1 + (i % 4)],
       (ARRAY['Chrome', 'Safari', 'Firefox', 'Edge', 'Chrome'])[1 + (i % 5)],
       (ARRAY['Windows', 'iOS', 'Android', 'macOS', 'Linux'])[1 + (i % 5)],
       (ARRAY['US', 'DE', 'FR', 'GB', 'IN', 'BR', 'JP', 'NL', 'ES', 'IT'])[1 + (i % 10)]
FROM generate_series(1, $EVENTS) AS i;
VACUUM ANALYZE events;
CHECKPOINT;
SQL
say "  written in $(( $(date +%s) - t0 )) s"

FIRST="$(date -u -d '29 days ago' +%F)"; LAST="$(date -u +%F)"
say "ceiling: PostgreSQL's COPY of the same rows as CSV into /dev/null"
COPY_SQL="COPY (SELECT event_id, ts AT TIME ZONE 'UTC', event_type, user_id, path, hostname, referrer, referrer_source, utm_source, utm_medium, utm_campaign, utm_term, utm_content, device, browser, os, country, props FROM events WHERE site_id = 'big.example' AND ts >= '$FIRST' AND ts < '$LAST'::date + 1 ORDER BY ts) TO STDOUT (FORMAT csv)"
t0=$(date +%s.%N)
psql "$DATABASE_URL" -qAt -c "SET TimeZone = UTC; $COPY_SQL" > /dev/null
COPY_S=$(elapsed "$t0")

port_free 19180; port_free 19182; port_free 19191
common=(REDIS_KEY_PREFIX="$PREFIX" RUST_LOG=warn DATABASE_URL="$DATABASE_URL" ADMIN_TOKEN=bench)
env "${common[@]}" BIND_ADDR=127.0.0.1:19180 "$BIN/ingest-api" > "$WORK/ingest-api.log" 2>&1 & pids+=($!)
env "${common[@]}" BIND_ADDR=127.0.0.1:19182 "$BIN/stats-api" > "$WORK/stats-api.log" 2>&1 & pids+=($!)
env "${common[@]}" BIND_ADDR=127.0.0.1:19191 EXPORT_POLL_INTERVAL_MS=50 "$BIN/batch-worker" > "$WORK/batch-worker.log" 2>&1 & pids+=($!)
for port in 19180 19182 19191; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done

say "the export job, created to done"
t0=$(date +%s.%N)
job="$(curl -fsS -X POST http://127.0.0.1:19180/v1/sites/big.example/exports -H 'Authorization: Bearer bench' \
  -H 'Content-Type: application/json' -d "{\"date_range\": [\"$FIRST\", \"$LAST\"]}")"
job_id="$(jq -r .job_id <<<"$job")"
curl -sS -N --max-time 1800 "http://127.0.0.1:19182/v1/jobs/$job_id/stream" > "$WORK/stream.txt"
JOB_S=$(elapsed "$t0")
status="$(curl -fsS "http://127.0.0.1:19182/v1/jobs/$job_id")"
[ "$(jq -r .state <<<"$status")" = done ] || die "the export did not finish: $status"
ROWS="$(jq .completed <<<"$status")"

say "the download, and its floor (the parts read back from PostgreSQL alone)"
t0=$(date +%s.%N)
curl -fsS "http://127.0.0.1:19182/v1/jobs/$job_id/download" -o "$WORK/export.csv"
DOWNLOAD_S=$(elapsed "$t0")
LINES=$(($(wc -l < "$WORK/export.csv") - 1))
BYTES=$(stat -c %s "$WORK/export.csv")
rm -f "$WORK/export.csv"
t0=$(date +%s.%N)
psql "$DATABASE_URL" -qAt -c "COPY (SELECT data FROM export_parts WHERE job_id = '$job_id' ORDER BY page, part) TO STDOUT (FORMAT binary)" > /dev/null
READ_S=$(elapsed "$t0")
PAGES="$(psql "$DATABASE_URL" -qAt -c "SELECT jsonb_array_length(plan) FROM export_jobs WHERE job_id = '$job_id'")"

rate() { awk -v r="$1" -v s="$2" 'BEGIN { printf "%d", r / s }'; }
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
jq -n --arg at "$STAMP" --argjson rows "$ROWS" --argjson lines "$LINES" --argjson bytes "$BYTES" --argjson pages "$PAGES" \
  --argjson job_s "$JOB_S" --argjson copy_s "$COPY_S" --argjson download_s "$DOWNLOAD_S" --argjson read_s "$READ_S" \
  '{at: $at, rows: $rows, csv_lines: $lines, csv_bytes: $bytes, pages: $pages,
    job_s: $job_s, job_rows_per_s: ($rows / $job_s | floor),
    copy_ceiling_s: $copy_s, copy_ceiling_rows_per_s: ($rows / $copy_s | floor),
    job_vs_ceiling: ($copy_s / $job_s * 100 | floor / 100),
    download_s: $download_s, download_rows_per_s: ($rows / $download_s | floor),
    download_floor_s: $read_s, download_vs_floor: ($read_s / $download_s * 100 | floor / 100)}' > "$OUT/export-$STAMP.json"
[ "$LINES" = "$ROWS" ] || die "the CSV holds $LINES rows, the job says $ROWS"
cp "$OUT/export-$STAMP.json" "$OUT/export-latest.json"
{
  echo "# Export benchmark $STAMP"
  echo
  echo "One site, $ROWS raw events over 28 days exported as CSV ($(($BYTES / 1048576)) MiB, $PAGES pages); one release batch-worker, default settings; PostgreSQL on the same 2 cores."
  echo
  echo "| measure | time | rows/s | against the same run's ceiling |"
  echo "| --- | --- | --- | --- |"
  echo "| export job, created to done | ${JOB_S} s | $(rate "$ROWS" "$JOB_S") | $(jq .job_vs_ceiling "$OUT/export-latest.json")x of PostgreSQL's COPY alone |"
  echo "| ceiling: the same COPY into /dev/null | ${COPY_S} s | $(rate "$ROWS" "$COPY_S") | |"
  echo "| download (stats-api, streamed) | ${DOWNLOAD_S} s | $(rate "$ROWS" "$DOWNLOAD_S") | $(jq .download_vs_floor "$OUT/export-latest.json")x of reading the parts alone |"
  echo "| floor: the parts read back by psql | ${READ_S} s | $(rate "$ROWS" "$READ_S") | |"
} > "$OUT/export-latest.md"
cat "$OUT/export-latest.md"
