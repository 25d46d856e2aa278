"""The defaults we set on Envoy (docs/api.md, "Defaults") do what users expect, through a real Envoy."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import Mesh
from tests.e2e.test_resilience import two_endpoint_workload
from tests.manifests import route, service, virtual_node, workload, write


async def test_retries_are_honoured_under_load(mesh_factory):
    """Issue 9: Envoy's default circuit breaker allows 3 concurrent retries per cluster. 20 concurrent requests,
    half of whose first attempts hit a failing pod, all succeed on retry, and Envoy counts no retry overflow."""
    m: Mesh = await mesh_factory()
    _, port = await m.app("good", delay=0.5)  # slow, so the retries are outstanding at the same time
    await m.app("bad", port=port, host="127.0.0.2", status=503)
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        two_endpoint_workload(port),
        virtual_node("frontend", backends=["reviews"]),
        route(
            "reviews",
            "reviews",
            {"reviews-v1": 100},
            retryPolicy={"httpRetryEvents": ["server-error"], "maxRetries": 2},
        ),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    results = await asyncio.gather(*(m.get(sidecar, "reviews", f"/r{i}") for i in range(20)))
    assert [status for status, _, _ in results] == [200] * 20, results
    stats = sidecar.envoy.stats()
    cluster = f"cluster.demo/reviews-v1/{port}"
    assert stats[f"{cluster}.upstream_rq_retry"] >= 5, stats[f"{cluster}.upstream_rq_retry"]
    assert stats.get(f"{cluster}.upstream_rq_retry_overflow", 0) == 0


async def test_prefix_routes_cannot_be_side_stepped_by_path_tricks(mesh_factory):
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("public")
    _, p2 = await m.app("admin")
    write(
        m.dir / "mesh.yaml",
        service("site"),
        workload("site", "public", p1),
        workload("site", "admin", p2),
        virtual_node("frontend", backends=["site"]),
        route("site", "site", {"site-public": 100}, match={"prefix": "/"}),
        route("site-admin", "site", {"site-admin": 100}, match={"prefix": "/admin/"}, priority=0),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "site")
    async with aiohttp.ClientSession() as session:
        for path in ("/admin/x", "//admin/x", "/admin%2Fx", "/public/../admin/x", "/%61dmin/x"):
            url = aiohttp.client.URL(sidecar.url + path, encoded=True)  # sent exactly as written
            async with session.get(url, headers={"Host": "site"}) as r:
                assert (r.status, await r.text()) == (200, "admin"), path
        async with session.get(sidecar.url + "/administrator", headers={"Host": "site"}) as r:
            assert await r.text() == "public"


async def test_inbound_ignores_x_envoy_headers_from_callers(mesh_factory):
    """A caller must not steer the callee's Envoy: x-envoy-upstream-rq-timeout-ms: 1 would turn every request
    into a 504 if Envoy trusted it."""
    m: Mesh = await mesh_factory()
    _, port = await m.app("v1", delay=0.2)
    write(m.dir / "mesh.yaml", service("reviews"), workload("reviews", "v1", port))
    await m.start()
    sidecar = await m.sidecar("demo/reviews-v1")
    inbound = f"http://127.0.0.1:{sidecar.ingress_port}/"
    async with aiohttp.ClientSession() as session:
        for header in (
            {"x-envoy-upstream-rq-timeout-ms": "1"},
            {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "5"},
        ):
            async with session.get(inbound, headers=header) as r:
                assert (r.status, await r.text()) == (200, "v1"), header
    assert m.apps["v1"].seen["/"] == 2
