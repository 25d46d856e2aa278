"""Incremental xDS (DELTA_GRPC) with real Envoy: routing, live shifts, and one resource per endpoint change."""

from __future__ import annotations

from tests.conftest import Mesh, eventually
from tests.e2e.test_traffic import LoadClient, basic_mesh
from tests.manifests import route, service, virtual_node, workload, write
from tests.stats import assert_split


async def delta_proxy(m: Mesh) -> dict:
    """The frontend's proxy as `meshctl get proxies -o json` shows it; it must speak delta."""
    proxy = await m.proxy()
    assert proxy["protocol"] == "delta"
    return proxy


async def served(m: Mesh, short: str) -> str:
    return (await m.served_versions((await delta_proxy(m))["group"]))[short]


async def converged(m: Mesh, short: str, old_version: str) -> None:
    """Until the served version of a type changed and the proxy ACKed it (admin API)."""

    async def done() -> bool:
        proxy = await delta_proxy(m)
        version = (await m.served_versions(proxy["group"]))[short]
        return version != old_version and proxy["types"][short]["acked_version"] == version

    await eventually(done, timeout=15)


async def test_delta_routing_shift_and_make_before_break(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 80, "reviews-v2": 20}, delta=True)
    _, p3 = await m.app("v3")
    counts = await m.split(sidecar, "reviews", 2000)
    assert_split(counts, {"v1": 80, "v2": 20})

    load = LoadClient(m, sidecar, "reviews")
    load.start()
    old = await served(m, "rds")
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2": 50}))
    await converged(m, "rds", old)
    counts = await m.split(sidecar, "reviews", 2000)
    assert_split(counts, {"v1": 50, "v2": 50})

    # A new version appears and the old ones go, twice: clusters come before routes and leave after.
    ports = {"v1": m.ports["v1"], "v3": p3}
    for target in ("v3", "v1"):
        old = await served(m, "cds")
        write(m.dir / "v3.yaml", workload("reviews", "v3", p3))
        write(m.dir / "route.yaml", route("reviews", "reviews", {f"reviews-{target}": 100}))
        if target == "v1":
            (m.dir / "v3.yaml").unlink()
        await converged(m, "cds", old)
        only = {f"demo/reviews-{target}/{ports[target]}"}

        async def holds_only(only: set[str] = only) -> bool:
            return set((await delta_proxy(m))["types"]["cds"]["resources"]) == only

        await eventually(holds_only)
        assert (await m.get(sidecar, "reviews"))[1] == target
    statuses = await load.stop()
    assert sum(statuses.values()) > 100 and set(statuses) == {200}, statuses
    assert (await delta_proxy(m))["types"]["cds"]["last_response"]["removed"] >= 1  # v3 was removed by name


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

    eds_before = (await delta_proxy(m))["types"]["eds"]["acked_version"]
    v1[1]["endpoints"].append(
        {
            "addresses": ["127.0.0.2"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": "reviews-v1-0"},
        }
    )
    write(m.dir / "w.yaml", service("reviews"), v1, *rest)  # the same manifests, one more endpoint
    await converged(m, "eds", eds_before)
    # One ClusterLoadAssignment, nothing removed.
    assert (await delta_proxy(m))["types"]["eds"]["last_response"] == {"resources": 1, "removed": 0}
    counts = await m.split(sidecar, "reviews", 200)
    assert set(counts) == {"v1", "v1-second"}, counts
