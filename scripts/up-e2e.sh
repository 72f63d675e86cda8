#!/usr/bin/env bash
# The README's first command as a new user runs it: `make up`, then the analytics seed
# design's own client flow through the one origin on :3000 (five POST /api/event, then
# GET /api/stats without a token) must give the seed's numbers; then tokens given in the
# environment after that earlier `make up` must be the ones in force. Stops the stack it
# started. Skipped (with a message) when the stack's ports are taken by something else.
set -euo pipefail
# A state folder and key prefix of its own: the developer's tokens, logs and data stay.
TALLY_STATE_DIR="$(mktemp -d /tmp/tally-up-e2e.XXXXXX)"
export TALLY_STATE_DIR REDIS_KEY_PREFIX="tally-up-e2e-$$"
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

for port in 8080 8081 8082 9091 3000; do
  if port_open 127.0.0.1 "$port"; then
    say "up-e2e skipped: port $port is in use (stop what runs there, or make down)"
    exit 0
  fi
done

ensure_postgres postgres
DB="tally_up_e2e_$$"
export DATABASE_URL="${DATABASE_URL%/*}/$DB"
unset ADMIN_TOKEN STATS_TOKEN STREAM_TOKEN_SECRET VOTER_TOKEN_SECRET
cleanup() {
  scripts/down.sh >/dev/null 2>&1 || true
  psql "${DATABASE_URL%/*}/postgres" -qc "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "$REDIS_KEY_PREFIX:*" \
    | xargs -r -n 500 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" del >/dev/null 2>&1 || true
  rm -rf "$TALLY_STATE_DIR"
}
trap cleanup EXIT

say "up-e2e: make up"
scripts/up.sh
EDGE=http://localhost:3000
port_open 127.0.0.1 3000 || die "make up did not start the edge on :3000"

SITE="site-abc-123-$$"
post() { # path user timestamp
  curl -fsS -X POST "$EDGE/api/event" -H "Content-Type: application/json" \
    -d "{\"site_id\":\"$SITE\",\"event_type\":\"page_view\",\"path\":\"$1\",\"user_id\":\"$2\",\"timestamp\":\"$3\"}"
  echo
}
say "up-e2e: the seed client's five events"
post / user-123 2025-11-14T10:00:00Z
post /pricing user-456 2025-11-14T10:05:00Z
post /pricing user-123 2025-11-14T10:10:00Z
post /blog user-789 2025-11-15T09:00:00Z
post / user-123 2025-11-15T09:30:00Z

want='{"site_id":"'"$SITE"'","date":"2025-11-14","total_views":3,"unique_users":2,"top_paths":[{"path":"/pricing","views":2},{"path":"/","views":1}]}'
same_json() { python3 -c 'import json,sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
got=""
for _ in $(seq 150); do
  got="$(curl -sS "$EDGE/api/stats?site_id=$SITE&date=2025-11-14")"
  same_json "$got" "$want" && break
  sleep 0.2
done
same_json "$got" "$want" || die "seed flow: expected $want, got $got"
echo "  /api/stats without a token: $got"

say "up-e2e: tokens from the environment win over the stored ones"
STATS_TOKEN=e2e-stats ADMIN_TOKEN=e2e-admin scripts/up.sh >/dev/null
code="$(curl -s -o /dev/null -w '%{http_code}' "$EDGE/api/stats?site_id=$SITE")"
[ "$code" = 401 ] || die "with STATS_TOKEN set, /api/stats without it answered $code"
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer e2e-stats' "$EDGE/api/stats?site_id=$SITE")"
[ "$code" = 200 ] || die "with the STATS_TOKEN from the environment, /api/stats answered $code"
code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "$EDGE/v1/sites" -H 'Authorization: Bearer e2e-admin' \
  -H 'Content-Type: application/json' -d "{\"site_id\":\"$SITE-registered\"}")"
[ "$code" = 201 ] || die "with the ADMIN_TOKEN from the environment, POST /v1/sites answered $code"
echo "  the environment's STATS_TOKEN and ADMIN_TOKEN are in force"

say "up-e2e: a site's funnels are made on ingest-api and read from stats-api, one origin"
admin=(-H 'Authorization: Bearer e2e-admin' -H 'Content-Type: application/json')
curl -fsS -X POST "$EDGE/v1/sites/$SITE-registered/goals" "${admin[@]}" -d '{"event_name":"Signup"}' >/dev/null \
  || die "POST a goal through the edge failed"
curl -fsS -X POST "$EDGE/v1/sites/$SITE-registered/goals" "${admin[@]}" -d '{"page_path":"/thanks"}' >/dev/null \
  || die "POST a second goal through the edge failed"
funnel="$(curl -fsS -X POST "$EDGE/v1/sites/$SITE-registered/funnels" "${admin[@]}" \
  -d '{"name":"f","steps":["Signup","Visit /thanks"]}')" || die "POST a funnel through the edge failed"
funnel_id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["funnel_id"])' <<<"$funnel")"
for _ in $(seq 1 100); do
  listed="$(curl -sS -H 'Authorization: Bearer e2e-stats' "$EDGE/v1/sites/$SITE-registered/funnels")"
  grep -q "$funnel_id" <<<"$listed" && break
  sleep 0.1
done
grep -q "$funnel_id" <<<"$listed" || die "GET the funnels through the edge: $listed"
code="$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer e2e-stats' \
  "$EDGE/v1/sites/$SITE-registered/funnels/$funnel_id?date_range=7d")"
[ "$code" = 200 ] || die "the funnel's report through the edge answered $code"
code="$(curl -s -o /dev/null -w '%{http_code}' -X DELETE -H 'Authorization: Bearer e2e-admin' \
  "$EDGE/v1/sites/$SITE-registered/funnels/$funnel_id")"
[ "$code" = 204 ] || die "DELETE the funnel through the edge answered $code"
echo "  goals and funnels route by method at the edge"

say "up-e2e: an export through the edge: created on ingest-api, followed and downloaded from stats-api"
job="$(curl -fsS -X POST "$EDGE/v1/sites/$SITE/exports" "${admin[@]}" -H 'Idempotency-Key: up-e2e' \
  -d '{"date_range":["2025-11-14","2025-11-15"]}')" || die "POST an export through the edge failed"
job_id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])' <<<"$job")"
stream="$(curl -sS -N --max-time 60 -H 'Authorization: Bearer e2e-stats' "$EDGE/v1/jobs/$job_id/stream")"
grep -q '^event: done' <<<"$stream" || die "the export's stream through the edge did not end done: $stream"
csv="$(curl -fsS -H 'Authorization: Bearer e2e-admin' "$EDGE/v1/jobs/$job_id/download")" \
  || die "downloading the export through the edge failed"
rows="$(($(wc -l <<<"$csv") - 1))"
[ "$rows" = 5 ] || die "the export holds $rows events, not the seed client's 5: $csv"
echo "  the export streamed its progress and holds the 5 events"
say "up-e2e: passed"
