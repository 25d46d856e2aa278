"""Benchmark 6: Route propagation, idle and under load, through a real Envoy.

`meshctl serve` watches a manifest directory, or a cluster (the test apiserver in its own process, through list
and watch); a Route flips between 100% v1 and 100% v2 twenty times, by a file write or by a PATCH of the Route
object (source ``kubernetes-httproute``: of an HTTPRoute whose backendRefs are Services reviews-v1/-v2). For each
flip: the time from the write to the first request sent after it that the new version answered
(gateway-api-bench's measure), and every non-2xx response during the run. Requests are sent open-loop at a fixed
rate: 200/s as the idle probe, 1,000/s under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import aiohttp
from kubernetes import client, config

from bench.common import median, percentile, table
from bench.kubeapi import http_route_doc, kube_api
from bench.procs import Processes, wait_http
from meshctl.devtools.envoy_process import free_port
from tests.manifests import route, service, virtual_node, workload, write


def _weights(target: str) -> dict[str, int]:
    return {"reviews-v1": 100 if target == "v1" else 0, "reviews-v2": 100 if target == "v2" else 0}


async def _run(rate: int, flips: int, gap: float, source: str = "files") -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="meshctl-bench-prop-"))
    manifests = workdir / "manifests"
    procs = Processes(workdir)
    async with contextlib.AsyncExitStack() as stack:
        ports = {"v1": free_port(), "v2": free_port()}
        for name, port in ports.items():
            await procs.app(name, port)
        stack.push_async_callback(procs.stop)
        if source in ("kubernetes", "kubernetes-httproute"):
            demo = ["--services", "0", "--demo", "--demo-ports", f"{ports['v1']},{ports['v2']}"]
            httproute = source == "kubernetes-httproute"
            _, kubeconfig = await stack.enter_async_context(kube_api(*demo, *(["--demo-httproute"] * httproute)))
            xds, _, _ = await procs.serve(None, kubeconfig=kubeconfig)
            custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(kubeconfig)))

            def write_route(target: str) -> None:
                if httproute:  # the same flip, as a merge patch of the HTTPRoute's backendRef weights
                    patch = {"spec": http_route_doc(100 if target == "v1" else 0)["spec"]}
                    custom.patch_namespaced_custom_object(
                        "gateway.networking.k8s.io", "v1", "demo", "httproutes", "reviews", patch
                    )
                    return
                patch = {"spec": route("reviews", "reviews", _weights(target))["spec"]}
                custom.patch_namespaced_custom_object(
                    "mesh.meshctl.dev", "v1alpha1", "demo", "routes", "reviews", patch
                )
        else:
            write(
                manifests / "w.yaml",
                service("reviews"),
                workload("reviews", "v1", ports["v1"]),
                workload("reviews", "v2", ports["v2"]),
                virtual_node("frontend", backends=["reviews"]),
            )
            write(manifests / "route.yaml", route("reviews", "reviews", _weights("v1")))
            xds, _, _ = await procs.serve(manifests)

            def write_route(target: str) -> None:
                write(manifests / "route.yaml", route("reviews", "reviews", _weights(target)))

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
                started = time.monotonic()
                await asyncio.to_thread(write_route, target)
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
    raise AssertionError("unreachable")


_RATES = (("idle (200 req/s probe)", 200), ("under load (1,000 req/s)", 1000))


def run(flips: int = 20, gap: float = 0.5, sources: tuple[str, ...] = ("files", "kubernetes")) -> str:
    rows = []
    runs = [(f"{source}, {label}", rate, source) for source in sources for label, rate in _RATES]
    for label, rate, source in runs:
        r = asyncio.run(_run(rate, flips, gap, source))
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
    headers = ["source, run", "achieved req/s", "requests", "flips seen", "p50 ms", "p99 ms", "max ms", "non-2xx"]
    return table(headers, rows)


if __name__ == "__main__":
    print(run())
