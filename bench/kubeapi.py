"""The test apiserver (tests/apiserver.py) in its own process, seeded with the benchmark mesh, so the Kubernetes
source is measured over real HTTP list/watch without the server's CPU counted in the control plane's process.

    python -m bench.kubeapi --services N [--clients C] --url-file F    (runs until stdin closes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from bench import kubemesh, offcore
from tests.apiserver import ApiServer, kubeconfig_for
from tests.manifests import http_route

ROOT = Path(__file__).parent.parent


def _crds() -> list[dict[str, Any]]:
    """Ours and the upstream Gateway API CRDs (a cluster with Gateway API installed)."""
    paths = sorted((ROOT / "crds").glob("*.dev_*.yaml"))
    paths += sorted((ROOT / "deploy" / "gateway-api").glob("gateway.networking.k8s.io_*.yaml"))
    return [yaml.safe_load(p.read_text()) for p in paths]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kubeapi")
    parser.add_argument("--services", type=int, required=True)
    parser.add_argument("--clients", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="seed the two-version demo instead (--demo-ports)")
    parser.add_argument("--demo-ports", default="", help="v1,v2 ports of the demo apps")
    parser.add_argument(
        "--demo-httproute", action="store_true", help="the demo routed by an HTTPRoute instead of a Route"
    )
    parser.add_argument("--url-file", required=True)
    args = parser.parse_args()
    server = ApiServer(bookmark_interval=1.0)
    server.seed(_crds())
    if args.demo:
        v1, v2 = (int(p) for p in args.demo_ports.split(","))
        count = server.seed(demo_docs(v1, v2, httproute=args.demo_httproute))
    else:
        count = server.seed(kubemesh.mesh_docs(args.services, clients=args.clients))
    url = server.start()
    Path(args.url_file).write_text(json.dumps({"url": url, "objects": count}))
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.stop()
    return 0


def demo_docs(v1: int, v2: int, *, httproute: bool = False) -> list[dict[str, Any]]:
    """The propagation benchmark's mesh: reviews v1/v2 on local ports, a frontend calling it, a 100/0 Route; or
    (``httproute``) Services reviews-v1/-v2 over the same endpoints and a 100/0 HTTPRoute attached to reviews."""
    from tests.manifests import route, service, service_over, virtual_node, workload

    docs = [
        service("reviews"),
        *workload("reviews", "v1", v1),
        *workload("reviews", "v2", v2),
        virtual_node("frontend", backends=["reviews"]),
    ]
    if not httproute:
        return [*docs, route("reviews", "reviews", {"reviews-v1": 100, "reviews-v2": 0})]
    for version, port in (("v1", v1), ("v2", v2)):
        reviews = service_over("reviews", version, port)
        reviews[0]["spec"]["selector"] = {"app": "reviews", "version": version}
        docs.extend(reviews)
    return [*docs, http_route_doc(100)]


def http_route_doc(v1_weight: int) -> dict[str, Any]:
    """The benchmark's HTTPRoute on Service reviews: ``v1_weight`` to reviews-v1, the rest to reviews-v2."""
    return http_route("reviews", "reviews", {"reviews-v1": v1_weight, "reviews-v2": 100 - v1_weight})


@contextlib.asynccontextmanager
async def kube_api(*args: str, timeout: float = 900) -> AsyncIterator[tuple[str, Path]]:
    """Starts the seeded apiserver process; yields its URL and a kubeconfig file for it."""
    workdir = Path(tempfile.mkdtemp(prefix="meshctl-bench-kube-"))
    url_file = workdir / "url.json"
    proc = await asyncio.create_subprocess_exec(
        *offcore.command("bench.kubeapi", *args, "--url-file", str(url_file)),
        stdin=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while not url_file.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark apiserver did not start")
            await asyncio.sleep(0.1)
        url = json.loads(url_file.read_text())["url"]
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(kubeconfig_for(url))
        yield url, kubeconfig
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


if __name__ == "__main__":
    sys.exit(main())
