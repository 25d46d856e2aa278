"""Synthetic meshes for the benchmarks: N services, each with 2 VirtualNodes (v1, v2), a weighted Route
and 5 endpoints per VirtualNode, plus one ``gateway`` VirtualNode that calls every service (so its
sidecar receives the whole mesh: 2N clusters, 2N endpoint assignments, one route config with N hosts)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from meshctl.model import (
    Backend,
    ConnectionPool,
    Endpoint,
    EndpointSlice,
    HttpMatch,
    HttpRoute,
    Listener,
    Meta,
    Model,
    ModelDelta,
    ObjectKey,
    OutlierDetection,
    Pod,
    Protocol,
    RetryPolicy,
    Route,
    RouteSpec,
    Service,
    ServicePort,
    VirtualNode,
    VirtualNodeSpec,
    WeightedTarget,
)
from meshctl.translate.ir import SidecarParams

NS = "bench"
ENDPOINTS_PER_NODE = 5
GATEWAY = SidecarParams(virtual_node=ObjectKey("VirtualNode", NS, "gateway"))


def _address(i: int, version: int, j: int) -> str:
    n = i * 2 * ENDPOINTS_PER_NODE + version * ENDPOINTS_PER_NODE + j
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def endpoint_slice(i: int, version: int, ready: bool = True, generation: int = 1) -> EndpointSlice:
    return EndpointSlice(
        meta=Meta(namespace=NS, name=f"svc-{i}-v{version}", generation=generation),
        service_name=f"svc-{i}",
        ports=(ServicePort(name="http", port=8080),),
        endpoints=tuple(
            Endpoint(
                address=_address(i, version, j),
                ready=ready if j == 0 else True,
                pod_name=f"svc-{i}-v{version}-{j}",
            )
            for j in range(ENDPOINTS_PER_NODE)
        ),
    )


def route(i: int, w1: int = 80) -> Route:
    return Route(
        meta=Meta(namespace=NS, name=f"svc-{i}"),
        spec=RouteSpec(
            service=f"svc-{i}",
            http_route=HttpRoute(
                match=HttpMatch(prefix="/"),
                weighted_targets=(
                    WeightedTarget(namespace=NS, virtual_node=f"svc-{i}-v1", weight=w1),
                    WeightedTarget(namespace=NS, virtual_node=f"svc-{i}-v2", weight=100 - w1),
                ),
                retry_policy=RetryPolicy(http_retry_events=("server-error",), max_retries=2, per_retry_timeout_ms=500),
            ),
        ),
    )


def build(n: int) -> Model:
    services, slices, pods, nodes, routes = {}, {}, {}, {}, {}
    listener = Listener(
        port=8080,
        protocol=Protocol.HTTP,
        connection_pool=ConnectionPool(max_connections=1024, max_pending_requests=1024),
        outlier_detection=OutlierDetection(
            max_server_errors=5, interval_ms=10_000, base_ejection_duration_ms=30_000, max_ejection_percent=50
        ),
    )
    for i in range(n):
        svc = Service(meta=Meta(namespace=NS, name=f"svc-{i}"), ports=(ServicePort(name="http", port=80),))
        services[ObjectKey("Service", NS, svc.meta.name)] = svc
        for version in (1, 2):
            name = f"svc-{i}-v{version}"
            labels = MappingProxyType({"app": f"svc-{i}", "version": f"v{version}"})
            pod = Pod(labels=labels)
            for j in range(ENDPOINTS_PER_NODE):
                pods[ObjectKey("Pod", NS, f"{name}-{j}")] = pod
            es = endpoint_slice(i, version)
            slices[ObjectKey("EndpointSlice", NS, name)] = es
            nodes[ObjectKey("VirtualNode", NS, name)] = VirtualNode(
                meta=Meta(namespace=NS, name=name),
                spec=VirtualNodeSpec(pod_selector=labels, listeners=(listener,)),
            )
        r = route(i)
        routes[ObjectKey("Route", NS, r.meta.name)] = r
    nodes[GATEWAY.virtual_node] = VirtualNode(
        meta=Meta(namespace=NS, name="gateway"),
        spec=VirtualNodeSpec(
            pod_selector=MappingProxyType({"app": "gateway"}),
            backends=tuple(Backend(namespace=NS, name=f"svc-{i}") for i in range(n)),
        ),
    )
    return Model(revision=1, services=services, endpoint_slices=slices, pods=pods, virtual_nodes=nodes, routes=routes)


def with_endpoint_objects(
    model: Model,
    slices: Mapping[ObjectKey, EndpointSlice] | None = None,
    pods: Mapping[ObjectKey, Pod] | None = None,
) -> Model:
    """The model with these EndpointSlices and Pods replaced, and the ModelDelta a watch source sends for them."""
    slices, pods = slices or {}, pods or {}
    return replace(
        model,
        endpoint_slices={**model.endpoint_slices, **slices} if slices else model.endpoint_slices,
        pods={**model.pods, **pods} if pods else model.pods,
        revision=model.revision + 1,
        delta=ModelDelta(base_revision=model.revision, endpoint_slices=frozenset(slices), pods=frozenset(pods)),
    )


def with_endpoint_change(model: Model, i: int, generation: int) -> Model:
    """The same model with the readiness of one endpoint of svc-i v1 flipped."""
    key = ObjectKey("EndpointSlice", NS, f"svc-{i}-v1")
    ready = not model.endpoint_slices[key].endpoints[0].ready
    return with_endpoint_objects(model, slices={key: endpoint_slice(i, 1, ready=ready, generation=generation)})


def with_pod_relabel(model: Model, i: int, version: str) -> Model:
    """Pod svc-i-v1-0 labelled as ``version`` of svc-i: its endpoint moves to that version's VirtualNode."""
    key = ObjectKey("Pod", NS, f"svc-{i}-v1-0")
    labels = MappingProxyType({"app": f"svc-{i}", "version": version})
    return with_endpoint_objects(model, pods={key: Pod(labels=labels)})


def with_clients(model: Model, groups: int, backends: int) -> tuple[Model, list[str]]:
    """Adds ``groups`` client VirtualNodes; each calls svc-0 (shared by all) and ``backends - 1`` others.
    Returns the model and the clients' "namespace/name" (what a proxy's node.cluster names)."""
    n = len(model.services)
    nodes = dict(model.virtual_nodes)
    names = []
    for g in range(groups):
        others = [1 + (g * (backends - 1) + k) % max(1, n - 1) for k in range(backends - 1)]
        spec = VirtualNodeSpec(
            pod_selector=MappingProxyType({"app": f"client-{g}"}),
            backends=tuple(Backend(namespace=NS, name=f"svc-{i}") for i in sorted({0, *others})),
        )
        nodes[ObjectKey("VirtualNode", NS, f"client-{g}")] = VirtualNode(
            meta=Meta(namespace=NS, name=f"client-{g}"), spec=spec
        )
        names.append(f"{NS}/client-{g}")
    return replace(model, virtual_nodes=nodes, revision=model.revision + 1, delta=None), names


def with_route_weight(model: Model, i: int, w1: int) -> Model:
    routes = dict(model.routes)
    key = ObjectKey("Route", NS, f"svc-{i}")
    routes[key] = route(i, w1)
    delta = ModelDelta(base_revision=model.revision, routes=frozenset({key}))
    return replace(model, routes=routes, revision=model.revision + 1, delta=delta)
