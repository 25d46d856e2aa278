"""Benchmark 12: authorization policies (issue 29).

- **Translation**: the synthetic mesh of ``bench/meshgen.py`` (N services, 2N VirtualNodes) with and without one
  AuthorizationPolicy per service (ALLOW from the namespace and the gateway's service account, GET /api), a full
  translation each: the time policies add, per policy.
- **Propagation**: ``meshctl serve --manifests`` (in process) with 100 services; an ADS client holding a callee's
  listeners and another holding the gateway's routes. A policy's methods flip GET <-> POST by a file write, twenty
  times: the time from the write to the callee's LDS response; then a Route's weights flip the same way: the time to
  the gateway's RDS response. Same source, same server, so the two are comparable.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path

from envoy.config.cluster.v3.cluster_pb2 import Cluster

from bench import meshgen
from bench.common import best_of, percentile, table
from meshctl.controlplane.plane import ControlPlane
from meshctl.model import Meta, ObjectKey
from meshctl.model.authz import AuthorizationPolicy, AuthzPolicySpec, AuthzRule, AuthzSource, AuthzTarget, PathMatch
from meshctl.translate import translate_mesh
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.ads_client import AdsClient
from tests.manifests import API, route, service, virtual_node, workload, write
from tests.test_ads_protocol import handshake

NS = meshgen.NS


def _policies(n: int) -> dict[ObjectKey, AuthorizationPolicy]:
    rule = AuthzRule(
        sources=(AuthzSource(namespace=NS), AuthzSource(service_account=(NS, "gateway"))),
        paths=(PathMatch(type="PathPrefix", value="/api"),),
        methods=("GET",),
    )
    out = {}
    for i in range(n):
        spec = AuthzPolicySpec(targets=(AuthzTarget(kind="Service", namespace=NS, name=f"svc-{i}"),), rules=(rule,))
        out[ObjectKey("AuthorizationPolicy", NS, f"svc-{i}")] = AuthorizationPolicy(
            meta=Meta(namespace=NS, name=f"svc-{i}"), spec=spec
        )
    return out


def translation_rows(n: int) -> list[list[object]]:
    from dataclasses import replace

    plain = meshgen.build(n)
    with_policies = replace(plain, authorization_policies=_policies(n))
    gc.disable()
    try:
        base = best_of(lambda: translate_mesh(plain))
        policed = best_of(lambda: translate_mesh(with_policies))
    finally:
        gc.enable()
    listeners = len(translate_mesh(with_policies).authz)
    return [
        [f"{n} services, no policy", f"{base:.3f} s", "", ""],
        [
            f"{n} services, {n} policies ({listeners} listeners)",
            f"{policed:.3f} s",
            f"+{(policed - base) * 1000:.0f} ms",
            f"{(policed - base) / n * 1e6:.0f} µs per policy",
        ],
    ]


def _policy_doc(method: str) -> dict:
    return {
        "apiVersion": API,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "svc-0", "namespace": "demo"},
        "spec": {
            "targetRefs": [{"kind": "Service", "name": "svc-0"}],
            "rules": [{"from": [{"namespace": "demo"}], "to": [{"methods": [method]}]}],
        },
    }


async def _next(ads: AdsClient, type_url: str, names: dict[str, list[str]]) -> None:
    """Reads (and ACKs, keeping each type's subscription) until a response of ``type_url`` arrives."""
    while True:
        resp = await ads.recv(timeout=30)
        await ads.ack(resp, names.get(resp.type_url, []))
        if resp.type_url == type_url:
            return


async def _propagation(services: int, flips: int) -> tuple[list[float], list[float]]:
    root = Path(tempfile.mkdtemp(prefix="meshctl-bench-authz-"))
    docs: list[dict] = []
    for i in range(services):
        pod, eps, vn = workload(f"svc-{i}", "v1", 8080 + i)
        docs += [service(f"svc-{i}"), pod, eps, vn, route(f"svc-{i}", f"svc-{i}", {f"svc-{i}-v1": 100})]
    write(root / "mesh.yaml", *docs, virtual_node("gateway", backends=[f"svc-{i}" for i in range(services)]))
    write(root / "policy.yaml", _policy_doc("GET"))
    policy_ms: list[float] = []
    route_ms: list[float] = []
    async with ControlPlane.from_manifests(root) as plane:
        await plane.wait_synced()
        callee = AdsClient(plane.xds_port, "demo/svc-0-v1/p0", "demo/svc-0-v1")
        gateway = AdsClient(plane.xds_port, "demo/gateway/p0", "demo/gateway")
        subscribed: dict[AdsClient, dict[str, list[str]]] = {}
        try:
            for ads in (callee, gateway):
                got = await handshake(ads)
                clusters = [Cluster.FromString(a.value) for a in got[CLUSTER].resources]
                eds = sorted(c.name for c in clusters if c.type == Cluster.EDS)
                subscribed[ads] = {ENDPOINT: eds, ROUTE: ["outbound"]}
            for i in range(flips):
                start = time.perf_counter()
                write(root / "policy.yaml", _policy_doc("POST" if i % 2 == 0 else "GET"))
                await _next(callee, LISTENER, subscribed[callee])
                policy_ms.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.1)
            for i in range(flips):
                start = time.perf_counter()
                prefix = "/a" if i % 2 else "/b"  # a route table that differs each time
                write(root / "route.yaml", route("flip", "svc-0", {"svc-0-v1": 100}, match={"prefix": prefix}))
                await _next(gateway, ROUTE, subscribed[gateway])
                route_ms.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.1)
        finally:
            await callee.close()
            await gateway.close()
    return policy_ms, route_ms


def run(services: int = 1000, prop_services: int = 100, flips: int = 20) -> str:
    rows = translation_rows(services)
    out = table(["translation", "best of 3", "policies add", ""], rows)
    policy_ms, route_ms = asyncio.run(_propagation(prop_services, flips))
    prop = [
        ["policy change -> callee LDS", f"{percentile(policy_ms, 50):.1f} ms", f"{percentile(policy_ms, 99):.1f} ms"],
        ["Route change -> gateway RDS", f"{percentile(route_ms, 50):.1f} ms", f"{percentile(route_ms, 99):.1f} ms"],
    ]
    head = f"propagation ({prop_services} services, {flips} flips each, manifest source)"
    return out + "\n\n" + table([head, "p50", "p99"], prop)
