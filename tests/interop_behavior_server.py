"""A TestService backend that honours the interop suite's ``rpc-behavior`` metadata, which the upstream Python
server lacks (grpc#33134): psm-interop runs the retry, circuit_breaking and outlier cases against the Java
server, whose behaviours this implements (``XdsTestServer``):

- ``hostname=H``: the behaviours after it apply only on the server named H;
- ``succeed-on-retry-attempt-N``: answer OK when ``grpc-previous-rpc-attempts`` is N (the later ones are skipped);
- ``error-code-N``: fail with status code N;
- ``sleep-N``: wait N seconds first;
- ``keep-open``: never answer (the call ends at its deadline or when the client cancels it).

Usage: python -m tests.interop_behavior_server PREPARED ADDRESS HOSTNAME PORT
Like the upstream server it sends ``hostname`` in its initial metadata, which the client keys its stats on; a
failing call sends it as a trailer instead, since headers would commit the call and stop the client's retries.
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def serve(prepared: str, address: str, hostname: str, port: int) -> None:
    sys.path.insert(0, prepared)
    from src.proto.grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc

    async def behave(context: grpc.aio.ServicerContext) -> None:
        """Carries out the call's behaviours; returns to answer OK."""
        metadata = context.invocation_metadata() or ()
        attempts = next((int(v) for k, v in metadata if k == "grpc-previous-rpc-attempts"), 0)
        behaviors = [b.strip() for k, v in metadata if k == "rpc-behavior" for b in str(v).split(",")]
        for behavior in behaviors:
            if behavior.startswith("hostname="):
                if behavior.removeprefix("hostname=") != hostname:
                    return
            elif behavior.startswith("succeed-on-retry-attempt-"):
                if attempts == int(behavior.removeprefix("succeed-on-retry-attempt-")):
                    return
            elif behavior.startswith("error-code-"):
                code = int(behavior.removeprefix("error-code-"))
                status = next(s for s in grpc.StatusCode if s.value[0] == code)
                # Trailers only: a client retries nothing once it has headers (gRFC A6 "committed").
                context.set_trailing_metadata((("hostname", hostname),))
                await context.abort(status, f"rpc-behavior {behavior} on {hostname}")
            elif behavior.startswith("sleep-"):
                await asyncio.sleep(int(behavior.removeprefix("sleep-")))
            elif behavior == "keep-open":
                await asyncio.Event().wait()  # until the call is cancelled

    class TestService(test_pb2_grpc.TestServiceServicer):  # type: ignore[misc]
        async def EmptyCall(self, request: object, context: grpc.aio.ServicerContext) -> object:
            await behave(context)
            await context.send_initial_metadata((("hostname", hostname),))
            return empty_pb2.Empty()

        async def UnaryCall(self, request: object, context: grpc.aio.ServicerContext) -> object:
            await behave(context)
            await context.send_initial_metadata((("hostname", hostname),))
            return messages_pb2.SimpleResponse(server_id=hostname, hostname=hostname)

    server = grpc.aio.server(options=[("grpc.max_concurrent_streams", 10_000)])
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    server.add_insecure_port(f"{address}:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
