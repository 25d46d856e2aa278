"""Who gets a workload key (issue 28): only a stream that proved its VirtualNode (an xDS client certificate naming
it) is sent its Secrets; an unauthenticated stream gets none, an impersonating one PERMISSION_DENIED and nothing,
on state-of-the-world and delta alike. No private key reaches the admin API or the logs."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest

from meshctl.controlplane.plane import ControlPlane
from meshctl.inject.pki import KeyPair, issue, new_ca, spiffe_identity
from meshctl.translate.ir import IDENTITY_SECRET, TRUST_SECRET
from meshctl.xds.envoy.types import CLUSTER, SECRET
from meshctl.xds.server.tls import XdsTls
from tests.ads_client import AdsClient
from tests.manifests import service, virtual_node, workload, write

SERVER = "meshctl.meshctl-system.svc"
NAMES = [IDENTITY_SECRET, TRUST_SECRET]


def _mesh(root: Path) -> None:
    pod, eps, vn = workload("reviews", "v1", 8080)
    vn["spec"]["listeners"][0]["tls"] = {"mode": "STRICT"}
    write(root / "mesh.yaml", service("reviews"), pod, eps, vn, virtual_node("frontend", backends=["reviews"]))


def _credentials(ca: KeyPair, client: KeyPair | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    return grpc.ssl_channel_credentials(ca.cert_pem, private_key=client.key_pem, certificate_chain=client.cert_pem)


class _Plane:
    def __init__(self, tmp_path: Path, *, mutual: bool) -> None:
        self.ca, self.clients = new_ca(), new_ca("clients")
        tls = None
        if mutual:
            pair = issue(self.ca, SERVER, dns_names=(SERVER,))
            for name, data in (
                ("xds.crt", pair.cert_pem),
                ("xds.key", pair.key_pem),
                ("clients.crt", self.clients.cert_pem),
            ):
                (tmp_path / name).write_bytes(data)
            tls = XdsTls(tmp_path / "xds.crt", tmp_path / "xds.key", tmp_path / "clients.crt")
        root = tmp_path / "mesh"
        root.mkdir()
        _mesh(root)
        self.plane = ControlPlane.from_manifests(root, xds_tls=tls)
        self.mutual = mutual

    def client(self, node: str, vn: str, identity: str | None, *, sa: str = "reviews") -> AdsClient:
        if not self.mutual:
            ads = AdsClient(self.plane.xds_port, node, vn)
        else:
            pair = issue(self.clients, "c", uris=(identity,), client=True) if identity else None
            ads = AdsClient(self.plane.xds_port, node, vn, credentials=_credentials(self.ca, pair), server_name=SERVER)
        ads.node.metadata.fields["meshctl.service_account"].string_value = sa
        return ads


async def refused(ads: AdsClient) -> None:
    """The stream asks for its secrets and is refused (PERMISSION_DENIED) before anything is sent."""
    await ads.send(SECRET, NAMES)
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await ads.recv(timeout=10)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    await ads.close()


async def delta_refused(
    channel: grpc.aio.Channel, vn: str, *, sa: str = "", metadata: tuple[tuple[str, str], ...] | None = None
) -> None:
    """A delta stream for ``vn``'s secrets is refused (PERMISSION_DENIED) and sent nothing."""
    first = DeltaDiscoveryRequest(type_url=SECRET, resource_names_subscribe=NAMES)
    first.node.id, first.node.cluster = f"{vn}/pod-1", vn
    if sa:
        first.node.metadata.fields["meshctl.service_account"].string_value = sa
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources(
        iter([first]), metadata=metadata
    )
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        async for resp in call:
            received.append(resp)
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED and received == []


async def _secrets(ads: AdsClient) -> list[Secret]:
    await ads.send(SECRET, NAMES)
    resp = await ads.recv(timeout=10)
    assert resp.type_url == SECRET
    return [Secret.FromString(r.value) for r in resp.resources]


