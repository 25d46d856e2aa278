"""Observability through a real Envoy: access logs (default and JSON formats)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Mesh, eventually
from tests.manifests import route, service, virtual_node, workload, write


async def logged_mesh(mesh_factory, log: dict) -> tuple[Mesh, object, int]:
    m: Mesh = await mesh_factory()
    _, port = await m.app("v1")
    frontend = virtual_node("frontend", backends=["reviews"])
    frontend["spec"]["logging"] = {"accessLog": {"file": log}}
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", port),
        frontend,
        route("reviews", "reviews", {"reviews-v1": 100}),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    return m, sidecar, port


async def test_default_access_log_names_route_cluster_and_upstream(mesh_factory, tmp_path: Path):
    path = tmp_path / "access.log"
    m, sidecar, port = await logged_mesh(mesh_factory, {"path": str(path)})
    await m.get(sidecar, "reviews", "/logged?x=1", headers={"x-request-id": "req-42"})
    await eventually(lambda: path.exists() and "req-42" in path.read_text())
    (line,) = [ln for ln in path.read_text().splitlines() if "req-42" in ln]
    assert '"GET /logged?x=1 HTTP/1.1" 200 - ' in line
    assert '"reviews" "req-42" route=demo/reviews' in line
    assert f"cluster=demo/reviews-v1/{port} upstream=127.0.0.1:{port}" in line


async def test_json_access_log(mesh_factory, tmp_path: Path):
    path = tmp_path / "access.json"
    fmt = {
        "json": [
            {"key": "status", "value": "%RESPONSE_CODE%"},
            {"key": "route", "value": "%ROUTE_NAME%"},
            {"key": "path", "value": "%REQ(:PATH)%"},
        ]
    }
    m, sidecar, _ = await logged_mesh(mesh_factory, {"path": str(path), "format": fmt})
    await m.get(sidecar, "reviews", "/json-logged")
    await eventually(lambda: path.exists() and "json-logged" in path.read_text())
    records = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert {"status": 200, "route": "demo/reviews", "path": "/json-logged"} in records
