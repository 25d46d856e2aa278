"""HTTPRoutes through the Kubernetes API (the upstream Gateway API CRDs, v1.6.1): a weight change moves a real
Envoy's traffic, and each route's ``status.parents`` says Accepted / ResolvedRefs with the spec's reasons, for the
current generation, beside another controller's entry (which is kept); a newly broken route gets a Warning Event.
The shipped RBAC allows every call made (the apiserver fixture checks it)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from kubernetes import client

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port, loopback_sidecar
from meshctl.devtools.sample_app import Behavior, start_app
from meshctl.kube.status_writer import StatusWriter
from meshctl.sources.kubernetes import KubernetesSource
from tests.conftest import eventually
from tests.e2e.test_kubernetes import cluster_with
from tests.manifests import service, virtual_node

GW = ("gateway.networking.k8s.io", "v1", "demo", "httproutes")


def _version(name: str, port: int) -> list[dict[str, Any]]:
    """Service reviews-<name> and its one endpoint (a sample app on loopback)."""
    svc = service(f"reviews-{name}")
    svc["spec"]["selector"] = {"app": "reviews", "version": name}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"reviews-{name}-0", "namespace": "demo", "labels": {"app": "reviews", "version": name}},
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"reviews-{name}",
            "namespace": "demo",
            "labels": {"kubernetes.io/service-name": f"reviews-{name}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "targetRef": {"kind": "Pod", "name": f"reviews-{name}-0"}}],
    }
    return [svc, pod, eps]


def _route(weights: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "demo"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "reviews", "port": 80}],
            "rules": [{"backendRefs": [{"name": f"reviews-{v}", "port": 80, "weight": w} for v, w in weights.items()]}],
        },
    }


async def test_httproute_through_the_api_routes_and_reports_status_the_gateway_api_way(apiserver):
    runners, ports = [], {}
    for name in ("v1", "v2"):
        ports[name] = free_port()
        runners.append(await start_app(Behavior(name=name), ports[name]))
    docs = [service("reviews"), *_version("v1", ports["v1"]), *_version("v2", ports["v2"]), virtual_node("frontend")]
    api = await cluster_with(apiserver, docs)
    custom = client.CustomObjectsApi(api)
    route = _route({"v1": 100})
    # Another controller's entry on the same route (an edge gateway, say): ours must leave it alone.
    await asyncio.to_thread(custom.create_namespaced_custom_object, *GW, route)
    other = {
        "parentRef": {"name": "edge", "kind": "Gateway", "group": "gateway.networking.k8s.io"},
        "controllerName": "example.com/gateway",
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    current = await asyncio.to_thread(custom.get_namespaced_custom_object, *GW, "reviews")
    current["status"] = {"parents": [other]}
    await asyncio.to_thread(custom.replace_namespaced_custom_object_status, *GW, "reviews", current)

    writer = StatusWriter(apiserver.controller_client())
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()), status_writer=writer)
    await plane.start()
    egress = free_port()
    # frontend declares no backend: a producer route reaches every meshed caller (GAMMA).
    envoy = loopback_sidecar(plane.xds_port, "demo/frontend", "demo/frontend/k8s", egress_port=egress)
    try:
        await plane.wait_synced()
        await envoy.start()
        async with aiohttp.ClientSession() as session:

            async def answer() -> str | None:
                try:
                    async with session.get(f"http://127.0.0.1:{egress}/", headers={"Host": "reviews"}) as r:
                        return await r.text() if r.status == 200 else str(r.status)
                except aiohttp.ClientError:
                    return None

            async def is_(expected: str) -> bool:
                return await answer() == expected

            async def parents() -> list[dict[str, Any]]:
                obj = await asyncio.to_thread(custom.get_namespaced_custom_object, *GW, "reviews")
                return (obj.get("status") or {}).get("parents") or []

            async def ours(generation: int, **expected: str) -> bool:
                entries = [p for p in await parents() if p["controllerName"] == "mesh.meshctl.dev/controller"]
                if len(entries) != 1:
                    return False
                conds = {c["type"]: c for c in entries[0]["conditions"]}
                return all(
                    conds.get(t, {}).get("reason") == reason and conds[t]["observedGeneration"] == generation
                    for t, reason in expected.items()
                )

            await eventually(lambda: is_("v1"), timeout=15)
            await eventually(lambda: ours(1, Accepted="Accepted", ResolvedRefs="ResolvedRefs"), timeout=15)
            entry = next(p for p in await parents() if p["controllerName"] == "mesh.meshctl.dev/controller")
            assert entry["parentRef"] == {
                "group": "",
                "kind": "Service",
                "namespace": "demo",
                "name": "reviews",
                "port": 80,
            }
            assert other in await parents()  # the other controller's entry is untouched

            # A weight change through the API moves the traffic.
            patch = {"spec": {"rules": [{"backendRefs": [{"name": "reviews-v2", "port": 80, "weight": 1}]}]}}
            await asyncio.to_thread(custom.patch_namespaced_custom_object, *GW, "reviews", patch)
            await eventually(lambda: is_("v2"), timeout=15)
            await eventually(lambda: ours(2, Accepted="Accepted", ResolvedRefs="ResolvedRefs"), timeout=15)

            # A backend that does not exist: ResolvedRefs False (BackendNotFound), its requests get a 500, a Warning
            # Event names it; the route stays accepted.
            broken = {"spec": {"rules": [{"backendRefs": [{"name": "reviews-v9", "port": 80}]}]}}
            await asyncio.to_thread(custom.patch_namespaced_custom_object, *GW, "reviews", broken)
            await eventually(lambda: is_("500"), timeout=15)
            await eventually(lambda: ours(3, Accepted="Accepted", ResolvedRefs="BackendNotFound"), timeout=15)
            events = await asyncio.to_thread(client.CoreV1Api(api).list_namespaced_event, "demo")
            (event,) = [e for e in events.items if e.involved_object.name == "reviews"]
            assert (event.type, event.reason, event.involved_object.kind) == ("Warning", "BackendNotFound", "HTTPRoute")
            assert "reviews-v9" in event.message
            assert other in await parents()
    finally:
        await envoy.stop()
        await plane.stop()
        for runner in runners:
            await runner.cleanup()
        api.close()
