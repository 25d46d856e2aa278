"""One Kubernetes object (as a dict, from YAML or the API) -> one model object.

Shared by the manifest-directory source and the Kubernetes source, so both build the same model.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any, NamedTuple

from meshctl.model import (
    API_GROUP,
    Endpoint,
    EndpointSlice,
    Meta,
    ObjectKey,
    Pod,
    Route,
    Service,
    ServicePort,
    VirtualNode,
)
from meshctl.model.ingress import ELBV2_GROUP, Ingress, IngressClass, Node, TargetGroupBinding
from meshctl.parse.ingress import (
    parse_exposure,
    parse_ingress,
    parse_ingress_class,
    parse_node,
    parse_pod_gates,
    parse_target_group_binding,
)
from meshctl.parse.route import parse_route_spec
from meshctl.parse.shared import shared, shared_labels, shared_pod, shared_str
from meshctl.parse.virtualnode import parse_virtual_node_spec

__all__ = ["MeshObject", "Parsed", "UnsupportedDocument", "parse_document", "parse_keyed"]

MeshObject = Service | EndpointSlice | Pod | VirtualNode | Route | Ingress | IngressClass | Node | TargetGroupBinding


class Parsed(NamedTuple):
    """A parsed object with its key (a Pod does not carry its own name) and where it came from."""

    key: ObjectKey
    obj: MeshObject
    origin: str


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class UnsupportedDocument(ValueError):
    """The document is not a kind the mesh reads, or is too malformed to identify."""


def parse_document(doc: Any, *, origin: str = "", default_namespace: str = "default") -> MeshObject | None:
    """Returns the model object, ``None`` for kinds the mesh ignores, or raises ``UnsupportedDocument``."""
    parsed = parse_keyed(doc, origin=origin, default_namespace=default_namespace)
    return parsed.obj if parsed is not None else None


def parse_keyed(doc: Any, *, origin: str = "", default_namespace: str = "default") -> Parsed | None:
    """``parse_document`` with the object's key."""
    if not isinstance(doc, dict):
        raise UnsupportedDocument(f"expected a Kubernetes object, got {type(doc).__name__}")
    kind, api_version = doc.get("kind"), doc.get("apiVersion", "")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
        raise UnsupportedDocument("apiVersion and kind are required")
    meta = _meta(doc, origin, default_namespace)
    obj = _parse(doc, meta, kind, api_version)
    if obj is None:
        return None
    if isinstance(obj, Pod):
        return Parsed(ObjectKey("Pod", meta.namespace, meta.name), obj, origin)
    return Parsed(ObjectKey(type(obj).__name__, obj.meta.namespace, obj.meta.name), obj, origin)


def _parse(doc: dict[str, Any], meta: Meta, kind: str, api_version: str) -> MeshObject | None:
    group = api_version.rpartition("/")[0]
    if kind == "Service" and api_version == "v1":
        return _service(meta, doc)
    if kind == "EndpointSlice" and group == "discovery.k8s.io":
        return _endpoint_slice(meta, doc)
    if kind == "Pod" and api_version == "v1":
        gates, containers_ready = parse_pod_gates(doc)
        return shared_pod(meta.labels, gates, containers_ready)
    if kind == "Ingress" and group == "networking.k8s.io":
        return parse_ingress(meta, doc)
    if kind == "IngressClass" and group == "networking.k8s.io":
        return parse_ingress_class(replace(meta, namespace=""), doc)
    if kind == "Node" and api_version == "v1":
        return parse_node(replace(meta, namespace=""), doc)
    if kind == "TargetGroupBinding" and group == ELBV2_GROUP:
        return parse_target_group_binding(meta, doc)
    if group == API_GROUP and kind == "VirtualNode":
        vn_spec, errors = parse_virtual_node_spec(doc.get("spec"), meta.namespace)
        return VirtualNode(meta=meta, spec=vn_spec, errors=tuple(errors))
    if group == API_GROUP and kind == "Route":
        route_spec, errors = parse_route_spec(doc.get("spec"), meta.namespace)
        return Route(meta=meta, spec=route_spec, errors=tuple(errors))
    return None


def _meta(doc: dict[str, Any], origin: str, default_namespace: str) -> Meta:
    md = doc.get("metadata")
    if not isinstance(md, dict) or not isinstance(md.get("name"), str) or not md["name"]:
        raise UnsupportedDocument("metadata.name is required")
    labels = md.get("labels") or {}
    return Meta(
        namespace=shared_str(str(md.get("namespace") or default_namespace)),
        name=shared_str(md["name"]),  # also a Pod's name in EndpointSlices: one string for both
        generation=int(md.get("generation") or 1),
        labels=shared_labels(labels) if isinstance(labels, dict) else MappingProxyType({}),
        origin=origin,
    )


def _port(p: dict[str, Any]) -> ServicePort:
    return shared(
        ServicePort(
            name=str(p.get("name") or ""),
            port=int(p.get("port") or 0),
            target_port=p.get("targetPort"),
            protocol=str(p.get("protocol") or "TCP"),
            node_port=p["nodePort"] if isinstance(p.get("nodePort"), int) else None,
        )
    )


def _service(meta: Meta, doc: dict[str, Any]) -> Service:
    spec = doc.get("spec") or {}
    return Service(meta=meta, ports=tuple(_port(p) for p in spec.get("ports") or ()), exposure=parse_exposure(doc))


def _endpoint_slice(meta: Meta, doc: dict[str, Any]) -> EndpointSlice:
    endpoints = []
    for ep in doc.get("endpoints") or ():
        ref = ep.get("targetRef") or {}
        conditions = ep.get("conditions") or {}
        addresses = ep.get("addresses") or ()
        if not addresses:
            continue  # the API server requires one; nothing to route to without it
        endpoints.append(
            Endpoint(
                address=str(addresses[0]),
                # Kubernetes: a nil "ready" means ready.
                ready=conditions.get("ready") is not False,
                pod_name=shared_str(ref["name"])
                if ref.get("kind") == "Pod" and isinstance(ref.get("name"), str)
                else None,
                zone=ep.get("zone"),
                terminating=conditions.get("terminating") is True,
                node_name=ep.get("nodeName") if isinstance(ep.get("nodeName"), str) else None,
            )
        )
    return EndpointSlice(
        meta=meta,
        service_name=meta.labels.get(SERVICE_NAME_LABEL, ""),
        ports=shared(tuple(_port(p) for p in doc.get("ports") or ())),
        endpoints=tuple(endpoints),
    )
