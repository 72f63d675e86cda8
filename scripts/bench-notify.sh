#!/usr/bin/env bash
# The notification part of make bench (also runs alone): beside the ceilings of the same
# run,
#   1. webhook deliveries: one batch-worker delivering signed webhooks to a fast local
#      receiver (nginx answering 204), against the receiver's own ceiling (oha POSTing the
#      same sized body to it);
#   2. fan-out: one notification to a topic of 100,000 subscribers: its 202, when every
#      open feed stream has it, when PostgreSQL holds every feed item; and the gateway's
#      memory per feed stream beside per poll stream;
#   3. feeds: a batch of notifications to one subscriber (a goal's triggers), accepted in
#      Redis at once: how soon PostgreSQL holds every one in the user's feed.
# Results: bench/results/notify-<timestamp>.json and bench/results/notify-latest.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ENDPOINTS="${BENCH_ENDPOINTS:-100}"
NOTIFICATIONS="${BENCH_NOTIFICATIONS:-500}"
SUBSCRIBERS="${BENCH_SUBSCRIBERS:-100000}"
STREAMS="${BENCH_FEED_STREAMS:-2000}"
FEED_NOTIFICATIONS="${BENCH_FEED_NOTIFICATIONS:-20000}"
OUT="$ROOT/bench/results"; mkdir -p "$OUT"
WORK="$STATE/bench-notify"; mkdir -p "$WORK"

command -v oha >/dev/null || { say "installing oha (HTTP load generator)"; cargo install oha --locked --quiet; }
command -v nginx >/dev/null || apt_install nginx
command -v jq >/dev/null || apt_install jq

ensure_redis
[ -z "${DATABASE_URL:-}" ] || DATABASE_URL="${DATABASE_URL%/*}/tally_bench"
ensure_postgres tally_bench
case "$DATABASE_URL" in */tally_bench|*/tally_bench\?*) ;; *) die "refusing to benchmark against $DATABASE_URL" ;; esac
say "building (release)"
cargo build --release --bins --quiet
cargo build --release -p e2e --example notifybench --quiet
BIN="$(cargo_bin_dir release)"
PREFIX="tally-bench-notify"
RHOST="$(url_host "$REDIS_URL")"; RPORT="$(url_port "$REDIS_URL" 6379)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del >/dev/null
}
trap cleanup EXIT
cleanup

psql "$DATABASE_URL" -q -o /dev/null -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;"
DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" migrate > "$WORK/migrate.log" 2>&1 || die "migrations failed"

# The receiver: nginx answering 204 to every POST, counting requests in stub_status.
RECEIVER_PORT=18990
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-body;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$RECEIVER_PORT;
    location /hook { return 204; }
    location = /status { stub_status; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK" || die "nginx did not start (see $WORK/nginx-error.log)"

wait_ready() { for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return; sleep 0.1; done; die "port $1 is not ready"; }
export REDIS_KEY_PREFIX="$PREFIX" RUST_LOG=warn WEBHOOK_ALLOW_INTERNAL=true STREAM_TOKEN_SECRET=bench-secret \
  ADMIN_TOKEN=bench RATE_LIMIT_PER_IP_PER_S=0 RESTORE_CHECK_INTERVAL_MS=200
BIND_ADDR=127.0.0.1:18080 "$BIN/ingest-api" > "$WORK/ingest.log" 2>&1 & pids+=($!)
BIND_ADDR=127.0.0.1:18081 HANGUP_WATCH=false MAX_CONNECTIONS_PER_IP=100000 "$BIN/sse-gateway" > "$WORK/gateway.log" 2>&1 & pids+=($!); GATEWAY_PID=$!
BIND_ADDR=127.0.0.1:19091 RUN_MIGRATIONS=false DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" > "$WORK/worker.log" 2>&1 & pids+=($!); WORKER_PID=$!
for p in 18080 18081 19091; do wait_ready "$p"; done

say "ceiling: oha POSTing a webhook-sized body to the receiver (64 and 512 connections)"
BODY='{"type":"bench.delivery","timestamp":"2026-12-05T04:42:05.415Z","data":{"notification_id":"01a24482-62e7-7572-9dbf-2690f065fe51","title":"bench 1","body":"a signed webhook of about three hundred bytes","data":null,"priority":"normal","topic":"nobody"}}'
for c in 64 512; do
  oha --no-tui --output-format json -m POST -T application/json -d "$BODY" -c "$c" -z 8s "http://127.0.0.1:$RECEIVER_PORT/hook" > "$WORK/ceiling-$c.json"
done
CEILING=$(jq -s 'map(.summary.requestsPerSec) | max' "$WORK/ceiling-64.json" "$WORK/ceiling-512.json")

say "webhooks: $ENDPOINTS endpoints x $NOTIFICATIONS notifications, one batch-worker"
"$BIN/examples/notifybench" webhooks http://127.0.0.1:18080 bench "http://127.0.0.1:$RECEIVER_PORT/hook" \
  "http://127.0.0.1:$RECEIVER_PORT/status" "$ENDPOINTS" "$NOTIFICATIONS" "$WORKER_PID" > "$WORK/webhooks.json"
cat "$WORK/webhooks.json"

say "fan-out: one notification to $SUBSCRIBERS subscribers, $STREAMS feed streams open"
ulimit -n 65536 2>/dev/null || true
"$BIN/examples/notifybench" fanout http://127.0.0.1:18080 http://127.0.0.1:18081 bench bench-secret \
  "$REDIS_URL" "$PREFIX" "$DATABASE_URL" "$GATEWAY_PID" "$SUBSCRIBERS" "$STREAMS" > "$WORK/fanout.json"
cat "$WORK/fanout.json"

say "feeds: $FEED_NOTIFICATIONS notifications to one subscriber, accepted at once"
"$BIN/examples/notifybench" feeds http://127.0.0.1:18080 bench "$REDIS_URL" "$PREFIX" "$DATABASE_URL" \
  "$FEED_NOTIFICATIONS" > "$WORK/feeds.json"
cat "$WORK/feeds.json"

STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
jq -n --arg when "$STAMP" --argjson ceiling "$CEILING" \
  --arg cpu "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  --slurpfile webhooks "$WORK/webhooks.json" --slurpfile fanout "$WORK/fanout.json" --slurpfile feeds "$WORK/feeds.json" \
  '{when: $when, machine: $cpu,
    webhooks: ($webhooks[0] + {receiver_ceiling_requests_per_s: $ceiling,
                               ratio_to_receiver_ceiling: ($webhooks[0].steady_deliveries_per_s / $ceiling)}),
    fanout: $fanout[0], feeds: $feeds[0]}' > "$OUT/notify-$STAMP.json"
