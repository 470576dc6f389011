"""Offline checks of the deployment files, without docker or a cluster.

Run by check-deployments.sh with the tools' virtual environment (kubernetes-validate,
jsonschema, PyYAML). Every problem is printed as `FILE: OBJECT: FIELD: what is wrong`;
the exit code is 1 when there is any.

- deployments/k8s/*.yaml: every object against the Kubernetes JSON schemas bundled by
  kubernetes-validate (strict: unknown fields fail), KEDA objects against
  keda-schema.json (the CRD fields used here, strict), then what the schemas cannot
  see: probes on /healthz and /readyz, requests and limits, a PodDisruptionBudget per
  Deployment, grace periods above the shutdown timeouts, secrets only from a Secret,
  references that resolve, commands that are Cargo binaries, the scalers.
- deployments/docker-compose.yaml: parsed and resolved by `docker-compose config`
  (every profile), then the same rules for services, grace periods and health checks.
- deployments/Dockerfile: the binaries it copies are exactly Cargo.toml's [[bin]]s.
"""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The Kubernetes version the manifests are checked against (schemas bundled by the
# pinned kubernetes-validate).
KUBERNETES_VERSION = "1.30"
# The one Secret the manifests read, and its keys (README, "Operating it").
SECRET_NAME = "event-processor"
SECRET_KEYS = {"database-url", "api-admin-key"}
# Settings that are secrets: they must come from the Secret, never a ConfigMap or a literal.
SECRET_SETTINGS = {"DATABASE_URL", "API_ADMIN_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "CONSUMERS"}
SECRET_LOOKING = re.compile(r"SECRET|PASSWORD|TOKEN|ADMIN_KEY|ACCESS_KEY|DATABASE_URL", re.I)
# The bound each service's grace period must exceed: its shutdown timeout setting.
SHUTDOWN_SETTING = {
    "processor": "PROCESSOR_SHUTDOWN_TIMEOUT_SECS",
    "sender": "SENDER_SHUTDOWN_TIMEOUT_SECS",
    "api": "API_REQUEST_TIMEOUT_SECS",  # the API finishes requests in flight, each within this
}
# Defaults where .env-template does not name the setting (src/config.rs).
SHUTDOWN_DEFAULTS = {"SENDER_SHUTDOWN_TIMEOUT_SECS": 20}
SERVICES = ("processor", "sender", "api")
# The processor's memory besides held messages (peak RSS 33.7 MiB measured), with room.
PROCESSOR_BASE_BYTES = 48 << 20

problems: list[str] = []


def problem(file, obj, field, message):
    where = ": ".join(str(p) for p in (rel(file), obj, field) if p)
    problems.append(f"{where}: {message}")


def rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def dotted(path):
    return ".".join(str(p) for p in path) or "(top level)"


def cargo_bins():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return {b["name"] for b in cargo.get("bin", [])}


def env_template():
    values = {}
    for line in (ROOT / ".env-template").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def shutdown_bound(setting, env):
    value = env.get(setting, env_template().get(setting, SHUTDOWN_DEFAULTS.get(setting)))
    return int(value)


def quantity_bytes(text):
    """Kubernetes memory quantities: 256Mi, 1Gi, 500M, 1048576."""
    match = re.fullmatch(r"([0-9.]+)([KMGT]i?)?", str(text))
    if not match:
        return None
    factor = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(match.group(1)) * factor[match.group(2)]


def duration_secs(text):
    """Compose durations: 1m30s, 30s, 500ms."""
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    for number, unit in re.findall(r"([0-9.]+)(ms|us|h|m|s)", str(text)):
        total += float(number) * units[unit]
    return total


# ---------------------------------------------------------------- Dockerfile ---------
def check_dockerfile(bins):
    path = ROOT / "deployments/Dockerfile"
    text = path.read_text()
    copies = [line for line in text.replace("\\\n", " ").splitlines()
              if line.startswith("COPY --from=build") and "/usr/local/bin" in line]
    if not copies:
        problem(path, "COPY --from=build ... /usr/local/bin/", "", "no line copies the binaries")
        return
    copied = set(re.findall(r"/target/release/([A-Za-z0-9_-]+)", " ".join(copies)))
    for name in sorted(bins - copied):
        problem(path, "COPY --from=build ... /usr/local/bin/", name, "Cargo.toml has this [[bin]], the image lacks it")
    for name in sorted(copied - bins):
        problem(path, "COPY --from=build ... /usr/local/bin/", name, "not a [[bin]] of Cargo.toml")


# ---------------------------------------------------------------- Kubernetes ---------
def k8s_objects():
    objects = []
    for path in sorted((ROOT / "deployments/k8s").glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problem(path, "", "", f"not YAML: {e}")
            continue
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                problem(path, f"document {i + 1}", "kind/apiVersion", "missing")
                continue
            objects.append((path, doc))
    if not objects:
        problem(ROOT / "deployments/k8s", "", "", "no manifests")
    return objects


def name_of(doc):
    return f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"


def validate_schemas(objects):
    keda = json.loads((ROOT / "deployments/local/keda-schema.json").read_text())
    for path, doc in objects:
        if doc["apiVersion"].startswith("keda.sh/"):
            schema = keda.get(doc["kind"])
            if schema is None:
                problem(path, name_of(doc), "kind", f"no schema for KEDA kind {doc['kind']} in keda-schema.json")
                continue
            validator = jsonschema.Draft202012Validator(schema)
            for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                problem(path, name_of(doc), dotted(error.absolute_path), error.message)
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problem(path, name_of(doc), dotted(error.path), error.message)
        except kubernetes_validate.SchemaNotFoundError as error:
            problem(path, name_of(doc), "apiVersion/kind", error.message)


def check_k8s(objects, bins):
    by_kind = {}
    for path, doc in objects:
        by_kind.setdefault(doc["kind"], []).append((path, doc))
    config_maps = {d["metadata"]["name"]: (p, d) for p, d in by_kind.get("ConfigMap", [])}
    deployments = {d["metadata"]["name"]: (p, d) for p, d in by_kind.get("Deployment", [])}
    auths = {d["metadata"]["name"] for _, d in by_kind.get("TriggerAuthentication", [])}
    accounts = {d["metadata"]["name"] for _, d in by_kind.get("ServiceAccount", [])}

    for path, doc in by_kind.get("ConfigMap", []):
        for key, value in (doc.get("data") or {}).items():
            if key in SECRET_SETTINGS or SECRET_LOOKING.search(key) or re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)):
                problem(path, name_of(doc), f"data.{key}", "a secret in a ConfigMap: read it from the Secret "
                        f"{SECRET_NAME} (secretKeyRef)")
    for path, doc in by_kind.get("PodDisruptionBudget", []):
        for key in ("minAvailable", "maxUnavailable"):
            value = doc["spec"].get(key)
            if value is not None and not (isinstance(value, int) or re.fullmatch(r"[0-9]+%", str(value))):
                problem(path, name_of(doc), f"spec.{key}", f"{value!r} is neither a number nor a percentage")
    for path, doc in by_kind.get("Secret", []):
        problem(path, name_of(doc), "", "Secrets are not committed: create them with kubectl (README)")

    served = {}
    for name, (path, doc) in deployments.items():
        obj = name_of(doc)
        spec = doc["spec"]["template"]["spec"]
        labels = doc["spec"]["template"]["metadata"].get("labels") or {}
        sa = spec.get("serviceAccountName")
        if sa and sa not in accounts:
            problem(path, obj, "spec.template.spec.serviceAccountName", f"no ServiceAccount {sa} in deployments/k8s")
        for i, c in enumerate(spec.get("containers", [])):
            base = f"spec.template.spec.containers[{i}]"
            command = c.get("command") or []
            binary = command[0] if command else None
            if binary not in bins:
                problem(path, obj, f"{base}.command", f"{command!r} does not start a Cargo binary ({', '.join(sorted(bins))})")
                continue
            served[binary] = (path, doc)
            for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                if got != want:
                    problem(path, obj, f"{base}.{probe}.httpGet.path", f"is {got!r}, expected {want}")
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(part) or {}):
                        problem(path, obj, f"{base}.resources.{part}.{resource}", "missing")
            env = {}
            for ref in c.get("envFrom", []):
                cm = (ref.get("configMapRef") or {}).get("name")
                if cm is not None:
                    if cm not in config_maps:
                        problem(path, obj, f"{base}.envFrom.configMapRef.name", f"no ConfigMap {cm} in deployments/k8s")
                    else:
                        env.update(config_maps[cm][1].get("data") or {})
                if "secretRef" in ref and ref["secretRef"].get("name") != SECRET_NAME:
                    problem(path, obj, f"{base}.envFrom.secretRef.name", f"expected the Secret {SECRET_NAME}")
            for j, var in enumerate(c.get("env", [])):
                field = f"{base}.env[{j}]"
                source = var.get("valueFrom") or {}
                if var["name"] in SECRET_SETTINGS or SECRET_LOOKING.search(var["name"]):
                    ref = source.get("secretKeyRef")
                    if ref is None:
                        problem(path, obj, field, f"{var['name']} is a secret: read it with secretKeyRef from {SECRET_NAME}")
                    elif ref.get("name") != SECRET_NAME or ref.get("key") not in SECRET_KEYS:
                        problem(path, obj, f"{field}.valueFrom.secretKeyRef", f"expected Secret {SECRET_NAME} with a key "
                                f"of {sorted(SECRET_KEYS)}, got {ref.get('name')}/{ref.get('key')}")
                cm_ref = source.get("configMapKeyRef")
                if cm_ref and cm_ref.get("name") not in config_maps:
                    problem(path, obj, f"{field}.valueFrom.configMapKeyRef.name", f"no ConfigMap {cm_ref.get('name')}")
                if "value" in var:
                    env[var["name"]] = var["value"]
            if binary == "processor":
                # Held messages may take PROCESSOR_MAX_HELD_BYTES; the process itself ~34 MiB.
                held = int(env.get("PROCESSOR_MAX_HELD_BYTES", env_template().get("PROCESSOR_MAX_HELD_BYTES", 0)))
                limit = quantity_bytes((resources.get("limits") or {}).get("memory"))
                if limit is not None and limit < held + PROCESSOR_BASE_BYTES:
                    problem(path, obj, f"{base}.resources.limits.memory", f"{resources['limits']['memory']} cannot hold "
                            f"PROCESSOR_MAX_HELD_BYTES ({held}) plus the process ({PROCESSOR_BASE_BYTES >> 20} MiB)")
            setting = SHUTDOWN_SETTING.get(binary)
            if setting:
                bound = shutdown_bound(setting, env)
                pre_stop = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
                if pre_stop[:1] == ["sleep"]:
                    bound += int(pre_stop[1])
                grace = spec.get("terminationGracePeriodSeconds", 30)
                if grace <= bound:
                    problem(path, obj, "spec.template.spec.terminationGracePeriodSeconds",
                            f"{grace} must be above {setting} ({bound}{' with the preStop sleep' if pre_stop else ''})")
        pdbs = [d for _, d in by_kind.get("PodDisruptionBudget", [])
                if all(labels.get(k) == v for k, v in ((d["spec"].get("selector") or {}).get("matchLabels") or {}).items())
                and (d["spec"].get("selector") or {}).get("matchLabels")]
        if not pdbs:
            problem(path, obj, "spec.template.metadata.labels", "no PodDisruptionBudget selects these pods")
    for service in SERVICES:
        if service not in served:
            problem(ROOT / "deployments/k8s", "", "", f"no Deployment runs the {service}")

    scaled = {}
    for path, doc in by_kind.get("ScaledObject", []):
        obj = name_of(doc)
        target = doc["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            problem(path, obj, "spec.scaleTargetRef.name", f"no Deployment {target} in deployments/k8s")
            continue
        command = deployments[target][1]["spec"]["template"]["spec"]["containers"][0].get("command") or [None]
        scaled[command[0]] = doc
        for i, trigger in enumerate(doc["spec"]["triggers"]):
            ref = (trigger.get("authenticationRef") or {}).get("name")
            if ref and ref not in auths:
                problem(path, obj, f"spec.triggers[{i}].authenticationRef.name", f"no TriggerAuthentication {ref}")
    expect = {"processor": ("aws-sqs-queue", None), "sender": ("prometheus", "event_sender_cursor_lag_events")}
    for binary, (kind, metric) in expect.items():
        doc = scaled.get(binary)
        if doc is None:
            problem(ROOT / "deployments/k8s", "", "", f"no ScaledObject scales the {binary}")
            continue
        triggers = [t for t in doc["spec"]["triggers"] if t.get("type") == kind]
        if not triggers:
            problem(ROOT / "deployments/k8s", name_of(doc), "spec.triggers", f"the {binary} must scale with a {kind} trigger")
        elif metric and metric not in triggers[0]["metadata"].get("query", ""):
            problem(ROOT / "deployments/k8s", name_of(doc), "spec.triggers.metadata.query", f"must read {metric}")


# ---------------------------------------------------------------- compose ------------
def check_compose(bins):
    path = ROOT / "deployments/docker-compose.yaml"
    result = subprocess.run(
        ["docker-compose", "-f", str(path), "--profile", "consumers", "--profile", "producers",
         "--profile", "monitoring", "config"],
        capture_output=True, text=True, cwd=ROOT / "deployments",
    )
    if result.returncode != 0:
        for line in (result.stderr.strip() or result.stdout.strip()).splitlines():
            problem(path, "docker-compose config", "", line)
        return
    services = yaml.safe_load(result.stdout)["services"]
    for name in SERVICES + ("consumers",):
        if name not in services:
            problem(path, f"services.{name}", "", "missing")
    if "consumers" in services and "consumers" not in (services["consumers"].get("profiles") or []):
        problem(path, "services.consumers", "profiles", "the fake consumers run only under the profile `consumers`")
    for name, service in services.items():
        entry = service.get("entrypoint") or []
        if service.get("image", "").startswith("event-processor") and entry:
            binary = entry[0]
            if binary == "bash":  # bash -c "... exec BINARY ..."
                found = re.findall(r"exec\s+(\S+)", entry[-1])
                binary = found[-1] if found else None
            if binary not in bins:
                problem(path, f"services.{name}", "entrypoint", f"{entry!r} does not start a Cargo binary")
        if name in SERVICES:
            profiles = service.get("profiles") or []
            if profiles:
                problem(path, f"services.{name}", "profiles", f"{profiles}: the {name} must run without a profile")
            env = service.get("environment") or {}
            setting = SHUTDOWN_SETTING[name]
            bound = shutdown_bound(setting, env)
            grace = duration_secs(service.get("stop_grace_period", "10s"))
            if grace <= bound:
                problem(path, f"services.{name}", "stop_grace_period", f"{grace:g}s must be above {setting} ({bound})")
            test = " ".join((service.get("healthcheck") or {}).get("test") or [])
            if "/readyz" not in test:
                problem(path, f"services.{name}", "healthcheck.test", "must check /readyz")


def main():
    bins = cargo_bins()
    check_dockerfile(bins)
    objects = k8s_objects()
    validate_schemas(objects)
    if not problems:  # the semantic checks assume schema-valid objects
        check_k8s(objects, bins)
    check_compose(bins)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    kinds = sorted({name_of(d) for _, d in objects})
    print(f"ok: {len(objects)} Kubernetes objects ({', '.join(kinds)}), the compose file, the Dockerfile's "
          f"binaries ({', '.join(sorted(bins))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
