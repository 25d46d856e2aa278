"""One Kubernetes object (as a dict, from YAML or the API) -> one model object.

Shared by the manifest-directory source and the Kubernetes source, so both build the same model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from meshctl.model import (
    API_GROUP,
    EGRESS_FILTER_LABEL,
    TLS_MODE_LABEL,
    EgressFilter,
    Endpoint,
    EndpointSlice,
    FieldError,
    Meta,
    Namespace,
    ObjectKey,
    Pod,
    Route,
    Secret,
    Service,
    ServicePort,
    TlsMode,
    VirtualNode,
)
from meshctl.model.authz import AUTHZ_LABEL, AuthorizationPolicy, AuthzDefault
from meshctl.model.gateway import (
    GATEWAY_GROUP,
    GATEWAY_NAME_LABEL,
    Gateway,
    GatewayClass,
    HTTPRoute,
    L4Route,
    ReferenceGrant,
)
from meshctl.model.ingress import (
    ELBV2_GROUP,
    Ingress,
    IngressClass,
    IngressClassParams,
    ListenerRuleConfiguration,
    LoadBalancerConfiguration,
    Node,
    TargetGroupBinding,
    TargetGroupConfiguration,
)
from meshctl.model.meta import EMPTY_LABELS
from meshctl.parse.authz import parse_authorization_policy_spec, policy_targets
from meshctl.parse.gateway import (
    parse_gateway,
    parse_gateway_class,
    parse_http_route,
    parse_l4_route,
    parse_reference_grant,
)
from meshctl.parse.ingress import (
    parse_branch_eni,
    parse_exposure,
    parse_ingress,
    parse_ingress_class,
    parse_ingress_class_params,
    parse_listener_rule_configuration,
    parse_load_balancer_configuration,
    parse_node,
    parse_pod_gates,
    parse_target_group_binding,
    parse_target_group_configuration,
)
from meshctl.parse.route import parse_route_spec
from meshctl.parse.secret import tls_secret
from meshctl.parse.shared import shared, shared_labels, shared_pod, shared_str
from meshctl.parse.virtualnode import parse_virtual_node_spec

__all__ = ["MeshObject", "Parsed", "UnsupportedDocument", "parse_document", "parse_keyed"]

MeshObject = (
    Service
    | Secret
    | EndpointSlice
    | Pod
    | VirtualNode
    | Route
    | Namespace
    | AuthorizationPolicy
    | HTTPRoute
    | ReferenceGrant
    | Gateway
    | GatewayClass
    | Ingress
    | IngressClass
    | IngressClassParams
    | Node
    | TargetGroupBinding
    | L4Route
    | LoadBalancerConfiguration
    | TargetGroupConfiguration
    | ListenerRuleConfiguration
)


class Parsed(NamedTuple):
    """A parsed object with its key (a Pod does not carry its own name) and where it came from."""

    key: ObjectKey
    obj: MeshObject
    origin: str


SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class UnsupportedDocument(ValueError):
    """The document is not a kind the mesh reads, or is too malformed to identify."""


class InvalidObject(UnsupportedDocument):
    """A document of a kind the mesh reads with a field it cannot read; the message names the object and the field
    (``Service demo/reviews: spec.ports[0].port: must be an integer from 0 to 65535, got 'http'``). The object is
    left out; everything else is read."""


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Bad(path, f"must be an object, got {_shown(value)}")
    return value


def _items(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(path, f"must be a list, got {_shown(value)}")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(path, f"must be an integer from {low} to {high}, got {_shown(value)}")
    return value


def _text(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Bad(path, f"must be a string, got {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_document(doc: Any, *, origin: str = "", default_namespace: str = "default") -> MeshObject | None:
    """Returns the model object, ``None`` for kinds the mesh ignores, or raises ``UnsupportedDocument``."""
    parsed = parse_keyed(doc, origin=origin, default_namespace=default_namespace)
    return parsed.obj if parsed is not None else None


def parse_keyed(
    doc: Any, *, origin: str = "", default_namespace: str = "default", strict: bool = False
) -> Parsed | None:
    """``parse_document`` with the object's key. ``strict``: fields of our kinds that the parser does not know (or
    does not implement yet) are errors, not warnings."""
    if not isinstance(doc, dict):
        raise UnsupportedDocument(f"expected a Kubernetes object, got {type(doc).__name__}")
    kind, api_version = doc.get("kind"), doc.get("apiVersion", "")
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
        raise UnsupportedDocument("apiVersion and kind are required")
    try:
        meta = _meta(doc, origin, default_namespace)
    except _Bad as exc:
        raise InvalidObject(f"{kind}: {exc}") from None
    try:
        obj = _parse(doc, meta, kind, api_version, strict)
    except _Bad as exc:
        raise InvalidObject(f"{kind} {meta.namespace}/{meta.name}: {exc}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RecursionError) as exc:
        # A field no check above names: still this object's problem alone, never the reader's.
        raise InvalidObject(
            f"{kind} {meta.namespace}/{meta.name}: cannot read it: {type(exc).__name__}: {exc}"
        ) from None
    if obj is None:
        return None
    if isinstance(obj, HTTPRoute | L4Route):  # (one class each for several kinds: the key names the kind)
        return Parsed(obj.key, obj, origin)
    if isinstance(obj, Pod):
        return Parsed(ObjectKey("Pod", meta.namespace, meta.name), obj, origin)
    return Parsed(ObjectKey(type(obj).__name__, obj.meta.namespace, obj.meta.name), obj, origin)


def _parse(doc: dict[str, Any], meta: Meta, kind: str, api_version: str, strict: bool = False) -> MeshObject | None:
    group = api_version.rpartition("/")[0]
    if kind == "Service" and api_version == "v1":
        return _service(meta, doc)
    if kind == "EndpointSlice" and group == "discovery.k8s.io":
        return _endpoint_slice(meta, doc)
    if kind == "Pod" and api_version == "v1":
        gates, containers_ready = parse_pod_gates(doc)
        pod_spec = doc.get("spec")
        pod_spec = pod_spec if isinstance(pod_spec, dict) else {}
        account = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default"
        return shared_pod(meta.labels, gates, containers_ready, shared_str(str(account)), parse_branch_eni(doc))
    if kind == "Namespace" and api_version == "v1":
        return _namespace(replace(meta, namespace=""))
    if kind == "Secret" and api_version == "v1":
        return tls_secret(meta, doc)
    if kind == "Ingress" and group == "networking.k8s.io":
        return parse_ingress(meta, doc)
    if kind == "IngressClass" and group == "networking.k8s.io":
        return parse_ingress_class(replace(meta, namespace=""), doc)
    if kind == "Node" and api_version == "v1":
        return parse_node(replace(meta, namespace=""), doc)
    if kind == "TargetGroupBinding" and group == ELBV2_GROUP:
        return parse_target_group_binding(meta, doc)
    if kind == "IngressClassParams" and group == ELBV2_GROUP:
        return parse_ingress_class_params(replace(meta, namespace=""), doc)
    if group == API_GROUP and kind == "VirtualNode":
        warnings: list[FieldError] = _unknown_top_level(doc)
        vn_spec, errors = parse_virtual_node_spec(doc.get("spec"), meta.namespace, warnings)
        if strict and warnings:
            vn_spec, errors, warnings = None, [*errors, *warnings], []
        return VirtualNode(meta=meta, spec=vn_spec, errors=tuple(errors), warnings=tuple(warnings))
    if group == API_GROUP and kind == "AuthorizationPolicy":
        warnings = _unknown_top_level(doc)
        authz_spec, errors = parse_authorization_policy_spec(doc.get("spec"), meta.namespace, warnings)
        if strict and warnings:
            authz_spec, errors, warnings = None, [*errors, *warnings], []
        invalid_targets = policy_targets(doc.get("spec"), meta.namespace) if authz_spec is None else ()
        audit = isinstance(doc.get("spec"), dict) and doc["spec"].get("mode") == "Audit"
        return AuthorizationPolicy(
            meta=meta,
            spec=authz_spec,
            errors=tuple(errors),
            warnings=tuple(warnings),
            targets_if_invalid=invalid_targets,
            audit_if_invalid=audit,
        )
    if group == GATEWAY_GROUP and kind in ("HTTPRoute", "GRPCRoute"):
        created = doc["metadata"].get("creationTimestamp")
        route = parse_http_route(meta, doc, kind, created=str(created) if created else "")
        if strict and route.warnings:
            parents = route.spec.parents if route.spec is not None else route.parents_if_invalid
            rejected = (*route.errors, *route.warnings)
            route = replace(route, spec=None, errors=rejected, warnings=(), parents_if_invalid=parents)
        return route
    if kind == "LoadBalancerConfiguration" and group == ELBV2_GROUP:
        return parse_load_balancer_configuration(meta, doc)
    if kind == "ListenerRuleConfiguration" and group == ELBV2_GROUP:
        return parse_listener_rule_configuration(meta, doc)
    if kind == "TargetGroupConfiguration" and group == ELBV2_GROUP:
        return parse_target_group_configuration(meta, doc)
    if group == GATEWAY_GROUP and kind in ("TCPRoute", "UDPRoute", "TLSRoute"):
        return parse_l4_route(meta, doc, kind)
    if group == GATEWAY_GROUP and kind == "ReferenceGrant":
        return parse_reference_grant(meta, doc)
    if group == GATEWAY_GROUP and kind == "Gateway":
        gateway = parse_gateway(meta, doc)
        if strict and gateway.warnings:
            gateway = replace(gateway, errors=(*gateway.errors, *gateway.warnings), warnings=())
        return gateway
    if group == GATEWAY_GROUP and kind == "GatewayClass":
        return parse_gateway_class(replace(meta, namespace=""), doc)
    if group == API_GROUP and kind == "Route":
        warnings = _unknown_top_level(doc)
        route_spec, errors = parse_route_spec(doc.get("spec"), meta.namespace, warnings)
        if strict and warnings:
            route_spec, errors, warnings = None, [*errors, *warnings], []
        return Route(meta=meta, spec=route_spec, errors=tuple(errors), warnings=tuple(warnings))
    return None


_KNOWN_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})


def _unknown_top_level(doc: dict[str, Any]) -> list[FieldError]:
    return [FieldError(path=str(k), message="unknown field: ignored") for k in doc if k not in _KNOWN_TOP_LEVEL]


def _meta(doc: dict[str, Any], origin: str, default_namespace: str) -> Meta:
    md = doc.get("metadata")
    if not isinstance(md, dict) or not isinstance(md.get("name"), str) or not md["name"]:
        raise UnsupportedDocument("metadata.name is required")
    labels = _obj(md.get("labels"), "metadata.labels")
    for k, v in labels.items():
        if isinstance(v, dict | list) or not isinstance(k, str):
            raise _Bad(f"metadata.labels.{k}", f"must be a string, got {_shown(v)}")
    namespace = _text(md.get("namespace"), "metadata.namespace")
    generation = md.get("generation")
    return Meta(
        namespace=shared_str(namespace or default_namespace),
        name=shared_str(md["name"]),  # also a Pod's name in EndpointSlices: one string for both
        generation=1 if generation is None else _int(generation, "metadata.generation", 0, 2**63 - 1) or 1,
        labels=shared_labels(labels),
        origin=origin,
    )


_TLS_MODES = tuple(m.value for m in TlsMode)


_AUTHZ_DEFAULTS = tuple(d.value for d in AuthzDefault)


def _namespace(meta: Meta) -> Namespace:
    mode = meta.labels.get(TLS_MODE_LABEL)
    if mode is not None and mode not in _TLS_MODES:
        raise _Bad(f"metadata.labels.{TLS_MODE_LABEL}", f"must be one of {', '.join(_TLS_MODES)}, got {mode!r}")
    authz = meta.labels.get(AUTHZ_LABEL)
    if authz is not None and authz not in _AUTHZ_DEFAULTS:
        raise _Bad(f"metadata.labels.{AUTHZ_LABEL}", f"must be one of {', '.join(_AUTHZ_DEFAULTS)}, got {authz!r}")
    egress = meta.labels.get(EGRESS_FILTER_LABEL)
    if egress is not None and egress not in _EGRESS_FILTERS:
        raise _Bad(
            f"metadata.labels.{EGRESS_FILTER_LABEL}", f"must be one of {', '.join(_EGRESS_FILTERS)}, got {egress!r}"
        )
    # The labels are kept: a Gateway listener's allowedRoutes may select namespaces by them.
    return Namespace(
        meta=meta,
        tls_mode=TlsMode(mode) if mode is not None else None,
        authz_default=AuthzDefault(authz) if authz is not None else None,
        egress_filter=EgressFilter(egress) if egress is not None else None,
    )


_EGRESS_FILTERS = tuple(f.value for f in EgressFilter)


def _port(p: Any, path: str) -> ServicePort:
    p = _obj(p, path)
    target = p.get("targetPort")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int | str)):
        raise _Bad(f"{path}.targetPort", f"must be a port number or name, got {_shown(target)}")
    port = p.get("port")
    node_port = p.get("nodePort")
    return shared(
        ServicePort(
            name=_text(p.get("name"), f"{path}.name") or "",
            port=0 if port is None else _int(port, f"{path}.port", 0, 65535),
            target_port=target,
            protocol=_text(p.get("protocol"), f"{path}.protocol") or "TCP",
            node_port=None if node_port is None else _int(node_port, f"{path}.nodePort", 0, 65535),
            app_protocol=_text(p.get("appProtocol"), f"{path}.appProtocol"),
        )
    )


def _ports(value: Any, path: str) -> tuple[ServicePort, ...]:
    return tuple(_port(p, f"{path}[{i}]") for i, p in enumerate(_items(value, path)))


def _service(meta: Meta, doc: dict[str, Any]) -> Service:
    spec = _obj(doc.get("spec"), "spec")
    selector = _obj(spec.get("selector"), "spec.selector")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        raise _Bad("spec.selector", "must map label names to values")
    load_balancer: tuple[str, ...] = ()
    if GATEWAY_NAME_LABEL in meta.labels:  # an edge gateway's Service: where its load balancer answers
        status: dict[str, Any] = doc["status"] if isinstance(doc.get("status"), dict) else {}
        balancer: dict[str, Any] = status["loadBalancer"] if isinstance(status.get("loadBalancer"), dict) else {}
        ingress: list[Any] = balancer["ingress"] if isinstance(balancer.get("ingress"), list) else []
        # (a status the API server writes: what cannot be read is no address, never a rejected Service)
        load_balancer = tuple(
            value
            for entry in ingress
            if isinstance(entry, dict) and isinstance(value := entry.get("hostname") or entry.get("ip"), str) and value
        )
    return Service(
        meta=meta,
        ports=_ports(spec.get("ports"), "spec.ports"),
        selector=shared_labels(selector) if selector else EMPTY_LABELS,
        exposure=parse_exposure(doc),
        load_balancer=load_balancer,
    )


def _endpoint_slice(meta: Meta, doc: dict[str, Any]) -> EndpointSlice:
    endpoints = []
    for i, ep in enumerate(_items(doc.get("endpoints"), "endpoints")):
        at = f"endpoints[{i}]"
        ep = _obj(ep, at)
        ref = _obj(ep.get("targetRef"), f"{at}.targetRef")
        conditions = _obj(ep.get("conditions"), f"{at}.conditions")
        addresses = _items(ep.get("addresses"), f"{at}.addresses")
        if not addresses:
            continue  # the API server requires one; nothing to route to without it
        address = _text(addresses[0], f"{at}.addresses[0]")
        if not address:
            raise _Bad(f"{at}.addresses[0]", "must be an IP address")
        pod_name = _text(ref.get("name"), f"{at}.targetRef.name")
        endpoints.append(
            Endpoint(
                address=address,
                # Kubernetes: a nil "ready" means ready.
                ready=conditions.get("ready") is not False,
                pod_name=shared_str(pod_name) if ref.get("kind") == "Pod" and pod_name else None,
                zone=_text(ep.get("zone"), f"{at}.zone"),
                terminating=conditions.get("terminating") is True,
                node_name=_text(ep.get("nodeName"), f"{at}.nodeName"),
            )
        )
    return EndpointSlice(
        meta=meta,
        service_name=meta.labels.get(SERVICE_NAME_LABEL, ""),
        ports=shared(_ports(doc.get("ports"), "ports")),
        endpoints=tuple(endpoints),
    )
