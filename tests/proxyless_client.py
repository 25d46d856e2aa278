"""A proxyless gRPC client for the tests, run as its own process (grpcio reads its xDS bootstrap once): grpcio's
XdsClient streams ADS from meshctl and resolves ``xds:///TARGET``; no Envoy.

    python -m tests.proxyless_client TARGET SECONDS [KEY=VALUE metadata ...]

Env: GRPC_XDS_BOOTSTRAP_CONFIG (``meshctl bootstrap --grpc``). Calls ``/demo.Echo/Say`` back to back for SECONDS
(bounded by 20,000 calls), one JSON line per call to stdout: {"t": seconds since start, "ok": bool, "reply" or
"code"}. A line ``ready`` first, once the channel could be created."""

from __future__ import annotations

import json
import sys
import time

import grpc


def main() -> int:
    target, seconds = sys.argv[1], float(sys.argv[2])
    metadata = tuple(tuple(kv.split("=", 1)) for kv in sys.argv[3:])
    start = time.monotonic()
    with grpc.insecure_channel(f"xds:///{target}") as channel:
        say = channel.unary_unary("/demo.Echo/Say")
        print("ready", flush=True)
        for _ in range(20_000):
            now = time.monotonic() - start
            if now > seconds:
                break
            try:
                reply = say(b"x", timeout=5, metadata=metadata).decode()
                print(json.dumps({"t": now, "ok": True, "reply": reply}), flush=True)
            except grpc.RpcError as exc:
                print(
                    json.dumps({"t": now, "ok": False, "code": str(exc.code()), "details": exc.details()}), flush=True
                )
                time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
