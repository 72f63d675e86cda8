#!/usr/bin/env bash
# make fuzz: the abuse suite. Starts the four services (debug builds) on free ports with a
# key prefix and database of their own, seeds a poll and a site, then
#   1. schemathesis against the three OpenAPI documents: every answer must be a documented
#      status with a body matching its schema, and never a 5xx;
#   2. scripts/fuzz_attacks.py: the hand-made attacks (huge ids, a batch of 100,000 {},
#      NUL bytes, slow bodies and slow headers beside normal traffic), with ingest-api's
#      memory measured;
#   3. every service's /metrics: no 5xx answered once seeded (a 503 "restoring" while the worker puts the registries back is retried); no panic in any log.
# FUZZ_EXAMPLES (default 300) cases per operation; FUZZ_SEED fixes the generator (make test
# runs a short, seeded pass). Summary in test-artifacts/fuzz/summary.txt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

EXAMPLES="${FUZZ_EXAMPLES:-300}"
ensure_redis
ensure_postgres postgres

VENV="$STATE/venv-fuzz"
if [ ! -x "$VENV/bin/st" ]; then
  say "installing schemathesis (PyPI)"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check schemathesis==4.32.5
fi

BIN="$(cargo_bin_dir debug)"
for b in ingest-api batch-worker sse-gateway stats-api; do
  [ -x "$BIN/$b" ] || cargo build --bin "$b" --quiet
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
RUN_ID="fuzz$(date +%s)$$"
PREFIX="tally-$RUN_ID"
ADMIN="fuzz-admin-token"; STATS="fuzz-stats-token"
DB="tally_t_$RUN_ID"
DB_URL="${DATABASE_URL%/*}/$DB"
psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE $DB" >/dev/null
OUT="$ROOT/test-artifacts/fuzz"; rm -rf "$OUT"; mkdir -p "$OUT"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
}
trap cleanup EXIT

INGEST=$(free_port); GATEWAY=$(free_port); STATS_PORT=$(free_port); WORKER=$(free_port)
export REDIS_KEY_PREFIX="$PREFIX" RUST_LOG=info LOG_FORMAT=json
# The limits a fuzzer would trip are raised: it sends thousands of requests from one address.
DATABASE_URL="$DB_URL" BIND_ADDR="127.0.0.1:$WORKER" "$BIN/batch-worker" > "$OUT/batch-worker.log" 2>&1 & pids+=($!)
BIND_ADDR="127.0.0.1:$INGEST" ADMIN_TOKEN="$ADMIN" RATE_LIMIT_PER_IP_PER_S=0 VOTE_RATE_LIMIT_PER_IP_PER_S=0 \
  VOTE_RATE_LIMIT_PER_POLL_PER_S=0 BODY_READ_TIMEOUT_MS=3000 "$BIN/ingest-api" > "$OUT/ingest-api.log" 2>&1 & pids+=($!)
INGEST_PID=$!
BIND_ADDR="127.0.0.1:$GATEWAY" MAX_CONNECTIONS_PER_IP=5000 "$BIN/sse-gateway" > "$OUT/sse-gateway.log" 2>&1 & pids+=($!)
DATABASE_URL="$DB_URL" BIND_ADDR="127.0.0.1:$STATS_PORT" STATS_TOKEN="$STATS" "$BIN/stats-api" > "$OUT/stats-api.log" 2>&1 & pids+=($!)
for port in "$INGEST" "$GATEWAY" "$STATS_PORT" "$WORKER"; do
  for _ in $(seq 200); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || die "service on port $port did not become ready (logs in $OUT)"
done

