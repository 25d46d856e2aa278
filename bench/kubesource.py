"""Benchmark 7: the control plane on the Kubernetes source (list/watch over HTTP from a seeded test apiserver in
its own process; ADS load clients in their own process; the control plane in this one).

a) Pod updates at N services: one Pod relabelled (v1 -> v2 and back) through the API; the time from sending the
   PATCH to the gateway stream (subscribed to every ClusterLoadAssignment) receiving its EDS response, and how
   many full translations ran (0: every change took the endpoint path).
   (The PATCH is sent from this process, one at a time: a single write does not compete for the GIL.)
b) Event-loop stalls and memory at N services with S ADS streams (50 client groups, as benchmark 3, plus the
   gateway): a ticker on the serving loop (every 5 ms) records the longest gap while the mesh is listed and built
   from scratch with the streams connected, during a second full build (a VirtualNode change every client sees),
   while the whole config dump is served, and during a burst of 1,000 Pod relabels (written by another process,
   as fast as the apiserver takes them); then the RSS with everything connected.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes import client, config

from bench import adsload, kubemesh, offcore
from bench.common import Ticker, median, percentile, pinned_to_first_core, rss_mib, table
from bench.fanout import _all_acked, _versions
from bench.kubeapi import kube_api
from bench.kubewrite import relabel
from meshctl.controlplane.plane import ControlPlane
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, TYPE_ORDER


def _api(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


async def _stop_load(proc: asyncio.subprocess.Process, out: Path) -> list[Any]:
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    return json.loads(out.read_text()) if out.exists() else []


async def pod_updates(n: int, changes: int) -> list[Any]:
    async with kube_api("--services", str(n)) as (_, kubeconfig):
        api = _api(kubeconfig)
        core = client.CoreV1Api(api)
        plane = ControlPlane(KubernetesSource(api))
        await plane.start()
        out = Path(tempfile.mkdtemp()) / "records.json"
        load = await adsload.spawn(plane.xds_port, 1, ["bench/gateway"], out)
        try:
            await plane.wait_synced(timeout=900)
            await _all_acked(plane, 1, TYPE_ORDER, timeout=900)
            full_before, sent = plane.metrics.full_builds, []
            for k in range(changes):
                old = _versions(plane, ENDPOINT)
                t0 = time.time()
                await asyncio.to_thread(relabel, core, k // 2 % n, "v2" if k % 2 == 0 else "v1")
                await _all_acked(plane, 1, (ENDPOINT,), old, timeout=60)
                sent.append(t0)
                await asyncio.sleep(0.05)
            full_builds = plane.metrics.full_builds - full_before
            ignored = plane.source.ignored_events  # type: ignore[attr-defined]
        finally:
            records = await _stop_load(load, out)
            await plane.stop()
            api.close()
    latencies = []
    for i, t0 in enumerate(sent):
        t_end = sent[i + 1] if i + 1 < len(sent) else float("inf")
        first = next((t for _, kind, _, t in records if kind == "eds" and t0 <= t < t_end), None)
        if first is not None:
            latencies.append(first - t0)
    return [n, changes, len(latencies), 1e3 * median(latencies), 1e3 * percentile(latencies, 99), full_builds, ignored]


async def _phase(ticker: Ticker, rows: list[Any], label: str, action: Callable[[], Awaitable[object]]) -> None:
    """Runs ``action`` and records the loop's longest gap meanwhile. Actions poll for completion every 50 ms: a
    check of 1,000 streams is itself loop work, and must not be what is measured."""
    started = time.monotonic()
    await action()
    ended = time.monotonic()
    longest, p99 = ticker.longest(started, ended)
    rows.append([label, ended - started, 1e3 * longest, 1e3 * p99])


async def stalls(
    n: int, streams: int, churn: int, gateway: bool = True, delta: bool = False
) -> tuple[list[Any], tuple[float, float], int]:
    """Rows of (phase, duration, longest stall, p99 gap); RSS after the first build and at the end; wake-ups."""
    clients = 50
    groups = kubemesh.client_names(clients)
    async with kube_api("--services", str(n), "--clients", str(clients)) as (_, kubeconfig):
        api = _api(kubeconfig)
        custom = client.CustomObjectsApi(api)
        ticker = Ticker()
        ticker.start()
        plane = ControlPlane(KubernetesSource(api))
        out = Path(tempfile.mkdtemp()) / "records.json"
        load = None
        rows: list[Any] = []
        try:

            async def initial() -> None:
                nonlocal load
                await plane.start()
                load = await adsload.spawn(
                    plane.xds_port, streams, [*groups, *(["bench/gateway"] if gateway else [])], out, delta
                )
                await plane.wait_synced(timeout=900)
                await _all_acked(plane, streams, TYPE_ORDER, timeout=900, poll=0.05)

            await _phase(ticker, rows, f"list + first build, {streams} streams connecting", initial)
            rss_built = rss_mib()

            async def second_build() -> None:
                old = _versions(plane, CLUSTER)
                full = plane.metrics.full_builds
                node = kubemesh.virtual_node(
                    "svc-0-v1",
                    {
                        "podSelector": {"matchLabels": {"app": "svc-0", "version": "v1"}},
                        "listeners": [
                            {
                                "portMapping": {"port": kubemesh.PORT, "protocol": "http"},
                                "connectionPool": {"http": {"maxConnections": 77}},
                            }
                        ],
                    },
                )
                current = await asyncio.to_thread(
                    custom.get_namespaced_custom_object,
                    "mesh.meshctl.dev",
                    "v1alpha1",
                    "bench",
                    "virtualnodes",
                    "svc-0-v1",
                )
                node["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await asyncio.to_thread(
                    custom.replace_namespaced_custom_object,
                    "mesh.meshctl.dev",
                    "v1alpha1",
                    "bench",
                    "virtualnodes",
                    "svc-0-v1",
                    node,
                )
                await _all_acked(plane, streams, (CLUSTER,), old, timeout=300, poll=0.05)
                assert plane.metrics.full_builds > full

            await _phase(ticker, rows, "second full build (VirtualNode change)", second_build)

            async def dump() -> None:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{plane.admin_port}/api/v1/config_dump") as r,
                ):
                    assert r.status == 200
                    # In chunks: this client shares the measured loop, and r.read() joins tens of MiB in one step.
                    async for _ in r.content.iter_chunked(1 << 16):
                        pass

            await _phase(ticker, rows, "config_dump (every group)", dump)

            async def burst() -> None:
                full = plane.metrics.full_builds

                writer = await asyncio.create_subprocess_exec(
                    *offcore.command("bench.kubewrite", str(kubeconfig), "relabel", str(churn), str(n), "v2")
                )
                assert await writer.wait() == 0
                last = f"bench/svc-{(churn - 1) % n}-v1/{kubemesh.PORT}"
                deadline = time.monotonic() + 300
                while len(plane.controller.mesh.endpoints.get(last, ())) != 4:  # type: ignore[union-attr]
                    if time.monotonic() > deadline:
                        raise TimeoutError("the Pod burst did not reach the mesh")
                    await asyncio.sleep(0.05)
                await _all_acked(plane, streams, (ENDPOINT,), timeout=300, poll=0.05)
                assert plane.metrics.full_builds == full, "a Pod change took a full build"

            await _phase(ticker, rows, f"burst of {churn} Pod relabels (API writes + watch + patches)", burst)
            rss = (rss_built, rss_mib())
            wakeups = plane.cache.wakeups
        finally:
            ticker.stop()
            if load is not None:
                await _stop_load(load, out)
            await plane.stop()
            api.close()
    return rows, rss, wakeups


def _in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs ``asyncio.run(fn(*args))`` pinned to core 0 in a new process: its RSS is its own (freed memory is rarely
    returned to the OS, so a configuration measured after another would carry the other's leftovers)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pinned_run, fn, *args).result()


def _pinned_run(fn: Callable[..., Any], *args: Any) -> Any:
    with pinned_to_first_core():
        return asyncio.run(fn(*args))


def run(n: int = 10_000, streams: int = 1000, changes: int = 50, churn: int = 1000) -> str:
    pods = _in_fresh_process(pod_updates, n, changes)
    stall_rows = []
    for gateway in (False, True):
        rows, rss, _ = _in_fresh_process(stalls, n, streams, churn, gateway)
        label = f"{streams} client streams" + (" + a gateway stream (every service)" if gateway else "")
        stall_rows += [[label, *r] for r in rows]
        stall_rows.append(
            [label, f"RSS after the first build: {rss[0]:.0f} MiB; at the end: {rss[1]:.0f} MiB", "", "", ""]
        )
    headers = ["services", "changes", "seen", "p50 PATCH to EDS bytes ms", "p99 ms", "full builds", "events ignored"]
    part_a = table(headers, [pods])
    part_b = table(["streams", "phase", "duration s", "longest loop stall ms", "p99 tick gap ms"], stall_rows)
    return f"{part_a}\n\n{part_b}"


if __name__ == "__main__":
    print(run())
