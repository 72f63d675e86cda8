#!/usr/bin/env bash
# make test: every test of the workspace against real Redis and PostgreSQL (found or
# started by lib.sh). Tests create their own databases and key prefixes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_postgres postgres
ensure_test_python
say "Redis: $REDIS_URL  PostgreSQL: $DATABASE_URL"

# Every database of this run is named tally_t_<run>_...; a test drops its own when it ends,
# and whatever a crashed test left is dropped here on exit. Databases of other runs on the
# same server (another checkout, a CI job beside this one) are never touched.
export TALLY_TEST_RUN="r$(date +%s)$$"
trap 'drop_run_databases "$TALLY_TEST_RUN"' EXIT

say "building"
cargo build --workspace --bins --tests
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# The second configuration: the end-to-end tests of events, votes and streams against a
# Redis Cluster of three masters and three replicas, the events queue in four shards.
# (Tests that need a Redis of their own to stop or flush keep using theirs.)
if [ "${SKIP_CLUSTER_TESTS:-0}" != 1 ] && [ "$#" -eq 0 ]; then
  say "end-to-end tests on a Redis Cluster"
  CLUSTER_URL="$(scripts/redis-cluster.sh start)"
  trap 'scripts/redis-cluster.sh stop >/dev/null 2>&1 || true; drop_run_databases "$TALLY_TEST_RUN"' EXIT
  skip=(a_master_killed live_updates_go_out silently_dead redis_cut_off redis_loses memory_comes_back)
  if cargo nextest --version >/dev/null 2>&1; then
    filter="$(printf 'not test(%s) & ' "${skip[@]}")"
    REDIS_URL="$CLUSTER_URL" EVENT_QUEUE_SHARDS=4 cargo nextest run -p e2e --no-fail-fast -E "${filter% & }"
  else
    REDIS_URL="$CLUSTER_URL" EVENT_QUEUE_SHARDS=4 cargo test -p e2e --no-fail-fast -- $(printf -- '--skip %s ' "${skip[@]}")
  fi
  scripts/redis-cluster.sh stop
fi

# The scripts' own promises (private PostgreSQL fallback, per-run database clean-up).
if [ "$#" -eq 0 ]; then
  scripts/scripts-test.sh
fi

# A short, seeded pass of the abuse suite (make fuzz runs the long one).
if [ "${SKIP_FUZZ:-0}" != 1 ] && [ "$#" -eq 0 ]; then
  FUZZ_EXAMPLES=25 FUZZ_SEED=1 FUZZ_SHORT=1 scripts/fuzz.sh
fi

# docker-compose.yml, the Kubernetes manifests and the served OpenAPI documents.
if [ "$#" -eq 0 ]; then
  scripts/lint-deploy.sh
fi

# The demo page in a real browser (installs Chromium and playwright-core when missing).
if [ "${SKIP_BROWSER_TESTS:-0}" != 1 ] && [ "$#" -eq 0 ]; then
  scripts/browser-e2e.sh
fi

# make up from scratch, then the seed design's client through the :3000 edge.
if [ "${SKIP_UP_TEST:-0}" != 1 ] && [ "$#" -eq 0 ]; then
  scripts/up-e2e.sh
fi
