"""The series the alert rules, the dashboard and the sender's scaler use, against a
real scrape.

  check_metrics.py --dashboard-only          the dashboard is well formed (no network)
  check_metrics.py --write-config DIR        a Prometheus configuration for a local run:
                                             deployments/prometheus/prometheus.yml with
                                             loopback targets from the environment
  check_metrics.py --prometheus URL          every selector of every query has series in
                                             that Prometheus, with the labels the query
                                             groups by; every rule evaluates; the
                                             exposition follows the naming conventions

Each failure names the file, the rule or panel, and the series or label that is missing.
"""

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deployments/prometheus/alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deployments/prometheus/prometheus.yml"
DASHBOARD = ROOT / "deployments/grafana/event-platform.json"
SENDER = ROOT / "deployments/k8s/sender.yaml"
# Where each job's /metrics is in a local run (the settings of .env-template).
TARGETS = {"processor": "PROCESSOR_HTTP_ADDR", "sender": "SENDER_HTTP_ADDR", "api": "API_ADDR"}
# PromQL words that look like metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile"}
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"(?<![\w:$.\"])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\{[^}]*\})?(?!\s*\()")
GRAFANA_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range)|\$\{[^}]+\}")


def queries():
    """(file, what, expr) for every query to check."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((RULES, f"alert {rule.get('alert') or rule.get('record')}", rule["expr"]))
    for panel, target in dashboard_targets(json.loads(DASHBOARD.read_text())):
        out.append((DASHBOARD, f"panel {panel['title']!r}", GRAFANA_VARIABLES.sub("5m", target["expr"])))
    for doc in yaml.safe_load_all(SENDER.read_text()):
        if doc and doc.get("kind") == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    out.append((SENDER, f"ScaledObject/{doc['metadata']['name']} query", trigger["metadata"]["query"]))
    return out


def dashboard_targets(dashboard):
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    for panel in panels:
        for target in panel.get("targets", []):
            yield panel, target


def selectors(expr):
    """The metric selectors of a PromQL expression, and the labels it groups or matches on."""
    # Drop strings outside selectors (e.g. label_replace arguments) and durations.
    found = []
    for match in SELECTOR.finditer(GROUPING.sub(" ", expr)):
        name, matchers = match.group(1), match.group(2) or ""
        if name.lower() in KEYWORDS or re.fullmatch(r"[0-9]+[smhdwy]", name):
            continue
        found.append(name + matchers)
    labels = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
    return found, labels


def check_dashboard():
    problems = []
    try:
        dashboard = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [f"{rel(DASHBOARD)}: not JSON: {e}"]
    for key in ("title", "uid", "panels"):
        if key not in dashboard:
            problems.append(f"{rel(DASHBOARD)}: {key}: missing")
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            problems.append(f"{rel(DASHBOARD)}: panel {panel.get('title')!r}: targets: no query")
        for i, target in enumerate(panel.get("targets", [])):
            if not target.get("expr"):
                problems.append(f"{rel(DASHBOARD)}: panel {panel.get('title')!r}: targets[{i}].expr: missing")
            elif not selectors(GRAFANA_VARIABLES.sub("5m", target["expr"]))[0]:
                problems.append(f"{rel(DASHBOARD)}: panel {panel.get('title')!r}: targets[{i}].expr: reads no series")
    return problems


def write_config(directory):
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        address = os.environ[TARGETS[job["job_name"]]].replace("0.0.0.0", "127.0.0.1")
        job["static_configs"] = [{"targets": [address]}]
    path = Path(directory) / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(path)


def api(prometheus, path, **params):
    url = f"{prometheus}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def scrape_problems(prometheus):
    problems = []
    targets = api(prometheus, "targets")["activeTargets"]
    for target in targets:
        if target["health"] != "up":
            problems.append(f"{rel(PROMETHEUS_CONFIG)}: job {target['labels']['job']}: {target['scrapeUrl']} is "
                            f"{target['health']}: {target.get('lastError')}")
    start = str(time.time() - 600)
    for file, what, expr in queries():
        names, labels = selectors(expr)
        seen = set()
        for selector in names:
            series = api(prometheus, "series", **{"match[]": selector, "start": start})
            if not series:
                problems.append(f"{rel(file)}: {what}: series {selector} not found in the scrape")
                continue
            for s in series:
                seen.update(s.keys())
        for label in sorted(labels - seen):
            if names and seen:
                problems.append(f"{rel(file)}: {what}: groups by label {label!r}, which none of "
                                f"{', '.join(names)} carries")
    for group in api(prometheus, "rules")["groups"]:
        for rule in group["rules"]:
            if rule.get("health") not in ("ok", "unknown") or rule.get("lastError"):
                problems.append(f"{rel(RULES)}: alert {rule['name']}: evaluation fails: {rule.get('lastError')}")
    return problems


def naming_problems():
    """Prometheus naming conventions on what each service exposes."""
    problems = []
    for job, variable in TARGETS.items():
        address = os.environ[variable].replace("0.0.0.0", "127.0.0.1")
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
            text = response.read().decode()
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", text, re.M):
            if kind == "counter" and not name.endswith("_total"):
                problems.append(f"{job} /metrics: {name}: a counter's name must end in _total")
            if kind in ("histogram", "summary") and not re.search(r"_(seconds|bytes|events|messages)$", name):
                problems.append(f"{job} /metrics: {name}: a {kind}'s name must end in its unit (_seconds, _bytes)")
            if kind == "gauge" and name.endswith("_total"):
                problems.append(f"{job} /metrics: {name}: _total is for counters")
        # promtool's own lint, less its complaint about missing HELP lines.
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        for line in (lint.stdout + lint.stderr).splitlines():
            if line.strip() and "no help text" not in line:
                problems.append(f"{job} /metrics: promtool check metrics: {line.strip()}")
    return problems


def rel(path):
    return str(Path(path).relative_to(ROOT))


def main(argv):
    if argv[:1] == ["--dashboard-only"]:
        problems = check_dashboard()
        if not problems:
            print(f"ok: {rel(DASHBOARD)}: {sum(1 for _ in dashboard_targets(json.loads(DASHBOARD.read_text())))} queries")
    elif argv[:1] == ["--write-config"]:
        write_config(argv[1])
        return 0
    elif argv[:1] == ["--prometheus"]:
        prometheus, wait = argv[1], float(argv[2]) if len(argv) > 2 else 60
        # Gauges refresh every 5-15 s: give the scrape that long before judging.
        deadline = time.time() + wait
        while True:
            problems = check_dashboard() + scrape_problems(prometheus)
            if not problems or time.time() > deadline:
                break
            time.sleep(3)
        problems += naming_problems()
        if not problems:
            n = len(queries())
            print(f"ok: the {n} queries of the alert rules, the dashboard and the sender's scaler find their series "
                  f"and labels in the scrape; every rule evaluates; metric names follow the conventions")
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
