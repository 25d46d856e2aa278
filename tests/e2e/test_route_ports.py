"""Routes matched by Service port (App Mesh's ``match.port``): two prefix-/ Routes on one Service, one per port, each
take their port's calls through a real Envoy, neither shadows the other, and ``explain`` names each port's route."""

from __future__ import annotations

from tests.conftest import Mesh
from tests.e2e.test_explain import run_meshctl
from tests.manifests import http_route, route, service, service_over, virtual_node, workload, write


async def test_routes_split_by_port_reach_their_port_and_explain_says_which(mesh_factory):
    m: Mesh = await mesh_factory()
    _, api_port = await m.app("api")
    _, admin_port = await m.app("admin")
    catalog = service("catalog", port=8080)
    catalog["spec"]["ports"].append({"name": "admin", "port": 9090})
    write(
        m.dir / "mesh.yaml",
        catalog,
        workload("catalog", "api", api_port),
        workload("catalog", "admin", admin_port),
        virtual_node("web", backends=["catalog"]),
        route("catalog-api", "catalog", {"catalog-api": 100}, match={"prefix": "/", "port": 8080}),
        route("catalog-admin", "catalog", {"catalog-admin": 100}, match={"prefix": "/", "port": 9090}),
    )
    await m.start()
    sidecar = await m.sidecar("demo/web")
    await m.wait_routable(sidecar, "catalog:8080")
    assert (await m.get(sidecar, "catalog:8080"))[1] == "api"
    assert (await m.get(sidecar, "catalog.demo:9090"))[1] == "admin"
    assert (await m.get(sidecar, "catalog"))[1] == "api"  # no port: the Service's first (it has no port 80)

    statuses = {s["name"]: s for s in (await m.admin("/api/v1/status"))["objects"] if s["kind"] == "Route"}
    assert all(s["healthy"] for s in statuses.values()), statuses  # neither shadows the other

    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    for url, expected in (
        ("http://catalog:8080/x", "demo/catalog-api"),
        ("http://catalog:9090/", "demo/catalog-admin"),
    ):
        code, out, err = await run_meshctl("explain", "--admin", admin, "--from", "demo/web", "GET", url)
        assert code == 0, err
        assert f"route {expected}: targets" in out, out


async def test_httproutes_split_by_parent_port_reach_their_port_and_explain_says_which(mesh_factory):
    """The same split in the Gateway API form: an HTTPRoute per Service port (parentRef ``port``)."""
    m: Mesh = await mesh_factory()
    _, api_port = await m.app("api")
    _, admin_port = await m.app("admin")
    catalog = service("catalog", port=8080)
    catalog["spec"]["ports"].append({"name": "admin", "port": 9090})
    write(
        m.dir / "mesh.yaml",
        catalog,
        *service_over("catalog", "api", api_port),
        *service_over("catalog", "admin", admin_port),
        virtual_node("web", backends=["catalog"]),
        http_route("catalog-api", "catalog", {"catalog-api": 1}, port=8080),
        http_route("catalog-admin", "catalog", {"catalog-admin": 1}, port=9090),
    )
    await m.start()
    sidecar = await m.sidecar("demo/web")
    await m.wait_routable(sidecar, "catalog:8080")
    assert (await m.get(sidecar, "catalog:8080"))[1] == "api"
    assert (await m.get(sidecar, "catalog.demo:9090"))[1] == "admin"

    statuses = {s["name"]: s for s in (await m.admin("/api/v1/status"))["objects"] if s["kind"] == "HTTPRoute"}
    assert set(statuses) == {"catalog-api", "catalog-admin"} and all(s["healthy"] for s in statuses.values())

    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    for url, expected in (
        ("http://catalog:8080/x", "HTTPRoute/demo/catalog-api/"),
        ("http://catalog:9090/", "HTTPRoute/demo/catalog-admin/"),
    ):
        code, out, err = await run_meshctl("explain", "--admin", admin, "--from", "demo/web", "GET", url)
        assert code == 0, err
        assert f"route {expected}" in out, out
