"""The Kubernetes source end to end: objects written through the real client into the test apiserver, a real
Envoy routing by them, and the same Envoy config as the manifest-directory source builds from the same YAML."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path

import aiohttp
from kubernetes import client

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port, loopback_sidecar
from meshctl.devtools.sample_app import Behavior, start_app
from meshctl.kube.leader import LeaderElector
from meshctl.kube.status_writer import StatusWriter
from meshctl.sources import load_manifests
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.envoy.types import TYPE_ORDER
from tests.apiserver import ApiServer
from tests.conftest import eventually
from tests.manifests import route, service, virtual_node, workload, write
from tests.test_apiserver import install_crds


def create(api: client.ApiClient, doc: dict) -> None:
    ns = doc["metadata"].get("namespace", "default")
    kind = doc["kind"]
    if kind == "Service":
        client.CoreV1Api(api).create_namespaced_service(ns, doc)
    elif kind == "Pod":
        client.CoreV1Api(api).create_namespaced_pod(ns, doc)
    elif kind == "EndpointSlice":
        client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(ns, doc)
    else:
        plural = {"VirtualNode": "virtualnodes", "Route": "routes"}[kind]
        client.CustomObjectsApi(api).create_namespaced_custom_object("mesh.meshctl.dev", "v1alpha1", ns, plural, doc)


def simple_mesh() -> list[dict]:
    return [
        service("reviews"),
        *workload("reviews", "v1", 9080),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    ]


async def cluster_with(apiserver: ApiServer, docs: list[dict]) -> client.ApiClient:
    """A client of the test apiserver with the CRDs installed and ``docs`` created through it."""
    api = apiserver.client()
    install_crds(api)
    for doc in docs:
        await asyncio.to_thread(create, api, doc)
    return api


async def test_route_applied_through_the_api_moves_traffic_and_matches_manifest_mode(apiserver, tmp_path: Path):
    runners, ports = [], {}
    for name in ("v1", "v2"):
        ports[name] = free_port()
        runners.append(await start_app(Behavior(name=name), ports[name]))
    docs = [
        service("reviews"),
        *workload("reviews", "v1", ports["v1"]),
        *workload("reviews", "v2", ports["v2"]),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    ]
    api = await cluster_with(apiserver, docs)

    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    egress = free_port()
    envoy = loopback_sidecar(plane.xds_port, "demo/frontend", "demo/frontend/k8s", egress_port=egress)
    try:
        await plane.wait_synced()
        await envoy.start()
        async with aiohttp.ClientSession() as session:

            async def answer() -> str | None:
                try:
                    async with session.get(f"http://127.0.0.1:{egress}/", headers={"Host": "reviews"}) as r:
                        return await r.text() if r.status == 200 else None
                except aiohttp.ClientError:
                    return None

            await eventually(lambda: _is(answer(), "v1"), timeout=15)
            await asyncio.to_thread(
                client.CustomObjectsApi(api).patch_namespaced_custom_object,
                "mesh.meshctl.dev",
                "v1alpha1",
                "demo",
                "routes",
                "reviews",
                {
                    "spec": {
                        "httpRoute": {
                            "action": {"weightedTargets": [{"virtualNodeRef": {"name": "reviews-v2"}, "weight": 100}]}
                        }
                    }
                },
            )
            await eventually(lambda: _is(answer(), "v2"), timeout=15)

        # The same objects as files give the same Envoy config, resource for resource.
        (stream,) = plane.registry.streams()
        write(tmp_path / "same.yaml", *docs[:-1], route("reviews", "reviews", {"reviews-v2": 100}))
        from_files = SnapshotBuilder().build(
            translate_sidecar(translate_mesh(load_manifests(tmp_path)), params_of(stream))
        )
        from_cluster = plane.cache.get(stream.group)
        assert {t: from_files.version(t) for t in TYPE_ORDER} == {t: from_cluster.version(t) for t in TYPE_ORDER}
    finally:
        await envoy.stop()
        await plane.stop()
        for runner in runners:
            await runner.cleanup()
        api.close()


async def _is(result, expected: str) -> bool:
    return await result == expected


def params_of(stream):
    """The SidecarParams the control plane derived for this stream's node (its group key)."""
    from meshctl.model import ObjectKey
    from meshctl.translate.ir import SidecarParams

    vn, *settings = stream.group.split(";")
    values = dict(s.split("=") for s in settings)
    return SidecarParams(
        virtual_node=ObjectKey("VirtualNode", *vn.split("/")),
        egress_port=int(values["egress"]),
        ingress_port=int(values["ingress"]),
        bind_address=values["bind"],
    )


