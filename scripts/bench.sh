#!/usr/bin/env bash
# make bench: Tally's throughput and latency beside the raw ceilings of this machine,
# measured in the same run (ratios are what to compare; the machine is noisy).
#   1. ingest: POST /v1/events at saturation (oha, C connections) vs redis-benchmark LPUSH
#      with the same connection count; p50/p99 at half the measured saturation rate.
#   2. drain: one batch-worker storing N queued events with rollups vs a plain COPY of the
#      same rows into a table shaped like `events`.
# Results: bench/results/<timestamp>.json and bench/results/latest.md.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

CONNS="${BENCH_CONNECTIONS:-64}"
DURATION="${BENCH_DURATION:-10s}"
DRAIN_EVENTS="${BENCH_DRAIN_EVENTS:-1000000}"
OUT="$ROOT/bench/results"; mkdir -p "$OUT"
WORK="$STATE/bench"; mkdir -p "$WORK"

command -v oha >/dev/null || { say "installing oha (HTTP load generator)"; cargo install oha --locked --quiet; }
command -v redis-benchmark >/dev/null || apt_install redis-tools
command -v jq >/dev/null || apt_install jq

ensure_redis
# The drain drops and recreates the public schema: only ever of the bench's own database,
# whatever DATABASE_URL names.
[ -z "${DATABASE_URL:-}" ] || DATABASE_URL="${DATABASE_URL%/*}/tally_bench"
ensure_postgres tally_bench
case "$DATABASE_URL" in */tally_bench|*/tally_bench\?*) ;; *) die "refusing to benchmark against $DATABASE_URL" ;; esac
say "Redis $REDIS_URL, PostgreSQL $DATABASE_URL"
say "building (release)"
cargo build --release --bins --quiet
BIN="$(cargo_bin_dir release)"
PREFIX="tally-bench"  # fixed, so generated data files stay valid between runs
RHOST="$(url_host "$REDIS_URL")"; RPORT="$(url_port "$REDIS_URL" 6379)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del >/dev/null
}
trap cleanup EXIT
cleanup

# A leftover server on a benchmark port would be measured instead of this build: refuse.
port_free() { ! curl -s -o /dev/null "http://127.0.0.1:$1/healthz" || die "port $1 is already in use; stop what listens there"; }
# wait_port PORT PID: the process started is up and is the one answering.
wait_port() {
  for _ in $(seq 100); do
    kill -0 "$2" 2>/dev/null || die "the server for port $1 exited (see $WORK/*.log)"
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "port $1 did not come up"
}

