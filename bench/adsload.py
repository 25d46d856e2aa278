"""A load client for benchmark 3: N concurrent ADS streams (sotw or delta) that behave like Envoy, or (--grpc) like
proxyless gRPC clients.

An Envoy stream subscribes CDS -> EDS (all EDS clusters) -> LDS -> RDS; a gRPC one, in gRPC's order (gRFC A27), LDS
(the target it dials, by name) -> RDS -> CDS (the clusters its routes name) -> EDS, with gRPC's user agent. Each
ACKs every response at once and records (stream, type, version, receive time). On SIGTERM it writes the records
as JSON to --out.
    python -m bench.adsload --port P --streams 1000 --groups client-0,client-1 --out r.json [--delta | --grpc]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DiscoveryRequest,
)

from bench import offcore
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

SHORT = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}


def _sotw_call(stub) -> tuple[asyncio.Queue, Any]:
    """A state-of-the-world ADS stream: the queue its requests are put on, and the call yielding the responses."""
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while True:
            yield await outbox.get()

    return outbox, stub.StreamAggregatedResources(requests())


def _ack(resp, names: list[str]) -> DiscoveryRequest:
    return DiscoveryRequest(
        type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce, resource_names=names
    )


async def sotw_stream(stub, node: Node, index: int, records: list) -> None:
    outbox, call = _sotw_call(stub)
    await outbox.put(DiscoveryRequest(type_url=CLUSTER, node=node))
    names: dict[str, list[str]] = {CLUSTER: [], ENDPOINT: [], LISTENER: [], ROUTE: ["outbound"]}
    asked = {CLUSTER}
    then = {CLUSTER: ENDPOINT, ENDPOINT: LISTENER, LISTENER: ROUTE}  # Envoy's order on a fresh stream
    async for resp in call:
        records.append((index, SHORT[resp.type_url], resp.version_info, time.time()))
        if resp.type_url == CLUSTER:
            names[ENDPOINT] = sorted(Cluster.FromString(a.value).name for a in resp.resources)
        await outbox.put(_ack(resp, names[resp.type_url]))
        follow = then.get(resp.type_url)
        if follow and follow not in asked:
            asked.add(follow)
            await outbox.put(DiscoveryRequest(type_url=follow, resource_names=names[follow]))


GRPC_TARGET = "svc-0.bench:80"  # what the simulated gRPC clients dial (xds:///svc-0.bench:80)


async def grpc_stream(stub, node: Node, index: int, records: list) -> None:
    """A proxyless gRPC client's state-of-the-world stream: named LDS first, then what each answer names."""
    node.user_agent_name = "gRPC C-core"  # what tells meshctl a proxyless client (node.is_proxyless)
    outbox, call = _sotw_call(stub)
    names: dict[str, list[str]] = {LISTENER: [GRPC_TARGET], ROUTE: ["outbound"], CLUSTER: [], ENDPOINT: []}
    await outbox.put(DiscoveryRequest(type_url=LISTENER, node=node, resource_names=names[LISTENER]))
    asked = {LISTENER}
    async for resp in call:
        records.append((index, SHORT[resp.type_url], resp.version_info, time.time()))
        follow = None
        if resp.type_url == LISTENER:
            follow = ROUTE
        elif resp.type_url == ROUTE:
            clusters = set()
            for a in resp.resources:
                for vh in RouteConfiguration.FromString(a.value).virtual_hosts:
                    for r in vh.routes:
                        clusters.update(w.name for w in r.route.weighted_clusters.clusters)
                        if r.route.cluster:
                            clusters.add(r.route.cluster)
            names[CLUSTER] = sorted(clusters)
            follow = CLUSTER
        elif resp.type_url == CLUSTER:
            names[ENDPOINT] = sorted(Cluster.FromString(a.value).name for a in resp.resources)
            follow = ENDPOINT
        await outbox.put(_ack(resp, names[resp.type_url]))
        if follow and follow not in asked:
            asked.add(follow)
            await outbox.put(DiscoveryRequest(type_url=follow, resource_names=names[follow]))


async def delta_stream(stub, node: Node, index: int, records: list) -> None:
    outbox: asyncio.Queue = asyncio.Queue()

    async def requests():
        while True:
            yield await outbox.get()

    call = stub.DeltaAggregatedResources(requests())
    await outbox.put(DeltaDiscoveryRequest(type_url=CLUSTER, node=node))
    asked, eds = set(), set()
    async for resp in call:
        records.append((index, SHORT[resp.type_url], resp.system_version_info, time.time()))
        await outbox.put(DeltaDiscoveryRequest(type_url=resp.type_url, response_nonce=resp.nonce))
        if resp.type_url == CLUSTER:
            new = {Cluster.FromString(r.resource.value).name for r in resp.resources} - eds
            eds |= new
            if new:
                await outbox.put(DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=sorted(new)))
                asked.add(ENDPOINT)
        follow = {ENDPOINT: LISTENER, LISTENER: ROUTE}.get(resp.type_url)
        if follow and follow not in asked:
            asked.add(follow)
            subscribe = ["outbound"] if follow == ROUTE else []
            await outbox.put(DeltaDiscoveryRequest(type_url=follow, resource_names_subscribe=subscribe))


async def spawn(
    port: int, streams: int, groups: list[str], out: Path, delta: bool = False, grpc_clients: bool = False
) -> asyncio.subprocess.Process:
    """Starts the load client in its own process, on the cores other than the control plane's."""
    return await asyncio.create_subprocess_exec(
        *offcore.command(
            "bench.adsload",
            "--port",
            str(port),
            "--streams",
            str(streams),
            "--groups",
            ",".join(groups),
            "--out",
            str(out),
            *(["--delta"] if delta else []),
            *(["--grpc"] if grpc_clients else []),
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--groups", required=True, help="comma-separated namespace/virtualnode list")
    parser.add_argument("--channels", type=int, default=20, help="HTTP/2 connections to spread streams over")
    parser.add_argument("--delta", action="store_true")
    parser.add_argument("--grpc", action="store_true", help="streams that behave like proxyless gRPC clients")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    groups = args.groups.split(",")
    records: list = []
    options = [("grpc.max_receive_message_length", 512 * 1024 * 1024)]  # a gateway of 10,000 services: ~20 MiB
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{args.port}", options=options) for _ in range(args.channels)]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
    run = grpc_stream if args.grpc else delta_stream if args.delta else sotw_stream
    tasks = [
        asyncio.create_task(
            run(stubs[i % len(stubs)], Node(id=f"load-{i}", cluster=groups[i % len(groups)]), i, records)
        )
        for i in range(args.streams)
    ]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for t in tasks:
        t.cancel()
    with open(args.out, "w") as f:
        json.dump(records, f)
    for c in channels:
        await c.close(grace=0)


if __name__ == "__main__":
    asyncio.run(main())
