"""The controller's endpoint-only fast path gives exactly what a full translation gives."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from envoy.config.core.v3.base_pb2 import Node

from bench import meshgen
from bench.gamma import gamma_model, http_route
from meshctl.controlplane.controller import Controller
from meshctl.model import FieldError, HttpMatch, ModelDelta, ObjectKey
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.envoy.types import ENDPOINT, ROUTE, TYPE_ORDER
from meshctl.xds.server.node import sidecar_params
from tests.conftest import eventually
from tests.controller_driver import apply, controller_for, running


async def built(model, params=meshgen.GATEWAY) -> dict[str, str]:
    """The versions a controller that only ever translates from scratch serves this model with."""
    async with controller_for([params], incremental=False) as controller:
        await apply(controller, model)
        snap = controller.cache.get(params.group)
        return {t: snap.version(t) for t in TYPE_ORDER}


async def test_endpoint_patch_equals_full_translation() -> None:
    model = meshgen.build(20)
    async with controller_for([meshgen.GATEWAY]) as controller:
        group = meshgen.GATEWAY.group
        await apply(controller, model)
        before = controller.cache.get(group)
        builds_before, full_before = controller.metrics.builds, controller.metrics.full_builds

        changed = meshgen.with_endpoint_change(model, 7, generation=3)
        await apply(controller, changed)
        after = controller.cache.get(group)

    assert after.parent_versions == {ENDPOINT: before.version(ENDPOINT)}
    assert after.changed == {ENDPOINT: frozenset({"bench/svc-7-v1/8080"})}
    assert after.resources[ENDPOINT]["bench/svc-7-v1/8080"].message.endpoints[0].lb_endpoints[0].health_status == 2
    for t in TYPE_ORDER:
        if t != ENDPOINT:
            assert after.resources[t] == before.resources[t]
    assert {t: after.version(t) for t in TYPE_ORDER} == await built(changed)
    assert controller.metrics.builds == builds_before + 1 and controller.metrics.full_builds == full_before
    # The snapshot's IR keeps no endpoints: they would be stale after this patch and hold the replaced ones.
    assert before.ir is not None and after.ir is before.ir and not after.ir.endpoints


def _state(controller: Controller, params_list) -> tuple[dict, dict]:
    versions = {p.group: {t: controller.cache.get(p.group).version(t) for t in TYPE_ORDER} for p in params_list}
    return versions, dict(controller.mesh.status_by_key)


def _edit_routes(model, **changes):
    routes = dict(model.routes)
    for name, value in changes.items():
        key = ObjectKey("Route", meshgen.NS, name.replace("_", "-"))
        if value is None:
            routes.pop(key)
        else:
            routes[key] = value
    return replace(model, routes=routes, revision=model.revision + 1, delta=None)


@pytest.mark.parametrize("capture", [False, True], ids=["direct", "capture"])
async def test_route_patch_equals_full_translation(capture: bool) -> None:
    model, clients = meshgen.with_clients(meshgen.build(30), groups=4, backends=5)
    params_list = [replace(p, capture=capture) for p in [sidecar_params(Node(cluster=c)) for c in clients]]
    params_list.append(replace(meshgen.GATEWAY, capture=capture))
    async with (
        controller_for(params_list) as controller,
        controller_for(params_list, incremental=False) as reference,  # the same history, always translated whole
    ):
        await apply(controller, model)
        await apply(reference, model)
        full_builds = controller.metrics.builds
        untouched = {
            p.group: controller.cache.get(p.group)
            for p in params_list
            if not {"svc-1", "svc-2", "svc-29"}
            & {b.name for b in controller.mesh.virtual_nodes[p.virtual_node].backends}
        }
        assert untouched

        invalid = replace(meshgen.route(1), spec=None, errors=(FieldError(path="spec.httpRoute", message="broken"),))
        extra = meshgen.route(2, w1=100)
        extra = replace(
            extra,
            meta=replace(extra.meta, name="svc-2-canary"),
            spec=replace(
                extra.spec, priority=1, http_route=replace(extra.spec.http_route, match=HttpMatch(prefix="/x"))
            ),
        )
        steps = [
            _edit_routes(model, svc_29=meshgen.route(29, w1=10)),  # a weight change
            _edit_routes(model, svc_29=None),  # a deletion
            _edit_routes(model, svc_1=invalid),  # an invalid edit: the last accepted version stays served
            _edit_routes(model, svc_2_canary=extra),  # a new Route, evaluated first
        ]
        rebuilt: set[str] = set()
        for step in steps:
            before = {p.group: controller.cache.get(p.group) for p in params_list}
            model = replace(step, revision=controller.model.revision + 1)
            await apply(controller, model)
            await apply(reference, model)
            # The gateway calls every Service: patched (RDS alone) or rebuilt, never left as it was.
            assert set(controller.cache.get(params_list[-1].group).parent_versions) <= {ROUTE}
            assert _state(controller, params_list) == _state(reference, params_list)
            assert controller.statuses() == reference.statuses() == controller.mesh.statuses  # kept sorted
            rebuilt |= {g for g, snap in before.items() if controller.cache.get(g) is not snap}
        assert controller.metrics.builds == full_builds + len(steps)
        assert reference.metrics.full_builds == 1 + len(steps)
        # Only groups that call a changed Service got new snapshots (the full path builds every group); the
        # weight change and the invalid edit patched the RouteConfiguration alone.
        for group, snap in untouched.items():
            assert controller.cache.get(group) is snap
        assert rebuilt and not rebuilt & set(untouched), rebuilt
        assert controller.metrics.route_patches > 0


async def test_a_source_delta_is_used_only_when_it_is_relative_to_the_last_model() -> None:
    from meshctl.controlplane.controller import classify_change

    model = meshgen.build(3)
    changed = meshgen.with_endpoint_change(model, 1, generation=2)
    assert changed.delta is not None and changed.delta.base_revision == model.revision
    assert classify_change(model, changed) == ("endpoints", set(changed.delta.endpoint_slices))
    # Relative to another model the delta says nothing: the controller compares instead.
    other = meshgen.with_endpoint_change(changed, 2, generation=3)
    assert classify_change(model, other) == (
        "endpoints",
        {k for k in other.endpoint_slices if other.endpoint_slices[k] != model.endpoint_slices[k]},
    )


async def test_coalesced_models_merge_their_deltas() -> None:
    """Models submitted while the build loop is busy are built once, as the newest; their deltas are merged so the
    newest takes the endpoint path and still gives what a translation from scratch gives."""
    model = meshgen.build(5)
    controller = Controller(SnapshotCache(), holdoff=0.001, max_holdoff=0.001)
    await controller.attach(meshgen.GATEWAY)
    async with running(controller):
        await apply(controller, model)
    first = meshgen.with_endpoint_change(model, 1, generation=2)
    second = meshgen.with_endpoint_change(first, 2, generation=3)
    await controller.submit(first)  # the loop is stopped: both wait, and it will only ever see ``second``
    await controller.submit(second)
    full, builds = controller.metrics.full_builds, controller.metrics.builds
    async with running(controller):
        await eventually(lambda: controller.metrics.builds > builds, interval=0.001)
        assert controller.model.revision == second.revision and controller.metrics.builds == builds + 1
        assert controller.model.delta.base_revision == model.revision
        assert controller.model.delta.endpoint_slices == first.delta.endpoint_slices | second.delta.endpoint_slices
        assert controller.metrics.full_builds == full  # the merged delta named both slices: endpoint path
        snap = controller.cache.get(meshgen.GATEWAY.group)
        assert {t: snap.version(t) for t in TYPE_ORDER} == await built(second)
        assert snap.changed == {ENDPOINT: frozenset({"bench/svc-1-v1/8080", "bench/svc-2-v1/8080"})}

    # A model whose delta is not relative to the pending one loses its delta (the controller compares instead):
    # ``last`` holds the pending model's svc-3 change too, but its delta names svc-4 alone, relative to ``second``.
    pending = meshgen.with_endpoint_change(second, 3, generation=4)
    last = meshgen.with_endpoint_change(pending, 4, generation=5)
    last = replace(last, delta=replace(last.delta, base_revision=second.revision))
    await controller.submit(pending)
    await controller.submit(last)
    builds = controller.metrics.builds
    async with running(controller):
        await eventually(lambda: controller.metrics.builds > builds, interval=0.001)
        assert controller.model.revision == last.revision and controller.model.delta is None
        snap = controller.cache.get(meshgen.GATEWAY.group)
        assert {t: snap.version(t) for t in TYPE_ORDER} == await built(last)  # svc-3's change is not lost


async def test_a_pod_relabel_takes_the_endpoint_path_and_equals_full_translation() -> None:
    """Issue 14: a Pod change re-translates only the slices that name it (its endpoint moves to the node its new
    labels select), with no full translation."""
    model = meshgen.build(10)
    async with controller_for([meshgen.GATEWAY]) as controller:
        await apply(controller, model)
        full = controller.metrics.full_builds
        changed = meshgen.with_pod_relabel(model, 3, "v2")
        await apply(controller, changed)
        snap = controller.cache.get(meshgen.GATEWAY.group)
        assert controller.metrics.full_builds == full
    assert snap.changed == {ENDPOINT: frozenset({"bench/svc-3-v1/8080", "bench/svc-3-v2/8080"})}
    v2 = snap.resources[ENDPOINT]["bench/svc-3-v2/8080"].message
    assert len(v2.endpoints[0].lb_endpoints) == 6  # its own five and the relabelled pod's
    assert {t: snap.version(t) for t in TYPE_ORDER} == await built(changed)


async def test_a_proxy_attaching_during_a_build_gets_the_new_mesh_and_one_detaching_gets_nothing() -> None:
    """Builds run in the build thread while the loop keeps serving (issue 14): a group attached meanwhile waits for
    the build and then gets a snapshot of the mesh just built; a group detached meanwhile is not published."""
    model, clients = meshgen.with_clients(meshgen.build(1500), groups=2, backends=5)
    joining, leaving = (sidecar_params(Node(cluster=c)) for c in clients)
    async with controller_for([meshgen.GATEWAY, leaving]) as controller:
        await controller.submit(model)
        while controller.model is not model:  # the loop took the model and handed the build to its thread
            await asyncio.sleep(0)
        assert controller.metrics.builds == 0
        controller.detach(leaving.group)
        await controller.attach(joining)  # returns once the build is done and the group has its snapshot
        assert controller.metrics.builds == 1
        assert controller.cache.get(leaving.group) is None
        snap = controller.cache.get(joining.group)
        assert snap is not None
        assert {t: snap.version(t) for t in TYPE_ORDER} == await built(model, joining)


async def test_a_replaced_endpoint_index_is_emptied_without_touching_the_new_one() -> None:
    from meshctl.translate.endpoints import index_endpoints, release_gently

    model = meshgen.build(30)
    nodes = {k: v.spec for k, v in model.virtual_nodes.items()}
    old = index_endpoints(nodes, model.endpoint_slices, model.pods)
    new = index_endpoints(nodes, meshgen.with_endpoint_change(model, 3, 2).endpoint_slices, model.pods)
    expected = dict(new.endpoints)
    release_gently(old, new)
    assert not old.contributions and not old.endpoints and not any(old.slices_of_pod.values())
    assert new.endpoints == expected and new.contributions and all(new.slices_of_pod.values())
    assert model.endpoint_slices and model.pods  # what the index was computed from is never emptied


def test_a_virtual_node_change_that_keeps_selectors_reuses_the_endpoint_index() -> None:
    """Issue 14: a listener change (here a new port) recomputes only that node's clusters; the result equals an
    index computed from scratch. A selector change (which endpoints belong where) is not taken this way."""
    from meshctl.translate.endpoints import index_endpoints, update_nodes

    model = meshgen.build(30)
    nodes = {k: v.spec for k, v in model.virtual_nodes.items()}
    old = index_endpoints(nodes, model.endpoint_slices, model.pods)
    key = ObjectKey("VirtualNode", meshgen.NS, "svc-3-v1")
    listener = replace(nodes[key].listeners[0], port=9090)
    relistened = {**nodes, key: replace(nodes[key], listeners=(listener,))}
    reused = update_nodes(old, relistened, model.endpoint_slices, model.pods)
    assert reused is not None and reused.contributions is old.contributions
    assert reused.endpoints == index_endpoints(relistened, model.endpoint_slices, model.pods).endpoints
    assert f"{meshgen.NS}/svc-3-v1/9090" in reused.endpoints and f"{meshgen.NS}/svc-3-v1/8080" not in reused.endpoints

    reselected = {**nodes, key: replace(nodes[key], pod_selector={"app": "svc-4", "version": "v1"})}
    assert update_nodes(old, reselected, model.endpoint_slices, model.pods) is None
    fewer = {k: v for k, v in nodes.items() if k != key}
    assert update_nodes(old, fewer, model.endpoint_slices, model.pods) is None


def test_a_full_build_keeps_the_last_builds_objects_where_they_are_equal() -> None:
    """Issue 14, memory: a second full build holds one copy of what did not change (statuses, Route IR, maps),
    not equal new copies beside the old ones whose departure leaves the allocator's arenas part used. The result
    still equals a translation from scratch."""
    from meshctl.translate import translate_mesh

    model = meshgen.build(30)
    first = translate_mesh(model)
    key = ObjectKey("VirtualNode", meshgen.NS, "svc-3-v1")
    vn = model.virtual_nodes[key]
    assert vn.spec is not None
    listener = replace(vn.spec.listeners[0], port=9090)
    changed = replace(
        model, virtual_nodes={**model.virtual_nodes, key: replace(vn, spec=replace(vn.spec, listeners=(listener,)))}
    )
    second = translate_mesh(changed, previous=first)

    scratch = translate_mesh(changed)
    assert second.endpoints == scratch.endpoints  # (the index itself keeps the old specs in by_label: update_nodes)
    assert replace(second, endpoint_index=scratch.endpoint_index) == scratch
    same_status = [k for k, st in second.status_by_key.items() if st is first.status_by_key.get(k)]
    assert len(same_status) == len(first.status_by_key)  # the port change leaves every status as it was
    assert second.services is first.services
    routes = [k for k, p in second.route_placement.items() if p is first.route_placement[k]]
    changed_route = ObjectKey("Route", meshgen.NS, "svc-3")  # its target's cluster is now .../9090
    assert set(routes) == set(first.route_placement) - {changed_route}
    assert second.route_placement[changed_route].ir != first.route_placement[changed_route].ir


def test_the_mesh_ir_holds_the_models_keys_and_one_string_per_cluster_name() -> None:
    """Issue 14, memory: statuses name their object with the model's own key, the Services map is the model's,
    and a cluster's name is one string wherever it appears (clusters, endpoints, Routes): 10,000 services, ~4 MiB."""
    from meshctl.translate import translate_mesh

    model = meshgen.build(5)
    mesh = translate_mesh(model)
    model_keys = {k: k for kind in (model.virtual_nodes, model.routes) for k in kind}
    assert all(st.key is model_keys[k] for k, st in mesh.status_by_key.items())
    assert mesh.services is model.services
    names = {n: n for n in mesh.clusters}
    endpoint_names = {n: n for n in mesh.endpoints}
    for placement in mesh.route_placement.values():
        for wc in placement.ir.clusters:
            assert wc.cluster is names[wc.cluster] is endpoint_names[wc.cluster]


