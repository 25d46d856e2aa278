"""Benchmark 18: an edge gateway serving N HTTPRoutes (issue 31).

One Gateway (class controllerName meshctl.dev/gateway, an HTTP listener on port 80) and N HTTPRoutes, each with a
hostname of its own (``svc-i.example.com``), a path prefix and a header match, sending to a Service of its own (two
endpoints each).

- **Translation**: the mesh IR (the gateway's listeners, N virtual hosts) and the gateway proxy's snapshot built,
  best of 3; the memory the translation and snapshot hold (RSS before and after, one build kept).
- **Propagation**: an in-process controller serving the gateway's group: one route's path changed, from the model
  handed over to the new snapshot published, 50 times (p50 / p99 / max): the route translated alone
  (``GatewaysIR.with_changes``) and the gateway's RouteConfiguration patched (``Controller._patched_gateway``).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from dataclasses import replace
from types import MappingProxyType

from bench.common import best_of, percentile, rss_mib, table
from meshctl.model import Endpoint, EndpointSlice, Meta, Model, ObjectKey, Service, ServicePort
from meshctl.model.gateway import (
    GATEWAY_CONTROLLER,
    BackendRef,
    Gateway,
    GatewayClass,
    GatewayListener,
    GatewayRouteSpec,
    GatewayRule,
    HTTPRoute,
    ParentRef,
)
from meshctl.model.matches import HeaderMatch, HttpMatch, StringMatch
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache.builder import SnapshotBuilder
from tests.controller_driver import apply, controller_for

NS = "edge"
GATEWAY = ObjectKey("Gateway", NS, "edge")
PARAMS = SidecarParams(virtual_node=None, gateway=GATEWAY, bind_address="127.0.0.1")


def http_route(i: int, prefix: str = "/api") -> HTTPRoute:
    rule = GatewayRule(
        name=None,
        matches=(
            HttpMatch(
                segment_prefix=prefix,
                headers=(HeaderMatch(name="x-tenant", match=StringMatch(exact=f"t{i % 10}")),),
            ),
        ),
        backends=(BackendRef(group="", kind="Service", namespace=NS, name=f"svc-{i}", port=80),),
    )
    spec = GatewayRouteSpec(
        parents=(ParentRef(group="gateway.networking.k8s.io", kind="Gateway", namespace=NS, name="edge"),),
        hostnames=(f"svc-{i}.example.com",),
        rules=(rule,),
    )
    return HTTPRoute(meta=Meta(namespace=NS, name=f"svc-{i}"), spec=spec)


def edge_model(n: int) -> Model:
    services, slices, routes = {}, {}, {}
    for i in range(n):
        name = f"svc-{i}"
        services[ObjectKey("Service", NS, name)] = Service(
            meta=Meta(namespace=NS, name=name),
            ports=(ServicePort(name="http", port=80, target_port=8080),),
            selector=MappingProxyType({"app": name}),
        )
        slices[ObjectKey("EndpointSlice", NS, name)] = EndpointSlice(
            meta=Meta(namespace=NS, name=name),
            service_name=name,
            ports=(ServicePort(name="http", port=8080),),
            endpoints=tuple(Endpoint(address=f"10.{i // 250 % 250}.{i % 250}.{k}") for k in (1, 2)),
        )
        routes[ObjectKey("HTTPRoute", NS, name)] = http_route(i)
    gateway = Gateway(
        meta=Meta(namespace=NS, name="edge"),
        class_name="meshctl",
        listeners=(GatewayListener(name="http", port=80, protocol="HTTP"),),
    )
    return Model(
        services=services,
        endpoint_slices=slices,
        http_routes=routes,
        gateways={GATEWAY: gateway},
        gateway_classes={
            ObjectKey("GatewayClass", "", "meshctl"): GatewayClass(
                meta=Meta(namespace="", name="meshctl"), controller_name=GATEWAY_CONTROLLER
            )
        },
    )


def _translate_and_build(model: Model) -> object:
    mesh = translate_mesh(model)
    ir = translate_sidecar(mesh, PARAMS)
    assert len(ir.gateway_listeners[0].virtual_hosts) == len(model.http_routes)
    return mesh, SnapshotBuilder().build(ir)


def translation_row(n: int) -> list[object]:
    model = edge_model(n)
    gc.collect()
    before = rss_mib()
    gc.disable()
    try:
        seconds = best_of(lambda: _translate_and_build(model))
        kept = _translate_and_build(model)
    finally:
        gc.enable()
    held = rss_mib() - before
    del kept
    return [f"{n:,}", f"{seconds * 1000:.0f} ms", f"{held:.0f} MiB"]


async def _propagation(n: int, changes: int = 50) -> list[object]:
    model = edge_model(n)
    async with controller_for([PARAMS]) as controller:
        await apply(controller, model, timeout=300)
        times = []
        for k in range(changes):
            key = ObjectKey("HTTPRoute", NS, "svc-0")
            routes = {**model.http_routes, key: http_route(0, "/api" if k % 2 else "/v2")}
            model = replace(model, revision=model.revision + 1, http_routes=routes)
            started = time.perf_counter()
            await apply(controller, model, timeout=300)
            times.append(time.perf_counter() - started)
    ms = [t * 1000 for t in times]
    return [
        f"{n:,}",
        f"{statistics.median(ms):.1f} ms",
        f"{percentile(ms, 99):.1f} ms",
        f"{max(ms):.1f} ms",
    ]


def run() -> str:
    translation = table(["routes", "translate + build", "held (RSS)"], [translation_row(n) for n in (1_000, 10_000)])
    propagation = table(
        ["routes", "p50", "p99", "max"], [asyncio.run(_propagation(1_000)), asyncio.run(_propagation(10_000))]
    )
    return (
        "Translation: mesh IR + the gateway proxy's snapshot (one listener, N virtual hosts), best of 3.\n\n"
        f"{translation}\n\nPropagation: one HTTPRoute's path changed, model handed to the controller -> the "
        f"gateway's snapshot published (50 changes).\n\n{propagation}"
    )
