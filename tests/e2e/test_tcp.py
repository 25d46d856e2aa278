"""TCP routes through a real Envoy: raw TCP echo upstreams, weighted connections, idle timeout."""

from __future__ import annotations

import asyncio
import collections
import time

from meshctl.devtools.envoy_process import free_port
from tests.conftest import Mesh, eventually
from tests.manifests import API, service, virtual_node, workload, write
from tests.stats import assert_split


async def echo_server(name: str) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(f"{name}:".encode() + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def tcp_route(weights: dict[str, int], idle_ms: int | None = None) -> dict:
    spec = {"action": {"weightedTargets": [{"virtualNodeRef": {"name": t}, "weight": w} for t, w in weights.items()]}}
    if idle_ms is not None:
        spec["timeout"] = {"idle": {"unit": "ms", "value": idle_ms}}
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": "ledger", "namespace": "demo"},
        "spec": {"serviceRef": {"name": "ledger"}, "tcpRoute": spec},
    }


async def exchange(port: int, payload: bytes = b"ping") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 5)
    finally:
        writer.close()


async def test_tcp_route_splits_connections_and_closes_idle_ones(mesh_factory):
    m: Mesh = await mesh_factory()
    servers = {v: await echo_server(v) for v in ("v1", "v2", "v3")}
    service_port = free_port()  # the sidecar listens on the Service's port
    try:
        write(
            m.dir / "mesh.yaml",
            service("ledger", port=service_port),
            *(workload("ledger", v, p, portMapping={"port": p, "protocol": "tcp"}) for v, (_, p) in servers.items()),
            virtual_node("frontend", backends=["ledger"]),
            tcp_route({"ledger-v1": 50, "ledger-v2": 50, "ledger-v3": 0}, idle_ms=500),
        )
        await m.start()
        sidecar = await m.sidecar("demo/frontend")

        async def connected() -> bool:
            try:
                return (await exchange(service_port)).endswith(b":ping")
            except OSError:
                return False

        await eventually(connected, timeout=15)
        replies = [await exchange(service_port) for _ in range(200)]
        counts = collections.Counter(reply.split(b":")[0].decode() for reply in replies)
        assert_split(counts, {"v1": 50, "v2": 50, "v3": 0})

        reader, writer = await asyncio.open_connection("127.0.0.1", service_port)
        writer.write(b"hello")
        assert (await reader.read(1024)).endswith(b":hello")
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(1024), 5) == b""  # Envoy closed the quiet connection
        assert time.monotonic() - started >= 0.4
        idle = {k: v for k, v in sidecar.envoy.stats().items() if k.startswith("tcp.") and k.endswith(".idle_timeout")}
        assert sum(idle.values()) == 1, idle
        writer.close()
    finally:
        for server, _ in servers.values():
            server.close()
