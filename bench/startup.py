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

from bench.common import rss_mib, table
from bench.procs import Processes
from tests.manifests import API


def write_mesh(directory: Path, n: int) -> int:
    """The same shape as bench/meshgen.py, as YAML files (one per 100 services); returns the doc count."""
    directory.mkdir(parents=True)
    docs_total = 0
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    for start in range(0, n, 100):
        docs = []
        for i in range(start, min(n, start + 100)):
            svc = f"svc-{i}"
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": svc, "namespace": "bench"},
                    "spec": {"ports": [{"name": "http", "port": 80}]},
                }
            )
            for v in ("v1", "v2"):
                name = f"{svc}-{v}"
                labels = {"app": svc, "version": v}
                endpoints = []
                for j in range(5):
                    n_ = i * 10 + (0 if v == "v1" else 5) + j
                    address = f"10.{n_ >> 16 & 255}.{n_ >> 8 & 255}.{n_ & 255}"
                    docs.append(
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "metadata": {"name": f"{name}-{j}", "namespace": "bench", "labels": labels},
                        }
                    )
                    endpoints.append(
                        {
                            "addresses": [address],
                            "conditions": {"ready": True},
                            "targetRef": {"kind": "Pod", "name": f"{name}-{j}"},
                        }
                    )
                docs.append(
                    {
                        "apiVersion": "discovery.k8s.io/v1",
                        "kind": "EndpointSlice",
                        "metadata": {"name": name, "namespace": "bench", "labels": {"kubernetes.io/service-name": svc}},
                        "addressType": "IPv4",
                        "ports": [{"name": "http", "port": 8080}],
                        "endpoints": endpoints,
                    }
                )
                docs.append(
                    {
                        "apiVersion": API,
                        "kind": "VirtualNode",
                        "metadata": {"name": name, "namespace": "bench"},
                        "spec": {
                            "podSelector": {"matchLabels": labels},
                            "listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
                        },
                    }
                )
            docs.append(
                {
                    "apiVersion": API,
                    "kind": "Route",
                    "metadata": {"name": svc, "namespace": "bench"},
                    "spec": {
                        "serviceRef": {"name": svc},
                        "httpRoute": {
                            "match": {"prefix": "/"},
                            "action": {
                                "weightedTargets": [
                                    {"virtualNodeRef": {"name": f"{svc}-v1"}, "weight": 80},
                                    {"virtualNodeRef": {"name": f"{svc}-v2"}, "weight": 20},
                                ]
                            },
                            "retryPolicy": {"httpRetryEvents": ["server-error"], "maxRetries": 2},
                        },
                    },
                }
            )
        (directory / f"mesh-{start // 100:04d}.yaml").write_text(yaml.dump_all(docs, Dumper=dumper))
        docs_total += len(docs)
    gateway = {
        "apiVersion": API,
        "kind": "VirtualNode",
        "metadata": {"name": "gateway", "namespace": "bench"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "gateway"}},
            "backends": [{"virtualService": {"virtualServiceRef": {"name": f"svc-{i}"}}} for i in range(n)],
        },
    }
    (directory / "gateway.yaml").write_text(yaml.dump(gateway, Dumper=dumper))
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
