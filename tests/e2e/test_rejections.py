"""Bad input loses nothing: Envoy NACKs are reported and the proxy keeps its last good config;
invalid manifests are rejected with file and field, the rest of the mesh is served unchanged."""

from __future__ import annotations

from meshctl.xds.envoy.types import ROUTE
from tests.conftest import Mesh, eventually
from tests.e2e.test_traffic import basic_mesh, route_version, wait_converged
from tests.manifests import route, write

BIG_REGEX = "/(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet){1,30}"


async def admin_json(m: Mesh, path: str) -> dict:
    async with m.session.get(f"http://127.0.0.1:{m.plane.admin_port}{path}") as r:
        assert r.status == 200
        return await r.json()


async def test_nack_is_reported_and_envoy_keeps_last_good_config(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    good_version = route_version(m)
    # Valid RE2, but over Envoy's regex program-size limit (100): only Envoy can tell, so it NACKs the routes.
    write(
        m.dir / "bad-regex.yaml",
        route("big-regex", "reviews", {"reviews-v2": 100}, match={"path": {"regex": BIG_REGEX}}, priority=1),
    )

    async def rejected() -> bool:
        data = await admin_json(m, "/api/v1/rejections")
        return any(r["type"] == "rds" for r in data["rejections"])

    await eventually(rejected, timeout=15)
    (rejection,) = (await admin_json(m, "/api/v1/rejections"))["rejections"]
    assert rejection["node_id"].startswith("demo/frontend")
    assert "RE2 program size of" in rejection["error"] and "> max program size of 100" in rejection["error"]

    proxies = (await admin_json(m, "/api/v1/proxies"))["proxies"]
    rds = proxies[0]["types"]["rds"]
    assert rds["acked_version"] == good_version
    assert rds["rejected"]["error"] == rejection["error"]
    assert "update_rejected: 1" in sidecar.envoy.admin_get("/stats?filter=rds.outbound.update_rejected")

    # Envoy still serves with the last good routes, and the stream is not wedged: a fix is taken.
    assert (await m.split(sidecar, "reviews", 200)) == {"v1": 200}
    bad_version = m.plane.cache.get(proxies[0]["group"]).version(ROUTE)
    write(
        m.dir / "bad-regex.yaml", route("big-regex", "reviews", {"reviews-v2": 100}, match={"path": {"exact": "/v2"}})
    )
    await wait_converged(m, sidecar, bad_version)
    assert (await m.get(sidecar, "reviews", "/v2"))[1] == "v2"
    assert (await m.get(sidecar, "reviews", "/"))[1] == "v1"
    rds = (await admin_json(m, "/api/v1/proxies"))["proxies"][0]["types"]["rds"]
    assert rds["rejected"] is None


async def test_invalid_manifests_are_rejected_with_file_and_field(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 80, "reviews-v2": 20})
    served_version = route_version(m)
    write(m.dir / "zero.yaml", route("zero", "reviews", {"reviews-v1": 0, "reviews-v2": 0}, match={"prefix": "/zero"}))
    write(m.dir / "unknown.yaml", route("unknown", "reviews", {"reviews-v9": 100}, match={"prefix": "/unknown"}))
    write(
        m.dir / "negative.yaml",
        route(
            "negative",
            "reviews",
            {"reviews-v1": 100},
            match={"prefix": "/neg"},
            timeout={"perRequest": {"unit": "s", "value": -1}},
        ),
    )

    async def all_reported() -> bool:
        objects = (await admin_json(m, "/api/v1/status"))["objects"]
        return {o["name"] for o in objects if not o["accepted"]} == {"zero", "unknown", "negative"}

    await eventually(all_reported)
    messages = {o["name"]: o["conditions"][0]["message"] for o in (await admin_json(m, "/api/v1/status"))["objects"]}
    assert messages["zero"].startswith("zero.yaml: spec.httpRoute.action.weightedTargets: weights sum to 0")
    assert messages["unknown"].startswith("unknown.yaml: spec.httpRoute.action.weightedTargets[0].virtualNodeRef")
    assert "VirtualNode demo/reviews-v9 not found" in messages["unknown"]
    assert messages["negative"].startswith("negative.yaml: spec.httpRoute.timeout.perRequest: must not be negative")
    # The served config did not change at all.
    assert route_version(m) == served_version
    assert (await m.get(sidecar, "reviews", "/zero"))[0] == 200


async def test_an_invalid_edit_keeps_serving_the_last_accepted_route(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    served_version = route_version(m)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 0, "reviews-v2": 0}))

    async def rejected() -> bool:
        objects = (await admin_json(m, "/api/v1/status"))["objects"]
        return any(o["name"] == "reviews" and not o["accepted"] for o in objects)

    await eventually(rejected)
    status = next(o for o in (await admin_json(m, "/api/v1/status"))["objects"] if o["name"] == "reviews")
    assert "route.yaml: spec.httpRoute.action.weightedTargets: weights sum to 0" in status["conditions"][0]["message"]
    assert "last accepted version is still served" in status["conditions"][0]["message"]
    assert route_version(m) == served_version
    assert (await m.split(sidecar, "reviews", 100)) == {"v1": 100}