async def test_a_burst_of_endpoint_changes_becomes_a_handful_of_builds(apiserver):
    docs = simple_mesh()
    api = await cluster_with(apiserver, docs)
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    try:
        await plane.wait_synced()
        builds = plane.metrics.builds
        discovery = client.DiscoveryV1Api(api)

        def burst() -> None:
            for i in range(300):
                ready = {"conditions": {"ready": i % 2 == 0}}
                patch = {"endpoints": [{**docs[2]["endpoints"][0], **ready}]}
                discovery.patch_namespaced_endpoint_slice("reviews-v1", "demo", patch)

        await asyncio.to_thread(burst)
        final = await asyncio.to_thread(discovery.read_namespaced_endpoint_slice, "reviews-v1", "demo")
        assert final.endpoints[0].conditions.ready is False  # the 300th change (i = 299)

        def caught_up() -> bool:
            eps = plane.controller.mesh.endpoints.get("demo/reviews-v1/9080", ())
            return bool(eps) and eps[0].healthy is False

        await eventually(caught_up, timeout=15)
        assert plane.metrics.builds - builds <= 12, plane.metrics.builds - builds  # a handful, not one per change
    finally:
        await plane.stop()
        api.close()


async def test_the_initial_list_is_read_in_pages_one_informer_at_a_time(apiserver, monkeypatch):
    """Issue 14: lists come in pages (one JSON decode of a whole large list held the GIL for a second); every
    object of every page reaches the model. Informers parse one at a time: parsing their lists at once, each was
    one more thread the serving loop waited behind (up to 77 ms at 10,000 services). And a model's copy of the Pod
    store (100,000 entries) is frozen, not rescanned by every young collection on the loop until it ages out."""
    import threading

    from meshctl.sources import kubernetes as source_module

    parse, lock, parsing, most = source_module._parse, threading.Lock(), [0], [0]

    def slow_parse(item):
        with lock:
            parsing[0] += 1
            most[0] = max(most[0], parsing[0])
        time.sleep(0.002)  # lets another informer's thread run, if it may
        with lock:
            parsing[0] -= 1
        return parse(item)

    monkeypatch.setattr(source_module, "_PAGE", 2)
    monkeypatch.setattr(source_module, "_parse", slow_parse)
    docs = [*simple_mesh(), *workload("reviews", "v2", 9080), route("extra", "reviews", {"reviews-v2": 100})]
    api = await cluster_with(apiserver, docs)
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    try:
        await plane.wait_synced()
        model = plane.controller.model
        assert model is not None
        expected = {(d["kind"], d["metadata"]["name"]) for d in docs}
        held = {(k.kind, k.name) for m in (model.services, model.endpoint_slices, model.pods) for k in m}
        held |= {(k.kind, k.name) for m in (model.virtual_nodes, model.routes) for k in m}
        assert held == expected
        assert most[0] == 1

        labels = {"app": "reviews", "version": "v9"}
        core = client.CoreV1Api(api)
        await asyncio.to_thread(core.patch_namespaced_pod, "reviews-v1-0", "demo", {"metadata": {"labels": labels}})
        await eventually(lambda: plane.controller.mesh.endpoints.get("demo/reviews-v1/9080") == (), timeout=15)
        pods = plane.controller.model.pods
        assert id(pods._by_namespace["demo"]) not in {id(o) for o in gc.get_objects()}
    finally:
        await plane.stop()
        api.close()


