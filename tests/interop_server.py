"""Runs gRPC's upstream xDS interop server (unchanged) on one loopback address under a chosen hostname.

Usage: python -m tests.interop_server PREPARED ADDRESS HOSTNAME [xds_interop_server.py flags]

The upstream server listens on ``0.0.0.0:--port`` and reports ``socket.gethostname()`` as its peer name. A
VirtualNode's pods share one container port (as in Kubernetes), so several backends of one VirtualNode need one
port on several addresses: this wrapper turns ``0.0.0.0:P`` into ``ADDRESS:P`` (127.0.0.0/8 is all loopback) and
names the server, as ``run_server.py`` of the peer folder does for the hostname alone. Nothing else changes.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys

import grpc._server


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    prepared, address, hostname = sys.argv[1:4]
    del sys.argv[1:4]
    socket.gethostname = lambda: hostname
    add_insecure_port = grpc._server._Server.add_insecure_port

    def bound_to_address(self: grpc._server._Server, target: str) -> int:
        return add_insecure_port(self, target.replace("0.0.0.0:", f"{address}:", 1))

    grpc._server._Server.add_insecure_port = bound_to_address  # type: ignore[method-assign]
    sys.path.insert(0, prepared)
    sys.argv[0] = os.path.join(prepared, "xds_interop_server.py")
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
