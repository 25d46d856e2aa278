"""The controller's endpoint-only fast path gives exactly what a full translation gives."""

from __future__ import annotations

from bench import meshgen
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.controller import Controller
from meshctl.xds.envoy.types import ENDPOINT, TYPE_ORDER
from meshctl.xds.metrics import Metrics


async def built(model, params=meshgen.GATEWAY) -> dict[str, str]:
    controller = Controller(SnapshotCache(), Metrics())
    await controller.attach(params)
    await controller._rebuild(model)
    snap = controller.cache.get(params.group)
    return {t: snap.version(t) for t in TYPE_ORDER}


async def test_endpoint_patch_equals_full_translation() -> None:
    model = meshgen.build(20)
    controller = Controller(SnapshotCache(), Metrics())
    group = await controller.attach(meshgen.GATEWAY)
    await controller._rebuild(model)
    before = controller.cache.get(group)
    builds_before = controller.metrics.builds

    changed = meshgen.with_endpoint_change(model, 7, generation=3)
    await controller._rebuild(changed)
    after = controller.cache.get(group)

    assert after.parent_versions == {ENDPOINT: before.version(ENDPOINT)}
    assert after.changed == {ENDPOINT: frozenset({"bench/svc-7-v1/8080"})}
    assert after.resources[ENDPOINT]["bench/svc-7-v1/8080"].message.endpoints[0].lb_endpoints[0].health_status == 2
    for t in TYPE_ORDER:
        if t != ENDPOINT:
            assert after.resources[t] == before.resources[t]
    assert {t: after.version(t) for t in TYPE_ORDER} == await built(changed)
    assert controller.metrics.builds == builds_before + 1


async def test_a_route_change_takes_the_full_path() -> None:
    model = meshgen.build(5)
    controller = Controller(SnapshotCache(), Metrics())
    group = await controller.attach(meshgen.GATEWAY)
    await controller._rebuild(model)
    routes = dict(model.routes)
    key = next(iter(routes))
    routes[key] = meshgen.route(int(key.name.split("-")[1]), w1=50)
    from dataclasses import replace

    changed = replace(model, routes=routes)
    await controller._rebuild(changed)
    assert controller.cache.get(group).parent_versions == {}
    assert {t: controller.cache.get(group).version(t) for t in TYPE_ORDER} == await built(changed)


async def test_a_source_delta_is_used_only_when_it_is_relative_to_the_last_model() -> None:
    from meshctl.xds.controller import _endpoint_only_change

    model = meshgen.build(3)
    changed = meshgen.with_endpoint_change(model, 1, generation=2)
    assert changed.delta is not None and changed.delta.base_revision == model.revision
    assert _endpoint_only_change(model, changed) == {changed.delta.endpoint_slices.__iter__().__next__()}
    # Relative to another model the delta says nothing: the controller compares instead.
    other = meshgen.with_endpoint_change(changed, 2, generation=3)
    assert _endpoint_only_change(model, other) == {
        k for k in other.endpoint_slices if other.endpoint_slices[k] != model.endpoint_slices[k]
    }