async def test_pod_updates_that_change_nothing_never_reach_the_controller(apiserver):
    """Issue 14: Pod status and annotation updates (new resourceVersions, same labels) are dropped by the source;
    a label change (relabelled out of reviews-v1's selector) is one endpoint patch, with no full translation."""
    api = await cluster_with(apiserver, simple_mesh())
    source = KubernetesSource(apiserver.controller_client())
    plane = ControlPlane(source)
    await plane.start()
    try:
        await plane.wait_synced()
        builds, full = plane.metrics.builds, plane.metrics.full_builds
        core = client.CoreV1Api(api)

        def churn() -> None:
            for i in range(20):
                core.patch_namespaced_pod("reviews-v1-0", "demo", {"metadata": {"annotations": {"beat": str(i)}}})
                status = {"status": {"phase": "Running", "podIP": f"10.0.0.{i}"}}  # the mesh reads IPs from slices
                core.patch_namespaced_pod_status("reviews-v1-0", "demo", status)

        held = plane.controller.model
        assert held is not None
        pods_before = dict(held.pods)
        await asyncio.to_thread(churn)
        await eventually(lambda: source.ignored_events >= 40, timeout=15)
        assert (plane.metrics.builds, plane.metrics.full_builds) == (builds, full)
        assert source._objects["Pod"] is held.pods  # one dict for the store and the model: nothing was copied

        # A real change copies the store first: the model already handed out never changes under its holder.
        labels = {"app": "reviews", "version": "v9"}
        await asyncio.to_thread(core.patch_namespaced_pod, "reviews-v1-0", "demo", {"metadata": {"labels": labels}})
        await eventually(lambda: plane.controller.mesh.endpoints.get("demo/reviews-v1/9080") == (), timeout=15)
        assert held.pods == pods_before and source._objects["Pod"] is not held.pods
        assert plane.metrics.builds == builds + 1 and plane.metrics.full_builds == full
        # Once no model holds the initial list's store, nothing does (the informer thread kept it while watching).
        listed, pods_before, held = held.pods, None, None
        gc.collect()
        assert sys.getrefcount(listed) == 2  # ``listed`` and the call's argument

    finally:
        await plane.stop()
        api.close()


def _reachable(*roots: object) -> list[object]:
    """Every object reachable from ``roots`` (through frames and containers, not through modules or classes)."""
    import sys
    import types

    stop = {id(m.__dict__) for m in list(sys.modules.values()) if hasattr(m, "__dict__")}
    seen: set[int] = set()
    out, stack = [], list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or id(obj) in stop or isinstance(obj, (type, types.ModuleType)):
            continue
        seen.add(id(obj))
        out.append(obj)
        stack.extend(gc.get_referents(obj))
    return out


async def test_an_idle_source_holds_no_key_object_per_pod(apiserver):
    """Issue 14 (memory): Pods are stored by namespace and name, and the keys of the last change (after the initial
    lists, every object's: 200,000 at 10,000 services) are not kept while the source waits for the next event."""
    from meshctl.model import ObjectKey
    from meshctl.model.namespaced import NamespacedMap

    api = await cluster_with(apiserver, simple_mesh())
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    try:
        await plane.wait_synced()
        model = plane.controller.model
        assert model is not None and isinstance(model.pods, NamespacedMap) and len(model.pods) == 1
        gc.collect()
        held = [k for k in _reachable(plane, *asyncio.all_tasks()) if type(k) is ObjectKey and k.kind == "Pod"]
        assert held == []
    finally:
        await plane.stop()
        api.close()


