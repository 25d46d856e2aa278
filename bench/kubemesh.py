"""The benchmark mesh (the shape of bench/meshgen.py) as Kubernetes objects, for the manifest and Kubernetes
sources: N services, each with v1 and v2 VirtualNodes of 5 Pods and one EndpointSlice each, a Route 80/20, a
gateway VirtualNode calling every service, and optionally client VirtualNodes (as meshgen.with_clients)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.manifests import API

NS = "bench"
PORT = 8080


def _address(i: int, version: str, j: int) -> str:
    n = i * 10 + (0 if version == "v1" else 5) + j
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def pod(svc: str, version: str, j: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    name = f"{svc}-{version}-{j}"
    labels = labels or {"app": svc, "version": version}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels}}


def virtual_node(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "VirtualNode", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def route(svc: str, w1: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": svc, "namespace": NS},
        "spec": {
            "serviceRef": {"name": svc},
            "httpRoute": {
                "match": {"prefix": "/"},
                "action": {
                    "weightedTargets": [
                        {"virtualNodeRef": {"name": f"{svc}-v1"}, "weight": w1},
                        {"virtualNodeRef": {"name": f"{svc}-v2"}, "weight": 100 - w1},
                    ]
                },
                "retryPolicy": {"httpRetryEvents": ["server-error"], "maxRetries": 2},
            },
        },
    }


def backends(names: list[str]) -> list[dict[str, Any]]:
    return [{"virtualService": {"virtualServiceRef": {"name": name}}} for name in names]


def service_docs(i: int) -> Iterator[dict[str, Any]]:
    svc = f"svc-{i}"
    yield {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": svc, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }
    for v in ("v1", "v2"):
        name = f"{svc}-{v}"
        endpoints = []
        for j in range(5):
            yield pod(svc, v, j)
            endpoints.append(
                {
                    "addresses": [_address(i, v, j)],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": f"{name}-{j}"},
                }
            )
        yield {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": PORT}],
            "endpoints": endpoints,
        }
        yield virtual_node(
            name,
            {
                "podSelector": {"matchLabels": {"app": svc, "version": v}},
                "listeners": [{"portMapping": {"port": PORT, "protocol": "http"}}],
            },
        )
    yield route(svc)


def client_names(clients: int) -> list[str]:
    """What each client proxy's node.cluster names (namespace/virtual node)."""
    return [f"{NS}/client-{g}" for g in range(clients)]


def gateway(n: int) -> dict[str, Any]:
    spec = {"podSelector": {"matchLabels": {"app": "gateway"}}, "backends": backends([f"svc-{i}" for i in range(n)])}
    return virtual_node("gateway", spec)


def mesh_docs(n: int, *, clients: int = 0, client_backends: int = 20) -> Iterator[dict[str, Any]]:
    """Clients: each calls svc-0 (shared by all) and ``client_backends - 1`` others, like meshgen.with_clients."""
    for i in range(n):
        yield from service_docs(i)
    yield gateway(n)
    for g in range(clients):
        others = {1 + (g * (client_backends - 1) + k) % max(1, n - 1) for k in range(client_backends - 1)}
        names = [f"svc-{i}" for i in sorted({0, *others})]
        yield virtual_node(
            f"client-{g}", {"podSelector": {"matchLabels": {"app": f"client-{g}"}}, "backends": backends(names)}
        )
