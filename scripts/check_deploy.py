#!/usr/bin/env python3
"""Checks the deployment files beyond their syntax: the invariants Tally relies on.

- docker-compose.yml: every service the stack needs is there; the four Tally services
  have health checks and publish no host port (so `--scale` works); mounted files exist;
  Redis runs with AOF.
- deploy/k8s: every Deployment probes /readyz and /healthz; the KEDA ScaledObject (no
  schema ships with kubernetes-validate) matches its schema below and watches the real
  queue key; the kustomization lists every manifest.
- deploy/grafana: the dashboard parses, uses only provisioned data sources and only
  metrics stats-api's /grafana serves.
- deploy/nginx.conf: its upstreams are compose services.
"""
import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
errors = []


def check(cond, message):
    if not cond:
        errors.append(message)


# --- compose -------------------------------------------------------------------------
compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
services = compose["services"]
for name in ["redis", "postgres", "migrate", "ingest-api", "sse-gateway", "batch-worker", "stats-api", "edge",
             "prometheus", "grafana", "otel-collector"]:
    check(name in services, f"compose: service {name} missing")
for name in ["ingest-api", "sse-gateway", "batch-worker", "stats-api"]:
    svc = services.get(name, {})
    check("healthcheck" in svc, f"compose: {name} has no healthcheck")
    check("ports" not in svc, f"compose: {name} publishes a host port, which breaks --scale")
    check(svc.get("command", [None])[0] == name, f"compose: {name} does not run its own binary")
for name, svc in services.items():
    for volume in svc.get("volumes", []):
        source = str(volume).split(":")[0]
        if source.startswith("./"):
            check((ROOT / source).exists(), f"compose: {name} mounts missing {source}")
redis_conf = (ROOT / "deploy/redis.conf").read_text()
check("appendonly yes" in redis_conf, "deploy/redis.conf: AOF must be on (the queues hold acknowledged data)")
check("maxmemory-policy noeviction" in redis_conf, "deploy/redis.conf: must never evict queue items")

# --- kubernetes ----------------------------------------------------------------------
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}
k8s = ROOT / "deploy/k8s"
docs = {}
for path in sorted(k8s.glob("*.yaml")):
    docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d]
deployments = {d["metadata"]["name"]: d for ds in docs.values() for d in ds if d.get("kind") == "Deployment"}
for name in ["ingest-api", "sse-gateway", "batch-worker", "stats-api"]:
    dep = deployments.get(name)
    check(dep is not None, f"k8s: deployment {name} missing")
    if dep:
        c = dep["spec"]["template"]["spec"]["containers"][0]
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"k8s: {name} readiness is not /readyz")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"k8s: {name} liveness is not /healthz")
scaled = [d for ds in docs.values() for d in ds if d.get("kind") == "ScaledObject"]
check(len(scaled) == 1, "k8s: expected one KEDA ScaledObject")
for so in scaled:
    try:
        jsonschema.validate(so, SCALED_OBJECT_SCHEMA)
    except jsonschema.ValidationError as e:
        errors.append(f"k8s: ScaledObject invalid: {e.message}")
    check(so["spec"]["scaleTargetRef"]["name"] in deployments, "k8s: ScaledObject targets no deployment")
    trigger = so["spec"]["triggers"][0]
    check(trigger["type"] == "redis", "k8s: ScaledObject should use the Redis list scaler")
    check(trigger["metadata"].get("listName") == "tally:{events}:queue", "k8s: ScaledObject watches the wrong list")
kustomization = docs.get("kustomization.yaml", [{}])[0]
listed = set(kustomization.get("resources", []))
check(listed == set(docs) - {"kustomization.yaml"}, f"k8s: kustomization lists {sorted(listed)}, files are {sorted(set(docs) - {'kustomization.yaml'})}")

# --- grafana -------------------------------------------------------------------------
provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/tally.yaml").read_text())
uids = {d["uid"] for d in provisioned["datasources"]}
dashboard = json.loads((ROOT / "deploy/grafana/dashboards/tally.json").read_text())
served = {"views", "visitors", "events", "top_paths", "breakdown", "poll_results"}
check(dashboard.get("panels"), "grafana: dashboard has no panels")
for panel in dashboard["panels"]:
    check(panel["datasource"]["uid"] in uids, f"grafana: panel {panel['title']} uses an unprovisioned data source")
    for target in panel.get("targets", []):
        if panel["datasource"]["uid"] == "tally-json":
            check(target.get("target") in served, f"grafana: panel {panel['title']} asks for unknown metric {target.get('target')}")
        else:
            check(bool(target.get("expr")), f"grafana: panel {panel['title']} has an empty query")

# --- prometheus alerts ---------------------------------------------------------------
alerts = yaml.safe_load((ROOT / "deploy/prometheus-alerts.yml").read_text())
prom = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
check("/etc/prometheus/alerts.yml" in prom.get("rule_files", []), "prometheus: the alert rules are not loaded")
for group in alerts.get("groups", []):
    for rule in group.get("rules", []):
        check(rule.get("alert") and rule.get("expr"), f"alerts: a rule of {group.get('name')} has no alert or expr")
        check("summary" in rule.get("annotations", {}), f"alerts: {rule.get('alert')} has no summary")

# --- nginx ---------------------------------------------------------------------------
nginx = (ROOT / "deploy/nginx.conf").read_text()
for upstream in ["ingest-api:8080", "sse-gateway:8081", "stats-api:8082"]:
    check(upstream in nginx and upstream.split(":")[0] in services, f"nginx: upstream {upstream} is not a compose service")

if errors:
    print("\n".join(f"error: {e}" for e in errors))
    sys.exit(1)
print("deployment files: all checks passed")