# CPU seconds used so far by processes (user + system), and Redis's own count: what a
# request costs per core, independent of the client sharing this machine's two cores.
cpu_s() { python3 -c '
import os, sys
tick = os.sysconf("SC_CLK_TCK"); total = 0
for pid in sys.argv[1:]:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += (int(f[11]) + int(f[12])) / tick
    except OSError:
        pass
print(total)' "$@"; }
redis_cpu_s() { redis-cli -h "$RHOST" -p "$RPORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {print s}'; }
requests_of() { jq '[.statusCodeDistribution[]] | add' "$1"; }

# ---------------------------------------------------------------- 1. ingest vs LPUSH
say "ceiling: redis-benchmark LPUSH, $CONNS connections, no pipelining"
LPUSH_RPS=$(redis-benchmark -h "$RHOST" -p "$RPORT" -c "$CONNS" -n 400000 -t lpush --csv -d 200 \
  | awk -F'","' '/LPUSH/ {gsub(/"/,"",$2); print $2; exit}')
redis-cli -h "$RHOST" -p "$RPORT" del mylist >/dev/null

say "ingest-api: POST /v1/events at saturation, $CONNS connections, $DURATION"
port_free 18080
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:18080 RUST_LOG=warn ADMIN_TOKEN=bench \
  RATE_LIMIT_PER_IP_PER_S=1000000000 RATE_LIMIT_BURST=1000000000 EVENT_QUEUE_HIGH_WATER=1000000000 \
  VOTE_RATE_LIMIT_PER_IP_PER_S=0 VOTE_RATE_LIMIT_PER_POLL_PER_S=0 \
  "$BIN/ingest-api" > "$WORK/ingest.log" 2>&1 &
pids+=($!)
INGEST_PID=$!
wait_port 18080 "$INGEST_PID"
EVENT='{"site_id":"bench.example","event_type":"page_view","path":"/pricing","user_id":"visitor-1","timestamp":"2025-11-14T10:00:00Z"}'
oha_run() { oha --no-tui --output-format json -m POST -T application/json -d "$EVENT" "$@" http://127.0.0.1:18080/v1/events; }
oha_run -c "$CONNS" -z 2s > /dev/null  # warm-up
C0=$(cpu_s "$INGEST_PID"); R0=$(redis_cpu_s)
oha_run -c "$CONNS" -z "$DURATION" > "$WORK/ingest-sat.json"
C1=$(cpu_s "$INGEST_PID"); R1=$(redis_cpu_s)
N=$(requests_of "$WORK/ingest-sat.json")
INGEST_PER_CORE=$(awk "BEGIN{print $N / ($C1 - $C0)}"); REDIS_PER_CORE=$(awk "BEGIN{print $N / ($R1 - $R0)}")
SAT_RPS=$(jq '.summary.requestsPerSec' "$WORK/ingest-sat.json")
# The framework's floor on this machine: the same server answering GET /healthz, in the
# same run, with the same client and connections.
say "ingest-api: GET /healthz at saturation (the HTTP floor of the same server)"
oha --no-tui --output-format json -c "$CONNS" -z "$DURATION" http://127.0.0.1:18080/healthz > "$WORK/ingest-healthz.json"
HEALTHZ_RPS=$(jq '.summary.requestsPerSec' "$WORK/ingest-healthz.json")
# The issue's own client beside oha: wrk -t2, the same connections, one small event per
# request against GET /healthz of the same server, alternating. The two load generators
# share the two cores differently (their ratios have differed by a tenth or more in the
# same run, docs/scaling.md), so both are reported.
command -v wrk >/dev/null || apt_install wrk
say "ingest-api: POST /v1/events against GET /healthz with wrk -t2 -c$CONNS, alternating"
printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = [[%s]]\n' "$EVENT" > "$WORK/event.lua"
wrk_rps() { wrk -t2 -c"$CONNS" -d6s "$@" | awk '/^Requests\/sec:/ {print $2}'; }
WRK_EVENTS=(); WRK_HEALTHZ=()
for _ in 1 2 3; do
  WRK_HEALTHZ+=("$(wrk_rps http://127.0.0.1:18080/healthz)")
  WRK_EVENTS+=("$(wrk_rps -s "$WORK/event.lua" http://127.0.0.1:18080/v1/events)")
done
WRK_JSON=$(jq -n --arg e "${WRK_EVENTS[*]}" --arg h "${WRK_HEALTHZ[*]}" \
  '{events: ($e | split(" ") | map(tonumber)), healthz: ($h | split(" ") | map(tonumber))}
   | . + {ratios: [range(0; .events | length) as $i | .events[$i] / .healthz[$i]]}')
HALF=$(jq -n "$SAT_RPS / 2 | floor")
say "ingest-api at half saturation ($HALF req/s)"
oha_run -c "$CONNS" -q "$HALF" -z "$DURATION" --latency-correction > "$WORK/ingest-half.json"
# What the tracker sends: text/plain, a URL and referrer, no user_id, a browser's
# User-Agent; ingest-api parses the User-Agent, checks for bots and hashes the visitor.
TRACKER_EVENT='{"site_id":"bench.example","event_type":"page_view","timestamp":"2025-11-14T10:00:00Z","url":"https://bench.example/pricing?utm_source=newsletter","referrer":"https://www.google.com/","screen_width":1440}'
say "ingest-api: tracker-shaped events at saturation, $CONNS connections, $DURATION"
oha --no-tui --output-format json -m POST -T text/plain -d "$TRACKER_EVENT" \
  -H "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36" \
  -c "$CONNS" -z "$DURATION" http://127.0.0.1:18080/v1/events > "$WORK/ingest-tracker.json"
TRACKER_RPS=$(jq '.summary.requestsPerSec' "$WORK/ingest-tracker.json")
TRACKER_NON202=$(jq '[.statusCodeDistribution | to_entries[] | select(.key != "202") | .value] | add // 0' "$WORK/ingest-tracker.json")
NON202=$(jq '[.statusCodeDistribution | to_entries[] | select(.key != "202") | .value] | add // 0' "$WORK/ingest-sat.json")
ms() { jq "$1 * 1000 | . * 1000 | round / 1000" "$2"; }

# ---------------------------------------------------------------- 1b. votes vs EVALSHA
say "ceiling: redis-benchmark EVALSHA of a trivial script, $CONNS connections"
SHA=$(redis-cli -h "$RHOST" -p "$RPORT" script load "return 1")
EVAL_RPS=$(redis-benchmark -h "$RHOST" -p "$RPORT" -c "$CONNS" -n 400000 --csv EVALSHA "$SHA" 0 \
  | awk -F'","' '/EVALSHA/ {gsub(/"/,"",$2); print $2; exit}')
for shard in $(seq 0 7); do redis-cli -h "$RHOST" -p "$RPORT" set "$PREFIX:{votes:$shard}:restored" 1 >/dev/null; done
new_poll() {
  curl -fsS -X POST http://127.0.0.1:18080/v1/polls -H 'authorization: Bearer bench' -H 'content-type: application/json' \
    -d '{"question":"Benchmark?","options":["a","b","c"]}' | jq -r .poll_id
}
[ -f "$WORK/votes.lines" ] || python3 scripts/bench_data.py votes 1000000 "$WORK/votes.lines"
# oha picks body lines at random, so a few percent of requests repeat a user (409).
vote_run() { oha --no-tui --output-format json -m POST -T application/json -Z "$WORK/votes.lines" "$@"; }
say "votes: POST /v1/polls/{id}/votes at saturation, distinct users, $CONNS connections, $DURATION"
VOTE_POLL=$(new_poll)
C0=$(cpu_s "$INGEST_PID"); R0=$(redis_cpu_s)
vote_run -c "$CONNS" -z "$DURATION" "http://127.0.0.1:18080/v1/polls/$VOTE_POLL/votes" > "$WORK/votes-sat.json"
C1=$(cpu_s "$INGEST_PID"); R1=$(redis_cpu_s)
N=$(requests_of "$WORK/votes-sat.json")
VOTE_PER_CORE=$(awk "BEGIN{print $N / ($C1 - $C0)}"); VOTE_REDIS_PER_CORE=$(awk "BEGIN{print $N / ($R1 - $R0)}")
VOTE_SAT=$(jq '.summary.requestsPerSec' "$WORK/votes-sat.json")
VOTE_HALF=$(jq -n "$VOTE_SAT / 2 | floor")
say "votes at half saturation ($VOTE_HALF req/s)"
vote_run -c "$CONNS" -q "$VOTE_HALF" -z "$DURATION" --latency-correction "http://127.0.0.1:18080/v1/polls/$(new_poll)/votes" > "$WORK/votes-half.json"
VOTE_OK=$(jq '(.statusCodeDistribution["202"] // 0) / ([.statusCodeDistribution[]] | add)' "$WORK/votes-sat.json")
kill "${pids[0]}" 2>/dev/null || true

# ---------------------------------------------------------------- 1c. live streams
say "building the stream benchmark client"
cargo build --release -p e2e --example ssebench --quiet
sse_run() { # streams [coalescing ms]
  port_free 18081
  REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:18081 RUST_LOG=warn MAX_CONNECTIONS=50000 MAX_CONNECTIONS_PER_IP=50000 \
    POLL_COALESCE_MS="${2:-100}" HANGUP_WATCH="${3:-true}" "$BIN/sse-gateway" > "$WORK/gateway.log" 2>&1 &
  local gpid=$!
  wait_port 18081 "$gpid"
  "$(cargo_bin_dir release)/examples/ssebench" http://127.0.0.1:18081 "$REDIS_URL" "$PREFIX" "$gpid" "$1" 1000 5
  kill "$gpid"; wait "$gpid" 2>/dev/null || true
}
say "live streams: vote-to-browser latency, 1,000 streams at 1,000 votes/s"
sse_run 1000 > "$WORK/sse-1k.json"
# Watching for hang-ups costs a descriptor per connection: 10,000 streams would need 20,000
# in the gateway, this machine's hard limit per process. The 10,000-stream runs go without.
say "live streams: vote-to-browser latency, 10,000 streams at 1,000 votes/s"
sse_run 10000 100 false > "$WORK/sse-10k.json"
say "live streams: the same with 10 ms coalescing"
sse_run 10000 10 false > "$WORK/sse-10k-c10.json"

# ---------------------------------------------------------------- 1d. Redis Cluster
# The same ingest and a drain of its backlog against one Redis and against a three-master
# cluster with three events queue shards (scripts/redis-cluster.sh), in the same run.
QUEUE="$PREFIX:{events}:queue"
# backlog_drain URL SHARDS: drains what ingest queued under $PREFIX with one worker of two
# lanes; prints "<events> <seconds>".
backlog_drain() {
  local url="$1" shards="$2" queued t0 t1
  psql "$DATABASE_URL" -q -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;" >/dev/null 2>&1
  DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" migrate > "$WORK/migrate.log" 2>&1
  queued=$(queue_total "$url" "$shards")
  port_free 19092
  t0=$(date +%s.%N)
  REDIS_URL="$url" EVENT_QUEUE_SHARDS="$shards" REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19092 RUST_LOG=warn \
    RUN_MIGRATIONS=false WORKER_CONCURRENCY=2 DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" > "$WORK/worker-backlog.log" 2>&1 &
  local wpid=$!
  while [ "$(queue_total "$url" "$shards")" != 0 ]; do
    kill -0 "$wpid" 2>/dev/null || die "the batch-worker exited before the backlog was drained (see $WORK/worker-backlog.log)"
    sleep 0.05
  done
  # The last claimed batch is committed once the processing lists are gone.
  while [ "$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM events")" -lt "$queued" ]; do sleep 0.05; done
  t1=$(date +%s.%N)
  kill "$wpid"; wait "$wpid" 2>/dev/null || true
  echo "$queued $(awk "BEGIN{print $t1 - $t0}")"
}
# queue_total URL SHARDS: events queued or claimed in every shard.
queue_total() {
  local url="$1" shards="$2" n=0 i key tag
  for ((i = 0; i < shards; i++)); do
    if [ "$i" = 0 ]; then tag="events"; else tag="events:$i"; fi
    if [[ "$url" == *+cluster://* ]]; then
      n=$((n + $(redis-cli -c -p "$CLUSTER_PORT" eval "local n = redis.call('LLEN', KEYS[1]); for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('LLEN', k) end; return n" 1 "$PREFIX:{$tag}:queue" "$PREFIX:{$tag}:processing:*")))
    else
      n=$((n + $(redis-cli -h "$RHOST" -p "$RPORT" eval "local n = redis.call('LLEN', KEYS[1]); for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('LLEN', k) end; return n" 1 "$PREFIX:{$tag}:queue" "$PREFIX:{$tag}:processing:*")))
    fi
  done
  echo "$n"
}
say "drain of the ingest run's backlog, one Redis"
read -r SINGLE_BACKLOG SINGLE_BACKLOG_S < <(backlog_drain "$REDIS_URL" 1)

CLUSTER_BASE="${BENCH_CLUSTER_BASE_PORT:-7200}"; CLUSTER_PORT="$CLUSTER_BASE"
say "Redis Cluster: three masters and three replicas (ports $CLUSTER_BASE-$((CLUSTER_BASE + 5)))"
CLUSTER_URL="$(scripts/redis-cluster.sh start "$CLUSTER_BASE")"
trap 'cleanup; scripts/redis-cluster.sh stop "$CLUSTER_BASE" >/dev/null 2>&1 || true' EXIT
port_free 18081
REDIS_URL="$CLUSTER_URL" EVENT_QUEUE_SHARDS=3 REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:18081 RUST_LOG=warn ADMIN_TOKEN=bench \
  RATE_LIMIT_PER_IP_PER_S=1000000000 RATE_LIMIT_BURST=1000000000 EVENT_QUEUE_HIGH_WATER=1000000000 \
  "$BIN/ingest-api" > "$WORK/ingest-cluster.log" 2>&1 &
pids+=($!)
CLUSTER_INGEST_PID=$!
wait_port 18081 "$CLUSTER_INGEST_PID"
# This box's speed drifts by a third from one minute to the next, so one Redis and the
# cluster are compared in alternating rounds, each against an ingest-api of its own, and
# the ratio is that of the rounds' sums (section 1's figure was taken minutes before).
port_free 18082
REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:18082 RUST_LOG=warn ADMIN_TOKEN=bench \
  RATE_LIMIT_PER_IP_PER_S=1000000000 RATE_LIMIT_BURST=1000000000 EVENT_QUEUE_HIGH_WATER=1000000000 \
  "$BIN/ingest-api" > "$WORK/ingest-single-rounds.log" 2>&1 &
pids+=($!)
SINGLE_ROUNDS_PID=$!
wait_port 18082 "$SINGLE_ROUNDS_PID"
CLUSTER_ROUNDS="${BENCH_CLUSTER_ROUNDS:-3}"; ROUND_DURATION="${BENCH_CLUSTER_ROUND_DURATION:-5s}"
events_at() { oha --no-tui --output-format json -m POST -T application/json -d "$EVENT" -c "$CONNS" -z "$2" "http://127.0.0.1:$1/v1/events"; }
events_at 18081 2s > /dev/null; events_at 18082 2s > /dev/null  # warm-up
CLUSTER_ROUND_RPS=(); SINGLE_ROUND_RPS=(); CLUSTER_NON202=0
for ((r = 1; r <= CLUSTER_ROUNDS; r++)); do
  say "POST /v1/events at saturation, round $r of $CLUSTER_ROUNDS: one Redis, then the cluster, $CONNS connections, $ROUND_DURATION each"
  events_at 18082 "$ROUND_DURATION" > "$WORK/ingest-single-round.json"
  events_at 18081 "$ROUND_DURATION" > "$WORK/ingest-cluster.json"
  SINGLE_ROUND_RPS+=("$(jq '.summary.requestsPerSec' "$WORK/ingest-single-round.json")")
  CLUSTER_ROUND_RPS+=("$(jq '.summary.requestsPerSec' "$WORK/ingest-cluster.json")")
  CLUSTER_NON202=$((CLUSTER_NON202 + $(jq '[.statusCodeDistribution | to_entries[] | select(.key != "202") | .value] | add // 0' "$WORK/ingest-cluster.json")))
done
CLUSTER_SAT_RPS=$(printf '%s\n' "${CLUSTER_ROUND_RPS[@]}" | jq -s 'add / length')
SINGLE_ROUNDS_RPS=$(printf '%s\n' "${SINGLE_ROUND_RPS[@]}" | jq -s 'add / length')
CLUSTER_ROUNDS_JSON=$(jq -n --argjson s "$(printf '%s\n' "${SINGLE_ROUND_RPS[@]}" | jq -s .)" \
  --argjson c "$(printf '%s\n' "${CLUSTER_ROUND_RPS[@]}" | jq -s .)" '[range($s | length) | {one_redis: $s[.], cluster: $c[.]}]')
kill "$CLUSTER_INGEST_PID" "$SINGLE_ROUNDS_PID" 2>/dev/null || true
say "drain of the cluster ingest run's backlog, three shards"
read -r CLUSTER_BACKLOG CLUSTER_BACKLOG_S < <(backlog_drain "$CLUSTER_URL" 3)
say "pub/sub on the cluster: Redis CPU per message and publish rate, PUBLISH against SPUBLISH"
read -r PUB_CLASSIC_RATE PUB_CLASSIC_US PUB_SHARDED_RATE PUB_SHARDED_US < <(scripts/bench-pubsub-cluster.sh "$CLUSTER_BASE")
scripts/redis-cluster.sh stop "$CLUSTER_BASE"

# ---------------------------------------------------------------- 2. drain vs COPY
redis-cli -h "$RHOST" -p "$RPORT" del "$QUEUE" >/dev/null  # nothing is left; to be sure

# Live data is dated the last 40 minutes, as live traffic is, so it is generated again each
# run (dated in the past it was an import into sealed weeks: every batch bumped the weeks'
# generations and the week builder rebuilt them while the drain ran). Uniform data stays
# dated 2025-11-14: the worst case, an import.
LIVE_START=$(( $(date +%s) / 60 * 60 - 2400 ))
rm -f "$WORK"/live.v3.*

# drain PROFILE LANES [goals|goals-heard]: prints "<copy seconds> <drain seconds> <worker
# CPU> <PostgreSQL CPU> <notifications>" for DRAIN_EVENTS events; with "goals", every site
# has three goals first (the home page, a page pattern of a tenth of its pages, and a
# custom event none of the data sends): nobody listens to goal.converted, so its triggers
# are only counted. With "goals-heard", one user subscribes to the goal.converted topic
# first: every conversion is a notification the worker accepts and fans out to that
# user's feed (<notifications>: how many were stored when the events were).
drain() {
  local profile="$1" lanes="$2" goals="${3:-}"
  say "drain [$profile data, $lanes lane(s)]: generating $DRAIN_EVENTS events"
  local data="$WORK/$profile.v3"  # v3: live rows dated this run
  local start=1763114400; [ "$profile" != live ] || start="$LIVE_START"
  [ -f "$data.csv" ] || BENCH_DATA_START="$start" python3 scripts/bench_data.py "$profile" "$DRAIN_EVENTS" "$QUEUE" "$data.resp" "$data.csv"
  psql "$DATABASE_URL" -q -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;" >/dev/null 2>&1
  DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" migrate > "$WORK/migrate.log" 2>&1
  if [ -n "$goals" ]; then
    psql "$DATABASE_URL" -q -o /dev/null -c "INSERT INTO sites (site_id, timezone, version, created_at, updated_at, goals)
      SELECT 'site-' || i, 'Europe/Berlin', 1, now(), now(),
             '[{\"goal_id\": \"g_home\", \"display_name\": \"Home\", \"page_path\": \"/page/0\"},
               {\"goal_id\": \"g_ten\", \"display_name\": \"Tens\", \"page_path\": \"/page/1*\"},
               {\"goal_id\": \"g_signup\", \"display_name\": \"Signup\", \"event_name\": \"signup\"}]'
      FROM generate_series(0, 19) AS i"
  fi
  if [ "$goals" = goals-heard ]; then
    # Straight into the topic registry (the worker's restore keeps what Redis holds).
    redis-cli -h "$RHOST" -p "$RPORT" hset "$PREFIX:{topics}:subs:goal.converted" owner '{}' >/dev/null
  fi
  say "  ceiling: plain COPY of the same rows into a table shaped like events"
  psql "$DATABASE_URL" -q -o /dev/null -c "CREATE TABLE copy_ceiling (LIKE events INCLUDING ALL)"
  local t0 t1 copy_s drain_s
  t0=$(date +%s.%N)
  psql "$DATABASE_URL" -q -o /dev/null -c "\\copy copy_ceiling (event_id, site_id, event_type, ts, path, user_id, props, received_at, hostname, referrer, referrer_source, utm_source, utm_medium, utm_campaign, utm_term, utm_content, browser, os, device, country) FROM '$data.csv' CSV"
  t1=$(date +%s.%N); copy_s=$(awk "BEGIN{print $t1 - $t0}")
  psql "$DATABASE_URL" -q -o /dev/null -c "DROP TABLE copy_ceiling; CHECKPOINT;"
  redis-cli -h "$RHOST" -p "$RPORT" --pipe < "$data.resp" > /dev/null
  local qlen; qlen=$(redis-cli -h "$RHOST" -p "$RPORT" llen "$QUEUE")
  [ "$qlen" = "$DRAIN_EVENTS" ] || die "queued $qlen, expected $DRAIN_EVENTS"
  say "  one batch-worker process draining them, rollups included"
  port_free 19091
  t0=$(date +%s.%N)
  REDIS_KEY_PREFIX="$PREFIX" BIND_ADDR=127.0.0.1:19091 RUST_LOG=warn RUN_MIGRATIONS=false WORKER_CONCURRENCY="$lanes" \
    DATABASE_URL="$DATABASE_URL" "$BIN/batch-worker" > "$WORK/worker.log" 2>&1 &
  local wpid=$!
  local pg0; pg0=$(cpu_s $(pgrep -x postgres))
  while :; do
    kill -0 "$wpid" 2>/dev/null || die "the batch-worker exited before the queue was drained (see $WORK/worker.log)"
    left=$(redis-cli -h "$RHOST" -p "$RPORT" eval "local n = redis.call('LLEN', KEYS[1]); for _, k in ipairs(redis.call('KEYS', ARGV[1])) do n = n + redis.call('LLEN', k) end; return n" 1 "$QUEUE" "$PREFIX:{events}:processing:*")
    [ "$left" = 0 ] && break
    sleep 0.05
  done
  t1=$(date +%s.%N); drain_s=$(awk "BEGIN{print $t1 - $t0}")
  # PostgreSQL's share: every postgres process now, less what they had used before (the
  # worker's backends started after, and count whole).
  local worker_cpu pg_cpu; worker_cpu=$(cpu_s "$wpid"); pg_cpu=$(awk "BEGIN{print $(cpu_s $(pgrep -x postgres)) - $pg0}")
  kill "$wpid"; wait "$wpid" 2>/dev/null || true
  local stored rollup
  stored=$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM events")
  rollup=$(psql "$DATABASE_URL" -tAc "SELECT sum(events) FROM rollup_hourly")
  [ "$stored" = "$DRAIN_EVENTS" ] && [ "$rollup" = "$DRAIN_EVENTS" ] || die "stored $stored, rollups $rollup, expected $DRAIN_EVENTS"
  local notified; notified=$(psql "$DATABASE_URL" -tAc "SELECT count(*) FROM notifications")
  redis-cli -h "$RHOST" -p "$RPORT" --scan --pattern "$PREFIX:*" | xargs -r -n 500 redis-cli -h "$RHOST" -p "$RPORT" del >/dev/null
  echo "$copy_s $drain_s $worker_cpu $pg_cpu $notified"
}
read -r LIVE_COPY_S LIVE_S LIVE_WORKER_CPU LIVE_PG_CPU _ < <(drain live 2)
read -r _ LIVE1_S _ _ _ < <(drain live 1)
read -r UNI_COPY_S UNI_S _ _ _ < <(drain uniform 2)
read -r _ GOALS_S _ _ _ < <(drain live 2 goals)
read -r _ HEARD_S _ _ HEARD_STORED < <(drain live 2 goals-heard)

# ---------------------------------------------------------------- results
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
jq -n \
  --arg when "$STAMP" --argjson conns "$CONNS" --arg duration "$DURATION" \
  --argjson lpush "$LPUSH_RPS" --argjson sat "$SAT_RPS" --argjson non202 "$NON202" \
  --argjson healthz "$HEALTHZ_RPS" --argjson wrk "$WRK_JSON" \
  --argjson ingest_per_core "$INGEST_PER_CORE" --argjson redis_per_core "$REDIS_PER_CORE" \
  --argjson vote_per_core "$VOTE_PER_CORE" --argjson vote_redis_per_core "$VOTE_REDIS_PER_CORE" \
  --argjson live_worker_cpu "$LIVE_WORKER_CPU" --argjson live_pg_cpu "$LIVE_PG_CPU" \
  --argjson tracker "$TRACKER_RPS" --argjson tracker_non202 "$TRACKER_NON202" \
  --argjson tracker_p99 "$(ms '.latencyPercentiles.p99' "$WORK/ingest-tracker.json")" \
  --argjson sat_p50 "$(ms '.latencyPercentiles.p50' "$WORK/ingest-sat.json")" \
  --argjson sat_p99 "$(ms '.latencyPercentiles.p99' "$WORK/ingest-sat.json")" \
  --argjson half_rps "$(jq '.summary.requestsPerSec' "$WORK/ingest-half.json")" \
  --argjson half_p50 "$(ms '.latencyPercentiles.p50' "$WORK/ingest-half.json")" \
  --argjson half_p99 "$(ms '.latencyPercentiles.p99' "$WORK/ingest-half.json")" \
  --argjson eval "$EVAL_RPS" --argjson vote_sat "$VOTE_SAT" --argjson vote_ok "$VOTE_OK" \
  --argjson vote_sat_p50 "$(ms '.latencyPercentiles.p50' "$WORK/votes-sat.json")" \
  --argjson vote_sat_p99 "$(ms '.latencyPercentiles.p99' "$WORK/votes-sat.json")" \
  --argjson vote_half_rps "$(jq '.summary.requestsPerSec' "$WORK/votes-half.json")" \
  --argjson vote_half_p50 "$(ms '.latencyPercentiles.p50' "$WORK/votes-half.json")" \
  --argjson vote_half_p99 "$(ms '.latencyPercentiles.p99' "$WORK/votes-half.json")" \
  --slurpfile sse1k "$WORK/sse-1k.json" --slurpfile sse10k "$WORK/sse-10k.json" \
  --slurpfile sse10kc10 "$WORK/sse-10k-c10.json" \
  --argjson events "$DRAIN_EVENTS" --argjson live_s "$LIVE_S" --argjson live1_s "$LIVE1_S" --argjson live_copy_s "$LIVE_COPY_S" \
  --argjson uni_s "$UNI_S" --argjson uni_copy_s "$UNI_COPY_S" --argjson goals_s "$GOALS_S" \
  --argjson heard_s "$HEARD_S" --argjson heard_stored "$HEARD_STORED" \
  --argjson cluster_sat "$CLUSTER_SAT_RPS" --argjson cluster_non202 "$CLUSTER_NON202" \
  --argjson single_rounds "$SINGLE_ROUNDS_RPS" --argjson cluster_rounds "$CLUSTER_ROUNDS_JSON" \
  --argjson single_backlog "$SINGLE_BACKLOG" --argjson single_backlog_s "$SINGLE_BACKLOG_S" \
  --argjson cluster_backlog "$CLUSTER_BACKLOG" --argjson cluster_backlog_s "$CLUSTER_BACKLOG_S" \
  --argjson pub_classic_rate "$PUB_CLASSIC_RATE" --argjson pub_classic_us "$PUB_CLASSIC_US" \
  --argjson pub_sharded_rate "$PUB_SHARDED_RATE" --argjson pub_sharded_us "$PUB_SHARDED_US" \
  --arg cpu "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  '{
    when: $when, machine: $cpu,
    ingest: {connections: $conns, duration: $duration,
             saturation: {requests_per_s: $sat, p50_ms: $sat_p50, p99_ms: $sat_p99, non_202: $non202},
             half_saturation: {requests_per_s: $half_rps, p50_ms: $half_p50, p99_ms: $half_p99},
             redis_lpush_ceiling_requests_per_s: $lpush,
             ratio_to_lpush_ceiling: ($sat / $lpush),
             healthz_floor_requests_per_s: $healthz,
             ratio_to_healthz: ($sat / $healthz),
             wrk_alternating_rounds: $wrk,
             per_core: {ingest_api_requests_per_cpu_s: $ingest_per_core, redis_requests_per_cpu_s: $redis_per_core},
             tracker_shaped: {requests_per_s: $tracker, p99_ms: $tracker_p99, non_202: $tracker_non202,
                              ratio_to_plain_events: ($tracker / $sat)}},
    votes: {connections: $conns,
             saturation: {requests_per_s: $vote_sat, accepted_share: $vote_ok, p50_ms: $vote_sat_p50, p99_ms: $vote_sat_p99},
             half_saturation: {requests_per_s: $vote_half_rps, p50_ms: $vote_half_p50, p99_ms: $vote_half_p99},
             redis_evalsha_trivial_ceiling_requests_per_s: $eval,
             ratio_to_evalsha_ceiling: ($vote_sat / $eval),
             ratio_to_healthz: ($vote_sat / $healthz),
             per_core: {ingest_api_votes_per_cpu_s: $vote_per_core, redis_votes_per_cpu_s: $vote_redis_per_core}},
    cluster: {masters: 3, replicas: 3, event_queue_shards: 3,
              ingest: {requests_per_s: $cluster_sat, non_202: $cluster_non202, single_node_requests_per_s: $single_rounds,
                       ratio_to_single_node: ($cluster_sat / $single_rounds),
                       rounds: $cluster_rounds, measured: "alternating rounds, one Redis then the cluster"},
              backlog_drain_2_lanes: {single_node: {events: $single_backlog, seconds: $single_backlog_s, events_per_s: ($single_backlog / $single_backlog_s)},
                                      cluster: {events: $cluster_backlog, seconds: $cluster_backlog_s, events_per_s: ($cluster_backlog / $cluster_backlog_s)},
                                      ratio_to_single_node: (($cluster_backlog / $cluster_backlog_s) / ($single_backlog / $single_backlog_s))},
              pubsub: {classic_publish: {messages_per_s: $pub_classic_rate, redis_cpu_us_per_message: $pub_classic_us},
                       sharded_spublish: {messages_per_s: $pub_sharded_rate, redis_cpu_us_per_message: $pub_sharded_us},
                       cpu_ratio_sharded_to_classic: ($pub_sharded_us / $pub_classic_us)}},
    streams: {streams_1000: ($sse1k[0] + {coalesce_ms: 100}), streams_10000: ($sse10k[0] + {coalesce_ms: 100}),
              streams_10000_coalesce_10ms: ($sse10kc10[0] + {coalesce_ms: 10})},
    drain: {events: $events,
            live: {lanes_2: {seconds: $live_s, events_per_s: ($events / $live_s), ratio_to_copy_ceiling: ($live_copy_s / $live_s),
                             per_core: {batch_worker_events_per_cpu_s: ($events / $live_worker_cpu), postgres_events_per_cpu_s: ($events / $live_pg_cpu)}},
                   lanes_1: {seconds: $live1_s, events_per_s: ($events / $live1_s), ratio_to_copy_ceiling: ($live_copy_s / $live1_s)},
                   lanes_2_sites_with_goals: {seconds: $goals_s, events_per_s: ($events / $goals_s), ratio_to_copy_ceiling: ($live_copy_s / $goals_s)},
                   lanes_2_goals_heard: {seconds: $heard_s, events_per_s: ($events / $heard_s), ratio_to_copy_ceiling: ($live_copy_s / $heard_s), notifications_stored_when_drained: $heard_stored},
                   copy_ceiling_seconds: $live_copy_s, copy_ceiling_rows_per_s: ($events / $live_copy_s)},
            uniform: {lanes_2: {seconds: $uni_s, events_per_s: ($events / $uni_s), ratio_to_copy_ceiling: ($uni_copy_s / $uni_s)},
                      copy_ceiling_seconds: $uni_copy_s, copy_ceiling_rows_per_s: ($events / $uni_copy_s)}}
  }' > "$OUT/$STAMP.json"
cp "$OUT/$STAMP.json" "$OUT/latest.json"
jq -r '
  "# Tally benchmark \(.when)\n\nMachine: \(.machine). Same run, same machine: compare the ratios.\n",
  "## Ingest: POST /v1/events, \(.ingest.connections) connections\n",
  "| measure | value |", "| --- | --- |",
  "| saturation | \(.ingest.saturation.requests_per_s | floor) req/s (p50 \(.ingest.saturation.p50_ms) ms, p99 \(.ingest.saturation.p99_ms) ms, non-202: \(.ingest.saturation.non_202)) |",
  "| redis-benchmark LPUSH, same connections | \(.ingest.redis_lpush_ceiling_requests_per_s | floor) req/s |",
  "| ingest / LPUSH ceiling | \(.ingest.ratio_to_lpush_ceiling * 100 | round) % |",
  "| GET /healthz of the same server (the HTTP floor) | \(.ingest.healthz_floor_requests_per_s | floor) req/s |",
  "| POST /v1/events / GET /healthz | \(.ingest.ratio_to_healthz * 100 | round) % |",
  "| the same with wrk -t2, as issue 12 measures (alternating 6 s rounds): events / healthz | \(.ingest.wrk_alternating_rounds | [range(0; .events | length) as $i | "\(.events[$i] | floor) / \(.healthz[$i] | floor) req/s = \(.ratios[$i] * 100 | round) %"] | join(", ")) |",
  "| per core (CPU time of the process itself) | ingest-api \(.ingest.per_core.ingest_api_requests_per_cpu_s | floor) events per CPU-second, Redis \(.ingest.per_core.redis_requests_per_cpu_s | floor) |",
  "| at half saturation (\(.ingest.half_saturation.requests_per_s | floor) req/s) | p50 \(.ingest.half_saturation.p50_ms) ms, p99 \(.ingest.half_saturation.p99_ms) ms |",
  "| tracker-shaped (text/plain, url, referrer, UA parse, bot check, visitor hash) | \(.ingest.tracker_shaped.requests_per_s | floor) req/s (p99 \(.ingest.tracker_shaped.p99_ms) ms, non-202: \(.ingest.tracker_shaped.non_202)) |",
  "| tracker-shaped / plain events | \(.ingest.tracker_shaped.ratio_to_plain_events * 100 | round) % |",
  "\n## Votes: POST /v1/polls/{id}/votes, distinct users, \(.votes.connections) connections\n",
  "| measure | value |", "| --- | --- |",
  "| saturation | \(.votes.saturation.requests_per_s | floor) req/s, \(.votes.saturation.accepted_share * 100 | round) % accepted (p50 \(.votes.saturation.p50_ms) ms, p99 \(.votes.saturation.p99_ms) ms) |",
  "| redis-benchmark EVALSHA of `return 1`, same connections | \(.votes.redis_evalsha_trivial_ceiling_requests_per_s | floor) req/s |",
  "| votes / EVALSHA ceiling | \(.votes.ratio_to_evalsha_ceiling * 100 | round) % |",
  "| votes / GET /healthz of the same server | \(.votes.ratio_to_healthz * 100 | round) % |",
  "| per core (CPU time of the process itself) | ingest-api \(.votes.per_core.ingest_api_votes_per_cpu_s | floor) votes per CPU-second, Redis \(.votes.per_core.redis_votes_per_cpu_s | floor) |",
  "| at half saturation (\(.votes.half_saturation.requests_per_s | floor) req/s) | p50 \(.votes.half_saturation.p50_ms) ms, p99 \(.votes.half_saturation.p99_ms) ms |",
  "\n## Redis Cluster: three masters, three replicas, three events queue shards, same run\n",
  "| measure | one Redis | cluster | cluster / one Redis |", "| --- | --- | --- | --- |",
  "| POST /v1/events at saturation, mean of \(.cluster.ingest.rounds | length) alternating rounds (each: \([.cluster.ingest.rounds[] | (.cluster / .one_redis * 100 | round | tostring) + " %"] | join(", "))) | \(.cluster.ingest.single_node_requests_per_s | floor) req/s | \(.cluster.ingest.requests_per_s | floor) req/s (non-202: \(.cluster.ingest.non_202)) | \(.cluster.ingest.ratio_to_single_node * 100 | round) % |",
  "| drain of the backlog of that run, one worker, 2 lanes | \(.cluster.backlog_drain_2_lanes.single_node.events_per_s | floor) events/s (\(.cluster.backlog_drain_2_lanes.single_node.events) events) | \(.cluster.backlog_drain_2_lanes.cluster.events_per_s | floor) events/s (\(.cluster.backlog_drain_2_lanes.cluster.events) events) | \(.cluster.backlog_drain_2_lanes.ratio_to_single_node * 100 | round) % |",
  "\nPub/sub on the cluster, one subscriber, 150-byte messages: classic `PUBLISH` \(.cluster.pubsub.classic_publish.messages_per_s | floor) messages/s, \(.cluster.pubsub.classic_publish.redis_cpu_us_per_message * 10 | round / 10) µs of Redis CPU (all six nodes) per message; sharded `SPUBLISH` (what the services use on a cluster) \(.cluster.pubsub.sharded_spublish.messages_per_s | floor) messages/s, \(.cluster.pubsub.sharded_spublish.redis_cpu_us_per_message * 10 | round / 10) µs per message (\(.cluster.pubsub.cpu_ratio_sharded_to_classic * 100 | round) % of classic).",
  "\n## Live streams: vote-to-browser latency at 1,000 votes/s (one poll)\n",
  "| streams | coalescing | vote to browser | ended on the final state | gateway memory per stream | bare Redis PUBLISH to a subscriber |", "| --- | --- | --- | --- | --- | --- |",
  (.streams | to_entries[] | .value | "| \(.streams_open) | \(.coalesce_ms) ms | p50 \(.vote_to_browser.p50_ms * 10 | round / 10) ms, p99 \(.vote_to_browser.p99_ms * 10 | round / 10) ms | \(.streams_with_final_state) | \(.gateway_kib_per_stream * 10 | round / 10) KiB | p50 \(.bare_publish.p50_ms * 100 | round / 100) ms, p99 \(.bare_publish.p99_ms * 100 | round / 100) ms |"),
  "\nVote-to-browser latency is dominated by the coalescing interval (a vote waits up to 100 ms for the next emission of its poll), by design: it bounds the events each browser receives to 10/s per poll. At 10 ms coalescing each of 10,000 browsers is sent up to 100 updates/s, a million SSE writes a second: past what two cores write, so updates queue behind one another and the tail grows; 10 ms suits hundreds of browsers per core, not ten thousand.",
  "\n## Drain: one batch-worker process, \(.drain.events) queued events, rollups included\n",
  "`live`: a backlog of real-looking traffic (arrival order, sessions, Zipf paths). `uniform`: every field random over two days, the worst case for rollups. Both are tracker-shaped: the worker derives path, hostname, UTM and referrer source from each URL and stores the derived fields; the COPY ceiling copies the same stored rows, derived fields included.\n",
  "| data | batch-worker | plain COPY of the same rows | worker / COPY |", "| --- | --- | --- | --- |",
  "| live, 2 lanes (default) | \(.drain.live.lanes_2.events_per_s | floor) events/s | \(.drain.live.copy_ceiling_rows_per_s | floor) rows/s | \(.drain.live.lanes_2.ratio_to_copy_ceiling * 100 | round) % |",
  "| live, 1 lane | \(.drain.live.lanes_1.events_per_s | floor) events/s | \(.drain.live.copy_ceiling_rows_per_s | floor) rows/s | \(.drain.live.lanes_1.ratio_to_copy_ceiling * 100 | round) % |",
  "| live, 2 lanes, every site with three goals (Berlin), nobody listening to goal.converted | \(.drain.live.lanes_2_sites_with_goals.events_per_s | floor) events/s | \(.drain.live.copy_ceiling_rows_per_s | floor) rows/s | \(.drain.live.lanes_2_sites_with_goals.ratio_to_copy_ceiling * 100 | round) % |",
  "| the same, one user subscribed to goal.converted (a notification per converting visitor-day: \(.drain.live.lanes_2_goals_heard.notifications_stored_when_drained) stored when the events were) | \(.drain.live.lanes_2_goals_heard.events_per_s | floor) events/s | \(.drain.live.copy_ceiling_rows_per_s | floor) rows/s | \(.drain.live.lanes_2_goals_heard.ratio_to_copy_ceiling * 100 | round) % |",
  "| uniform, 2 lanes | \(.drain.uniform.lanes_2.events_per_s | floor) events/s | \(.drain.uniform.copy_ceiling_rows_per_s | floor) rows/s | \(.drain.uniform.lanes_2.ratio_to_copy_ceiling * 100 | round) % |",
  "\nPer core, live data with 2 lanes (CPU time of each process): batch-worker \(.drain.live.lanes_2.per_core.batch_worker_events_per_cpu_s | floor) events per CPU-second, PostgreSQL \(.drain.live.lanes_2.per_core.postgres_events_per_cpu_s | floor) events per CPU-second (its writes, rollups included)."
' "$OUT/latest.json" > "$OUT/latest.md"
cat "$OUT/latest.md"

# Notifications: webhook deliveries and a 100,000-subscriber fan-out (their own results file).
"$ROOT/scripts/bench-notify.sh"
"$ROOT/scripts/bench-query.sh"
"$ROOT/scripts/bench-export.sh"
