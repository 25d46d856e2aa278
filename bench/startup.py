"""Benchmark 5: startup with 10,000 services: `meshctl serve` from a cold process to /readyz, then a
gateway Envoy that calls every service, from its start to having ACKed the whole config."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench import kubemesh
from bench.common import rss_mib, table
from bench.procs import Processes


def write_mesh(directory: Path, n: int) -> int:
    """The benchmark mesh as YAML files (one per 100 services); returns the doc count."""
    directory.mkdir(parents=True)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    docs_total = 0
    for start in range(0, n, 100):
        docs = [d for i in range(start, min(n, start + 100)) for d in kubemesh.service_docs(i)]
        (directory / f"mesh-{start // 100:04d}.yaml").write_text(yaml.dump_all(docs, Dumper=dumper))
        docs_total += len(docs)
    (directory / "gateway.yaml").write_text(yaml.dump(kubemesh.gateway(n), Dumper=dumper))
    return docs_total + 1


def _proxies(admin: int) -> list[dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/proxies", timeout=30) as r:
        return json.loads(r.read())["proxies"]


async def _run(n: int) -> list:
    workdir = Path(tempfile.mkdtemp(prefix="meshctl-bench-start-"))
    docs = write_mesh(workdir / "manifests", n)
    procs = Processes(workdir)
    try:
        started = time.monotonic()
        xds, admin, serve = await procs.serve(workdir / "manifests")
        ready = time.monotonic() - started
        rss_ready = rss_mib(serve.pid)
        started = time.monotonic()
        await procs.envoy(xds, "bench/gateway", "bench/gateway/0")
        while True:
            proxies = await asyncio.to_thread(_proxies, admin)
            types = proxies[0]["types"] if proxies else {}
            if types and all(t["acked_version"] and not t["pending"] for t in types.values()):
                break
            await asyncio.sleep(0.05)
        acked = time.monotonic() - started
        clusters = len(types["cds"]["resources"])
        return [n, docs, ready, acked, clusters, f"{rss_ready:.0f} MiB", f"{rss_mib(serve.pid):.0f} MiB"]
    finally:
        await procs.stop()


def run(sizes: tuple[int, ...] = (1_000, 10_000)) -> str:
    rows = [asyncio.run(_run(n)) for n in sizes]
    headers = [
        "services",
        "manifest docs",
        "serve to /readyz s",
        "gateway Envoy start to full ACK s",
        "clusters ACKed",
        "RSS at ready",
        "RSS after gateway",
    ]
    return table(headers, rows)


if __name__ == "__main__":
    print(run())