def _edit_http_routes(model, **changes):
    routes = dict(model.http_routes)
    keys = set()
    for name, value in changes.items():
        kind = value.kind if value is not None else "HTTPRoute"
        key = ObjectKey(kind, meshgen.NS, name.replace("_", "-"))
        keys.add(key)
        if value is None:
            routes.pop(key)
        else:
            routes[key] = value
    delta = ModelDelta(base_revision=model.revision, http_routes=frozenset(keys))
    return replace(model, http_routes=routes, revision=model.revision + 1, delta=delta)


async def test_an_httproute_change_patches_the_route_configuration_and_equals_full_translation() -> None:
    """Issue 30: an HTTPRoute weight change costs what a Route's does (RDS alone, in every calling group); a
    change that reaches further (a GRPCRoute making a Service port's cluster gRPC, a new backend) rebuilds."""
    model, clients = meshgen.with_clients(gamma_model(30), groups=4, backends=3)
    params_list = [sidecar_params(Node(cluster=c)) for c in clients] + [meshgen.GATEWAY]
    async with (
        controller_for(params_list) as controller,
        controller_for(params_list, incremental=False) as reference,
    ):
        await apply(controller, model)
        await apply(reference, model)
        full_builds = controller.metrics.full_builds
        invalid = replace(
            http_route(3),
            spec=None,
            errors=(FieldError(path="spec.rules[0].filters[0].type", message="unsupported"),),
            parents_if_invalid=http_route(3).spec.parents,
        )
        grpc = replace(http_route(5), kind="GRPCRoute", spec=replace(http_route(5).spec, grpc=True))
        grpc = replace(grpc, meta=replace(grpc.meta, name="svc-5-grpc"))
        steps = [
            ("weights", {"svc_29": http_route(29, 10)}, True),
            ("invalid", {"svc_3": invalid}, True),  # the last accepted version stays served
            ("gone", {"svc_7": None}, False),  # its clusters unused: CDS changes
            ("grpc", {"svc_5_grpc": grpc}, False),  # svc-5-v1/v2's clusters become gRPC ones
        ]
        for label, edits, rds_only in steps:
            patches = controller.metrics.route_patches
            model = _edit_http_routes(replace(model, revision=controller.model.revision), **edits)
            await apply(controller, model)
            await apply(reference, model)
            assert _state(controller, params_list) == _state(reference, params_list), label
            assert controller.statuses() == reference.statuses(), label
            gateway = controller.cache.get(meshgen.GATEWAY.group)
            if rds_only:  # every group (each sees the producer routes) patched RDS alone
                assert controller.metrics.route_patches == patches + len(params_list), label
                assert set(gateway.parent_versions) == {ROUTE}, label
            else:
                assert set(gateway.parent_versions) != {ROUTE}, label
        assert controller.metrics.full_builds == full_builds  # never a full translation
