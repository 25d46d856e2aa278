"""Benchmark 4: convergence of real Envoys after a Route change, against a replay server.

20 Envoys (each its own client VirtualNode calling 50 of 1,000 services, svc-0 among them) connect over
ADS. A Route change on svc-0 must reach all of them. "meshctl" is the real control plane: from the new
model to every Envoy having ACKed the new routes. "replay" is the limit: a server that holds the very same
responses already serialized and only writes them to the streams on a trigger.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from bench import meshgen
from bench.common import median, table
from bench.fanout import PushSource, _all_acked, _versions
from bench.procs import Processes
from meshctl.controlplane.controller import Controller
from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port
from meshctl.model import ObjectKey
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import Snapshot, SnapshotCache
from meshctl.xds.cache.wire import encode_discovery_response
from meshctl.xds.envoy.types import ROUTE, TYPE_ORDER
from meshctl.xds.server.node import sidecar_params

ENVOYS = 20
SERVICES = 1000


class ReplayServer:
    """Answers each first request of a type with a recorded response; on trigger, writes a recorded
    RouteConfiguration to every stream; records when each stream ACKs it. Nothing is built or encoded."""

    def __init__(self, initial: dict[str, dict[str, bytes]], routes: list[dict[str, bytes]]) -> None:
        self.initial, self.routes = initial, routes  # routes[k][group]: response k, nonce f"r{k}"
        self.queues: list[tuple[str, asyncio.Queue]] = []
        self.acked: dict[str, set[int]] = {}
        self.changed = asyncio.Event()

    async def stream(self, requests, context):
        queue: asyncio.Queue = asyncio.Queue()
        sent: set[str] = set()
        group = None

        async def read():
            nonlocal group
            async for req in requests:
                if group is None:
                    group = sidecar_params(req.node).group
                    self.queues.append((group, queue))
                if req.response_nonce.startswith("r"):
                    self.acked.setdefault(req.response_nonce, set()).add(id(queue))
                    self.changed.set()
                elif not req.response_nonce and req.type_url not in sent:
                    sent.add(req.type_url)
                    await queue.put(self.initial[group][req.type_url])

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await queue.get()
        finally:
            reader.cancel()

    async def trigger(self, k: int) -> None:
        for group, queue in self.queues:
            await queue.put(self.routes[k][group])

    async def wait_acked(self, k: int, n: int) -> None:
        while len(self.acked.get(f"r{k}", ())) < n:
            self.changed.clear()
            await self.changed.wait()


def _params(groups: list[str]) -> dict[str, SidecarParams]:
    """What each Envoy will present: its VirtualNode and its own egress port (bound on 127.0.0.1)."""
    return {
        g: SidecarParams(
            virtual_node=ObjectKey("VirtualNode", *g.split("/")), egress_port=free_port(), bind_address="127.0.0.1"
        )
        for g in groups
    }


async def _snapshots(models: list, params: dict[str, SidecarParams]) -> list[dict[str, Snapshot]]:
    controller = Controller(SnapshotCache())
    for p in params.values():
        await controller.attach(p)
    out = []
    for m in models:
        await controller._rebuild(m)
        out.append({g: controller.cache.get(p.group) for g, p in params.items()})
    return out


def _response(snap, type_url: str, nonce: str) -> bytes:
    res = snap.resources[type_url]
    return encode_discovery_response(snap.version(type_url), type_url, nonce, [res[n].any_bytes for n in sorted(res)])


async def _replay(changes: int) -> list[float]:
    base, groups = meshgen.with_clients(meshgen.build(SERVICES), groups=ENVOYS, backends=50)
    models = [base] + [meshgen.with_route_weight(base, 0, 50 if k % 2 == 0 else 80) for k in range(changes)]
    params = _params(groups)
    snaps = await _snapshots(models, params)
    initial = {params[g].group: {t: _response(snaps[0][g], t, f"a{t[-8:]}") for t in TYPE_ORDER} for g in groups}
    routes = [{params[g].group: _response(snaps[k + 1][g], ROUTE, f"r{k}") for g in groups} for k in range(changes)]
    server = grpc.aio.server()
    replay = ReplayServer(initial, routes)
    handler = grpc.stream_stream_rpc_method_handler(
        replay.stream, request_deserializer=DiscoveryRequest.FromString, response_serializer=lambda b: b
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "envoy.service.discovery.v3.AggregatedDiscoveryService", {"StreamAggregatedResources": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    procs = Processes(Path(tempfile.mkdtemp(prefix="meshctl-bench-replay-")))
    try:
        for g in groups:
            await procs.envoy(port, g, f"{g}/replay", egress=params[g].egress_port)
        while len(replay.queues) < ENVOYS:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1)  # every Envoy through its initial handshake
        times = []
        for k in range(changes):
            started = time.perf_counter()
            await replay.trigger(k)
            await replay.wait_acked(k, ENVOYS)
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
        return times
    finally:
        await procs.stop()
        await server.stop(0.1)


async def _meshctl(changes: int) -> list[float]:
    model, groups = meshgen.with_clients(meshgen.build(SERVICES), groups=ENVOYS, backends=50)
    source = PushSource()
    plane = ControlPlane(source)
    await plane.start()
    await source.push(model)
    await plane.wait_synced(timeout=120)
    procs = Processes(Path(tempfile.mkdtemp(prefix="meshctl-bench-conv-")))
    try:
        for g in groups:
            await procs.envoy(plane.xds_port, g, f"{g}/meshctl")
        await _all_acked(plane, ENVOYS, TYPE_ORDER, timeout=120)
        times = []
        for k in range(changes):
            model = meshgen.with_route_weight(model, 0, 50 if k % 2 == 0 else 80)
            old = _versions(plane, ROUTE)
            started = time.perf_counter()
            await source.push(model)
            # Polled every 0.5 ms (20 streams: cheap), so the measure is not rounded up by 5 ms steps; the replay
            # server is told of each ACK as it comes.
            await _all_acked(plane, ENVOYS, (ROUTE,), old, poll=0.0005)
            times.append(time.perf_counter() - started)
            await asyncio.sleep(0.2)
        return times
    finally:
        await procs.stop()
        await plane.stop()


def run(changes: int = 10) -> str:
    replay = asyncio.run(_replay(changes))
    ours = asyncio.run(_meshctl(changes))
    rows = [
        ["replay (pre-serialized)", ENVOYS, changes, 1e3 * median(replay), 1e3 * max(replay), 1.0],
        ["meshctl", ENVOYS, changes, 1e3 * median(ours), 1e3 * max(ours), median(ours) / median(replay)],
    ]
    return table(["server", "Envoys", "changes", "median to all ACKed ms", "max ms", "ratio to replay"], rows)


if __name__ == "__main__":
    print(run())
