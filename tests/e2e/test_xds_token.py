"""Proxies prove who they are in a cluster (issue 28): each xDS stream carries the pod's projected ServiceAccount
token (audience ``meshctl``), checked with TokenReview against our test apiserver. A real Envoy sends it from a
file through its Google gRPC client (re-read for each new stream: a rotated token is used after a reconnect); a
stream with no token, a token of another audience, or one that claims another namespace or service account gets
PERMISSION_DENIED and nothing, over SotW and delta."""

from __future__ import annotations

from pathlib import Path

import grpc

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import EnvoyProcess, free_port
from meshctl.inject.pki import issue, new_ca
from meshctl.kube.reviews import XdsTokenReviewer
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.translate.ir import IDENTITY_SECRET, TRUST_SECRET
from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap
from meshctl.xds.envoy.types import SECRET
from meshctl.xds.server.tls import XdsTls
from tests.ads_client import AdsClient
from tests.conftest import eventually
from tests.e2e.test_kubernetes import cluster_with
from tests.e2e.test_workload_secrets import delta_refused, refused
from tests.manifests import service, virtual_node, workload

SERVER = "meshctl.meshctl-system.svc"


def _docs() -> list[dict]:
    pod, eps, vn = workload("reviews", "v1", 8080)
    vn["spec"]["listeners"][0]["tls"] = {"mode": "STRICT"}
    return [service("reviews"), pod, eps, vn, virtual_node("frontend", backends=["reviews"])]


class _Setup:
    def __init__(self, apiserver, tmp_path: Path) -> None:
        self.apiserver, self.tmp = apiserver, tmp_path
        self.ca = new_ca()
        pair = issue(self.ca, SERVER, dns_names=(SERVER,))
        (tmp_path / "xds.crt").write_bytes(pair.cert_pem)
        (tmp_path / "xds.key").write_bytes(pair.key_pem)
        self.port = free_port()

    def plane(self) -> ControlPlane:
        return ControlPlane(
            KubernetesSource(self.apiserver.controller_client()),
            xds_port=self.port,
            xds_tls=XdsTls(self.tmp / "xds.crt", self.tmp / "xds.key"),
            xds_token_auth=XdsTokenReviewer(self.apiserver.controller_client()),
        )

    def token(self, namespace: str, account: str, audience: str = "meshctl", pod: str | None = None) -> str:
        user = f"system:serviceaccount:{namespace}:{account}"
        return self.apiserver.issue_token(user, audiences=(audience,), pod=pod)

    def client(self, vn: str, sa: str, token: str | None, pod: str = "pod-0") -> AdsClient:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        ads = AdsClient(
            self.port,
            f"{vn}/{pod}",
            vn,
            credentials=grpc.ssl_channel_credentials(self.ca.cert_pem),
            server_name=SERVER,
            metadata=metadata,
        )
        ads.node.metadata.fields["meshctl.service_account"].string_value = sa
        return ads


async def test_a_stream_proves_its_service_account_and_nothing_else_gets_through(apiserver, tmp_path: Path):
    s = _Setup(apiserver, tmp_path)
    await cluster_with(apiserver, _docs())
    async with s.plane() as plane:
        await plane.wait_synced()
        good = s.client("demo/reviews-v1", "reviews", s.token("demo", "reviews"))
        await good.send(SECRET, [IDENTITY_SECRET, TRUST_SECRET])
        assert len((await good.recv(timeout=10)).resources) == 2  # its workload identity
        (proxy,) = plane.registry.streams()
        assert proxy.proven_identity == "system:serviceaccount:demo:reviews"
        await good.close()

        await refused(s.client("demo/reviews-v1", "reviews", None))  # no token
        await refused(s.client("demo/reviews-v1", "reviews", "made-up"))  # not a token TokenReview accepts
        await refused(s.client("demo/reviews-v1", "reviews", s.token("demo", "reviews", audience="other")))
        await refused(s.client("demo/reviews-v1", "reviews", s.token("shop", "reviews")))  # another namespace
        await refused(s.client("demo/reviews-v1", "web", s.token("demo", "reviews")))  # another service account
        assert plane.xds_metrics.refused_streams == 5

        # Delta: no token, and another namespace's token claiming this VirtualNode: the same.
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{s.port}",
            grpc.ssl_channel_credentials(s.ca.cert_pem),
            options=[("grpc.ssl_target_name_override", SERVER)],
        )
        for token in (None, s.token("shop", "reviews")):
            metadata = (("authorization", f"Bearer {token}"),) if token else None
            await delta_refused(channel, "demo/reviews-v1", sa="reviews", metadata=metadata)
        await channel.close()


