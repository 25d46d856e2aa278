"""gRPC routes through a real Envoy: real grpcio clients and servers, HTTP/2 listener and clusters."""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import grpc
import pytest

from meshctl.devtools.envoy_process import free_port
from tests.conftest import Mesh, eventually
from tests.manifests import API, service, virtual_node, workload, write

SAY = "/demo.Echo/Say"


class EchoServer:
    """A grpcio server with one raw-bytes unary method: answers "<name>:<request>"; can fail the first calls."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.name = name
        self.host = host
        self.calls = 0
        self.fail_first = 0
        self.fail_code = grpc.StatusCode.UNAVAILABLE
        self.delay = 0.0
        self.port = port or free_port()
        self.server = grpc.aio.server()

        async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.calls += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.calls <= self.fail_first:
                await context.abort(self.fail_code, f"{self.name} failing on purpose")
            return f"{self.name}:".encode() + request

        handler = grpc.unary_unary_rpc_method_handler(say, request_deserializer=None, response_serializer=None)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", {"Say": handler}),))
        self.server.add_insecure_port(f"{host}:{self.port}")


def grpc_route(name: str, priority: int, match: dict, targets: dict[str, int], **extra) -> dict:
    return {
        "apiVersion": API,
        "kind": "Route",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "serviceRef": {"name": "echo"},
            "priority": priority,
            "grpcRoute": {
                "match": match,
                "action": {
                    "weightedTargets": [{"virtualNodeRef": {"name": t}, "weight": w} for t, w in targets.items()]
                },
                **extra,
            },
        },
    }


def mesh_docs(servers: dict[str, EchoServer]) -> list:
    """Service echo (port 50051), a workload and VirtualNode per version, and the client's VirtualNode."""
    return [
        service("echo", port=50051),
        *(workload("echo", v, s.port, portMapping={"port": s.port, "protocol": "grpc"}) for v, s in servers.items()),
        virtual_node("client", backends=["echo"]),
    ]


@contextlib.asynccontextmanager
async def grpc_mesh(mesh_factory, versions: tuple[str, ...], *routes: dict):
    """gRPC echo servers per version, the mesh around them, and a client channel through the client's sidecar,
    ready (a call to v1 succeeded). Yields (mesh, sidecar, channel, servers)."""
    m: Mesh = await mesh_factory()
    servers = {v: EchoServer(v) for v in versions}
    for server in servers.values():
        await server.server.start()
    try:
        write(m.dir / "mesh.yaml", *mesh_docs(servers), *routes)
        await m.start()
        sidecar = await m.sidecar("demo/client")
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{sidecar.egress_port}", options=[("grpc.default_authority", "echo.demo")]
        ) as channel:
            say = channel.unary_unary(SAY)

            async def routed() -> bool:
                try:
                    return await say(b"hello", timeout=2) == b"v1:hello"
                except grpc.aio.AioRpcError:
                    return False

            await eventually(routed, timeout=15)
            yield m, sidecar, channel, servers
    finally:
        for server in servers.values():
            await server.server.stop(0)


async def test_grpc_routes_match_service_method_and_metadata_and_retry(mesh_factory):
    beta = {
        "serviceName": "demo.Echo",
        "methodName": "Say",
        "metadata": [{"name": "x-tenant", "match": {"exact": "beta"}}],
    }
    retry = {"grpcRetryEvents": ["unavailable"], "maxRetries": 2}
    async with grpc_mesh(
        mesh_factory,
        ("v1", "v2"),
        grpc_route("echo-say-beta", 10, beta, {"echo-v2": 100}),
        grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, retryPolicy=retry),
    ) as (_, sidecar, channel, servers):
        say = channel.unary_unary(SAY)
        assert await say(b"hi", metadata=(("x-tenant", "beta"),)) == b"v2:hi"
        assert await say(b"hi", metadata=(("x-tenant", "alpha"),)) == b"v1:hi"

        # UNAVAILABLE on the first attempt is retried (grpcRetryEvents), the client sees success.
        servers["v1"].calls, servers["v1"].fail_first = 0, 1
        assert await say(b"again") == b"v1:again"
        assert servers["v1"].calls == 2

        # A method outside the routed service has no route: Envoy answers UNIMPLEMENTED (HTTP 404).
        with pytest.raises(grpc.aio.AioRpcError) as no_route:
            await channel.unary_unary("/other.Service/Call")(b"x")
        assert no_route.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # grpcRoutes match gRPC requests only: plain HTTP to the same service finds no route.
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sidecar.url}{SAY}", headers={"Host": "echo.demo"}, data=b"x") as r,
        ):
            assert r.status == 404


async def test_grpc_route_timeout(mesh_factory):
    timeout = {"perRequest": {"unit": "ms", "value": 300}}
    async with grpc_mesh(
        mesh_factory, ("v1",), grpc_route("echo", 10, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, timeout=timeout)
    ) as (_, _, channel, servers):
        servers["v1"].delay = 3.0
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(SAY)(b"slow", timeout=10)
        assert failure.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert 0.25 <= time.monotonic() - started < 2.8  # the route's 300 ms cut it, not the 3 s answer or 10 s
        # No Envoy counter is the oracle here: the Route's 300 ms is both the route timeout and the cap on the
        # client's 10 s deadline (grpc-timeout), two timers armed for the same instant, and Envoy counts the cut
        # as one, both or (measured, ~1 run in 15) neither. The clock is unambiguous instead: the server answers at
        # 3 s and the client gives up at 10 s, so an end before 2.8 s is the route's cut.


async def test_grpc_without_a_route_timeout_lets_the_client_deadline_decide(mesh_factory):
    """No route timeout on gRPC by default (long calls and streams must not die at Envoy's 15 s): a slow call
    within the client's deadline succeeds, and the deadline ends one that is too slow. (That Envoy also enforces
    grpc-timeout itself, uncapped, is in the golden files, checked by Envoy's validation; from here the client's
    own cancellation races Envoy's timer, so no counter can say which one ended the call.)"""
    async with grpc_mesh(mesh_factory, ("v1",), grpc_route("echo", 10, {}, {"echo-v1": 100})) as (
        _,
        _,
        channel,
        servers,
    ):
        servers["v1"].delay = 1.0
        assert await channel.unary_unary(SAY)(b"slow", timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(SAY)(b"slow", timeout=0.3)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


GRPC_EVENTS = {
    "cancelled": grpc.StatusCode.CANCELLED,
    "deadline-exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "internal": grpc.StatusCode.INTERNAL,
    "resource-exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
}


@pytest.mark.parametrize("event", list(GRPC_EVENTS))
async def test_each_grpc_retry_event_retries_its_status(mesh_factory, event: str):
    retry = {"grpcRetryEvents": [event], "maxRetries": 1}
    async with grpc_mesh(mesh_factory, ("v1",), grpc_route("echo", 10, {}, {"echo-v1": 100}, retryPolicy=retry)) as (
        _,
        _,
        channel,
        servers,
    ):
        server = servers["v1"]
        server.calls, server.fail_first, server.fail_code = 0, 1, GRPC_EVENTS[event]
        assert await channel.unary_unary(SAY)(b"again") == b"v1:again"
        assert server.calls == 2
