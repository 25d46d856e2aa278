"""What injection asks of the cluster, against the test apiserver with the real client: the certificate Secret two
replicas share (created once, renewed only by the leader, the webhook's caBundle kept), and the server version that
decides native sidecars."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

import pytest
from kubernetes import client

from meshctl.cli.injection import native_sidecars_supported
from meshctl.inject.certificate_keeper import CertificateKeeper
from meshctl.inject.pki import KeyPair, issue, needs_renewal, new_ca
from meshctl.inject.tlsfiles import TlsDir
from meshctl.kube.install_manifests import InstallOptions, render
from tests.apiserver import ApiServer

NS, SECRET, WEBHOOK = "meshctl-system", "meshctl-tls", "meshctl-sidecar-injector"
NAMES = ("meshctl.meshctl-system.svc", "meshctl.meshctl-system.svc.cluster.local")


def _keeper(apiserver: ApiServer, directory: Path, *, leader: bool) -> CertificateKeeper:
    return CertificateKeeper(
        apiserver.controller_client(),
        NS,
        SECRET,
        NAMES,
        TlsDir(directory),
        webhook_config=WEBHOOK,
        is_leader=lambda: leader,
    )


def _secret(apiserver: ApiServer) -> tuple[str, dict[str, bytes]]:
    secret = client.CoreV1Api(apiserver.client()).read_namespaced_secret(SECRET, NS)
    return secret.metadata.resource_version, {k: base64.b64decode(v) for k, v in secret.data.items()}


def _ca_bundle(apiserver: ApiServer) -> bytes | None:
    config = client.AdmissionregistrationV1Api(apiserver.client()).read_mutating_webhook_configuration(WEBHOOK)
    bundle = config.webhooks[0].client_config.ca_bundle
    return base64.b64decode(bundle) if bundle else None


@pytest.fixture
def cluster(apiserver: ApiServer) -> ApiServer:
    (webhook,) = [d for d in render(InstallOptions()) if d["kind"] == "MutatingWebhookConfiguration"]
    assert webhook["metadata"]["name"] == WEBHOOK
    apiserver.seed([webhook])
    return apiserver


def test_two_replicas_share_one_secret_and_only_the_leader_sets_the_ca_bundle(cluster: ApiServer, tmp_path: Path):
    follower = _keeper(cluster, tmp_path / "b", leader=False)
    follower.sync()  # first to start: creates the Secret, but leaves the webhook to the leader
    version, data = _secret(cluster)
    assert _ca_bundle(cluster) is None
    leader = _keeper(cluster, tmp_path / "a", leader=True)
    leader.sync()
    assert _secret(cluster) == (version, data)  # read, not created again nor renewed
    assert _ca_bundle(cluster) == data["ca.crt"]
    for directory in ("a", "b"):
        for name in ("tls.crt", "tls.key", "ca.crt"):
            assert (tmp_path / directory / name).read_bytes() == data[name]
    seen = len(cluster.calls)
    leader.sync()  # nothing to do: no write
    assert [c.verb for c in cluster.calls[seen:]] == ["get", "get"]  # the Secret, the webhook configuration


def test_a_certificate_past_half_its_life_is_renewed_by_the_leader_alone(cluster: ApiServer, tmp_path: Path):
    ca = new_ca("meshctl")
    old = issue(ca, NAMES[0], dns_names=NAMES, now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=50))
    assert needs_renewal(old.cert_pem)
    data = {"tls.crt": old.cert_pem, "tls.key": old.key_pem, "ca.crt": ca.cert_pem, "ca.key": ca.key_pem}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }
    cluster.seed([secret])
    before, _ = _secret(cluster)

    _keeper(cluster, tmp_path / "b", leader=False).sync()
    assert _secret(cluster)[0] == before  # a follower copies what is there, even if old
    assert (tmp_path / "b" / "tls.crt").read_bytes() == old.cert_pem

    leader = _keeper(cluster, tmp_path / "a", leader=True)
    leader.sync()
    after, renewed = _secret(cluster)
    assert after != before and not needs_renewal(renewed["tls.crt"])
    assert renewed["ca.crt"] == ca.cert_pem  # same CA: sidecars keep trusting it
    assert (tmp_path / "a" / "tls.crt").read_bytes() == renewed["tls.crt"]
    assert _ca_bundle(cluster) == ca.cert_pem
    KeyPair(renewed["tls.crt"], renewed["tls.key"]).cert  # noqa: B018 - parses


@pytest.mark.parametrize(
    ("version", "native"),
    [
        ({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}, True),
        ({"major": "1", "minor": "28+", "gitVersion": "v1.28.15-eks-1"}, False),  # EKS spells minors like this
        ({"major": "1", "minor": "29"}, True),
        ({}, False),
    ],
)
def test_native_sidecars_follow_the_server_version_whatever_fields_it_sends(apiserver: ApiServer, version, native):
    apiserver.version = version
    assert native_sidecars_supported(apiserver.controller_client()) is native
