"""Bad input loses nothing: Envoy NACKs are reported and the proxy keeps its last good config;
invalid manifests are rejected with file and field, the rest of the mesh is served unchanged."""

from __future__ import annotations

from tests.conftest import Mesh, eventually
from tests.e2e.test_traffic import basic_mesh, route_version, wait_converged
from tests.manifests import http_route, route, service_over, write

BIG_REGEX = "/(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet){1,30}"


async def admin_json(m: Mesh, path: str) -> dict:
    async with m.session.get(f"http://127.0.0.1:{m.plane.admin_port}{path}") as r:
        assert r.status == 200
        return await r.json()


def objects_by_name(data: dict) -> dict[str, dict]:
    return {o["name"]: o for o in data["objects"]}


async def test_nack_blames_the_route_and_everything_else_keeps_flowing(mesh_factory, monkeypatch):
    """Issue 9, NACK blast radius. The parser checks the RE2 program size against Envoy's default limit (100);
    here it believes the limit is higher than this Envoy's, as with a sidecar whose runtime is stricter, so only
    Envoy can tell and it NACKs the route update."""
    monkeypatch.setattr("meshctl.parse.route.REGEX_PROGRAM_SIZE_LIMIT", 10**6)
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    good_version = await route_version(m)
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
    assert "RE2 program size of 1684" in rejection["error"] and "> max program size of 100" in rejection["error"]
    assert "update_rejected: 1" in sidecar.envoy.admin_get("/stats?filter=rds.outbound.update_rejected")

    # The NACK is mapped back to the Route that was new in the rejected update, and only to it.
    async def blamed() -> bool:
        objects = objects_by_name(await admin_json(m, "/api/v1/status"))
        return any(c["type"] == "Programmed" for c in objects["big-regex"]["conditions"])

    await eventually(blamed)
    objects = objects_by_name(await admin_json(m, "/api/v1/status"))
    programmed = next(c for c in objects["big-regex"]["conditions"] if c["type"] == "Programmed")
    assert programmed["status"] == "False" and programmed["reason"] == "RejectedByEnvoy"
    assert "bad-regex.yaml: Envoy rejected the RDS update that carried this version" in programmed["message"]
    assert "RE2 program size of 1684" in programmed["message"]
    assert objects["reviews"]["healthy"], objects["reviews"]
    # ... and the served routes are the last good ones again, which Envoy already holds.
    assert await route_version(m) == good_version
    assert (await m.split(sidecar, "reviews", 100)) == {"v1": 100}

    # An unrelated change to the same Service still reaches Envoy.
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v2": 100}))
    await wait_converged(m, sidecar, good_version)
    assert (await m.split(sidecar, "reviews", 100)) == {"v2": 100}
    rds = (await admin_json(m, "/api/v1/proxies"))["proxies"][0]["types"]["rds"]
    assert rds["rejected"] is None

    # Fixing the blamed Route lifts the block: it is served.
    shifted_version = await route_version(m)
    write(
        m.dir / "bad-regex.yaml",
        route("big-regex", "reviews", {"reviews-v1": 100}, match={"path": {"exact": "/v1"}}, priority=1),
    )
    await wait_converged(m, sidecar, shifted_version)
    assert (await m.get(sidecar, "reviews", "/v1"))[1] == "v1"
    assert (await m.get(sidecar, "reviews", "/"))[1] == "v2"
    objects = objects_by_name(await admin_json(m, "/api/v1/status"))
    assert objects["big-regex"]["healthy"], objects["big-regex"]


async def test_invalid_manifests_are_rejected_with_file_and_field(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 80, "reviews-v2": 20})
    served_version = await route_version(m)
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
    assert await route_version(m) == served_version
    assert (await m.get(sidecar, "reviews", "/zero"))[0] == 200


async def test_an_invalid_edit_keeps_serving_the_last_accepted_route(mesh_factory):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    served_version = await route_version(m)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 0, "reviews-v2": 0}))

    async def rejected() -> bool:
        objects = (await admin_json(m, "/api/v1/status"))["objects"]
        return any(o["name"] == "reviews" and not o["accepted"] for o in objects)

    await eventually(rejected)
    status = next(o for o in (await admin_json(m, "/api/v1/status"))["objects"] if o["name"] == "reviews")
    assert "route.yaml: spec.httpRoute.action.weightedTargets: weights sum to 0" in status["conditions"][0]["message"]
    assert "last accepted version is still served" in status["conditions"][0]["message"]
    assert await route_version(m) == served_version
    assert (await m.split(sidecar, "reviews", 100)) == {"v1": 100}


def _http_route(path: dict) -> dict:
    return http_route("v2-only", "reviews-v2", {"reviews-v2": 1}, matches=[{"path": path}])


async def test_an_httproute_envoy_rejects_is_blocked_and_everything_else_keeps_flowing(mesh_factory, monkeypatch):
    """Issue 30: an HTTPRoute Envoy NACKs (confirmed by its validator) is blocked as a Route would be: Accepted=False
    with reason RejectedByEnvoy in its status, its last accepted version (none here) served, other changes flowing;
    fixing it lifts the block."""
    monkeypatch.setattr("meshctl.parse.route.REGEX_PROGRAM_SIZE_LIMIT", 10**6)
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    good_version = await route_version(m)
    write(m.dir / "v2.yaml", *service_over("reviews", "v2", m.ports["v2"]))
    write(m.dir / "httproute.yaml", _http_route({"type": "RegularExpression", "value": BIG_REGEX}))

    async def blocked() -> bool:
        objects = objects_by_name(await admin_json(m, "/api/v1/status"))
        found = objects.get("v2-only")
        return found is not None and any(c.get("reason") == "RejectedByEnvoy" for c in found["conditions"])

    await eventually(blocked, timeout=20)
    status = objects_by_name(await admin_json(m, "/api/v1/status"))["v2-only"]
    accepted = next(c for c in status["conditions"] if c["type"] == "Accepted")
    assert accepted["status"] == "False" and "RE2 program size" in accepted["message"], accepted
    assert status["parents"][0]["conditions"][0]["reason"] == "RejectedByEnvoy"
    await wait_converged(m, sidecar)
    assert await route_version(m) == good_version  # the blocked version is not served: Envoy has what it had

    # Another change still reaches Envoy.
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v2": 100}))
    await wait_converged(m, sidecar, good_version)
    assert (await m.split(sidecar, "reviews", 50)) == {"v2": 50}

    # Fixed, it is served and healthy.
    fixed_version = await route_version(m)
    write(m.dir / "httproute.yaml", _http_route({"type": "Exact", "value": "/v2"}))
    await wait_converged(m, sidecar, fixed_version)
    assert (await m.get(sidecar, "reviews-v2", "/v2"))[1] == "v2"
    status = objects_by_name(await admin_json(m, "/api/v1/status"))["v2-only"]
    assert status["healthy"], status
