"""Bad input from one object never stops the build loop (issue 9, poison pill).

A value the parser should have refused but did not (simulated by building the model directly) makes a resource
impossible to build: that object version is blocked with a Programmed=False condition naming the cause, its
previous version is served, every other group keeps being built, and later changes still flow.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp

from bench import meshgen
from meshctl.controlplane.controller import Controller
from meshctl.controlplane.plane import ControlPlane
from meshctl.model import ConnectionPool, Model, ObjectKey, VirtualNode
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.envoy.types import CLUSTER, ROUTE
from tests.conftest import eventually
from tests.controller_driver import apply, controller_for
from tests.manifests import route, service, workload, write

POISON = ConnectionPool(max_connections=5_000_000_000)  # over UInt32: building the Cluster raises


def _poisoned(model: Model, name: str) -> Model:
    key = ObjectKey("VirtualNode", meshgen.NS, name)
    vn = model.virtual_nodes[key]
    assert vn.spec is not None
    listener = replace(vn.spec.listeners[0], connection_pool=POISON)
    bad = VirtualNode(meta=replace(vn.meta, generation=2), spec=replace(vn.spec, listeners=(listener,)))
    return replace(model, virtual_nodes={**model.virtual_nodes, key: bad}, revision=model.revision + 1, delta=None)


def _conditions(controller: Controller, key: ObjectKey) -> dict[str, tuple[str, str, str]]:
    assert controller.mesh is not None
    status = controller.mesh.status_by_key[key]
    return {c.type: (c.status.value, c.reason, c.message) for c in status.conditions}


async def test_an_unbuildable_edit_is_blocked_and_its_previous_version_served() -> None:
    model = meshgen.build(3)
    async with controller_for([meshgen.GATEWAY]) as controller:
        await _blocked_then_fixed(controller, model)


async def _blocked_then_fixed(controller: Controller, model: Model) -> None:
    group = meshgen.GATEWAY.group
    await apply(controller, model)
    good_cluster = controller.cache.get(group).resources[CLUSTER]["bench/svc-1-v1/8080"]

    poisoned = _poisoned(model, "svc-1-v1")
    await apply(controller, poisoned)
    key = ObjectKey("VirtualNode", meshgen.NS, "svc-1-v1")
    programmed = _conditions(controller, key)["Programmed"]
    assert programmed[:2] == ("False", "InvalidForEnvoy")
    assert "cannot build cds resource 'bench/svc-1-v1/8080'" in programmed[2]
    assert "its last accepted version is still served" in programmed[2]
    assert controller.cache.get(group).resources[CLUSTER]["bench/svc-1-v1/8080"] is good_cluster

    # Everything else keeps changing: a Route edit reaches the snapshot.
    before = controller.cache.get(group).version(ROUTE)
    routes = {**poisoned.routes, meshgen.route(0).key: meshgen.route(0, w1=10)}
    await apply(controller, replace(poisoned, routes=routes, revision=poisoned.revision + 1))
    assert controller.cache.get(group).version(ROUTE) != before

    # Fixing the object lifts the block.
    await apply(controller, replace(model, revision=poisoned.revision + 2))
    assert "Programmed" not in _conditions(controller, key)


async def test_an_unbuildable_object_with_no_previous_version_is_left_out_after_a_restart() -> None:
    """A fresh controller (a restart) meets the bad object first: it is left out, the rest is served."""
    poisoned = _poisoned(meshgen.build(3), "svc-2-v2")
    async with controller_for([meshgen.GATEWAY]) as controller:
        await apply(controller, poisoned)
    group = meshgen.GATEWAY.group
    assert controller.synced
    clusters = controller.cache.get(group).resources[CLUSTER]
    assert "bench/svc-2-v2/8080" not in clusters
    assert {"bench/svc-0-v1/8080", "bench/svc-1-v2/8080"} <= clusters.keys()
    key = ObjectKey("VirtualNode", meshgen.NS, "svc-2-v2")
    assert _conditions(controller, key)["Programmed"][:2] == ("False", "InvalidForEnvoy")
    # The Route to it names the unresolved target instead of being served half-broken.
    route_status = controller.mesh.status_by_key[ObjectKey("Route", meshgen.NS, "svc-2")]
    assert "VirtualNode bench/svc-2-v2 is not valid" in route_status.summary()


async def test_the_build_loop_survives_a_bug_and_keeps_taking_changes() -> None:
    model = meshgen.build(2)
    controller = Controller(SnapshotCache(), holdoff=0.001)
    group = await controller.attach(meshgen.GATEWAY)
    task = asyncio.create_task(controller.run())
    try:
        await controller.submit(model)
        await eventually(lambda: controller.synced)
        real = controller._translate_and_build

        def broken(m: Model):
            raise RuntimeError("a bug")

        controller._translate_and_build = broken  # type: ignore[method-assign]
        await controller.submit(replace(model, services={}, revision=2))  # needs a full build: it fails
        await eventually(lambda: controller.metrics.build_errors == 1)
        controller._translate_and_build = real  # type: ignore[method-assign]
        before = controller.cache.get(group).version(ROUTE)
        routes = {**model.routes, meshgen.route(0).key: meshgen.route(0, w1=5)}
        await controller.submit(replace(model, routes=routes, revision=3))
        await eventually(lambda: controller.cache.get(group).version(ROUTE) != before)
        assert not task.done()
    finally:
        task.cancel()


async def test_out_of_range_manifest_is_reported_and_everything_else_flows(tmp_path) -> None:
    """The issue's reproduction through the real plane: the field is named, /healthz stays ok, changes flow."""
    write(tmp_path / "svc.yaml", service("reviews"))
    write(tmp_path / "v1.yaml", workload("reviews", "v1", 9001))
    write(tmp_path / "v2.yaml", workload("reviews", "v2", 9002))
    write(tmp_path / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100}))
    bad = workload("reviews", "v2", 9002, connectionPool={"http": {"maxConnections": 5000000000}})
    write(tmp_path / "v2.yaml", bad)
    async with ControlPlane.from_manifests(tmp_path) as plane, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{plane.admin_port}"
        await plane.wait_synced()
        async with session.get(url + "/api/v1/status") as r:
            objects = {o["name"]: o for o in (await r.json())["objects"]}
        message = objects["reviews-v2"]["conditions"][0]["message"]
        assert "spec.listeners[0].connectionPool.http.maxConnections: must be at most 4294967295" in message
        write(tmp_path / "route.yaml", route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2-missing": 50}))

        async def route_rejected() -> bool:
            async with session.get(url + "/api/v1/status") as r:
                objs = {o["name"]: o for o in (await r.json())["objects"]}
            return not objs["reviews"]["accepted"]

        await eventually(route_rejected)
        async with session.get(url + "/healthz") as r:
            assert r.status == 200


async def test_endpoint_patches_do_not_grow_the_builder_memo() -> None:
    """Issue 9, unbounded state: every endpoint patch used to add a memo entry, freed only by a full build."""
    model = meshgen.build(5)
    async with controller_for([meshgen.GATEWAY]) as controller:
        await apply(controller, model)
        key = ObjectKey("EndpointSlice", meshgen.NS, "svc-3-v1")
        sizes = []
        for k in range(300):
            base = meshgen.endpoint_slice(3, 1)
            endpoint = replace(base.endpoints[0], address=f"10.99.{k // 256}.{k % 256}")
            es = replace(base, endpoints=(endpoint, *base.endpoints[1:]))
            changed = meshgen.with_endpoint_objects(model, slices={key: es})
            await apply(controller, changed)
            model = changed
            sizes.append(len(controller._builder))
    assert controller.metrics.builds == 301 and controller.metrics.full_builds == 1  # then only patches
    assert max(sizes) == sizes[0], (sizes[0], max(sizes))
