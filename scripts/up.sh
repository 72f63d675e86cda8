#!/usr/bin/env bash
# make up: the whole stack on this machine, no Docker. Idempotent: starts only what is not
# running, and restarts what runs with other tokens than asked for. Logs and pid files in
# .tally/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_postgres tally
command -v nginx >/dev/null || (apt_install nginx) || echo "  nginx could not be installed: no edge on :3000" >&2

# Tokens. One given in the environment always wins. ADMIN_TOKEN is otherwise the one an
# earlier run generated (kept in .tally/tokens.env), or a new one; so is the secret of
# signed stream tokens. STATS_TOKEN is only ever what the environment says: without it,
# stats reads are open, as the seed designs' clients expect (`/api/stats` without a token).
TOKENS="$STATE/tokens.env"
stored() { if [ -f "$TOKENS" ]; then sed -n "s/^$1=//p" "$TOKENS" | head -n 1; fi; }
new_token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
ADMIN_TOKEN="${ADMIN_TOKEN:-$(stored ADMIN_TOKEN)}"; ADMIN_TOKEN="${ADMIN_TOKEN:-$(new_token)}"
STREAM_TOKEN_SECRET="${STREAM_TOKEN_SECRET:-$(stored STREAM_TOKEN_SECRET)}"
STREAM_TOKEN_SECRET="${STREAM_TOKEN_SECRET:-$(new_token)}"
VOTER_TOKEN_SECRET="${VOTER_TOKEN_SECRET:-$(stored VOTER_TOKEN_SECRET)}"
VOTER_TOKEN_SECRET="${VOTER_TOKEN_SECRET:-$(new_token)}"
STATS_TOKEN="${STATS_TOKEN:-}"
umask 077
printf 'ADMIN_TOKEN=%s\nSTREAM_TOKEN_SECRET=%s\nVOTER_TOKEN_SECRET=%s\n' "$ADMIN_TOKEN" "$STREAM_TOKEN_SECRET" "$VOTER_TOKEN_SECRET" > "$TOKENS"
umask 022
# The edge on loopback is the one proxy whose X-Forwarded-For is believed.
export ADMIN_TOKEN STATS_TOKEN STREAM_TOKEN_SECRET VOTER_TOKEN_SECRET TRUSTED_PROXIES="${TRUSTED_PROXIES:-127.0.0.1/32}"
# A development stack on loopback: webhooks may go to local receivers, and the demo page's
# bell shows the notifications of DEMO_FEED_USER (never set either on a public server).
export WEBHOOK_ALLOW_INTERNAL="${WEBHOOK_ALLOW_INTERNAL:-true}" DEMO_FEED_USER="${DEMO_FEED_USER-demo-user}"

say "building (release)"
cargo build --release --bins --quiet
BIN="$(cargo_bin_dir release)"

say "applying migrations"
"$BIN/batch-worker" migrate >> "$STATE/logs/migrate.log" 2>&1 || die "migrations failed (see $STATE/logs/migrate.log)"

# Running means alive, not a zombie, and the program it was started as (a pid can be
# reused after a crash).
running() {
  local pid; pid="$(cat "$STATE/run/$1.pid" 2>/dev/null)" || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" != Z* ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"
}

stop() { # name
  local pid; pid="$(cat "$STATE/run/$1.pid" 2>/dev/null)" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do running "$1" || break; sleep 0.2; done
  if running "$1"; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$STATE/run/$1.pid"
}

# Services started with other tokens or settings than these are restarted.
SIGNATURE="$(printf '%s\n' "$ADMIN_TOKEN" "$STATS_TOKEN" "$STREAM_TOKEN_SECRET" "$VOTER_TOKEN_SECRET" "$TRUSTED_PROXIES" \
  "$REDIS_URL" "${REDIS_KEY_PREFIX:-}" "$DATABASE_URL" "$(command -v nginx || true)" "$WEBHOOK_ALLOW_INTERNAL" "$DEMO_FEED_USER" \
  "${SMTP_URL:-}" "${SMS_API_URL:-}" | sha256sum | cut -c1-16)"
if [ "$(cat "$STATE/run/config.sig" 2>/dev/null)" != "$SIGNATURE" ]; then
  for svc in ingest-api sse-gateway stats-api batch-worker; do
    if running "$svc"; then echo "  restarting $svc (tokens or settings changed)"; stop "$svc"; fi
  done
fi
echo "$SIGNATURE" > "$STATE/run/config.sig"

start() { # name port
  local name="$1" port="$2"
  if running "$name"; then echo "  $name already running (pid $(cat "$STATE/run/$name.pid"))"; return; fi
  BIND_ADDR="127.0.0.1:$port" nohup "$BIN/$name" >> "$STATE/logs/$name.log" 2>&1 &
  echo $! > "$STATE/run/$name.pid"
  echo "  started $name (pid $!)"
}

# Without the nginx edge the demo page posts votes to ingest-api's own port.
command -v nginx >/dev/null || export PUBLIC_INGEST_URL=":8080" PUBLIC_STATS_URL=":8082"

say "starting services"
start ingest-api 8080
start sse-gateway 8081
start stats-api 8082
start batch-worker 9091

wait_ready() { # name port
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; then return 0; fi
    running "$1" || break
    sleep 0.2
  done
  echo "  $1 is not ready; last log lines:" >&2; tail -n 20 "$STATE/logs/$1.log" >&2; return 1
}
failed=0
for svc in ingest-api:8080 sse-gateway:8081 stats-api:8082 batch-worker:9091; do
  wait_ready "${svc%%:*}" "${svc##*:}" || failed=1
done
[ "$failed" = 0 ] || die "some services did not become ready"

EDGE=""
if command -v nginx >/dev/null; then
  render_edge_config "$STATE/nginx.conf"
  if ! running nginx; then
    nginx -c "$STATE/nginx.conf" -p "$STATE" >/dev/null 2>&1 && echo "  started nginx (edge)" || echo "  nginx failed to start; see $STATE/logs/nginx-error.log"
  fi
  running nginx && EDGE="http://127.0.0.1:3000"
fi

if [ -n "$STATS_TOKEN" ]; then
  READS="$STATS_TOKEN   (stats need 'Authorization: Bearer' with it, except public sites)"
else
  READS="not set: stats reads are open (set STATS_TOKEN and run make up again to require one)"
fi
cat <<MSG

Tally is up.
  ingest-api    http://127.0.0.1:8080   (POST /v1/events, /api/event, /v1/notifications; /v1/sites, /v1/polls, /v1/webhooks/endpoints admin)
  sse-gateway   http://127.0.0.1:8081   (demo page: /, dashboard: /dashboard/{site_id}, tracker: /tally.js, feeds: /v1/users/{id}/feed/stream)
  stats-api     http://127.0.0.1:8082   (POST /v2/query, GET /v1/stats, /api/stats, /v1/sites/{id}/timeseries, /v1/notifications/{id}, /v1/dead-letters)
  batch-worker  http://127.0.0.1:9091   (/healthz, /readyz, /metrics)
  edge (nginx)  ${EDGE:-not running (nginx could not be installed)}
  Redis         $REDIS_URL
  PostgreSQL    $DATABASE_URL
  ADMIN_TOKEN   $ADMIN_TOKEN
  STATS_TOKEN   $READS
  STREAM_TOKEN_SECRET and VOTER_TOKEN_SECRET are in $TOKENS (they sign stream and feed tokens, and voter tokens)
  Demo bell     notifications to user "${DEMO_FEED_USER:-(off)}" show on the demo page; webhooks may go to local addresses
Logs: make logs    Stop: make down
MSG
