"""Incremental xDS (DELTA_GRPC) with real Envoy: routing, live shifts, and one resource per endpoint change."""

from __future__ import annotations

from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, ROUTE
from tests.conftest import Mesh, eventually
from tests.e2e.test_traffic import LoadClient, basic_mesh, share
from tests.manifests import route, service, virtual_node, workload, write


def stream_of(m: Mesh):
    (stream,) = m.plane.registry.streams()
    assert stream.delta
    return stream


async def converged(m: Mesh, type_url: str, old_version: str) -> None:
    def done() -> bool:
        stream = stream_of(m)
        snap = m.plane.cache.get(stream.group)
        st = stream.types[type_url]
        return snap is not None and snap.version(type_url) != old_version and st.acked_version == snap.version(type_url)

    await eventually(done, timeout=15)


async def test_delta_routing_shift_and_make_before_break(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 80, "reviews-v2": 20}, delta=True)
    _, p3 = await m.app("v3")
    counts = await m.split(sidecar, "reviews", 2000)
    assert 77 <= share(counts, "v1") <= 83, counts

    load = LoadClient(m, sidecar, "reviews")
    load.start()
    old = m.plane.cache.get(stream_of(m).group).version(ROUTE)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2": 50}))
    await converged(m, ROUTE, old)
    counts = await m.split(sidecar, "reviews", 2000)
    assert 47 <= share(counts, "v1") <= 53, counts

    # A new version appears and the old ones go, twice: clusters come before routes and leave after.
    ports = {"v1": m.ports["v1"], "v3": p3}
    for target in ("v3", "v1"):
        old = m.plane.cache.get(stream_of(m).group).version(CLUSTER)
        write(m.dir / "v3.yaml", workload("reviews", "v3", p3))
        write(m.dir / "route.yaml", route("reviews", "reviews", {f"reviews-{target}": 100}))
        if target == "v1":
            (m.dir / "v3.yaml").unlink()
        await converged(m, CLUSTER, old)
        only = {f"demo/reviews-{target}/{ports[target]}"}
        await eventually(lambda only=only: set(stream_of(m).types[CLUSTER].acked) == only)
        assert (await m.get(sidecar, "reviews"))[1] == target
    statuses = await load.stop()
    assert sum(statuses.values()) > 100 and set(statuses) == {200}, statuses
    assert stream_of(m).types[CLUSTER].last_sent[1] >= 1  # the v3 cluster was removed by name


async def test_delta_one_endpoint_change_sends_one_resource(mesh_factory):
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("v1")
    _, p2 = await m.app("v2")
    await m.app("v1-second", port=p1, host="127.0.0.2")
    v1 = workload("reviews", "v1", p1)
    rest = [
        workload("reviews", "v2", p2),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    ]
    write(m.dir / "w.yaml", service("reviews"), v1, *rest)
    await m.start()
    sidecar = await m.sidecar("demo/frontend", delta=True)
    await m.wait_routable(sidecar, "reviews")
    assert (await m.split(sidecar, "reviews", 50)) == {"v1": 50}

    eds_before = stream_of(m).types[ENDPOINT].acked_version
    v1[1]["endpoints"].append(
        {
            "addresses": ["127.0.0.2"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": "reviews-v1-0"},
        }
    )
    write(m.dir / "w.yaml", service("reviews"), v1, *rest)  # the same manifests, one more endpoint
    await converged(m, ENDPOINT, eds_before)
    assert stream_of(m).types[ENDPOINT].last_sent == (1, 0)  # one ClusterLoadAssignment, nothing removed
    counts = await m.split(sidecar, "reviews", 200)
    assert set(counts) == {"v1", "v1-second"}, counts
