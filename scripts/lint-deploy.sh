#!/usr/bin/env bash
# Checks the deployment files and the API documents (make lint; make test runs it too):
#   - docker-compose.yml with every profile, by the compose tool (`docker compose` or
#     Debian's docker-compose, installed when missing);
#   - deploy/k8s against the Kubernetes schemas (kubernetes-validate --strict);
#   - the invariants in scripts/check_deploy.py (KEDA object, scaling, dashboard, edge);
#   - deploy/nginx.conf, rendered as make up runs it, by nginx -t (installed when missing);
#   - the OpenAPI documents the services serve (openapi-spec-validator).
# Python tools live in a venv under .tally/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  command -v docker-compose >/dev/null || apt_install docker-compose
  COMPOSE=(docker-compose)
fi
say "compose: ${COMPOSE[*]} config (all profiles)"
ADMIN_TOKEN=lint STATS_TOKEN=lint STREAM_TOKEN_SECRET=lint VOTER_TOKEN_SECRET=lint "${COMPOSE[@]}" -f docker-compose.yml \
  --profile grafana --profile prometheus --profile otel config -q

VENV="$STATE/venv"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  say "installing validators (kubernetes-validate, openapi-spec-validator, PyYAML)"
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 openapi-spec-validator==0.9.0 pyyaml==6.0.3
fi
say "kubernetes: deploy/k8s against the schemas (strict)"
"$VENV/bin/kubernetes-validate" --strict --quiet --no-warn deploy/k8s/*.yaml
"$VENV/bin/python" scripts/check_deploy.py
# The alert rules' PromQL, where Prometheus's own checker is installed (Debian: prometheus).
if command -v promtool >/dev/null; then
  promtool check rules deploy/prometheus-alerts.yml >/dev/null || die "deploy/prometheus-alerts.yml: promtool refuses the rules"
  echo "  alert rules: promtool check passed"
fi

say "nginx: the edge configuration (nginx -t)"
command -v nginx >/dev/null || apt_install nginx
render_edge_config "$STATE/nginx-lint.conf"
nginx -t -q -c "$STATE/nginx-lint.conf" -p "$STATE" || die "deploy/nginx.conf does not pass nginx -t"

say "OpenAPI documents of ingest-api, stats-api, sse-gateway"
BIN="$(cargo_bin_dir debug)"
for svc in ingest-api stats-api sse-gateway; do
  [ -x "$BIN/$svc" ] || cargo build --bin "$svc" --quiet
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The documents need no Redis or PostgreSQL: point at nothing.
  BIND_ADDR="127.0.0.1:$port" REDIS_URL=redis://127.0.0.1:1 DATABASE_URL=postgres://none@127.0.0.1:1/none \
    RUST_LOG=error "$BIN/$svc" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/openapi.json" > "$STATE/openapi-$svc.json" || { kill "$pid"; die "$svc served no /openapi.json"; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  "$VENV/bin/openapi-spec-validator" "$STATE/openapi-$svc.json" >/dev/null || die "$svc: invalid OpenAPI document"
  echo "  $svc: valid OpenAPI $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['openapi'], '-', len(d['paths']), 'paths')" "$STATE/openapi-$svc.json")"
done
say "deployment files and API documents are valid"