cp "$OUT/notify-$STAMP.json" "$OUT/notify-latest.json"
jq -r '
  "# Tally notifications benchmark \(.when)\n\nMachine: \(.machine). Same run, same machine.\n",
  "## Webhook deliveries, one batch-worker, a local receiver (nginx answering 204)\n",
  "| measure | value |", "| --- | --- |",
  "| deliveries | \(.webhooks.deliveries) (\(.webhooks.endpoints) endpoints x \(.webhooks.notifications) notifications), \(.webhooks.received) received in \(.webhooks.seconds * 10 | round / 10) s |",
  "| signed deliveries/s, steady (10% to 90%) | \(.webhooks.steady_deliveries_per_s | floor) |",
  "| receiver ceiling (oha POSTing the same body) | \(.webhooks.receiver_ceiling_requests_per_s | floor) req/s |",
  "| deliveries / ceiling | \(.webhooks.ratio_to_receiver_ceiling * 100 | round) % |",
  "| per core | \(.webhooks.deliveries_per_worker_cpu_s | floor) deliveries per worker CPU-second |",
  "\n## Fan-out: one notification to a topic of \(.fanout.subscribers) subscribers\n",
  "| measure | value |", "| --- | --- |",
  "| 202 of the notification | \(.fanout.accepted_ms * 10 | round / 10) ms (small notifications: p50 \(.fanout.small_accept.p50_ms * 100 | round / 100) ms, p99 \(.fanout.small_accept.p99_ms * 100 | round / 100) ms) |",
  "| every one of \(.fanout.feed_streams_open) open feed streams got it | \(.fanout.all_open_streams_got_it_ms // -1 | floor) ms (p50 \(.fanout.stream_arrival.p50_ms // 0 | floor) ms) |",
  "| PostgreSQL holds all \(.fanout.subscribers) feed items | \(.fanout.all_feed_items_stored_ms // -1 | floor) ms |",
  "| gateway memory per stream | feed \(.fanout.gateway_kib_per_feed_stream * 10 | round / 10) KiB, poll \(.fanout.gateway_kib_per_poll_stream * 10 | round / 10) KiB (\(.fanout.poll_streams_open) of each, same gateway) |",
  "\n## Feeds: \(.feeds.notifications) notifications to one subscriber (a goal'"'"'s triggers), accepted at once\n",
  "| measure | value |", "| --- | --- |",
  "| accepted in Redis | \(.feeds.accepted_ms | floor) ms |",
  "| PostgreSQL holds every one in the user'"'"'s feed | \(.feeds.all_in_the_feed_ms // -1 | floor) ms (\(.feeds.notifications_per_s // 0 | floor) notifications/s) |"
' "$OUT/notify-latest.json" > "$OUT/notify-latest.md"
cat "$OUT/notify-latest.md"
