"""What every source shares: the sink it feeds and the one way to assemble a ``Model``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from meshctl.model import EndpointSlice, Model, Namespace, ObjectKey, Pod, Route, Secret, Service, VirtualNode
from meshctl.model.authz import AuthorizationPolicy
from meshctl.model.gateway import Gateway, GatewayClass, HTTPRoute, L4Route, ReferenceGrant
from meshctl.model.ingress import (
    Ingress,
    IngressClass,
    IngressClassParams,
    ListenerRuleConfiguration,
    LoadBalancerConfiguration,
    Node,
    TargetGroupBinding,
    TargetGroupConfiguration,
)
from meshctl.parse.documents import MeshObject, Parsed

__all__ = ["MODEL_FIELDS", "ModelSink", "Source", "build_model"]

ModelSink = Callable[[Model], Awaitable[None]]


class Source(Protocol):
    async def run(self, sink: ModelSink) -> None:
        """Feeds ``sink`` a full model after the initial sync and again after every change; runs until cancelled."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the model comes from, for ``meshctl status`` and for ``meshctl shift`` to know how to write."""
        ...


# Which Model mapping holds each kind of object.
MODEL_FIELDS: dict[type, str] = {
    Service: "services",
    EndpointSlice: "endpoint_slices",
    Pod: "pods",
    VirtualNode: "virtual_nodes",
    Route: "routes",
    Namespace: "namespaces",
    AuthorizationPolicy: "authorization_policies",
    HTTPRoute: "http_routes",
    ReferenceGrant: "reference_grants",
    Secret: "secrets",
    Gateway: "gateways",
    GatewayClass: "gateway_classes",
    Ingress: "ingresses",
    IngressClass: "ingress_classes",
    IngressClassParams: "ingress_class_params",
    Node: "nodes",
    TargetGroupBinding: "target_group_bindings",
    L4Route: "l4_routes",
    LoadBalancerConfiguration: "load_balancer_configurations",
    TargetGroupConfiguration: "target_group_configurations",
    ListenerRuleConfiguration: "listener_rule_configurations",
}


def build_model(objects: Iterable[Parsed], load_errors: Iterable[str] = ()) -> Model:
    """Indexes objects by kind; the first object seen for a key wins, later duplicates become load errors."""
    buckets: dict[type, dict[ObjectKey, MeshObject]] = {kind: {} for kind in MODEL_FIELDS}
    origins: dict[ObjectKey, str] = {}
    errors = list(load_errors)
    for key, obj, origin in objects:
        bucket = buckets[type(obj)]
        if key in bucket:
            errors.append(f"{origin}: {key} is already defined in {origins[key]}; ignored")
            continue
        bucket[key], origins[key] = obj, origin
    fields: dict[str, Any] = {name: buckets[kind] for kind, name in MODEL_FIELDS.items()}
    return Model(**fields, load_errors=tuple(errors))
