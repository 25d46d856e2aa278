"""Benchmark 9: the manifest source under churn (issue 27, part 6).

A directory of N services, each in two files (``svc-i.yaml``: Service, Pod, VirtualNode, Route; ``slice-i.yaml``:
its EndpointSlice), served by ``meshctl serve``'s control plane in this process, pinned to the first core, with a
5 ms ticker on its loop and one ADS client (a gateway calling every Service, over a real grpc channel).

- **Burst**: 200 EndpointSlice files rewritten at once (a new address each); the longest gap of the serving loop from
  the first write until the model holds all 200, and whether the controller took a full translation.
- **Sustained**: EndpointSlice files rewritten at ``rate`` per second for ``seconds``, while a Route file flips
  between two targets every 0.5 s; the time from each Route write to the RDS response on the ADS stream (p50/p99),
  and the longest loop gap.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import yaml
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse

from bench.common import Ticker, percentile, pinned_to_first_core, table
from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, ROUTE
from tests.ads_client import AdsClient
from tests.manifests import route, service, workload
from tests.test_ads_protocol import handshake

NS = "demo"


def _slice(i: int, address: str) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": f"svc-{i}-v1", "namespace": NS, "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"svc-{i}-v1-0"},
            }
        ],
    }


def _route(i: int, target: str) -> dict:
    return route(f"svc-{i}", f"svc-{i}", {f"svc-{i}-{target}": 100})


def write_mesh(root: Path, n: int) -> None:
    for i in range(n):
        pod, _, vn = workload(f"svc-{i}", "v1", 8080)
        _, _, vn2 = workload(f"svc-{i}", "v2", 8080)
        docs = [service(f"svc-{i}"), pod, vn, vn2, _route(i, "v1")]
        (root / f"svc-{i}.yaml").write_text(yaml.safe_dump_all(docs))
        (root / f"slice-{i}.yaml").write_text(yaml.safe_dump(_slice(i, "10.0.0.1")))


def _address(k: int) -> str:
    return f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}"


async def _run(n: int, burst: int, rate: int, seconds: float) -> list[list[object]]:
    """The burst row, and with ``seconds`` the sustained row."""
    root = Path(tempfile.mkdtemp(prefix="meshctl-bench-churn-"))
    write_mesh(root, n)
    rows: list[list[object]] = []
    with pinned_to_first_core():
        plane = ControlPlane.from_manifests(root)
        await plane.start()
        try:
            await plane.wait_synced(timeout=600)
            ticker = Ticker()
            ticker.start()
            await asyncio.sleep(0.2)

            # Burst: `burst` slice files rewritten at once.
            full = plane.metrics.full_builds
            started = time.monotonic()
            for i in range(burst):
                (root / f"slice-{i}.yaml").write_text(yaml.safe_dump(_slice(i, _address(i + 1))))
            wanted = {f"svc-{i}-v1": _address(i + 1) for i in range(burst)}

            def applied() -> bool:
                model = plane.controller.model
                if model is None:
                    return False
                slices = model.endpoint_slices
                return all(slices[key].endpoints[0].address == wanted[key.name] for key in slices if key.name in wanted)

            while not applied():
                await asyncio.sleep(0.005)
            done = time.monotonic()
            longest, p99 = ticker.longest(started, done)
            rows.append(
                [
                    n,
                    f"burst of {burst} EndpointSlice files",
                    f"{done - started:.2f}",
                    f"{1e3 * longest:.1f}",
                    f"{1e3 * p99:.1f}",
                    plane.metrics.full_builds - full,
                    "",
                    "",
                ]
            )

            if seconds:
                rows.append(await _sustained(plane, root, n, rate, seconds, ticker))
            ticker.stop()
        finally:
            await plane.stop()
    return rows


async def _sustained(
    plane: ControlPlane, root: Path, n: int, rate: int, seconds: float, ticker: Ticker
) -> list[object]:
    """Slice rewrites at ``rate``/s and a Route flip every 0.5 s, each flip timed to the RDS response that carries
    it on the ADS stream of a sidecar that calls the Route's Service."""
    latencies: list[float] = []
    caller = AdsClient(plane.xds_port, "demo/caller/0", "demo/caller")
    (root / "caller.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "mesh.meshctl.dev/v1alpha1",
                "kind": "VirtualNode",
                "metadata": {"name": "caller", "namespace": NS},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "caller"}},
                    "backends": [{"virtualService": {"virtualServiceRef": {"name": "svc-0"}}}],
                },
            }
        )
    )
    while plane.controller.model is None or not any(k.name == "caller" for k in plane.controller.model.virtual_nodes):
        await asyncio.sleep(0.01)
    got = await handshake(caller)  # as Envoy does: clusters and endpoints, then listeners and routes, all ACKed
    eds_names = _eds_names(got[CLUSTER])
    stop = time.monotonic() + seconds
    started = time.monotonic()
    writes = 0

    async def churn() -> None:
        nonlocal writes
        k = 10_000
        interval = 1 / rate
        next_at = time.monotonic()
        while time.monotonic() < stop:
            i = 1 + (k % (n - 1))
            (root / f"slice-{i}.yaml").write_text(yaml.safe_dump(_slice(i, _address(k))))
            writes += 1
            k += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    task = asyncio.create_task(churn())
    full = plane.metrics.full_builds
    target = "v2"
    try:
        while time.monotonic() < stop - 1:
            docs = list(yaml.safe_load_all((root / "svc-0.yaml").read_text()))
            docs[-1] = _route(0, target)
            (root / "svc-0.yaml").write_text(yaml.safe_dump_all(docs))
            written = time.monotonic()
            while not await _route_arrives(caller, f"svc-0-{target}", eds_names):
                pass
            latencies.append(time.monotonic() - written)
            target = "v1" if target == "v2" else "v2"
            await asyncio.sleep(0.5)
    finally:
        await task
        await caller.close()
    longest, p99 = ticker.longest(started, time.monotonic())
    return [
        n,
        f"{writes / seconds:.0f} slice files/s for {seconds:.0f} s, Route flips",
        f"{seconds:.0f}",
        f"{1e3 * longest:.1f}",
        f"{1e3 * p99:.1f}",
        plane.metrics.full_builds - full,
        f"{1e3 * percentile(latencies, 50):.1f}",
        f"{1e3 * percentile(latencies, 99):.1f} ({len(latencies)} flips)",
    ]


