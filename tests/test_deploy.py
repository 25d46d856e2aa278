"""deploy/: every overlay renders (kubectl kustomize, offline), validates for Kubernetes 1.30 and the newest
version kubernetes-validate bundles, keeps every pod template "restricted", and `meshctl install` prints what the
overlays render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from meshctl.kube.install_manifests import InstallOptions, render
from tests.pss import restricted_violations

ROOT = Path(__file__).parent.parent
OVERLAYS = ["base", "overlays/eks", "overlays/kind", "overlays/cert-manager"]
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CERT_MANAGER = "cert-manager.io/v1"  # CRD kinds kubernetes-validate has no schema for: checked by hand below


def kustomize(overlay: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / overlay)], capture_output=True, text=True, check=True
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_key(docs: list[dict]) -> dict[tuple[str, str, str], dict]:
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d for d in docs}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_manifest_validates(overlay: str) -> None:
    docs = kustomize(overlay)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == CERT_MANAGER:
            assert doc["kind"] in ("Issuer", "Certificate") and doc["metadata"]["namespace"] == "meshctl-system"
            continue
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_templates_are_restricted_and_the_namespace_enforces_it(overlay: str) -> None:
    docs = kustomize(overlay)
    templates = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "DaemonSet", "Job")]
    assert templates
    for spec in templates:
        assert restricted_violations(spec) == []
        assert all("limits" in c["resources"] and "requests" in c["resources"] for c in spec["containers"])
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    assert all(labels[f"pod-security.kubernetes.io/{m}"] == "restricted" for m in ("enforce", "audit", "warn"))


def test_the_controller_is_highly_available_and_probed() -> None:
    docs = by_key(kustomize("base"))
    deployment = docs[("Deployment", "meshctl-system", "meshctl")]
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert (
        spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"][
            "topologyKey"
        ]
        == "kubernetes.io/hostname"
    )
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert docs[("PodDisruptionBudget", "meshctl-system", "meshctl")]["spec"]["minAvailable"] == 1
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = docs[("Service", "meshctl-system", "meshctl")]
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc-xds", "https-webhook", "http-admin"}
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_a_webhook_outage_only_ever_touches_labelled_namespaces() -> None:
    """...and edge gateway pods (label meshctl.dev/gateway), which the second webhook alone is sent."""
    (config,) = [d for d in kustomize("base") if d["kind"] == "MutatingWebhookConfiguration"]
    webhook, gateways = config["webhooks"]
    assert {"key": "meshctl.dev/gateway", "operator": "DoesNotExist"} in webhook["objectSelector"]["matchExpressions"]
    assert gateways["objectSelector"] == {"matchExpressions": [{"key": "meshctl.dev/gateway", "operator": "Exists"}]}
    (system,) = gateways["namespaceSelector"]["matchExpressions"]
    assert {"kube-system", "meshctl-system"} <= set(system["values"]) and system["operator"] == "NotIn"
    assert gateways["rules"] == webhook["rules"] and gateways["clientConfig"] == webhook["clientConfig"]
    assert webhook["timeoutSeconds"] <= 10 and webhook["sideEffects"] == "None"
    assert webhook["admissionReviewVersions"] == ["v1"]
    expressions = {e["key"]: e for e in webhook["namespaceSelector"]["matchExpressions"]}
    assert expressions["meshctl.dev/inject"] == {"key": "meshctl.dev/inject", "operator": "In", "values": ["enabled"]}
    assert {"kube-system", "meshctl-system"} <= set(expressions["kubernetes.io/metadata.name"]["values"])
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]


@pytest.mark.parametrize(
    ("overlay", "options"),
    [
        ("base", InstallOptions()),
        (
            "overlays/eks",
            InstallOptions(
                ingress=True, cluster_name="my-cluster", role_arn="arn:aws:iam::111122223333:role/meshctl-controller"
            ),
        ),
        ("overlays/kind", InstallOptions(replicas=1, image="meshctl:dev")),
    ],
)
def test_meshctl_install_prints_what_the_overlay_renders(overlay: str, options: InstallOptions) -> None:
    assert by_key(render(options)) == by_key(kustomize(overlay))


def test_install_into_another_namespace_leaves_no_trace_of_the_default() -> None:
    docs = render(InstallOptions(namespace="mesh"))
    assert "meshctl-system" not in json.dumps(docs)
    (config,) = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert config["webhooks"][0]["clientConfig"]["service"]["namespace"] == "mesh"
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[0], strict=True)


def test_install_cli_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "install", "--ingress"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and done.stderr.strip().startswith("meshctl install: --ingress needs --cluster-name")
    ok = subprocess.run([sys.executable, "-m", "meshctl", "install", "-o", "json"], capture_output=True, text=True)
    assert ok.returncode == 0 and json.loads(ok.stdout)["kind"] == "List"
