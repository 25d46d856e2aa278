"""Every HTTP match kind, observed through a real Envoy: which version answers which request."""

from __future__ import annotations

import pytest

from tests.conftest import Mesh
from tests.manifests import route, service, virtual_node, workload, write

V2_ROUTES = {
    "by-cookie": {"prefix": "/", "cookies": [{"name": "canary", "match": {"exact": "yes"}}]},
    "by-header": {"prefix": "/", "headers": [{"name": "x-version", "match": {"exact": "v2"}}]},
    "by-method": {"path": {"exact": "/submit"}, "method": "POST"},
    "by-query": {"prefix": "/", "queryParameters": [{"name": "beta", "match": {"exact": "1"}}]},
    "by-host": {"prefix": "/", "hostname": {"exact": "reviews.demo"}},
    "by-regex": {"path": {"regex": "/items/[0-9]+"}},
    "by-absent-header": {"prefix": "/legacy", "headers": [{"name": "x-new-client", "invert": True}]},
}

CASES = [
    ("default", "GET", "/", {}, "v1"),
    ("cookie set", "GET", "/", {"Cookie": "a=1; canary=yes"}, "v2"),
    ("cookie other value", "GET", "/", {"Cookie": "canary=no"}, "v1"),
    ("header", "GET", "/", {"x-version": "v2"}, "v2"),
    ("method and path", "POST", "/submit", {}, "v2"),
    ("path, other method", "GET", "/submit", {}, "v1"),
    ("query parameter", "GET", "/?beta=1", {}, "v2"),
    ("host", "GET", "/", {"Host": "reviews.demo"}, "v2"),
    ("regex path", "GET", "/items/42", {}, "v2"),
    ("regex no match", "GET", "/items/abc", {}, "v1"),
    ("inverted header absent", "GET", "/legacy", {}, "v2"),
    ("inverted header present", "GET", "/legacy", {"x-new-client": "1"}, "v1"),
]


@pytest.fixture
async def matched(mesh_factory):
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("v1")
    _, p2 = await m.app("v2")
    routes = [
        route(name, "reviews", {"reviews-v2": 100}, match=match, priority=10 * (i + 1))
        for i, (name, match) in enumerate(V2_ROUTES.items())
    ]
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", p1),
        workload("reviews", "v2", p2),
        virtual_node("frontend", backends=["reviews"]),
        route("default", "reviews", {"reviews-v1": 100}),
        *routes,
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    return m, sidecar


async def test_each_match_kind_routes_as_documented(matched):
    m, sidecar = matched
    got = {}
    for case, method, path, headers, _ in CASES:
        headers = {"Host": "reviews", **headers}
        async with m.session.request(method, sidecar.url + path, headers=headers) as r:
            got[case] = await r.text() if r.status == 200 else r.status
    assert got == {case: expected for case, *_, expected in CASES}