def _eds_names(cds: DiscoveryResponse) -> list[str]:
    return sorted(c.name for c in (Cluster.FromString(a.value) for a in cds.resources) if c.type == Cluster.EDS)


async def _route_arrives(caller: AdsClient, cluster: str, eds_names: list[str]) -> bool:
    """Handles one response as Envoy would (ACK, asking for the endpoints of new clusters); True when it is the
    route configuration that sends traffic to ``cluster``."""
    resp = await caller.recv(timeout=30)
    if resp.type_url == CLUSTER:
        await caller.ack(resp)
        names = _eds_names(resp)
        if names != eds_names:
            eds_names[:] = names
            await caller.send(ENDPOINT, names)
        return False
    if resp.type_url == ENDPOINT:
        await caller.ack(resp, eds_names)
        return False
    if resp.type_url == ROUTE:
        await caller.ack(resp, ["outbound"])
        return cluster in resp.resources[0].value.decode(errors="replace")
    await caller.ack(resp)
    return False


def run(
    burst_services: int = 5000, sustained_services: int = 10_000, burst: int = 200, rate: int = 200, seconds: float = 60
) -> str:
    rows = asyncio.run(_run(burst_services, burst, rate, 0))
    if seconds:
        rows += asyncio.run(_run(sustained_services, burst, rate, seconds))[1:]
    headers = [
        "services",
        "change",
        "s",
        "longest loop gap ms",
        "p99 gap ms",
        "full builds",
        "Route p50 ms",
        "Route p99 ms",
    ]
    return table(headers, rows)


if __name__ == "__main__":
    print(run())