async def test_a_proven_stream_gets_its_identity_and_nothing_leaks(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    p = _Plane(tmp_path, mutual=True)
    async with p.plane as plane:
        await plane.wait_synced()
        ads = p.client("demo/reviews-v1/pod-0", "demo/reviews-v1", spiffe_identity("demo", "reviews-v1"))
        secrets = {s.name: s for s in await _secrets(ads)}
        assert set(secrets) == set(NAMES)
        key_pem = secrets[IDENTITY_SECRET].tls_certificate.private_key.inline_bytes
        assert b"PRIVATE KEY" in key_pem
        leaf = x509.load_pem_x509_certificates(secrets[IDENTITY_SECRET].tls_certificate.certificate_chain.inline_bytes)[
            0
        ]
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://meshctl.local/ns/demo/sa/reviews"]
        assert b"CERTIFICATE" in secrets[TRUST_SECRET].validation_context.trusted_ca.inline_bytes

        # The admin API shows the secrets redacted, names the identity each proxy proved, and holds no key.
        import aiohttp

        base = f"http://127.0.0.1:{plane.admin_port}"
        key_body = b"".join(key_pem.split(b"\n")[1:-2])  # the base64 lines of the key
        async with aiohttp.ClientSession() as session:
            bodies = []
            for path in ("/api/v1/config_dump", "/api/v1/proxies", "/api/v1/status", "/metrics", "/api/v1/identities"):
                async with session.get(base + path) as r:
                    assert r.status == 200, path
                    bodies.append(await r.read())
        dump = bodies[0]
        assert b"[redacted]" in dump and b"meshctl-identity" in dump
        for body in bodies:
            assert b"PRIVATE KEY" not in body and key_body[:40] not in body
        assert b'"identity": "spiffe://meshctl/ns/demo/vn/reviews-v1"' in bodies[1]
        assert b"spiffe://meshctl.local/ns/demo/sa/reviews" in bodies[4]
        assert b"PRIVATE KEY" not in caplog.text.encode() and key_body[:40] not in caplog.text.encode()

        cli = [sys.executable, "-m", "meshctl", "get", "identities", "--admin", base]
        done = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "spiffe://meshctl.local/ns/demo/sa/reviews" in done.stdout, done
        done = await asyncio.to_thread(subprocess.run, [*cli, "-o", "json"], capture_output=True, text=True, timeout=60)
        (item,) = json.loads(done.stdout)["identities"]
        assert item["serviceAccount"] == "reviews" and item["issuer"] == "meshctl CA"
        await ads.close()


async def test_an_unauthenticated_stream_is_sent_no_secret(tmp_path) -> None:
    p = _Plane(tmp_path, mutual=False)
    async with p.plane as plane:
        await plane.wait_synced()
        ads = p.client("demo/reviews-v1/pod-0", "demo/reviews-v1", None)
        assert await _secrets(ads) == []
        await ads.send(CLUSTER)  # the rest of its config is still served
        assert (await ads.recv(timeout=10)).resources
        await ads.close()


async def test_impersonation_gets_permission_denied_and_nothing_sotw_and_delta(tmp_path) -> None:
    p = _Plane(tmp_path, mutual=True)
    async with p.plane as plane:
        await plane.wait_synced()
        other_namespace = spiffe_identity("shop", "reviews-v1")
        await refused(p.client("demo/reviews-v1/pod-0", "demo/reviews-v1", other_namespace))
        # Another service account than the certificate names: also refused.
        await refused(
            p.client("demo/reviews-v1/pod-0", "demo/reviews-v1", "spiffe://meshctl/ns/demo/sa/web", sa="reviews")
        )

        pair = issue(p.clients, "c", uris=(other_namespace,), client=True)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{plane.xds_port}", _credentials(p.ca, pair), options=[("grpc.ssl_target_name_override", SERVER)]
        )
        await delta_refused(channel, "demo/reviews-v1")
        await channel.close()
        assert len(await asyncio.wait_for(_proxies(plane), 10)) == 0


async def _proxies(plane: ControlPlane) -> list:
    return list(plane.registry.streams())


async def test_an_unauthenticated_stream_gets_the_secrets_that_only_name_its_files(tmp_path) -> None:
    """App Mesh's ``file`` sources are SDS secrets naming files on the proxy (so Envoy watches them): no key is in
    them, so even a stream that proved nothing gets those, and still none of the mesh CA's."""
    root = tmp_path / "mesh"
    root.mkdir()
    pod, eps, vn = workload("reviews", "v1", 8080)
    vn["spec"]["listeners"][0]["tls"] = {
        "mode": "STRICT",
        "certificate": {"file": {"certificateChain": "/certs/tls.crt", "privateKey": "/certs/tls.key"}},
    }
    write(root / "mesh.yaml", service("reviews"), pod, eps, vn)
    files = "file:/certs/tls.crt|/certs/tls.key"
    async with ControlPlane.from_manifests(root) as plane:
        await plane.wait_synced()
        ads = AdsClient(plane.xds_port, "demo/reviews-v1/pod-0", "demo/reviews-v1")
        await ads.send(SECRET, [files, IDENTITY_SECRET, TRUST_SECRET])
        resp = await ads.recv(timeout=10)
        (secret,) = [Secret.FromString(r.value) for r in resp.resources]
        assert secret.name == files
        assert secret.tls_certificate.certificate_chain.filename == "/certs/tls.crt"
        assert secret.tls_certificate.private_key.filename == "/certs/tls.key"
        assert secret.tls_certificate.watched_directory.path == "/certs"
        await ads.close()
