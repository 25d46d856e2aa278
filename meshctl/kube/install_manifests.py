"""``meshctl install``: the manifests of ``deploy/`` with the common options applied, for ``kubectl apply -f -``.

The same transformations the kustomize overlays make (tests/test_deploy.py renders both and compares): the
namespace (objects, binding subjects, the webhook's Service and its excluded namespaces), replicas, image, the IRSA
role ARN, and the ingress reconciler (its RBAC component and flags).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["InstallError", "InstallOptions", "deploy_dir", "render"]

DEFAULT_NAMESPACE = "meshctl-system"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123 label: what Kubernetes takes
DEFAULT_IMAGE = "ghcr.io/meshctl/meshctl:0.1.0"
_CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
}
_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "Service",
    "Deployment",
    "PodDisruptionBudget",
    "MutatingWebhookConfiguration",
]


class InstallError(Exception):
    """Options that do not make an installation: one line for the user."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstallOptions:
    namespace: str = DEFAULT_NAMESPACE
    replicas: int = 2
    image: str = DEFAULT_IMAGE
    role_arn: str | None = None  # IRSA; without it, EKS Pod Identity or node credentials
    ingress: bool = False
    cluster_name: str | None = None
    gateway_api_crds: bool = False  # also the upstream Gateway API CRDs meshctl reads (deploy/gateway-api)


def deploy_dir() -> Path:
    """``$MESHCTL_DEPLOY_DIR``, else ``deploy/`` beside the package (a checkout, or the image's /app)."""
    env = os.environ.get("MESHCTL_DEPLOY_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "deploy"
    if not (path / "base" / "kustomization.yaml").is_file():
        raise InstallError(f"no manifests at {path} (set MESHCTL_DEPLOY_DIR to the deploy/ directory)")
    return path


def _load(kustomization_dir: Path) -> list[dict[str, Any]]:
    """The resources a kustomization lists, in order (directories recursively)."""
    spec = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = kustomization_dir / entry
        if path.is_dir():
            docs.extend(_load(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def render(options: InstallOptions, directory: Path | None = None) -> list[dict[str, Any]]:
    if options.replicas < 1:
        raise InstallError("--replicas must be at least 1")
    if not _DNS_LABEL.fullmatch(options.namespace):
        raise InstallError(f"--namespace {options.namespace!r}: not a namespace name (lowercase letters, digits, '-')")
    if options.ingress and not options.cluster_name:
        raise InstallError("--ingress needs --cluster-name (it goes into the AWS resources' ownership tags)")
    root = directory or deploy_dir()
    base = yaml.safe_load((root / "base" / "kustomization.yaml").read_text())
    docs = _load(root / "base")
    if options.ingress:
        docs.extend(_load(root / "components" / "ingress"))
    labels = {k: v for entry in base.get("labels", []) for k, v in entry.get("pairs", {}).items()}
    out = []
    for original in docs:
        doc = copy.deepcopy(original)
        meta = doc.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
        _namespace(doc, options.namespace)
        kind = doc["kind"]
        if kind == "Deployment":
            _deployment(doc, options)
        elif kind == "ServiceAccount" and options.role_arn:
            meta["annotations"] = {**(meta.get("annotations") or {}), "eks.amazonaws.com/role-arn": options.role_arn}
        elif kind == "PodDisruptionBudget" and options.replicas == 1:
            continue  # one replica cannot keep one available through a drain
        out.append(doc)
    if options.gateway_api_crds:  # upstream's, as upstream ships them: not relabelled as ours
        out.extend(_load(root / "gateway-api"))
    return sorted(out, key=lambda d: _ORDER.index(d["kind"]) if d["kind"] in _ORDER else len(_ORDER))


def _namespace(doc: dict[str, Any], namespace: str) -> None:
    kind = doc["kind"]
    if kind == "Namespace":
        doc["metadata"]["name"] = namespace
    elif kind not in _CLUSTER_SCOPED:
        doc["metadata"]["namespace"] = namespace
    for subject in doc.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject["namespace"] = namespace
    for webhook in doc.get("webhooks") or []:
        service = webhook.get("clientConfig", {}).get("service")
        if service:
            service["namespace"] = namespace
        for expression in (webhook.get("namespaceSelector") or {}).get("matchExpressions") or []:
            if expression["key"] == "kubernetes.io/metadata.name":
                expression["values"] = [namespace if v == DEFAULT_NAMESPACE else v for v in expression["values"]]


def _deployment(doc: dict[str, Any], options: InstallOptions) -> None:
    doc["spec"]["replicas"] = options.replicas
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["image"] = options.image
    args = container["args"]
    args[:] = [
        f"--inject-capture-image={options.image}" if a.startswith("--inject-capture-image=") else a for a in args
    ]
    if options.ingress:
        args += ["--ingress", f"--cluster-name={options.cluster_name}"]
