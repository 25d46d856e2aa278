"""`meshctl serve --kubernetes --ingress` as users run it: a process, with the standard AWS settings pointing at
moto, the test apiserver's kubeconfig, and `meshctl get ingresses` reading the result. Killed with SIGKILL part way
through its first pass and started again, it ends in the same state with nothing duplicated or orphaned."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from meshctl.devtools.envoy_process import free_port
from tests.apiserver import kubeconfig_for
from tests.conftest import eventually
from tests.e2e.test_ingress import EXPECTED, SHOP, _state, certificate
from tests.ingress_fixtures import shop_documents
from tests.ingress_harness import Harness

MESHCTL = [sys.executable, "-m", "meshctl"]


async def _serve(h: Harness, kubeconfig: Path, admin: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *MESHCTL,
        "serve",
        "--kubernetes",
        "--kubeconfig",
        str(kubeconfig),
        "--ingress",
        "--cluster-name",
        "test",
        "--xds-port",
        str(free_port()),
        "--admin-port",
        str(admin),
        env={**os.environ, **h.moto.env()},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _get_ingresses(admin: int) -> tuple[int, dict]:
    proc = await asyncio.create_subprocess_exec(
        *MESHCTL,
        "get",
        "ingresses",
        "-o",
        "json",
        "--admin",
        f"http://127.0.0.1:{admin}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, json.loads(out) if out else {}


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


async def test_serve_reconciles_survives_sigkill_and_shows_it(apiserver, moto, tmp_path: Path):
    h = Harness(apiserver, moto)
    h.seed(shop_documents(certificate(h)))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(apiserver.url))
    admin = free_port()
    first = await _serve(h, kubeconfig, admin)
    try:
        # Killed as soon as it has started creating: somewhere in its first pass.
        await eventually(lambda: len(h.target_groups()) >= 1, timeout=30, interval=0.01)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    second = await _serve(h, kubeconfig, admin)
    try:

        async def done() -> bool:
            code, data = await _get_ingresses(admin)
            groups = data.get("items", [{}])[0].get("targetGroups", []) if code == 0 and data.get("items") else []
            return len(groups) == 4 and all(g["registered"] is not None for g in groups)

        await eventually(done, timeout=60, interval=0.2)
        assert _state(h) == EXPECTED
        code, data = await _get_ingresses(admin)
        assert code == 0
        (item,) = data["items"]
        (alb,) = h.balancers()
        assert item["loadBalancer"]["dnsName"] == alb["DNSName"] and item["error"] is None
        assert item["loadBalancer"]["securityGroups"] == alb["SecurityGroups"] and len(alb["SecurityGroups"]) == 2
        web = next(g for g in item["targetGroups"] if g["resourceId"] == "shop/shop-web:80")
        assert (web["registered"], web["healthy"]) == (2, 2)

        # The web view's graph: the ALB enters the mesh at the Services its target groups send to.
        graph = json.loads(await asyncio.to_thread(_read, f"http://127.0.0.1:{admin}/api/v1/graph"))
        (lb,) = [n for n in graph["nodes"] if n["kind"] == "LoadBalancer"]
        assert lb["name"] == alb["LoadBalancerName"] and alb["DNSName"] in lb["detail"] and lb["column"] == 0
        entered = {e["to"]: (e["label"], e["health"]) for e in graph["edges"] if e["from"] == lb["id"]}
        assert entered == {
            "Service/shop/web": (":80 2/2 healthy", "healthy"),
            **{f"Service/shop/{s}": (":80 1/1 healthy", "healthy") for s in ("checkout-v1", "checkout-v2", "orders")},
        }

        await h.start()  # the cluster's view: hostname in status, our finalizer
        model = await h.model_where(lambda m: m.ingresses[SHOP].lifecycle.hostnames == (alb["DNSName"],), timeout=30)
        assert "ingress.meshctl.dev/resources" in model.ingresses[SHOP].lifecycle.finalizers

        proc = await asyncio.create_subprocess_exec(
            *MESHCTL, "get", "ingresses", "--admin", f"http://127.0.0.1:{admin}", stdout=asyncio.subprocess.PIPE
        )
        table, _ = await proc.communicate()
        assert alb["DNSName"] in table.decode() and "2/2" in table.decode()
        metrics = await asyncio.to_thread(
            lambda: __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
        )
        assert 'meshctl_ingress_aws_calls_total{operation="CreateLoadBalancer"}' in metrics
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
        await h.stop()
