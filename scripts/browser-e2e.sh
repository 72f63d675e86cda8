#!/usr/bin/env bash
# The demo page, the tracker and the dashboard in Debian's headless Chromium, driven by
# playwright-core: starts ingest-api, batch-worker, stats-api and sse-gateway (debug builds) on free ports with a key prefix
# and database of their own, runs crates/sse-gateway/tests/browser, stops them.
# Screenshots go to test-artifacts/. Installs Chromium and playwright-core when missing.
# Expects REDIS_URL and DATABASE_URL (scripts/test.sh exports them).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

[ -x /usr/bin/chromium ] || apt_install chromium
command -v node >/dev/null || apt_install nodejs npm
BROWSER_DIR="$ROOT/crates/sse-gateway/tests/browser"
if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  say "installing playwright-core"
  (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi

BIN="$(cargo_bin_dir debug)"
for b in ingest-api batch-worker stats-api sse-gateway; do
  [ -x "$BIN/$b" ] || cargo build --bin "$b" --quiet
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RUN_ID="browser$(date +%s)$$"
PREFIX="tally-$RUN_ID"
ADMIN="browser-admin-token"
DB_URL="${DATABASE_URL%/*}/tally_t_$RUN_ID"
psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE tally_t_$RUN_ID" >/dev/null
LOGS="$ROOT/test-artifacts/browser-logs"; mkdir -p "$LOGS"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS tally_t_$RUN_ID WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
}
trap cleanup EXIT

INGEST_PORT=$(free_port); GATEWAY_PORT=$(free_port); WORKER_PORT=$(free_port); STATS_PORT=$(free_port)
export REDIS_KEY_PREFIX="$PREFIX" RUST_LOG=warn
DATABASE_URL="$DB_URL" BIND_ADDR="127.0.0.1:$WORKER_PORT" RESTORE_CHECK_INTERVAL_MS=200 "$BIN/batch-worker" > "$LOGS/batch-worker.log" 2>&1 & pids+=($!)
export STREAM_TOKEN_SECRET="browser-stream-secret"
BIND_ADDR="127.0.0.1:$INGEST_PORT" ADMIN_TOKEN="$ADMIN" "$BIN/ingest-api" > "$LOGS/ingest-api.log" 2>&1 & pids+=($!)
DATABASE_URL="$DB_URL" BIND_ADDR="127.0.0.1:$STATS_PORT" "$BIN/stats-api" > "$LOGS/stats-api.log" 2>&1 & pids+=($!)
BIND_ADDR="127.0.0.1:$GATEWAY_PORT" PUBLIC_INGEST_URL="http://127.0.0.1:$INGEST_PORT" PUBLIC_STATS_URL="http://127.0.0.1:$STATS_PORT" \
  DEMO_FEED_USER=demo-user "$BIN/sse-gateway" > "$LOGS/sse-gateway.log" 2>&1 & pids+=($!)
for port in "$INGEST_PORT" "$GATEWAY_PORT" "$WORKER_PORT" "$STATS_PORT"; do
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || die "service on port $port did not become ready (logs in $LOGS)"
done

say "browser test: the demo page in headless Chromium"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT" INGEST_URL="http://127.0.0.1:$INGEST_PORT" ADMIN_TOKEN="$ADMIN" \
  ARTIFACTS="$ROOT/test-artifacts" node "$BROWSER_DIR/demo.test.mjs"

say "browser test: tally.js on a test site in headless Chromium"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT" INGEST_URL="http://127.0.0.1:$INGEST_PORT" DATABASE_URL="$DB_URL" \
  ARTIFACTS="$ROOT/test-artifacts" node "$BROWSER_DIR/tracker.test.mjs"

say "browser test: the dashboard in headless Chromium"
GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT" INGEST_URL="http://127.0.0.1:$INGEST_PORT" STATS_URL="http://127.0.0.1:$STATS_PORT" \
  DATABASE_URL="$DB_URL" ADMIN_TOKEN="$ADMIN" ARTIFACTS="$ROOT/test-artifacts" node "$BROWSER_DIR/dashboard.test.mjs"
