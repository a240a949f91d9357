#!/usr/bin/env python3
"""Checks the Helm chart deploy/helm/roomcast without a cluster or a helm binary.

For the chart's values and every set in its ci/ folder: `helm lint --strict` (Helm's
own engine, through the helm-python-sdk package), an offline render, every manifest
validated against the Kubernetes API schemas (kubernetes-validate), the promises the
chart makes checked on the rendered objects (no replicas beside the HPA, a grace period
longer than the drain, selectors that select, WebSocket timeouts on the Ingress, …), and
the rendered configuration run through `roomcast --check-config`.

Usage: python scripts/check-helm.py --binary target/debug/roomcast
(needs: pip install helm-python-sdk kubernetes-validate; scripts/test.sh installs them)
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "roomcast"
KUBE_VERSION = "1.30.0"
problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def lint(name: str, values: dict) -> None:
    report = helm_python.lint(CHART, values, strict=True, kube_version=KUBE_VERSION)
    for message in report.get("messages", []):
        # Severity 0 unknown, 1 info ("icon is recommended": advice), 2 warning, 3 error.
        if message.get("severity", 0) != 1:
            problem(f"lint {name}", f"{message['path']}: {message['error'].strip()}")


def render(values: dict) -> list[dict]:
    manifests = helm_python.Chart.load(CHART).render(
        values, name="rc", namespace="realtime", is_install=True
    )
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("__path", path)
                objects.append(document)
    return objects


def find(objects: list[dict], kind: str, suffix: str = "") -> list[dict]:
    return [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]


def validate_schemas(name: str, objects: list[dict]) -> None:
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: checked below
        document = {k: v for k, v in obj.items() if k != "__path"}
        try:
            kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problem(f"{name} {obj['kind']}/{obj['metadata']['name']}", error.message)


def subset(small: dict, big: dict) -> bool:
    return all(big.get(k) == v for k, v in small.items())


def check_promises(name: str, values: dict, objects: list[dict]) -> None:
    merged = helm_python.Chart.load(CHART).merge_values(values)
    (deployment,) = find(objects, "Deployment")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    hpas = find(objects, "HorizontalPodAutoscaler")
    if merged["autoscaling"]["enabled"]:
        if "replicas" in deployment["spec"]:
            problem(name, "the Deployment sets replicas beside the HPA (an upgrade would reset the HPA's count)")
        if not hpas or hpas[0]["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"]:
            problem(name, "the HPA does not target the Deployment")
    elif deployment["spec"].get("replicas") != merged["replicaCount"]:
        problem(name, "without autoscaling the Deployment must set replicaCount")

    drain = merged["drain"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    if grace <= drain["deadlineMs"] / 1000 + drain["preStopSeconds"]:
        problem(name, f"terminationGracePeriodSeconds {grace} does not cover the drain deadline and preStop")
    if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problem(name, "the readiness probe must be /readyz (not ready while draining)")
    if "preStop" not in container.get("lifecycle", {}):
        problem(name, "no preStop pause before SIGTERM")
    if deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] != 0:
        problem(name, "a rolling update must not take pods away before their replacements are ready")

    labels = pod["metadata"]["labels"]
    if not subset(deployment["spec"]["selector"]["matchLabels"], labels):
        problem(name, "the Deployment's selector does not select its pods")
    for service in find(objects, "Service"):
        if not subset(service["spec"]["selector"], labels):
            problem(name, f"Service {service['metadata']['name']} selects no pod")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in [p["name"] for p in container["ports"]]:
                problem(name, f"Service port {port['name']} targets an unknown container port")
    for pdb in find(objects, "PodDisruptionBudget"):
        if not subset(pdb["spec"]["selector"]["matchLabels"], labels):
            problem(name, "the PodDisruptionBudget selects no pod")

    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for source in container["envFrom"]:
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
        if (kind, ref["name"]) not in names and not (kind == "Secret" and merged["auth"]["existingSecret"]):
            problem(name, f"the pod reads {kind} {ref['name']}, which the chart does not create")

    for ingress in find(objects, "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        timeout = int(annotations.get("nginx.ingress.kubernetes.io/proxy-read-timeout", "0"))
        if timeout < 3600:
            problem(name, "the Ingress would cut WebSocket connections (proxy-read-timeout under an hour)")
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        if backend["name"] != deployment["metadata"]["name"]:
            problem(name, "the Ingress does not route to the roomcast Service")
    for monitor in find(objects, "ServiceMonitor"):
        selected = [s for s in find(objects, "Service") if subset(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if [s["metadata"]["name"] for s in selected] != [deployment["metadata"]["name"] + "-metrics"]:
            problem(name, "the ServiceMonitor must select exactly the metrics Service")
        if monitor["spec"]["endpoints"][0]["port"] != "metrics":
            problem(name, "the ServiceMonitor scrapes another port than metrics")
    for policy in find(objects, "NetworkPolicy"):
        ports = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
        if sorted(ports) != ["http", "metrics"]:
            problem(name, f"the NetworkPolicy opens {ports}, expected http and metrics")


def check_config(name: str, objects: list[dict], binary: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ROOMCAST_NODE_ID": "rc-0"}
    for configmap in find(objects, "ConfigMap", "-env"):
        env.update(configmap["data"])
    for secret in find(objects, "Secret"):
        env.update(secret.get("stringData", {}))
    with tempfile.TemporaryDirectory() as directory:
        (flags,) = find(objects, "ConfigMap", "-flags")
        flags_file = Path(directory) / "flags.toml"
        flags_file.write_text(flags["data"]["flags.toml"])
        env["ROOMCAST_FLAGS__FILE"] = str(flags_file)
        result = subprocess.run([binary, "--check-config"], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        problem(name, f"roomcast --check-config refuses the rendered configuration: {result.stderr.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True, help="the roomcast binary for --check-config")
    args = parser.parse_args()
    # The `fail` of the chart's own checks is expected below; Helm's log would repeat it.
    helm_python.disable_logging()

    # The default values render nothing that could run: closed by default, the chart
    # asks for authentication first.
    try:
        render({})
        problem("defaults", "rendered without any authentication configured")
    except helm_python.HelmError as error:
        if "refuses a public listener without authentication" not in str(error):
            problem("defaults", f"failed for another reason than missing authentication: {error}")

    sets = sorted((CHART / "ci").glob("*.yaml"))
    if not sets:
        problem("ci", "no values sets in deploy/helm/roomcast/ci")
    for path in sets:
        name = path.name
        values = yaml.safe_load(path.read_text()) or {}
        lint(name, values)
        objects = render(values)
        validate_schemas(name, objects)
        check_promises(name, values, objects)
        check_config(name, objects, args.binary)
        kinds = sorted({o["kind"] for o in objects})
        print(f"{name}: {len(objects)} objects ({', '.join(kinds)})")

    for line in problems:
        print(f"PROBLEM {line}", file=sys.stderr)
    print("chart OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
