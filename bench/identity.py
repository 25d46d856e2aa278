"""Benchmark 10: workload identities (issue 28).

- **Issue**: 1,000 workload certificates (a fresh ECDSA P-256 key and a certificate each): wall time and CPU time,
  and the memory each identity holds in the keeper (its certificate chain and key).
- **Rotation wave**: 1,000 proxies, each its own identity and node group, connected over mutual TLS from another
  process (``bench/sdsload.py``) and holding their secrets; then the signing CA changes (``meshctl ca rotate --stage
  sign``), so every identity is issued again and sent: the time until every proxy holds its new certificate, and
  the serving loop's longest gap meanwhile (5 ms ticker), the control plane pinned to the first core.
"""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml

from bench import sdsload
from bench.common import Ticker, pinned_to_first_core, table
from meshctl.controlplane.plane import ControlPlane
from meshctl.identity.ca import MeshCA
from meshctl.identity.keeper import IdentityKeeper
from meshctl.inject.pki import issue, new_ca
from meshctl.xds.server.tls import XdsTls
from tests.manifests import service, workload

NS = "bench"


def issue_rows(count: int) -> list[list[object]]:
    keeper = IdentityKeeper(MeshCA.generate())
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        keeper.certificate((NS, f"svc-{i}"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return [[f"issue {count} workload certificates", f"{wall:.2f} s", f"{cpu:.2f} s", f"{held / count / 1024:.1f} KiB"]]


def _write_mesh(root: Path, n: int) -> None:
    for i in range(n):
        pod, eps, vn = workload(f"svc-{i}", "v1", 8080, ns=NS)
        vn["metadata"]["name"] = f"svc-{i}"
        vn["spec"]["listeners"][0]["tls"] = {"mode": "STRICT"}
        (root / f"svc-{i}.yaml").write_text(yaml.safe_dump_all([service(f"svc-{i}", NS), pod, eps, vn]))


def _files(root: Path) -> tuple[XdsTls, Path]:
    ca, clients = new_ca(), new_ca("clients")
    server = issue(ca, sdsload.SERVER_NAME, dns_names=(sdsload.SERVER_NAME,))
    client = issue(clients, "bench", uris=(f"spiffe://meshctl/ns/{NS}",), client=True)
    certs = root / "certs"
    certs.mkdir()
    for name, data in (
        ("ca.crt", ca.cert_pem),
        ("server.crt", server.cert_pem),
        ("server.key", server.key_pem),
        ("clients.crt", clients.cert_pem),
        ("client.crt", client.cert_pem),
        ("client.key", client.key_pem),
    ):
        (certs / name).write_bytes(data)
    return XdsTls(certs / "server.crt", certs / "server.key", certs / "clients.crt"), certs


async def _held(plane: ControlPlane, streams: int, version: dict[str, str] | None, timeout: float) -> dict[str, str]:
    """Waits until every stream ACKed an SDS version with both secrets (other than ``version``'s); returns them."""
    deadline = time.monotonic() + timeout
    while True:
        now = {}
        for s in plane.registry.streams():
            st = s.types[sdsload.SECRET]
            if (
                not st.inflight
                and len(st.acked) == 2
                and (version is None or st.acked_version != version.get(s.node_id))
            ):
                now[s.node_id] = st.acked_version
        if len(now) == streams:
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(now)} of {streams} streams hold their secrets")
        await asyncio.sleep(0.01)


async def wave_rows(streams: int) -> list[list[object]]:
    root = Path(tempfile.mkdtemp(prefix="meshctl-bench-identity-"))
    mesh = root / "mesh"
    mesh.mkdir()
    _write_mesh(mesh, streams)
    tls, certs = _files(root)
    with pinned_to_first_core():
        plane = ControlPlane.from_manifests(mesh, xds_tls=tls)
        await plane.start()
        load = None
        try:
            await plane.wait_synced()
            started = time.monotonic()
            load = await sdsload.spawn(plane.xds_port, streams, certs, root / "records.json")
            first = await _held(plane, streams, None, timeout=300)
            connected = time.monotonic() - started
            ticker = Ticker()
            ticker.start()
            await asyncio.sleep(0.2)
            new_ca = MeshCA.generate()
            began = time.monotonic()
            await plane.controller.rotate_signer(new_ca)
            await _held(plane, streams, first, timeout=300)
            took = time.monotonic() - began
            longest, p99 = ticker.longest(began, time.monotonic())
            ticker.stop()
        finally:
            if load is not None:
                load.send_signal(signal.SIGTERM)
                await load.wait()
            await plane.stop()
    records = json.loads((root / "records.json").read_text()) if (root / "records.json").exists() else []
    return [
        [f"{streams} proxies connect and hold their identity", f"{connected:.2f} s", "", ""],
        [
            f"rotation wave: {streams} identities issued again and sent ({len(records)} SDS responses in all)",
            f"{took:.2f} s",
            "",
            f"loop gap longest {1e3 * longest:.1f} ms, p99 {1e3 * p99:.1f} ms",
        ],
    ]


def run(count: int = 1000, streams: int = 1000) -> str:
    rows = issue_rows(count) + asyncio.run(wave_rows(streams))
    return table(["what", "wall", "CPU", "per identity / loop"], rows)


if __name__ == "__main__":
    print(run())
