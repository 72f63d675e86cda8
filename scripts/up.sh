#!/usr/bin/env bash
# make up: the whole stack on this machine, no Docker. Idempotent: starts only what is not
# running. Logs and pid files in .tally/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_postgres tally

# Tokens: from the environment, else the ones generated on an earlier run, else new ones.
TOKENS="$STATE/tokens.env"
[ -f "$TOKENS" ] && source "$TOKENS"
ADMIN_TOKEN="${ADMIN_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
STATS_TOKEN="${STATS_TOKEN:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
umask 077; printf 'ADMIN_TOKEN=%s\nSTATS_TOKEN=%s\n' "$ADMIN_TOKEN" "$STATS_TOKEN" > "$TOKENS"; umask 022
export ADMIN_TOKEN STATS_TOKEN

say "building (release)"
cargo build --release --bins --quiet
BIN="$(cargo_bin_dir release)"

say "applying migrations"
"$BIN/batch-worker" migrate >> "$STATE/logs/migrate.log" 2>&1 || die "migrations failed (see $STATE/logs/migrate.log)"

running() { local pid; pid="$(cat "$STATE/run/$1.pid" 2>/dev/null)" && kill -0 "$pid" 2>/dev/null; }

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

cat <<MSG

Tally is up.
  ingest-api    http://127.0.0.1:8080   (POST /v1/events, /api/event)
  sse-gateway   http://127.0.0.1:8081   (demo page: /)
  stats-api     http://127.0.0.1:8082   (GET /v1/stats, /api/stats, /v1/sites/{id}/timeseries)
  batch-worker  http://127.0.0.1:9091   (/healthz, /readyz, /metrics)
  edge (nginx)  ${EDGE:-not running (nginx is not installed)}
  Redis         $REDIS_URL
  PostgreSQL    $DATABASE_URL
  ADMIN_TOKEN   $ADMIN_TOKEN
  STATS_TOKEN   $STATS_TOKEN
Logs: make logs    Stop: make down
MSG
