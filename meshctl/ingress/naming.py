"""Ownership tags, finalizers and the deterministic names of what we create.

Our own keys (not LBC's ``elbv2.k8s.aws/*``), so meshctl and LBC can run side by side without either touching the
other's load balancers."""

from __future__ import annotations

import hashlib
import re

from meshctl.model.ingress import CHECKPOINT_ANNOTATION

__all__ = [
    "BACKEND_SG_RESOURCE",
    "CHECKPOINT_ANNOTATION",
    "CLUSTER_TAG",
    "FRONTEND_SG_RESOURCE",
    "INGRESS_FINALIZER",
    "RESOURCE_TAG",
    "SERVICE_FINALIZER",
    "STACK_TAG",
    "TARGET_RULE_MARKER",
    "TGB_FINALIZER",
    "backend_security_group_name",
    "group_finalizer",
    "load_balancer_name",
    "security_group_name",
    "target_group_name",
]

CLUSTER_TAG = "elbv2.meshctl.dev/cluster"
STACK_TAG = "elbv2.meshctl.dev/stack"
RESOURCE_TAG = "elbv2.meshctl.dev/resource"
INGRESS_FINALIZER = "ingress.meshctl.dev/resources"
SERVICE_FINALIZER = "service.meshctl.dev/resources"
TGB_FINALIZER = "elbv2.meshctl.dev/resources"
FRONTEND_SG_RESOURCE = "ManagedLBSecurityGroup"  # RESOURCE_TAG of a load balancer's managed group (LBC's id)
BACKEND_SG_RESOURCE = "backend-sg"  # RESOURCE_TAG of the cluster's shared backend group (LBC's value)
# The description of every rule we add to the targets' groups: only rules carrying it are ever revoked there.
TARGET_RULE_MARKER = "elbv2.meshctl.dev/targetGroupBinding=shared"


def group_finalizer(group: str) -> str:
    return f"group.ingress.meshctl.dev/{group}"


def _digest(*parts: object) -> str:
    # (surrogatepass: a name from a manifest file may hold any code point; it must still hash, not raise)
    return hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8", "surrogatepass")).hexdigest()[:10]


def _part(text: str, size: int) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())[:size]


def target_group_name(
    cluster: str, stack: str, resource_id: str, namespace: str, service: str, *immutable: object
) -> str:
    """``k8s-<ns:8>-<svc:8>-<hash:10>``: 32 characters at most; any immutable setting is in the hash, so changing
    one names a new target group (create, then delete the old one)."""
    return f"k8s-{_part(namespace, 8)}-{_part(service, 8)}-{_digest(cluster, stack, resource_id, *immutable)}"


def load_balancer_name(cluster: str, stack: str, *immutable: object) -> str:
    return f"k8s-{_part(stack, 17)}-{_digest(cluster, stack, *immutable)}"


def security_group_name(cluster: str, stack: str) -> str:
    """A load balancer's managed frontend group: ``k8s-<stack:17>-<hash:10>``."""
    return f"k8s-{_part(stack, 17)}-{_digest(cluster, stack, FRONTEND_SG_RESOURCE)}"


def backend_security_group_name(cluster: str) -> str:
    """The cluster's shared backend group: ``k8s-traffic-<cluster:16>-<hash:10>``, as LBC names its own."""
    return f"k8s-traffic-{_part(cluster, 16)}-{_digest(cluster, BACKEND_SG_RESOURCE)}"
