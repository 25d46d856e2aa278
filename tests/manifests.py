"""Builders for the Kubernetes YAML the tests write into manifest directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

API = "mesh.meshctl.dev/v1alpha1"


def service(name: str, ns: str = "demo", port: int = 80) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": port}]},
    }


def workload(service_name: str, version: str, port: int, ns: str = "demo", **listener: Any) -> list[dict]:
    """A pod on 127.0.0.1:port, its EndpointSlice and its VirtualNode ``<service>-<version>``."""
    name = f"{service_name}-{version}"
    labels = {"app": service_name, "version": version}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0", "namespace": ns, "labels": labels}}
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": ["127.0.0.1"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"{name}-0"},
            }
        ],
    }
    vn = virtual_node(
        name, ns, selector=labels, listeners=[{"portMapping": {"port": port, "protocol": "http"}, **listener}]
    )
    return [pod, eps, vn]


def virtual_node(
    name: str, ns: str = "demo", *, selector: dict | None = None, listeners: list | None = None, backends=()
) -> dict:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": selector or {"app": name}}}
    if listeners:
        spec["listeners"] = listeners
    if backends:
        spec["backends"] = [{"virtualService": {"virtualServiceRef": {"name": b}}} for b in backends]
    return {"apiVersion": API, "kind": "VirtualNode", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def route(name: str, service_name: str, targets: dict[str, int], ns: str = "demo", **http: Any) -> dict:
    match = http.pop("match", {"prefix": "/"})
    priority = http.pop("priority", None)
    spec: dict[str, Any] = {
        "serviceRef": {"name": service_name},
        "httpRoute": {
            "match": match,
            "action": {"weightedTargets": [{"virtualNodeRef": {"name": t}, "weight": w} for t, w in targets.items()]},
            **http,
        },
    }
    if priority is not None:
        spec["priority"] = priority
    return {"apiVersion": API, "kind": "Route", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def http_route(
    name: str,
    parent: str,
    backends: dict[str, int],
    *,
    port: int | None = 80,
    backend_port: int = 80,
    matches: list[dict] | None = None,
    ns: str = "demo",
) -> dict:
    """A Gateway API HTTPRoute attached to Service ``parent`` (on ``port``; None: every port) whose one rule sends
    to the Services ``backends`` (name -> weight) on ``backend_port``."""
    parent_ref: dict[str, Any] = {"group": "", "kind": "Service", "name": parent}
    if port is not None:
        parent_ref["port"] = port
    refs = [{"name": b, "port": backend_port, "weight": w} for b, w in backends.items()]
    rule: dict[str, Any] = {"backendRefs": refs, **({"matches": matches} if matches else {})}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [parent_ref], "rules": [rule]},
    }


def service_over(service_name: str, version: str, port: int, ns: str = "demo", service_port: int = 80) -> list[dict]:
    """Service ``<service>-<version>`` (on ``service_port``) over that version's app (``workload``'s pod, port
    ``port``): a backend an HTTPRoute can name."""
    name = f"{service_name}-{version}"
    endpoints = next(d for d in workload(service_name, version, port, ns) if d["kind"] == "EndpointSlice")
    # (named apart from the workload's own slice, which may be in the same mesh)
    endpoints["metadata"] = {"name": f"{name}-svc", "namespace": ns, "labels": {"kubernetes.io/service-name": name}}
    return [service(name, ns, service_port), endpoints]


def pod_slice(ns: str, service_name: str, pod: str, ports: list[dict], address: str = "127.0.0.1") -> dict:
    """An EndpointSlice of a Service holding one Pod (named ``<service>-<pod>``), ready, on these ports."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{pod}",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": pod}}
        ],
    }


def write(path: Path, *docs: dict | list[dict]) -> Path:
    flat: list[dict] = []
    for d in docs:
        flat.extend(d if isinstance(d, list) else [d])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(flat, sort_keys=False))
    tmp.rename(path)  # atomic: the source never sees half a file
    return path
