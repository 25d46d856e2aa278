"""Benchmark 2: one endpoint (or one Pod) changes in a mesh of N; time from the new model to the bytes being ready.

Measured in process on the real controller: the endpoint-only fast path (detect the change, update the
affected endpoints, patch each snapshot) plus the first stream's response bytes for the gateway sidecar,
which subscribes to every ClusterLoadAssignment. "pod" changes relabel one Pod (its endpoint moves between the
v1 and v2 VirtualNodes), with the ModelDelta the Kubernetes source sends; the full builds column counts whole-mesh
translations during the changes (0: every change took the fast path).
"""

from __future__ import annotations

import asyncio
import time

from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest

from bench import meshgen
from bench.common import median, percentile, table
from meshctl.controlplane.controller import Controller
from meshctl.model import Model
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshctl.xds.server.stream import StreamState


def _ack_all(stream: StreamState) -> None:
    for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        st = stream.types[t]
        if st.inflight:
            stream.on_request(
                DiscoveryRequest(
                    type_url=t,
                    version_info=st.sent_version,
                    response_nonce=st.nonce,
                    resource_names=sorted(st.names or ()),
                )
            )


async def gateway_stream(n: int) -> tuple[Model, Controller, StreamState]:
    """A controller with the mesh of N built, and the gateway's stream holding (having ACKed) all of it."""
    model = meshgen.build(n)
    controller = Controller(SnapshotCache())
    group = await controller.attach(meshgen.GATEWAY)
    await controller._rebuild(model)
    snap = controller.cache.get(group)
    assert snap is not None
    stream = StreamState("gateway", group)
    stream.on_request(DiscoveryRequest(type_url=CLUSTER))
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=sorted(snap.resources[ENDPOINT])))
    stream.on_request(DiscoveryRequest(type_url=LISTENER))
    stream.on_request(DiscoveryRequest(type_url=ROUTE, resource_names=["outbound"]))
    for _ in range(4):
        stream.next_responses(controller.cache.get(group))
        _ack_all(stream)
    return model, controller, stream


async def _measure(n: int, changes: int, kind: str = "endpoint") -> tuple[list[float], list[float], int, int]:
    model, controller, stream = await gateway_stream(n)
    group = stream.group
    to_snapshot, to_bytes, sizes = [], [], 0
    full_before = controller.metrics.full_builds
    for k in range(changes):
        if kind == "pod":
            changed = meshgen.with_pod_relabel(model, (k // 2) % n, "v2" if k % 2 == 0 else "v1")
        else:
            changed = meshgen.with_endpoint_change(model, k % n, generation=k + 2)
        started = time.perf_counter()
        await controller._rebuild(changed)
        t_snap = time.perf_counter()
        responses = stream.next_responses(controller.cache.get(group))
        t_bytes = time.perf_counter()
        assert [t for t, _ in responses] == [ENDPOINT], responses
        sizes = len(responses[0][1])
        _ack_all(stream)
        model = changed
        to_snapshot.append(t_snap - started)
        to_bytes.append(t_bytes - started)
    return to_snapshot, to_bytes, sizes, controller.metrics.full_builds - full_before


def run(sizes: tuple[int, ...] = (100, 10_000), changes: int = 50) -> str:
    rows = []
    for n in sizes:
        for kind in ("endpoint", "pod"):
            snap_t, bytes_t, size, full = asyncio.run(_measure(n, changes, kind))
            p50_snap, p50_bytes, p99 = 1e3 * median(snap_t), 1e3 * median(bytes_t), 1e3 * percentile(bytes_t, 99)
            rows.append([n, kind, changes, p50_snap, p50_bytes, p99, size, full])
    headers = ["services", "change", "changes", "p50 to snapshot ms", "p50 to response bytes ms", "p99 to bytes ms"]
    return table([*headers, "response bytes", "full builds"], rows)


if __name__ == "__main__":
    print(run())
