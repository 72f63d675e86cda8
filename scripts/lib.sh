#!/usr/bin/env bash
# Shared by the scripts: find Redis and PostgreSQL at REDIS_URL / DATABASE_URL, or start
# private ones under .tally/ from the machine's binaries (installing them when missing).
# Sourced, not run.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${TALLY_STATE_DIR:-$ROOT/.tally}"
mkdir -p "$STATE/logs" "$STATE/run"

PRIVATE_REDIS_PORT="${TALLY_PRIVATE_REDIS_PORT:-6390}"
PRIVATE_PG_PORT="${TALLY_PRIVATE_PG_PORT:-5490}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {
  command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it"
  say "installing $* (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# host and port of a redis:// or postgres:// URL
url_host() { local u="${1#*://}"; u="${u##*@}"; u="${u%%/*}"; u="${u%%\?*}"; echo "${u%%:*}"; }
url_port() { local u="${1#*://}"; u="${u##*@}"; u="${u%%/*}"; u="${u%%\?*}"; [[ "$u" == *:* ]] && echo "${u##*:}" || echo "$2"; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# ensure_redis: exports REDIS_URL pointing at a Redis that answers PING.
ensure_redis() {
  REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  # A cluster is used as given, never replaced by a private single server: some seed node
  # must say the cluster is whole.
  if [[ "$REDIS_URL" == *+cluster://* ]]; then
    local seeds="${REDIS_URL#*+cluster://}"; seeds="${seeds##*@}"; seeds="${seeds%%[/?]*}"
    local seed
    for seed in ${seeds//,/ }; do
      if redis-cli -h "${seed%:*}" -p "${seed##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
        export REDIS_URL; return
      fi
    done
    die "no node of the Redis Cluster at $REDIS_URL answers with cluster_state:ok"
  fi
  if redis-cli -u "$REDIS_URL" ping 2>/dev/null | grep -q PONG; then
    export REDIS_URL; return
  fi
  local url="redis://127.0.0.1:$PRIVATE_REDIS_PORT"
  if ! redis-cli -u "$url" ping 2>/dev/null | grep -q PONG; then
    say "no Redis at $REDIS_URL; starting a private one on port $PRIVATE_REDIS_PORT"
    mkdir -p "$STATE/redis"
    redis-server --port "$PRIVATE_REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" \
      --appendonly yes --save "" --daemonize yes --pidfile "$STATE/run/redis.pid" \
      --logfile "$STATE/logs/redis.log" >/dev/null || die "redis-server failed to start (see $STATE/logs/redis.log)"
    touch "$STATE/run/redis.private"
    for _ in $(seq 50); do redis-cli -u "$url" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
  fi
  redis-cli -u "$url" ping 2>/dev/null | grep -q PONG || die "private Redis did not come up"
  export REDIS_URL="$url"
}

pg_bindir() {
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/pg_ctl" ]; then pg_config --bindir; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# ensure_postgres: exports DATABASE_URL (database $1, default tally) on a server that
# accepts connections, creating the database when missing.
ensure_postgres() {
  local dbname="${1:-tally}"
  DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$dbname}"
  command -v psql >/dev/null && [ -n "$(pg_bindir)" ] || apt_install postgresql postgresql-client
  local host port; host="$(url_host "$DATABASE_URL")"; port="$(url_port "$DATABASE_URL" 5432)"
  local admin="${DATABASE_URL%/*}/postgres"
  if ! pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
    start_private_postgres
    DATABASE_URL="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/$dbname"
  elif ! psql "$admin" -tAc "SELECT 1" >/dev/null 2>&1; then
    # A server that answers but refuses this login (Debian's default peer/password auth):
    # ours is a private one rather than a dead end.
    say "PostgreSQL at $host:$port refuses the login of $admin"
    start_private_postgres
    DATABASE_URL="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/$dbname"
  fi
  admin="${DATABASE_URL%/*}/postgres"
  local want="${DATABASE_URL##*/}"; want="${want%%\?*}"
  if ! psql "$admin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$want'" 2>/dev/null | grep -q 1; then
    psql "$admin" -qc "CREATE DATABASE \"$want\"" >/dev/null 2>&1 || true
  fi
  psql "$DATABASE_URL" -tAc "SELECT 1" >/dev/null 2>&1 || die "cannot connect to $DATABASE_URL"
  ensure_pg_extension hll
  export DATABASE_URL
}

pg_has_extension() {
  psql "$DATABASE_URL" -tAc "SELECT 1 FROM pg_available_extensions WHERE name = '$1'" 2>/dev/null | grep -q 1
}

# ensure_pg_extension NAME: the server at DATABASE_URL can create extension NAME (the
# schema needs hll for its visitor sketches). A server on this machine gets Debian's
# package for its major version; another one is for its operator to fix, named here.
ensure_pg_extension() {
  local name="$1"
  pg_has_extension "$name" && return 0
  local host; host="$(url_host "$DATABASE_URL")"
  case "$host" in
    127.0.0.1|localhost|::1|"") ;;
    *) die "PostgreSQL at $host lacks the '$name' extension Tally needs: install it there (Debian: postgresql-<major>-$name)" ;;
  esac
  local major; major="$(psql "$DATABASE_URL" -tAc "SELECT current_setting('server_version_num')::int / 10000" 2>/dev/null)"
  apt_install "postgresql-$major-$name"
  pg_has_extension "$name" || die "PostgreSQL at $host still lacks the '$name' extension after installing postgresql-$major-$name"
}

# drop_run_databases RUN: the test databases of one make test run (tally_t_RUN_...), no others.
drop_run_databases() {
  local run="$1" db
  [ -n "$run" ] || return 0
  for db in $(psql "$DATABASE_URL" -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'tally\\_t\\_${run}\\_%'" 2>/dev/null); do
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

start_private_postgres() {
  local bin; bin="$(pg_bindir)"
  local data="$STATE/pg" log="$STATE/logs/postgres.log"
  if pg_isready -q -h 127.0.0.1 -p "$PRIVATE_PG_PORT" 2>/dev/null; then return; fi
  say "starting a private PostgreSQL on port $PRIVATE_PG_PORT"
  # PostgreSQL refuses to run as root: run it as the postgres user, keeping its data where
  # that user can reach it (a root-only home is not).
  local runas=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
    runas=(runuser -u postgres --)
    if ! runuser -u postgres -- test -x "$STATE"; then
      # One data folder per state folder (the default one keeps its historical name), so a
      # second state folder (up-e2e, the scripts test) never shares a running server's data.
      local key="$STATE"; [ "$STATE" = "$ROOT/.tally" ] && key="$ROOT"
      data="/var/tmp/tally-pg-$(echo "$key" | md5sum | cut -c1-8)"
      log="$data.log"
      ln -sfn "$data" "$STATE/pg"
      ln -sfn "$log" "$STATE/logs/postgres.log"
    fi
    mkdir -p "$data"; chown postgres "$data"; chmod 700 "$data"
    touch "$log"; chown postgres "$log"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    "${runas[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null \
      || die "initdb failed"
  fi
  "${runas[@]}" "$bin/pg_ctl" -D "$data" -l "$log" -w -t 30 \
    -o "-p $PRIVATE_PG_PORT -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null \
    || die "PostgreSQL failed to start (see $log)"
  echo "$data" > "$STATE/run/postgres.private"
}

stop_private_services() {
  if [ -f "$STATE/run/redis.private" ]; then
    say "stopping private Redis"
    redis-cli -p "$PRIVATE_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$STATE/run/redis.private"
  fi
  if [ -f "$STATE/run/postgres.private" ]; then
    say "stopping private PostgreSQL"
    local data; data="$(cat "$STATE/run/postgres.private")"
    local runas=(); [ "$(id -u)" = 0 ] && runas=(runuser -u postgres --)
    "${runas[@]}" "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    rm -f "$STATE/run/postgres.private"
  fi
}

cargo_bin_dir() { echo "${CARGO_TARGET_DIR:-$ROOT/target}/$1"; }

# render_edge_config OUT: deploy/nginx.conf for one machine (upstreams on 127.0.0.1, listening
# on :3000, pid and logs under .tally/), as make up runs it and lint checks it.
render_edge_config() {
  sed -e 's/ingest-api:8080/127.0.0.1:8080/; s/sse-gateway:8081/127.0.0.1:8081/; s/stats-api:8082/127.0.0.1:8082/' \
      -e 's/listen 80;/listen 127.0.0.1:3000;/' \
      -e "s#^pid .*#pid $STATE/run/nginx.pid;#" -e "s#/var/log/nginx/#$STATE/logs/nginx-#g" \
      -e "s#/tmp/nginx-#$STATE/nginx-#g" \
      "$ROOT/deploy/nginx.conf" > "$1"
}

# The Python the tests' peers run on: aiosmtpd (a real SMTP server) and the Standard
# Webhooks reference library (signatures checked independently of our code), in a venv of
# the project's state folder. Exports TALLY_TEST_PYTHON.
ensure_test_python() {
  local venv="$STATE/venv-test"
  if ! "$venv/bin/python" -c 'import aiosmtpd, standardwebhooks' 2>/dev/null; then
    say "installing the tests' Python peers (aiosmtpd, standardwebhooks from PyPI)"
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
    "$venv/bin/pip" install -q --disable-pip-version-check aiosmtpd==1.4.6 standardwebhooks==1.3.0
  fi
  export TALLY_TEST_PYTHON="$venv/bin/python"
}
