"""Authorization of gRPC calls (issue 29): a real grpcio client calls the callee's sidecar (its inbound listener on
loopback), which forwards to a real grpcio server. A DENY policy naming the gRPC method answers PERMISSION_DENIED
and the server sees nothing; another method of the same service still passes."""

from __future__ import annotations

import grpc

from tests.conftest import eventually
from tests.e2e.test_grpc import EchoServer
from tests.manifests import API, service, workload, write


def _deny(method: str) -> dict:
    return {
        "apiVersion": API,
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "no-say", "namespace": "demo"},
        "spec": {
            "targetRefs": [{"kind": "VirtualNode", "name": "echo-v1"}],
            "action": "DENY",
            "rules": [{"to": [{"grpc": [{"service": "demo.Echo", "method": method}]}]}],
        },
    }


async def test_a_denied_grpc_method_gets_permission_denied(mesh_factory):
    mesh = await mesh_factory()
    server = EchoServer("v1")
    await server.server.start()
    try:
        docs = workload("echo", "v1", server.port, portMapping={"port": server.port, "protocol": "grpc"})
        write(mesh.dir / "mesh.yaml", service("echo", port=50051), *docs)
        await mesh.start()
        sidecar = await mesh.sidecar("demo/echo-v1")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.ingress_port}")
        say = channel.unary_unary("/demo.Echo/Say")

        async def code() -> grpc.StatusCode:
            try:
                await say(b"hi", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        async def is_code(wanted: grpc.StatusCode) -> bool:
            return await code() == wanted

        await eventually(lambda: is_code(grpc.StatusCode.OK), timeout=30)  # through its sidecar, no policy yet

        write(mesh.dir / "policy.yaml", _deny("Say"))
        await eventually(lambda: is_code(grpc.StatusCode.PERMISSION_DENIED), timeout=30)
        calls = server.calls
        assert await code() == grpc.StatusCode.PERMISSION_DENIED
        assert server.calls == calls  # the server saw nothing
        write(mesh.dir / "policy.yaml", _deny("Other"))  # another method denied: Say passes again
        await eventually(lambda: is_code(grpc.StatusCode.OK), timeout=30)
        await channel.close()
    finally:
        await server.server.stop(None)
