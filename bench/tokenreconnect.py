"""Benchmark 11: proxies that prove themselves with a token, back after a control-plane restart (issue 28).

In a cluster each sidecar sends its projected ServiceAccount token through Envoy's Google gRPC client (file-based
call credentials), whose reconnect back-off is the channel's, not the Envoy-gRPC client's. Real Envoys (each its
own token, checked with TokenReview against the test apiserver), connected and holding their secrets; then the
control plane stops and starts again on the same port: the time from its start until every proxy's stream is back
and proven, over several restarts.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import percentile, table
from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import EnvoyProcess, free_port
from meshctl.inject.pki import issue, new_ca
from meshctl.kube.reviews import XdsTokenReviewer
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap
from meshctl.xds.server.tls import XdsTls
from tests.apiserver import ApiServer
from tests.e2e.test_kubernetes import create
from tests.manifests import service, workload
from tests.test_apiserver import install_crds

SERVER = "meshctl.meshctl-system.svc"
PROXIES = 8
RESTARTS = 5


async def _until(check, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)


async def _measure(root: Path, proxies: int, restarts: int) -> list[float]:
    apiserver = ApiServer(bookmark_interval=0.2)
    apiserver.start()
    api = apiserver.client()
    install_crds(api)
    pod, eps, vn = workload("reviews", "v1", 8080)
    vn["spec"]["listeners"][0]["tls"] = {"mode": "STRICT"}
    for doc in (service("reviews"), pod, eps, vn):
        create(api, doc)
    ca = new_ca()
    pair = issue(ca, SERVER, dns_names=(SERVER,))
    (root / "xds.crt").write_bytes(pair.cert_pem)
    (root / "xds.key").write_bytes(pair.key_pem)
    port = free_port()

    def plane() -> ControlPlane:
        return ControlPlane(
            KubernetesSource(apiserver.controller_client()),
            xds_port=port,
            xds_tls=XdsTls(root / "xds.crt", root / "xds.key"),
            xds_token_auth=XdsTokenReviewer(apiserver.controller_client()),
        )

    envoys = []
    for i in range(proxies):
        token = root / f"token-{i}"
        token.write_text(apiserver.issue_token("system:serviceaccount:demo:reviews", audiences=("meshctl",)))
        options = BootstrapOptions(
            node_id=f"demo/reviews-v1/pod-{i}",
            xds_port=port,
            admin_port=0,
            stats_port=None,
            egress_port=free_port(),
            ingress_port=free_port(),
            bind_address="127.0.0.1",
            xds_ca_pem=ca.cert_pem.decode(),
            xds_server_name=SERVER,
            xds_token_file=str(token),
            service_account="reviews",
        )
        envoys.append(EnvoyProcess(render_bootstrap(options), name=f"token-{i}"))
    current = plane()
    await current.start()
    gaps: list[float] = []
    try:
        await asyncio.gather(*(e.start() for e in envoys))
        await _until(lambda: len(current.registry.streams()) == proxies, 60)
        for _ in range(restarts):
            await current.stop()
            current = plane()
            started = time.monotonic()
            await current.start()
            await _until(lambda plane=current: _proven(plane) == proxies, 60)
            gaps.append(time.monotonic() - started)
    finally:
        await asyncio.gather(*(e.stop() for e in envoys))
        await current.stop()
        apiserver.stop()
    return gaps


def _proven(plane: ControlPlane) -> int:
    return len([s for s in plane.registry.streams() if s.proven_identity])


def run(proxies: int = PROXIES, restarts: int = RESTARTS) -> str:
    with tempfile.TemporaryDirectory(prefix="meshctl-bench-token-") as tmp:
        gaps = asyncio.run(_measure(Path(tmp), proxies, restarts))
    rows = [[proxies, restarts, f"{min(gaps):.2f} s", f"{percentile(gaps, 50):.2f} s", f"{max(gaps):.2f} s"]]
    return table(["real Envoys (token auth)", "restarts", "all back: fastest", "median", "slowest"], rows)
