"""xDS over TLS with a real Envoy: the bootstrap makes it verify the control plane's certificate, and with mutual
TLS the control plane checks the proxy's certificate and the VirtualNode it names."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import EnvoyProcess, free_port
from meshctl.inject.pki import KeyPair, issue, new_ca, spiffe_identity
from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap
from meshctl.xds.envoy.types import CLUSTER
from meshctl.xds.server.tls import XdsTls
from tests.ads_client import AdsClient
from tests.conftest import Mesh, Sidecar, eventually
from tests.manifests import route, service, virtual_node, workload, write

SERVER_NAME = "meshctl.meshctl-system.svc"


def _files(directory: Path, name: str, pair: KeyPair) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    return cert, key


async def _mesh(
    mesh_factory, tmp_path: Path, *, client_ca: KeyPair | None = None, ip_san: bool = False
) -> tuple[Mesh, KeyPair]:
    ca = new_ca()
    serving = (
        issue(ca, "127.0.0.1", ip_addresses=("127.0.0.1",))
        if ip_san
        else issue(ca, SERVER_NAME, dns_names=(SERVER_NAME,))
    )
    cert, key = _files(tmp_path, "xds", serving)
    client_ca_file = None
    if client_ca is not None:
        client_ca_file = tmp_path / "client-ca.crt"
        client_ca_file.write_bytes(client_ca.cert_pem)
    m: Mesh = await mesh_factory()
    _, port = await m.app("v1")
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", port),
        virtual_node("frontend", backends=["reviews"]),
    )
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100}))
    m.plane = ControlPlane.from_manifests(m.dir, xds_tls=XdsTls(cert, key, client_ca_file))
    await m.start()
    return m, ca


async def _envoy(
    m: Mesh, ca_pem: bytes, *, client: tuple[Path, Path] | None = None, server_name: str | None = SERVER_NAME
) -> Sidecar:
    egress = free_port()
    options = BootstrapOptions(
        node_id="demo/frontend/pod-0",
        xds_port=m.plane.xds_port,
        admin_port=0,
        stats_port=None,
        egress_port=egress,
        ingress_port=free_port(),
        bind_address="127.0.0.1",
        xds_ca_pem=ca_pem.decode(),
        xds_server_name=server_name,
        xds_client_cert=str(client[0]) if client else None,
        xds_client_key=str(client[1]) if client else None,
    )
    envoy = EnvoyProcess(render_bootstrap(options), name="tls-envoy")
    await envoy.start()
    m._envoys.append(envoy)
    return Sidecar(envoy, egress, 0)


def _xds_stat(envoy: EnvoyProcess, suffix: str) -> int:
    return envoy.stats().get(f"cluster.meshctl-xds.{suffix}", 0)


async def _refused(m: Mesh, sidecar: Sidecar, stat: str) -> None:
    """Envoy counted failed connections and never became a connected proxy (the one allowed proxy stays alone)."""
    await eventually(lambda: _xds_stat(sidecar.envoy, stat) >= 2, timeout=20)
    assert not sidecar.envoy.ready()
    assert len((await m.admin("/api/v1/proxies"))["proxies"]) == 1


async def test_envoy_verifies_the_control_plane_and_refuses_a_certificate_of_another_ca(mesh_factory, tmp_path):
    m, ca = await _mesh(mesh_factory, tmp_path)
    good = await _envoy(m, ca.cert_pem)
    await eventually(good.envoy.ready, timeout=30)
    await m.wait_routable(good, "reviews")
    assert _xds_stat(good.envoy, "upstream_cx_total") >= 1 and _xds_stat(good.envoy, "ssl.handshake") >= 1

    wrong = await _envoy(m, new_ca("someone else").cert_pem)
    await eventually(lambda: _xds_stat(wrong.envoy, "ssl.fail_verify_error") >= 2, timeout=20)
    assert not wrong.envoy.ready()
    assert [p["node_id"] for p in (await m.admin("/api/v1/proxies"))["proxies"]] == ["demo/frontend/pod-0"]
    assert _xds_stat(wrong.envoy, "ssl.handshake") == 0


async def test_an_address_is_matched_against_the_certificate_s_ip_san(mesh_factory, tmp_path):
    """--xds-address 127.0.0.1 (the default) and a control-plane certificate for that address, as a CA issues it
    (an IP SAN): Envoy connects. It was matched as a DNS name and refused (CERTIFICATE_UNKNOWN)."""
    m, ca = await _mesh(mesh_factory, tmp_path, ip_san=True)
    sidecar = await _envoy(m, ca.cert_pem, server_name=None)
    await eventually(sidecar.envoy.ready, timeout=30)
    await m.wait_routable(sidecar, "reviews")
    assert _xds_stat(sidecar.envoy, "ssl.handshake") >= 1


async def test_mutual_tls_needs_a_certificate_of_the_client_ca_naming_the_virtual_node(mesh_factory, tmp_path):
    clients = new_ca("meshctl clients")
    m, ca = await _mesh(mesh_factory, tmp_path, client_ca=clients)
    allowed = _files(
        tmp_path, "frontend", issue(clients, "frontend", uris=(spiffe_identity("demo", "frontend"),), client=True)
    )
    sidecar = await _envoy(m, ca.cert_pem, client=allowed)
    await eventually(sidecar.envoy.ready, timeout=30)
    await m.wait_routable(sidecar, "reviews")

    # No client certificate: the handshake fails, Envoy never streams.
    await _refused(m, await _envoy(m, ca.cert_pem), "upstream_cx_connect_fail")
    # A client certificate from another CA: the same.
    stranger = _files(
        tmp_path, "stranger", issue(new_ca("x"), "f", uris=(spiffe_identity("demo", "frontend"),), client=True)
    )
    await _refused(m, await _envoy(m, ca.cert_pem, client=stranger), "upstream_cx_connect_fail")

    # A valid certificate for another namespace may not stream as demo/frontend: PERMISSION_DENIED.
    other = _files(tmp_path, "other", issue(clients, "other", uris=(spiffe_identity("shop", "frontend"),), client=True))
    intruder = await _envoy(m, ca.cert_pem, client=other)
    await eventually(lambda: m.plane.xds_metrics.refused_streams >= 2, timeout=20)
    assert not intruder.envoy.ready()
    assert len((await m.admin("/api/v1/proxies"))["proxies"]) == 1

    # A gRPC client with no certificate at all cannot even open the stream.
    bare = AdsClient(
        m.plane.xds_port,
        "demo/frontend/x",
        "demo/frontend",
        credentials=grpc.ssl_channel_credentials(root_certificates=ca.cert_pem),
        server_name=SERVER_NAME,
    )
    await bare.send(CLUSTER)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await bare.recv(timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    await bare.close()
