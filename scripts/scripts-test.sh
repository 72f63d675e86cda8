#!/usr/bin/env bash
# Tests of the scripts' own promises, against the real servers make test found:
#  - a PostgreSQL that answers but refuses the login makes ensure_postgres fall back to a
#    private server instead of dying;
#  - drop_run_databases drops the databases of one run and no other run's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
ensure_postgres postgres
fail() { printf 'scripts-test FAILED: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "scripts-test: a test run drops only its own databases"
mine="tally_t_scriptsmine$$_a"; theirs="tally_t_scriptstheirs$$_a"
admin="${DATABASE_URL%/*}/postgres"
psql "$admin" -qc "CREATE DATABASE $mine" -c "CREATE DATABASE $theirs" >/dev/null
drop_run_databases "scriptsmine$$"
left=$(psql "$admin" -tAc "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname IN ('$mine', '$theirs')")
psql "$admin" -qc "DROP DATABASE IF EXISTS $theirs" >/dev/null
[ "$left" = "$theirs" ] || fail "after dropping run scriptsmine$$ the databases left are '$left', expected '$theirs'"

say "scripts-test: a server that refuses the login means a private PostgreSQL"
host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
state="$(mktemp -d /tmp/tally-scripts-test.XXXXXX)"
private_port="$(free_port)"
stop_private() {
  TALLY_STATE_DIR="$state" TALLY_PRIVATE_PG_PORT="$private_port" bash -c "source scripts/lib.sh; stop_private_services" || true
  local data; data="$(readlink "$state/pg" 2>/dev/null || true)"
  [ -z "$data" ] || rm -rf "$data" "$data.log"
  rm -rf "$state"
}
trap stop_private EXIT
refused="postgres://tally_no_such_role@$host:$port/postgres"
psql "$refused" -tAc "SELECT 1" >/dev/null 2>&1 && fail "the role tally_no_such_role exists on $host:$port"
got=$(TALLY_STATE_DIR="$state" TALLY_PRIVATE_PG_PORT="$private_port" DATABASE_URL="$refused" \
  bash -c 'source scripts/lib.sh; ensure_postgres tally_scripts_test; echo "$DATABASE_URL"' 2>"$state/stderr") \
  || fail "ensure_postgres died: $(cat "$state/stderr")"
[ "$got" = "postgres://postgres@127.0.0.1:$private_port/tally_scripts_test" ] \
  || fail "ensure_postgres exported '$got', expected the private server on port $private_port"
[ "$(psql "$got" -tAc 'SELECT 1')" = 1 ] || fail "the private server at $got does not answer"
grep -q "refuses the login" "$state/stderr" || fail "no word of the refused login: $(cat "$state/stderr")"
say "scripts-test: passed"