# 5xx answered so far by every service (their /metrics).
answered_5xx() {
  local total=0 n port
  for port in "$INGEST" "$GATEWAY" "$STATS_PORT" "$WORKER"; do
    n=$(curl -fsS "http://127.0.0.1:$port/metrics" | python3 -c '
import re,sys
total=0
for line in sys.stdin:
    if "_http_requests_total{" in line and re.search(r"status=\"5\d\d\"", line):
        total += int(float(line.rsplit(" ",1)[1]))
print(total)')
    total=$((total + n))
  done
  echo "$total"
}

say "fuzz: seeding a poll, a site and events"
# Ready is not yet writable: until the worker has put the registries back into Redis,
# writes answer 503 "restoring" (with Retry-After), as a client is told to retry them.
seed() { curl -fsS --retry 10 --retry-max-time 30 "$@"; }
POLL=$(seed -X POST "http://127.0.0.1:$INGEST/v1/polls" -H "authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' -d '{"question":"Fuzz?","options":["yes","no"],"allow_change":true}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["poll_id"])')
seed -X POST "http://127.0.0.1:$INGEST/v1/sites" -H "authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' -d '{"site_id":"fuzz-site","timezone":"Europe/Paris"}' >/dev/null
seed -X POST "http://127.0.0.1:$INGEST/v1/events" -H 'content-type: application/json' \
  -d '{"events":[{"site_id":"fuzz-site","event_type":"page_view","timestamp":"2026-11-30T10:00:00Z","path":"/","user_id":"u1"}]}' >/dev/null
for _ in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $STATS" "http://127.0.0.1:$STATS_PORT/v1/polls/$POLL")" = 200 ] && break
  sleep 0.1
done

NOTIFICATION=$(seed -X POST "http://127.0.0.1:$INGEST/v1/notifications" -H "authorization: Bearer $ADMIN" \
  -H 'content-type: application/json' -d '{"recipients":["fuzz-user"],"title":"Fuzz","body":"b","channels":["in_app"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["notification_id"])')
# The seeding's 503s ("restoring", retried) are not the fuzzer's findings.
SEEDING_5XX=$(answered_5xx)
cat > "$OUT/schemathesis.toml" <<TOML
[parameters]
poll_id = "$POLL"
site_id = "fuzz-site"
notification_id = "$NOTIFICATION"
user_id = "fuzz-user"
TOML

FAILED=0
declare -A CASES
fuzz_service() { # name port token
  local name="$1" port="$2" token="$3" log="$OUT/schemathesis-$1.txt"
  local args=(run "http://127.0.0.1:$port/openapi.json"
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,unsupported_method
    --max-examples "$EXAMPLES" --request-timeout 20 --exclude-path-regex '/stream$' --no-color
    --suppress-health-check all -H "Authorization: Bearer $token")
  [ -z "${FUZZ_SEED:-}" ] || args+=(--seed "$FUZZ_SEED")
  say "fuzz: schemathesis against $name ($EXAMPLES cases per operation)"
  if ! (cd "$OUT" && "$VENV/bin/st" "${args[@]}") > "$log" 2>&1; then
    FAILED=1
    grep -v '^$' "$log" | sed -n '/FAILURES/,/SUMMARY/p' | head -80 >&2
  fi
  CASES[$name]=$(grep -Eo '[0-9]+ generated' "$log" | grep -Eo '[0-9]+' | tail -1)
  echo "  $name: $(grep -E 'generated,' "$log" | tail -1 | sed 's/^ *//')"
}
fuzz_service ingest-api "$INGEST" "$ADMIN"
fuzz_service sse-gateway "$GATEWAY" "none"
fuzz_service stats-api "$STATS_PORT" "$STATS"

say "fuzz: hand-made attacks"
INGEST_URL="http://127.0.0.1:$INGEST" GATEWAY_URL="http://127.0.0.1:$GATEWAY" \
  STATS_URL="http://127.0.0.1:$STATS_PORT" STATS_TOKEN="$STATS" POLL_ID="$POLL" INGEST_PID="$INGEST_PID" \
  STATS_LOG="$OUT/stats-api.log" FUZZ_SHORT="${FUZZ_SHORT:-0}" \
  python3 scripts/fuzz_attacks.py > "$OUT/attacks.txt" 2>&1 || { FAILED=1; cat "$OUT/attacks.txt" >&2; }
sed 's/^/  /' "$OUT/attacks.txt"

say "fuzz: 5xx answered and panics after the seeding"
FIVES=$(( $(answered_5xx) - SEEDING_5XX ))
PANICS=$(cat "$OUT"/*.log | grep -c 'panicked' || true)
{
  echo "schemathesis cases: ingest-api ${CASES[ingest-api]:-?}, sse-gateway ${CASES[sse-gateway]:-?}, stats-api ${CASES[stats-api]:-?}"
  echo "5xx answered (all services, after the seeding): $FIVES"
  echo "panics in logs: $PANICS"
  cat "$OUT/attacks.txt"
} > "$OUT/summary.txt"
echo "  5xx answered: $FIVES, panics: $PANICS (summary in $OUT/summary.txt)"
[ "$FIVES" = 0 ] || { echo "fuzz: $FIVES answers were 5xx" >&2; FAILED=1; }
[ "$PANICS" = 0 ] || { grep -h panicked "$OUT"/*.log | head -5 >&2; FAILED=1; }
[ "$FAILED" = 0 ] || die "make fuzz found failures (see $OUT)"
say "fuzz: passed"
