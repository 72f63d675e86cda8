#!/usr/bin/env bash
# Pub/sub on a Redis Cluster: what one published update costs the cluster's Redis
# processes (CPU of all six nodes, per message) and the publish rate on one master, classic
# PUBLISH (broadcast over the cluster bus to every node; the subscriber on another node, as
# a gateway on a classic channel could be) against SPUBLISH (delivered within the channel's
# shard; the subscriber at its master, as the gateway subscribes). 150-byte messages, one
# subscriber, redis-benchmark with 8 connections pipelining 16.
#
# Usage: scripts/bench-pubsub-cluster.sh BASE_PORT [MESSAGES]
# Prints: classic_rate classic_cpu_us sharded_rate sharded_cpu_us
set -euo pipefail
base=$1
messages=${2:-200000}
channel='bench:chan:{votes:1}:poll:p'
slot=$(redis-cli -p "$base" cluster keyslot "$channel")
owner=$(redis-cli -p "$base" cluster nodes | awk -v slot="$slot" '
  $3 ~ /master/ {
    for (i = 9; i <= NF; i++) {
      split($i, range, "-"); if (range[2] == "") range[2] = range[1]
      if (slot >= range[1] && slot <= range[2]) { split($2, addr, "[:@]"); print addr[2] }
    }
  }')
other=$base
[ "$other" = "$owner" ] && other=$((base + 1))

cluster_cpu_s() {
  local total=0 port
  for port in $(seq "$base" $((base + 5))); do
    total=$(redis-cli -p "$port" info cpu | tr -d '\r' |
      awk -F: -v t="$total" '/^used_cpu_(sys|user):/ { t += $2 } END { printf "%.6f", t }')
  done
  echo "$total"
}

payload=$(head -c 150 /dev/zero | tr '\0' x)
# measure PUBLISH-COMMAND SUBSCRIBE-COMMAND SUBSCRIBER-PORT -> "rate cpu_us_per_message"
measure() {
  redis-cli -p "$3" "$2" "$channel" > /dev/null &
  local subscriber=$!
  # The subscription is made before the first message (one subscriber counted).
  until [ "$(redis-cli -p "$3" pubsub "$( [ "$2" = SSUBSCRIBE ] && echo shardnumsub || echo numsub)" "$channel" | tail -1)" = 1 ]; do
    sleep 0.05
  done
  local before after rate
  before=$(cluster_cpu_s)
  rate=$(redis-benchmark -p "$owner" -n "$messages" -c 8 -P 16 --csv "$1" "$channel" "$payload" |
    tail -1 | cut -d, -f2 | tr -d '"')
  after=$(cluster_cpu_s)
  kill "$subscriber"
  wait "$subscriber" 2>/dev/null || true
  awk -v r="$rate" -v a="$after" -v b="$before" -v n="$messages" 'BEGIN { printf "%s %.3f\n", r, (a - b) * 1000000 / n }'
}
read -r classic_rate classic_us < <(measure PUBLISH SUBSCRIBE "$other")
read -r sharded_rate sharded_us < <(measure SPUBLISH SSUBSCRIBE "$owner")
echo "$classic_rate $classic_us $sharded_rate $sharded_us"
