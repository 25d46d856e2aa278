"""A load client for benchmark 10: N ADS streams over mutual TLS, each a proxy of its own identity that asks for
its two SDS secrets and ACKs every response. On SIGTERM it writes (stream, version, receive time) per Secret
response as JSON to --out.
    python -m bench.sdsload --port P --streams 1000 --certs DIR --out r.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from bench import offcore
from meshctl.translate.ir import IDENTITY_SECRET, TRUST_SECRET
from meshctl.xds.envoy.types import SECRET

SERVER_NAME = "meshctl.bench"
NAMES = [IDENTITY_SECRET, TRUST_SECRET]


async def _stream(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, index: int, records: list) -> None:
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while True:
            yield await outbox.get()

    node = Node(id=f"bench/svc-{index}/pod-0", cluster=f"bench/svc-{index}")
    node.metadata.fields["meshctl.service_account"].string_value = f"svc-{index}"
    call = stub.StreamAggregatedResources(requests())
    await outbox.put(DiscoveryRequest(type_url=SECRET, node=node, resource_names=NAMES))
    async for resp in call:
        records.append((index, resp.version_info, len(resp.resources), time.time()))
        await outbox.put(
            DiscoveryRequest(
                type_url=SECRET, version_info=resp.version_info, response_nonce=resp.nonce, resource_names=NAMES
            )
        )


async def spawn(port: int, streams: int, certs: Path, out: Path) -> asyncio.subprocess.Process:
    args = ["--port", str(port), "--streams", str(streams), "--certs", str(certs), "--out", str(out)]
    return await asyncio.create_subprocess_exec(*offcore.command("bench.sdsload", *args))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--certs", required=True, help="ca.crt, client.crt, client.key")
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    certs = Path(args.certs)
    credentials = grpc.ssl_channel_credentials(
        (certs / "ca.crt").read_bytes(), (certs / "client.key").read_bytes(), (certs / "client.crt").read_bytes()
    )
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    channels = [grpc.aio.secure_channel(f"127.0.0.1:{args.port}", credentials, options) for _ in range(args.channels)]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
    records: list = []
    tasks = [asyncio.create_task(_stream(stubs[i % len(stubs)], i, records)) for i in range(args.streams)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    Path(args.out).write_text(json.dumps(records))
    for c in channels:
        await c.close(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
