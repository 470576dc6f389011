#!/usr/bin/env bash
# Checks deployments/ without docker or a cluster (part of the test command):
#   - the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate,
#     strict), KEDA objects against keda-schema.json, and the rules of README
#     "Operating it" (probes, resources, PodDisruptionBudgets, grace periods, secrets,
#     scalers): check_deployments.py;
#   - the compose file, parsed and resolved with every profile (`docker-compose config`);
#   - the Dockerfile's binaries against Cargo.toml's [[bin]]s;
#   - the Prometheus configuration and alert rules (promtool check), and the rules'
#     unit tests (promtool test rules deployments/prometheus/alerts_test.yml);
#   - the Grafana dashboard is JSON with a query in every panel.
# Each failure names the file and the field. The series the rules and the dashboard
# use are checked against a real scrape by check-metrics.sh (during run.sh --once).
source "$(dirname "$0")/env.sh"
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tools.sh"
cd "$ROOT"

log "checking the Kubernetes manifests, the compose file and the Dockerfile"
"$TOOLS_PY" "$here/check_deployments.py" || die "deployments/: see the FAIL lines above"

log "checking the Prometheus configuration and alert rules"
promtool check config deployments/prometheus/prometheus.yml >/dev/null \
  || { promtool check config deployments/prometheus/prometheus.yml; die "deployments/prometheus: promtool check failed"; }
promtool test rules deployments/prometheus/alerts_test.yml \
  || die "deployments/prometheus/alerts_test.yml: promtool test rules failed"

"$TOOLS_PY" "$here/check_metrics.py" --dashboard-only || die "deployments/grafana: dashboard check failed"
log "deployments: all checks passed"