async def test_envoy_sends_its_token_file_and_a_rotated_token_after_a_reconnect(apiserver, tmp_path: Path):
    s = _Setup(apiserver, tmp_path)
    await cluster_with(apiserver, _docs())
    token_file = tmp_path / "token"
    first = s.token("demo", "reviews")
    token_file.write_text(first)
    options = BootstrapOptions(
        node_id="demo/reviews-v1/pod-0",
        xds_port=s.port,
        admin_port=0,
        stats_port=None,
        egress_port=free_port(),
        ingress_port=free_port(),
        bind_address="127.0.0.1",
        xds_ca_pem=s.ca.cert_pem.decode(),
        xds_server_name=SERVER,
        xds_token_file=str(token_file),
        service_account="reviews",
    )
    envoy = EnvoyProcess(render_bootstrap(options), name="token-envoy")
    plane = s.plane()
    await plane.start()
    try:
        await envoy.start()
        await eventually(envoy.ready, timeout=30)
        (proxy,) = plane.registry.streams()
        assert proxy.proven_identity == "system:serviceaccount:demo:reviews"
        await eventually(lambda: len(proxy.types[SECRET].acked) == 2, timeout=30)  # its STRICT listener's secrets

        # The kubelet rotates the token; the old one stops being valid. After a control-plane restart Envoy
        # reconnects with the file's new content, or it would be refused.
        second = s.token("demo", "reviews")
        token_file.write_text(second)
        apiserver.revoke_token(first)
        await plane.stop()
        plane = s.plane()
        await plane.start()
        await eventually(lambda: len(list(plane.registry.streams())) == 1, timeout=30)
        (proxy,) = plane.registry.streams()
        assert proxy.proven_identity == "system:serviceaccount:demo:reviews"
        assert plane.xds_metrics.refused_streams == 0
    finally:
        await envoy.stop()
        await plane.stop()


async def test_a_pod_bound_token_may_stream_only_as_its_pod_and_a_virtual_node_selecting_it(apiserver, tmp_path):
    """A projected token names its pod (TokenReview's user.extra): the node id must name that pod, the pod must
    exist and the claimed VirtualNode must select it, or PERMISSION_DENIED."""
    s = _Setup(apiserver, tmp_path)
    docs = _docs()
    docs[-1]["spec"]["podSelector"] = {"matchLabels": {"app": "frontend"}}
    await cluster_with(apiserver, docs)
    token = s.token("demo", "reviews", pod="reviews-v1-0")  # tests.manifests.workload's pod
    async with s.plane() as plane:
        await plane.wait_synced()
        good = s.client("demo/reviews-v1", "reviews", token, pod="reviews-v1-0")
        await good.send(SECRET, [IDENTITY_SECRET, TRUST_SECRET])
        assert len((await good.recv(timeout=10)).resources) == 2
        await good.close()

        await refused(s.client("demo/reviews-v1", "reviews", token, pod="another-0"))  # another pod's node
        await refused(s.client("demo/frontend", "reviews", token, pod="reviews-v1-0"))  # a node not selecting it
        ghost = s.token("demo", "reviews", pod="ghost-0")
        await refused(s.client("demo/reviews-v1", "reviews", ghost, pod="ghost-0"))  # no such pod
        assert plane.xds_metrics.refused_streams == 3
