#!/usr/bin/env bash
# make test: every test of the workspace against real Redis and PostgreSQL (found or
# started by lib.sh). Tests create their own databases and key prefixes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_postgres postgres
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
