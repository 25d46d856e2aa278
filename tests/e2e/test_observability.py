"""Observability through a real Envoy: access logs (default and JSON formats)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from meshctl.devtools.envoy_process import free_port, loopback_sidecar
from tests.conftest import Mesh, eventually
from tests.manifests import route, service, virtual_node, workload, write


async def frontend_mesh(m: Mesh, **frontend_spec) -> tuple[object, int]:
    """reviews-v1 behind a Route, called by a frontend sidecar whose VirtualNode spec gets ``frontend_spec``."""
    _, port = await m.app("v1")
    frontend = virtual_node("frontend", backends=["reviews"])
    frontend["spec"].update(frontend_spec)
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
    return sidecar, port


async def logged_mesh(mesh_factory, log: dict) -> tuple[Mesh, object, int]:
    m: Mesh = await mesh_factory()
    sidecar, port = await frontend_mesh(m, logging={"accessLog": {"file": log}})
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


async def test_prometheus_port_and_statsd_sink(mesh_factory):
    m: Mesh = await mesh_factory()
    _, port = await m.app("v1")
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", port),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    )
    await m.start()
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    class StatsdReceiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr) -> None:
            received.append(data)

    transport, _ = await loop.create_datagram_endpoint(StatsdReceiver, local_addr=("127.0.0.1", 0))
    statsd_port = transport.get_extra_info("sockname")[1]
    stats_port, egress = free_port(), free_port()
    envoy = loopback_sidecar(
        m.plane.xds_port,
        "demo/frontend",
        "demo/frontend/metrics",
        egress_port=egress,
        admin_port=free_port(),
        stats_port=stats_port,
        statsd_address=f"127.0.0.1:{statsd_port}",
    )
    await envoy.start()
    try:
        url = f"http://127.0.0.1:{egress}/"

        async def routed() -> bool:
            try:
                async with m.session.get(url, headers={"Host": "reviews"}) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(routed, timeout=15)
        async with m.session.get(f"http://127.0.0.1:{stats_port}/stats/prometheus") as r:
            text = await r.text()
        assert r.status == 200
        assert "envoy_cluster_upstream_rq_completed" in text and f'envoy_cluster_name="demo/reviews-v1/{port}"' in text
        async with m.session.get(f"http://127.0.0.1:{stats_port}/config_dump") as r:
            assert r.status == 404  # only the metrics are exposed, never the admin API
        await eventually(lambda: any(b"upstream_rq" in d for d in received), timeout=20)
    finally:
        transport.close()
        await envoy.stop()


@pytest.mark.parametrize("provider", ["zipkin", "opentelemetry", "xray"])
async def test_tracing_spans_reach_the_collector(mesh_factory, provider: str):
    m: Mesh = await mesh_factory()
    received: list[tuple[str, str, bytes]] = []  # (path, content type, body)

    async def collect(request: web.Request) -> web.Response:
        received.append((request.path, request.content_type, await request.read()))
        return web.Response(status=202)

    loop = asyncio.get_running_loop()
    if provider == "xray":

        class Daemon(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr) -> None:
                received.append(("udp", "", data))

        transport, _ = await loop.create_datagram_endpoint(Daemon, local_addr=("127.0.0.1", 0))
        collector_port = transport.get_extra_info("sockname")[1]

        async def cleanup() -> None:
            transport.close()

    else:
        app = web.Application()
        app.router.add_post("/{tail:.*}", collect)
        runner = web.AppRunner(app)
        await runner.setup()
        collector_port = free_port()
        await web.TCPSite(runner, "127.0.0.1", collector_port).start()
        cleanup = runner.cleanup
    try:
        tracing = {provider: {"address": f"127.0.0.1:{collector_port}"}, "samplingPercent": 100}
        sidecar, _ = await frontend_mesh(m, tracing=tracing)
        for _ in range(10):  # Zipkin and OpenTelemetry flush after 5 spans
            await m.get(sidecar, "reviews", "/traced")
        await eventually(lambda: received, timeout=20)
        path, content_type, body = received[0]
        if provider == "zipkin":
            spans = json.loads(body)
            assert path == "/api/v2/spans" and any(s["localEndpoint"]["serviceName"] == "demo/frontend" for s in spans)
        elif provider == "opentelemetry":
            assert path == "/v1/traces" and content_type == "application/x-protobuf"
            assert b"demo/frontend" in body  # the service.name resource attribute
        else:
            header, _, segment = body.partition(b"\n")
            assert json.loads(header)["format"] == "json"
            assert json.loads(segment)["name"] == "demo.frontend"
    finally:
        await cleanup()
