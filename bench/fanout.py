"""Benchmark 3: fan-out to 1,000 concurrent ADS streams (a load client in its own process).

The mesh has N services and 50 client VirtualNodes; each client calls svc-0 and 19 other services, and the
streams are spread evenly over the 50 clients (20 proxies each, sharing their group's snapshot). A change to
svc-0 reaches every stream: an endpoint change (EDS, the fast path) and a Route weight change (full
translation, RDS). Latency is from submitting the new model to each stream receiving its response.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import adsload, meshgen
from bench.common import median, percentile, rss_mib, table
from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, ROUTE, TYPE_ORDER


class PushSource:
    """A source the benchmark drives directly: no files, no parsing, just models."""

    def __init__(self) -> None:
        self.sink = None
        self.ready = asyncio.Event()

    async def run(self, sink) -> None:
        self.sink = sink
        self.ready.set()
        await asyncio.Event().wait()

    async def push(self, model) -> None:
        await self.ready.wait()
        await self.sink(model)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _versions(plane: ControlPlane, type_url: str) -> dict[str, str]:
    return {g: plane.cache.get(g).version(type_url) for g in plane.cache.groups()}


async def _all_acked(
    plane: ControlPlane,
    streams: int,
    type_urls,
    old: dict[str, str] | None = None,
    timeout: float = 120,
    poll: float = 0.005,
) -> float:
    """Until every stream ACKed its group's snapshot (and, with ``old``, a snapshot newer than that). Checked every
    ``poll`` seconds: the granularity of what is measured with it."""
    deadline = time.monotonic() + timeout
    while True:
        live = plane.registry.streams()
        if len(live) == streams:
            done = True
            for s in live:
                snap = plane.cache.get(s.group)
                if (
                    snap is None
                    or (old is not None and any(snap.version(t) == old[s.group] for t in type_urls))
                    or any(s.types[t].acked_version != snap.version(t) for t in type_urls)
                ):
                    done = False
                    break
            if done:
                return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(live)} streams, not all acked")
        await asyncio.sleep(poll)


async def _run(n: int, streams: int, delta: bool, changes: int, grpc_clients: bool = False) -> list:
    model, groups = meshgen.with_clients(meshgen.build(n), groups=50, backends=20)
    source = PushSource()
    plane = ControlPlane(source)
    await plane.start()
    await source.push(model)
    await plane.wait_synced(timeout=300)
    out = Path(tempfile.mkdtemp()) / "records.json"
    client = await adsload.spawn(plane.xds_port, streams, groups, out, delta, grpc_clients)
    # (a proxyless client's LDS is its own API listener, not the snapshot's)
    initial = (CLUSTER, ENDPOINT, ROUTE) if grpc_clients else TYPE_ORDER
    try:
        await _all_acked(plane, streams, initial, timeout=300)
        cpu0, pushes = _cpu(), []
        kinds = (
            ("eds", ENDPOINT, lambda m, k: meshgen.with_endpoint_change(m, 0, generation=k + 10)),
            ("rds", ROUTE, lambda m, k: meshgen.with_route_weight(m, 0, 50 + k % 2 * 30)),
        )
        for kind, type_url, change in kinds:
            for k in range(changes):
                model = change(model, k)
                old = _versions(plane, type_url)
                t0 = time.time()
                await source.push(model)
                await _all_acked(plane, streams, (type_url,), old)
                pushes.append((kind, t0))
                await asyncio.sleep(0.1)
        cpu = _cpu() - cpu0
        rss = rss_mib()
    finally:
        client.send_signal(signal.SIGTERM)
        await client.wait()
        await plane.stop()
    records = json.loads(out.read_text())
    rows = []
    for kind in ("eds", "rds"):
        latencies, all_done = [], []
        starts = [t0 for k, t0 in pushes if k == kind]
        for i, t0 in enumerate(starts):
            t_end = starts[i + 1] if i + 1 < len(starts) else float("inf")
            first: dict[int, float] = {}
            for stream, type_, _version, t in records:
                if type_ == kind and t0 <= t < t_end and stream not in first:
                    first[stream] = t - t0
            latencies += first.values()
            if len(first) != streams:
                print(f"{kind} change {i}: {len(first)} of {streams} streams answered", file=sys.stderr)
            all_done.append(max(first.values()) if len(first) == streams else float("nan"))
        rows.append(
            [
                n,
                streams,
                "gRPC (sotw)" if grpc_clients else "delta" if delta else "sotw",
                kind,
                changes,
                1e3 * median(latencies),
                1e3 * percentile(latencies, 99),
                1e3 * median(all_done),
                f"{rss:.0f} MiB",
                f"{cpu:.1f}",
            ]
        )
    return rows


def _one(n: int, streams: int, delta: bool, changes: int, grpc_clients: bool = False) -> list:
    return asyncio.run(_run(n, streams, delta, changes, grpc_clients))


def run_proxyless(n: int = 1_000, streams: int = 1000, changes: int = 10) -> str:
    """Issue 34: 1,000 simulated proxyless gRPC clients (gRPC's user agent and order) instead of Envoys."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        rows = pool.submit(_one, n, streams, False, changes, True).result()
    return table(_HEADERS, rows)


_HEADERS = [
    "services",
    "streams",
    "protocol",
    "change",
    "changes",
    "p50 ms",
    "p99 ms",
    "all streams (median) ms",
    "control-plane RSS",
    "control-plane CPU s (all changes)",
]


def run(sizes: tuple[int, ...] = (1_000, 10_000), streams: int = 1000, changes: int = 10) -> str:
    rows = []
    # Each configuration in a fresh process, so its RSS is its own (freed memory is rarely returned to the OS).
    context = multiprocessing.get_context("spawn")
    for n in sizes:
        for delta in (False, True):
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                rows += pool.submit(_one, n, streams, delta, changes).result()
    headers = _HEADERS
    return (
        table(headers, rows)
        + f"\n\n(load client in its own process, on the cores after the first; {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    print(run())
