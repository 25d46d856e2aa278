"""Benchmark 13: Gateway API routes (GAMMA, issue 30) against meshctl Routes.

The synthetic mesh of ``bench/meshgen.py`` (N services, 2N VirtualNodes, a gateway calling every service) routed
two ways: N Routes (80/20 between two VirtualNodes, retries), or N equivalent HTTPRoutes (80/20 between two Service
ports ``svc-i-v1``/``svc-i-v2`` whose EndpointSlices are the same endpoints, the same retries).

- **Translation**: the mesh IR, then the gateway's sidecar (its N virtual hosts) built into xDS resources; best of 3.
- **Propagation**: an in-process controller serving both proxies' groups: a weight change of one route (a Route, or
  an HTTPRoute) from the model handed over to the new snapshot published, twenty times each (p50 / max); and
  end to end, through the Kubernetes source (the test apiserver) to a real Envoy (``bench/propagation.py``).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from dataclasses import replace
from types import MappingProxyType

import bench.propagation
from bench import meshgen
from bench.common import best_of, table
from meshctl.model import Meta, Model, ModelDelta, ObjectKey, Service, ServicePort
from meshctl.model.gateway import BackendRef, GatewayRouteSpec, GatewayRule, HTTPRoute, ParentRef, RouteRetry
from meshctl.model.matches import HttpMatch
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache.builder import SnapshotBuilder
from tests.controller_driver import apply, controller_for

NS = meshgen.NS


def http_route(i: int, w1: int = 80) -> HTTPRoute:
    backends = tuple(
        BackendRef(group="", kind="Service", namespace=NS, name=f"svc-{i}-v{v}", port=80, weight=w)
        for v, w in ((1, w1), (2, 100 - w1))
    )
    rule = GatewayRule(
        name=None,
        matches=(HttpMatch(prefix="/"),),
        backends=backends,
        backend_timeout_ms=500,
        retry=RouteRetry(attempts=2, codes=(500, 502, 503, 504)),
    )
    spec = GatewayRouteSpec(
        parents=(ParentRef(group="", kind="Service", namespace=NS, name=f"svc-{i}"),), rules=(rule,)
    )
    return HTTPRoute(meta=Meta(namespace=NS, name=f"svc-{i}"), spec=spec)


def gamma_model(n: int) -> Model:
    """``meshgen.build(n)`` with HTTPRoutes instead of Routes, and a Service per version for their backends."""
    base = meshgen.build(n)
    services = dict(base.services)
    slices = {}
    for key, es in base.endpoint_slices.items():
        version = key.name.rsplit("-", 1)[1]  # svc-i-v1
        name = f"{es.service_name}-{version}"
        services[ObjectKey("Service", NS, name)] = Service(
            meta=Meta(namespace=NS, name=name),
            ports=(ServicePort(name="http", port=80),),
            selector=MappingProxyType({"app": es.service_name, "version": version}),
        )
        slices[key] = replace(es, service_name=name)
    routes = {ObjectKey("HTTPRoute", NS, f"svc-{i}"): http_route(i) for i in range(n)}
    return replace(base, services=services, endpoint_slices=slices, routes={}, http_routes=routes)


def _translate_and_build(model: Model) -> None:
    mesh = translate_mesh(model)
    SnapshotBuilder().build(translate_sidecar(mesh, SidecarParams(virtual_node=meshgen.GATEWAY.virtual_node)))


def translation_rows(n: int) -> list[list[object]]:
    routes, gamma = meshgen.build(n), gamma_model(n)
    gc.disable()
    try:
        a = best_of(lambda: _translate_and_build(routes))
        b = best_of(lambda: _translate_and_build(gamma))
    finally:
        gc.enable()
    return [[f"{n:,}", f"{a * 1000:.0f} ms", f"{b * 1000:.0f} ms", f"{b / a:.2f}x"]]


async def _propagation(n: int, changes: int = 20) -> list[list[object]]:
    rows = []
    for label, model, change in (
        ("Route weight", meshgen.build(n), _route_change),
        ("HTTPRoute weight", gamma_model(n), _http_route_change),
    ):
        params = [SidecarParams(virtual_node=meshgen.GATEWAY.virtual_node)]
        async with controller_for(params) as controller:
            await apply(controller, model, timeout=120)
            times = []
            for k in range(changes):
                model = change(model, k)
                started = time.perf_counter()
                await apply(controller, model, timeout=120)
                times.append(time.perf_counter() - started)
        rows.append([label, f"{n:,}", f"{statistics.median(times) * 1000:.1f} ms", f"{max(times) * 1000:.1f} ms"])
    return rows


def _route_change(model: Model, k: int) -> Model:
    key = ObjectKey("Route", NS, "svc-0")
    routes = {**model.routes, key: meshgen.route(0, 80 if k % 2 else 20)}
    return replace(
        model,
        revision=model.revision + 1,
        routes=routes,
        delta=ModelDelta(base_revision=model.revision, routes=frozenset({key})),
    )


def _http_route_change(model: Model, k: int) -> Model:
    """As the Kubernetes and manifest sources send it: with a delta naming the route."""
    key = ObjectKey("HTTPRoute", NS, "svc-0")
    routes = {**model.http_routes, key: http_route(0, 80 if k % 2 else 20)}
    delta = ModelDelta(base_revision=model.revision, http_routes=frozenset({key}))
    return replace(model, revision=model.revision + 1, http_routes=routes, delta=delta)


def run() -> str:
    translation = table(
        ["services", "N Routes", "N HTTPRoutes", "ratio"], [translation_rows(n)[0] for n in (1_000, 10_000)]
    )
    propagation = table(
        ["change", "services", "p50", "max"], [*asyncio.run(_propagation(1_000)), *asyncio.run(_propagation(10_000))]
    )
    end_to_end = bench.propagation.run(sources=("kubernetes", "kubernetes-httproute"))
    return (
        "Translation: mesh IR + the gateway's sidecar built (N virtual hosts), best of 3.\n\n"
        f"{translation}\n\nPropagation: model handed to the controller -> snapshot published (20 changes).\n\n"
        f"{propagation}\n\nThrough the Kubernetes source and a real Envoy (benchmark 6's method: a PATCH of the "
        f"Route or of the HTTPRoute -> the first request the new version answers; 20 flips):\n\n{end_to_end}"
    )
