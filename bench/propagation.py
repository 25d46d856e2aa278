"""Benchmark 6: Route propagation, idle and under load, through a real Envoy.

`meshctl serve` watches a manifest directory; a Route flips between 100% v1 and 100% v2 twenty times.
For each flip: the time from the file write to the first request sent after it that the new version
answered (gateway-api-bench's measure), and every non-2xx response during the run. Requests are sent
open-loop at a fixed rate: 200/s as the idle probe, 1,000/s under load.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import median, percentile, table
from bench.procs import Processes, wait_http
from meshctl.proxy import free_port
from tests.manifests import route, service, virtual_node, workload, write


async def _run(rate: int, flips: int, gap: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="meshctl-bench-prop-"))
    manifests = workdir / "manifests"
    procs = Processes(workdir)
    try:
        ports = {"v1": free_port(), "v2": free_port()}
        for name, port in ports.items():
            await procs.app(name, port)
        write(
            manifests / "w.yaml",
            service("reviews"),
            workload("reviews", "v1", ports["v1"]),
            workload("reviews", "v2", ports["v2"]),
            virtual_node("frontend", backends=["reviews"]),
        )
        write(manifests / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100, "reviews-v2": 0}))
        xds, _, _ = await procs.serve(manifests)
        _, egress = await procs.envoy(xds, "demo/frontend", "demo/frontend/bench")
        url = f"http://127.0.0.1:{egress}/"
        await wait_http(url, headers={"Host": "reviews"})

        results: list[tuple[float, int, str]] = []  # (sent at, status, body)
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(sent: float) -> None:
                try:
                    async with session.get(url, headers={"Host": "reviews"}) as r:
                        results.append((sent, r.status, await r.text()))
                except aiohttp.ClientError as exc:
                    results.append((sent, 0, type(exc).__name__))

            async def load() -> None:
                interval, tasks = 1 / rate, set()
                next_at = time.monotonic()
                while not stop.is_set():
                    now = time.monotonic()
                    if now >= next_at:
                        task = asyncio.create_task(one(now))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        next_at += interval
                    await asyncio.sleep(max(0, next_at - time.monotonic()))
                await asyncio.gather(*tasks)

            loader = asyncio.create_task(load())
            await asyncio.sleep(1)  # warm up
            writes: list[tuple[float, str]] = []
            for k in range(flips):
                target = "v2" if k % 2 == 0 else "v1"
                weights = {"reviews-v1": 100 if target == "v1" else 0, "reviews-v2": 100 if target == "v2" else 0}
                started = time.monotonic()
                write(manifests / "route.yaml", route("reviews", "reviews", weights))
                writes.append((started, target))
                await asyncio.sleep(gap)
            stop.set()
            await loader
        delays = []
        for started, target in writes:
            after = sorted((s, body) for s, status, body in results if s >= started and status == 200)
            first = next((s for s, body in after if body == target), None)
            if first is not None:
                delays.append(first - started)
        sent = [s for s, _, _ in results]
        errors = sum(1 for _, status, _ in results if status != 200)
        return {
            "rate": len(sent) / (max(sent) - min(sent)) if sent else 0,
            "requests": len(results),
            "delays": delays,
            "errors": errors,
            "flips": flips,
        }
    finally:
        await procs.stop()


def run(flips: int = 20, gap: float = 0.5) -> str:
    rows = []
    for label, rate in (("idle (200 req/s probe)", 200), ("under load (1,000 req/s)", 1000)):
        r = asyncio.run(_run(rate, flips, gap))
        d = r["delays"]
        rows.append(
            [
                label,
                f"{r['rate']:.0f}",
                r["requests"],
                f"{len(d)}/{r['flips']}",
                1e3 * median(d),
                1e3 * percentile(d, 99),
                max(d) * 1e3 if d else float("nan"),
                r["errors"],
            ]
        )
    headers = ["run", "achieved req/s", "requests", "flips seen", "p50 ms", "p99 ms", "max ms", "non-2xx"]
    return table(headers, rows)


if __name__ == "__main__":
    print(run())
