"""Benchmark 17 (issue 35): the control plane collecting the traffic figures of 1,000 proxies.

Benchmark 1's mesh plus 1,000 caller VirtualNodes, each calling 10 Services (20 clusters: both versions of each);
1,000 proxies' stats, as a real Envoy's filtered ``/stats/prometheus`` returns them for 20 used clusters (529 lines,
~50 KB each), served by bench/stats_farm.py in a process of its own. The control plane reads them every 5 s while
its graph is asked for every second, as an open web view does. Measured on the control plane's process: CPU per
round (above the same polling with nothing to read), the serving loop's longest stall, memory, the graph document's
time with traffic on its edges."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench import meshgen
from bench.common import OnceSource, Ticker, rss_mib, table
from meshctl.admin.traffic import Target, TrafficCollector
from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port

SERVICES = 1_000
PROXIES = 1_000
CLUSTERS = 20
INTERVAL = 5.0
BASELINE = 15.0  # seconds of polling with nothing to read
WATCH = 30.0  # seconds of polling while 1,000 proxies are read


async def _poll(session: aiohttp.ClientSession, url: str, seconds: float) -> tuple[list[float], dict[str, Any]]:
    times: list[float] = []
    graph: dict[str, Any] = {}
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        async with session.get(url) as r:
            graph = await r.json()
        times.append((time.perf_counter() - started) * 1e3)
        await asyncio.sleep(1.0)
    return times, graph


async def _run() -> list[Any]:
    model, names = meshgen.with_clients(meshgen.build(SERVICES), PROXIES, CLUSTERS // 2)
    port = free_port()
    farm = subprocess.Popen(
        [sys.executable, "-m", "bench.stats_farm", str(port), str(PROXIES), str(CLUSTERS), str(SERVICES)]
    )
    targets: list[Target] = []
    plane = ControlPlane(OnceSource(model))
    plane.traffic = TrafficCollector(lambda: targets, interval=INTERVAL)
    ticker = Ticker()
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:  # the farm is up
                try:
                    async with session.get(f"http://127.0.0.1:{port}/p/0/stats/prometheus") as r:
                        sample = await r.text()
                        break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)
            await plane.start()
            await plane.wait_synced(timeout=120)
            graph_url = f"http://127.0.0.1:{plane.admin_port}/api/v1/graph"
            await _poll(session, graph_url, 2)  # the graph made once, as a page does on opening
            rss_before = rss_mib()
            cpu = time.process_time()
            idle_ms, _ = await _poll(session, graph_url, BASELINE)
            idle_cpu = (time.process_time() - cpu) / BASELINE
            targets.extend(
                Target(f"{name}/pod-0", name, f"http://127.0.0.1:{port}/p/{i}/stats/prometheus")
                for i, name in enumerate(names)
            )
            ticker.start()
            watch_from, cpu, rounds = time.monotonic(), time.process_time(), plane.traffic.rounds
            busy_ms, graph = await _poll(session, graph_url, WATCH)
            busy_cpu = (time.process_time() - cpu) / WATCH
            rounds = plane.traffic.rounds - rounds
            stall, stall_p99 = ticker.longest(watch_from, time.monotonic())
            rss_after = rss_mib()
    finally:
        ticker.stop()
        await plane.stop()
        farm.terminate()
        farm.wait()
    with_traffic = sum(1 for e in graph["edges"] if e.get("traffic"))
    return [
        PROXIES,
        f"{CLUSTERS} ({len(sample.splitlines())} lines, {len(sample) / 1e3:.0f} KB)",
        f"{plane.traffic.read_bytes / 1e6:.0f}",
        rounds,
        f"{plane.traffic.round_seconds:.2f}",
        f"{(busy_cpu - idle_cpu) * INTERVAL:.2f} ({100 * (busy_cpu - idle_cpu):.0f} %)",
        f"{stall * 1e3:.0f} / {stall_p99 * 1e3:.0f}",
        f"{max(idle_ms):.0f} / {max(busy_ms):.0f}",
        f"{rss_after - rss_before:+.0f}",
        with_traffic,
    ]


def run() -> str:
    row = asyncio.run(_run())
    headers = [
        "proxies",
        "clusters each",
        "MB read per round",
        "rounds",
        "last round s",
        "CPU s per round (of one core)",
        "loop stall max / p99 ms",
        "/api/v1/graph max ms idle / reading",
        "RSS MiB",
        "edges with traffic",
    ]
    return table(headers, [row])
