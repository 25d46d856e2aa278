"""Routes matched by Service port, in both forms: App Mesh's ``match.port`` on two prefix-/ Routes, or an HTTPRoute
per Service port (parentRef ``port``). Each takes its port's calls through a real Envoy, neither shadows the
other, and ``explain`` names each port's route."""

from __future__ import annotations

import pytest

from tests.conftest import Mesh
from tests.e2e.test_explain import run_meshctl
from tests.manifests import http_route, route, service, service_over, virtual_node, workload, write


def _meshctl_routes(api_port: int, admin_port: int) -> list:
    return [
        workload("catalog", "api", api_port),
        workload("catalog", "admin", admin_port),
        route("catalog-api", "catalog", {"catalog-api": 100}, match={"prefix": "/", "port": 8080}),
        route("catalog-admin", "catalog", {"catalog-admin": 100}, match={"prefix": "/", "port": 9090}),
    ]


def _gateway_api_routes(api_port: int, admin_port: int) -> list:
    return [
        *service_over("catalog", "api", api_port),
        *service_over("catalog", "admin", admin_port),
        http_route("catalog-api", "catalog", {"catalog-api": 1}, port=8080),
        http_route("catalog-admin", "catalog", {"catalog-admin": 1}, port=9090),
    ]


# form -> (its objects, the kind of its routes, how explain names the route of port 8080 and of port 9090)
FORMS = {
    "Route": (_meshctl_routes, "Route", ("route demo/catalog-api: targets", "route demo/catalog-admin: targets")),
    "HTTPRoute": (
        _gateway_api_routes,
        "HTTPRoute",
        ("route HTTPRoute/demo/catalog-api/", "route HTTPRoute/demo/catalog-admin/"),
    ),
}


@pytest.mark.parametrize("form", list(FORMS))
async def test_routes_split_by_port_reach_their_port_and_explain_says_which(mesh_factory, form: str):
    objects, kind, explained = FORMS[form]
    m: Mesh = await mesh_factory()
    _, api_port = await m.app("api")
    _, admin_port = await m.app("admin")
    catalog = service("catalog", port=8080)
    catalog["spec"]["ports"].append({"name": "admin", "port": 9090})
    write(m.dir / "mesh.yaml", catalog, virtual_node("web", backends=["catalog"]), *objects(api_port, admin_port))
    await m.start()
    sidecar = await m.sidecar("demo/web")
    await m.wait_routable(sidecar, "catalog:8080")
    assert (await m.get(sidecar, "catalog:8080"))[1] == "api"
    assert (await m.get(sidecar, "catalog.demo:9090"))[1] == "admin"
    assert (await m.get(sidecar, "catalog"))[1] == "api"  # no port: the Service's first (it has no port 80)

    statuses = {s["name"]: s for s in (await m.admin("/api/v1/status"))["objects"] if s["kind"] == kind}
    assert set(statuses) == {"catalog-api", "catalog-admin"}
    assert all(s["healthy"] for s in statuses.values()), statuses  # neither shadows the other

    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    for url, expected in zip(("http://catalog:8080/x", "http://catalog:9090/"), explained, strict=True):
        code, out, err = await run_meshctl("explain", "--admin", admin, "--from", "demo/web", "GET", url)
        assert code == 0, err
        assert expected in out, out
