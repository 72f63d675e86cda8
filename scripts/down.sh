#!/usr/bin/env bash
# make down: stops what make up started (services, nginx, private Redis/PostgreSQL).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for pidfile in "$STATE"/run/*.pid; do
  [ -e "$pidfile" ] || continue
  name="$(basename "$pidfile" .pid)"
  [ "$name" = redis ] && continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping $name (pid $pid)"
    if [ "$name" = nginx ]; then nginx -c "$STATE/nginx.conf" -p "$STATE" -s quit 2>/dev/null || kill "$pid"; else kill -TERM "$pid"; fi
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { echo "  $name did not stop in 30 s; killing"; kill -9 "$pid"; }
  fi
  rm -f "$pidfile"
done
stop_private_services
say "stopped"
