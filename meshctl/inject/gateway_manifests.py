"""``meshctl install --gateway NAMESPACE/NAME``: what runs an edge gateway's Envoys in a cluster.

A ServiceAccount, a Deployment whose pods carry the label ``meshctl.dev/gateway: NAME`` (the injection webhook gives
their ``meshctl-proxy`` container the gateway Envoy's bootstrap: the xDS address, CA and token only the controller
knows), a PodDisruptionBudget, and a Service of type LoadBalancer that the ingress reconciler (or LBC) turns into an
NLB with IP targets: App Mesh's NLB -> VirtualGateway -> mesh, the Gateway API way. The pods are as hardened as the
controller's: the restricted Pod Security Standard, spread over nodes and zones. Gateway ports below 1024 are bound
10,000 higher (the Service maps 80 to 10080), so Envoy needs no privilege.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from meshctl.inject.pod_patch import GATEWAY_LABEL, PROXY_CONTAINER, STATS_PORT
from meshctl.translate.gateway import bound_port

__all__ = ["GatewayInstall", "render_gateway"]

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?")
ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayInstall:
    namespace: str
    name: str
    ports: tuple[int, ...] = (80, 443)
    replicas: int = 2
    image: str = ENVOY_IMAGE
    internal: bool = False  # an internal NLB instead of an internet-facing one


def render_gateway(options: GatewayInstall) -> list[dict[str, Any]]:
    """The gateway's manifests; ValueError for options that do not make one."""
    if not _NAME.fullmatch(options.name) or not _NAME.fullmatch(options.namespace):
        raise ValueError(f"--gateway {options.namespace}/{options.name}: not a namespace/name of lowercase letters")
    if options.replicas < 1 or not options.ports or any(not 0 < p < 65536 for p in options.ports):
        raise ValueError("--gateway-replicas must be at least 1 and --gateway-port a port number")
    name, ns = f"{options.name}-gateway", options.namespace
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "meshctl", GATEWAY_LABEL: options.name}
    selector = {"app.kubernetes.io/name": name}
    meta = {"name": name, "namespace": ns, "labels": labels}
    restricted = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "name": PROXY_CONTAINER,  # its arguments are the injection webhook's (the gateway Envoy's bootstrap)
        "image": options.image,
        "ports": [
            *({"name": f"port-{p}", "containerPort": bound_port(p), "protocol": "TCP"} for p in options.ports),
            {"name": "meshctl-stats", "containerPort": STATS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": STATS_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": restricted,
    }
    spread = {"labelSelector": {"matchLabels": selector}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": name,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1337,
                        "runAsGroup": 1337,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", **spread},
                                }
                            ]
                        }
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            **spread,
                        }
                    ],
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            **meta,
            "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal"
                if options.internal
                else "internet-facing",
                "service.beta.kubernetes.io/aws-load-balancer-healthcheck-port": str(STATS_PORT),
                "service.beta.kubernetes.io/aws-load-balancer-healthcheck-path": "/ready",
                "service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol": "HTTP",
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": selector,
            "ports": [
                {"name": f"port-{p}", "port": p, "targetPort": bound_port(p), "protocol": "TCP"} for p in options.ports
            ],
        },
    }
    documents: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        service,
        deployment,
    ]
    if options.replicas > 1:
        documents.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": meta,
                "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
            }
        )
    return documents
