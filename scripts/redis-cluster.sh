#!/usr/bin/env bash
# A Redis Cluster of three masters with a replica each, from redis-server on loopback.
#
#   scripts/redis-cluster.sh start [BASE_PORT]   starts it (ports BASE..BASE+5), prints the
#                                                redis+cluster:// URL on stdout
#   scripts/redis-cluster.sh stop [BASE_PORT]    kills it and removes its files
#
# cluster-node-timeout is 2 s so a killed master is replaced within seconds (the default
# 15 s would do too, slower). No persistence: the data lives only as long as the nodes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE="${2:-${TALLY_CLUSTER_BASE_PORT:-7100}}"
DIR="$STATE/cluster-$BASE"
PORTS=()
for i in 0 1 2 3 4 5; do PORTS+=("$((BASE + i))"); done

url() {
  local nodes=()
  for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
  local IFS=,
  echo "redis+cluster://${nodes[*]}"
}

stop() {
  for p in "${PORTS[@]}"; do
    if [ -f "$DIR/$p.pid" ]; then
      kill -9 "$(cat "$DIR/$p.pid")" 2>/dev/null || true
    fi
  done
  rm -rf "$DIR"
}

start() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server redis-tools
  stop
  mkdir -p "$DIR"
  for p in "${PORTS[@]}"; do
    port_open 127.0.0.1 "$p" && die "port $p is taken (set TALLY_CLUSTER_BASE_PORT)"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$DIR/nodes-$p.conf" --cluster-node-timeout 2000 \
      --save "" --appendonly no --dir "$DIR" --daemonize yes \
      --pidfile "$DIR/$p.pid" --logfile "$DIR/$p.log" >/dev/null
  done
  for p in "${PORTS[@]}"; do
    for _ in $(seq 100); do
      redis-cli -p "$p" ping 2>/dev/null | grep -q PONG && break
      sleep 0.1
    done
  done
  local nodes=()
  for p in "${PORTS[@]}"; do nodes+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 \
    || { cat "$DIR/create.log" >&2; die "redis-cli --cluster create failed"; }
  # Every node must agree before the first command (a fresh cluster gossips for a moment).
  for p in "${PORTS[@]}"; do
    for _ in $(seq 200); do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
    redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || die "node $p never saw cluster_state:ok"
  done
  # Replicas must have synced, or killing a master could lose the cluster a slot range.
  for _ in $(seq 200); do
    local synced
    synced=$(for p in "${PORTS[@]}"; do redis-cli -p "$p" info replication; done | grep -c 'master_link_status:up' || true)
    [ "$synced" -ge 3 ] && break
    sleep 0.1
  done
  url
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  *) die "usage: $0 start|stop|url [BASE_PORT]" ;;
esac