async def test_status_conditions_observed_generation_events_and_conflicts(apiserver):
    docs = simple_mesh()
    api = await cluster_with(apiserver, docs)
    crs = client.CustomObjectsApi(api)
    args = ("mesh.meshctl.dev", "v1alpha1", "demo", "routes", "reviews")
    writer = StatusWriter(apiserver.controller_client())
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()), status_writer=writer)
    await plane.start()

    async def route_status() -> dict:
        return (await asyncio.to_thread(crs.get_namespaced_custom_object, *args)).get("status") or {}

    async def condition(observed: int, accepted: str) -> bool:
        status = await route_status()
        conds = {c["type"]: c for c in status.get("conditions", [])}
        return status.get("observedGeneration") == observed and conds.get("Accepted", {}).get("status") == accepted

    try:
        await eventually(lambda: condition(1, "True"), timeout=15)
        vn = await asyncio.to_thread(
            crs.get_namespaced_custom_object, "mesh.meshctl.dev", "v1alpha1", "demo", "virtualnodes", "frontend"
        )
        assert {c["type"]: c["status"] for c in vn["status"]["conditions"]} == {
            "Accepted": "True",
            "ResolvedRefs": "True",
        }

        zero = {
            "spec": {
                "httpRoute": {"action": {"weightedTargets": [{"virtualNodeRef": {"name": "reviews-v1"}, "weight": 0}]}}
            }
        }
        await asyncio.to_thread(crs.patch_namespaced_custom_object, *args, zero)
        await eventually(lambda: condition(2, "False"), timeout=15)
        accepted = next(c for c in (await route_status())["conditions"] if c["type"] == "Accepted")
        assert "spec.httpRoute.action.weightedTargets: weights sum to 0" in accepted["message"]
        assert accepted["observedGeneration"] == 2 and accepted["reason"] == "Invalid"
        events = await asyncio.to_thread(client.CoreV1Api(api).list_namespaced_event, "demo")
        (event,) = [e for e in events.items if e.involved_object.name == "reviews"]
        assert (event.type, event.reason, event.involved_object.kind) == ("Warning", "Invalid", "Route")

        # A write racing ours: the first read is stale by the time we update, so the update gets 409 and is retried.
        real_get = writer.custom.get_namespaced_custom_object
        stale = real_get(*args)
        crs.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"touched": "yes"}}})
        reads = iter([stale])
        writer.custom.get_namespaced_custom_object = lambda *a: next(reads, None) or real_get(*a)
        conflicts = writer.conflicts
        status = next(s for s in plane.controller.statuses() if s.key.name == "reviews" and s.key.kind == "Route")
        assert await asyncio.to_thread(writer.write, status)
        assert writer.conflicts == conflicts + 1
    finally:
        await plane.stop()
        api.close()


async def test_two_replicas_one_writes_and_a_killed_leader_hands_over_within_the_lease(apiserver):
    docs = simple_mesh()
    api = await cluster_with(apiserver, docs)
    lease = 1.5
    replicas = []
    for identity in ("replica-a", "replica-b"):
        elector = LeaderElector(
            apiserver.controller_client(), identity=identity, lease_duration=lease, retry_period=0.2
        )
        writer = StatusWriter(apiserver.controller_client(), elector=elector)
        plane = ControlPlane(KubernetesSource(apiserver.controller_client()), status_writer=writer)
        await plane.start()
        replicas.append((plane, writer, elector))
    crs = client.CustomObjectsApi(api)
    args = ("mesh.meshctl.dev", "v1alpha1", "demo", "routes", "reviews")

    def observed() -> int | None:
        return (crs.get_namespaced_custom_object(*args).get("status") or {}).get("observedGeneration")

    try:
        await eventually(lambda: sum(e.is_leader for *_, e in replicas) == 1, timeout=10)
        await eventually(lambda: observed() == 1, timeout=10)
        (leader,) = [r for r in replicas if r[2].is_leader]
        (follower,) = [r for r in replicas if not r[2].is_leader]
        assert leader[1].writes > 0 and follower[1].writes == 0  # exactly one replica writes status

        # Kill the leader (no clean release): the follower takes over once the lease expires, then writes.
        leader[2]._release = lambda: None
        await leader[0].stop()
        killed_at = time.monotonic()
        await eventually(lambda: follower[2].is_leader, timeout=10)
        # Takeover needs the record unchanged for a lease on the follower's clock, plus a retry period; the margin is
        # generous because this is wall-clock time on a loaded machine (the point: no one waits for a clock skew).
        assert time.monotonic() - killed_at < lease + 5.0
        await asyncio.to_thread(crs.patch_namespaced_custom_object, *args, {"spec": {"priority": 3}})
        await eventually(lambda: observed() == 2, timeout=10)
        assert follower[1].writes > 0
        holder = client.CoordinationV1Api(api).read_namespaced_lease("meshctl-leader", "meshctl-system")
        assert holder.spec.holder_identity == follower[2].identity and holder.spec.lease_transitions == 1
    finally:
        for plane, *_ in replicas:
            await plane.stop()
    # A clean stop released the lease: nobody holds it now.
    released = client.CoordinationV1Api(api).read_namespaced_lease("meshctl-leader", "meshctl-system")
    assert released.spec.holder_identity in ("", None)
    api.close()


async def test_stopping_flushes_pending_status_writes():
    writer = StatusWriter(client.ApiClient(client.Configuration()))
    flushed = []
    writer.write_all = lambda statuses: flushed.append(statuses) or True
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0)  # the writer is now waiting for work
    pending = ("a status",)
    writer._current = pending  # submitted, but the writer has not been woken yet
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert flushed == [pending]
