"""The injection webhook over real HTTPS, trusting only the CA it serves with: AdmissionReview v1 in, a JSON Patch
out that applies to the Pod, validates as a Kubernetes 1.30 Pod and keeps the proxy container "restricted"."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import uuid
from pathlib import Path

import aiohttp
import jsonpatch
import kubernetes_validate
import pytest

from meshctl.inject.pki import issue, new_ca
from meshctl.inject.pod_patch import CAPTURE_CONTAINER, PROXY_CONTAINER, InjectConfig
from meshctl.inject.server import InjectionServer
from meshctl.inject.tlsfiles import TlsDir
from meshctl.inject.webhook import MUTATE_PATH
from meshctl.sources import load_manifests
from tests.manifests import service, virtual_node, write
from tests.pss import restricted_violations

NAME = "meshctl.meshctl-system.svc"


def pod(name: str = "web-0", labels: dict | None = None, **spec) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels or {"app": "frontend"}},
        "spec": {"containers": [{"name": "app", "image": "shop/web:1", "ports": [{"containerPort": 8080}]}], **spec},
    }


def review(obj: dict, uid: str | None = None) -> dict:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": obj,
        },
    }


class Client:
    def __init__(self, server: InjectionServer, ca_pem: bytes) -> None:
        # Trusts only the CA bundle the webhook configuration would carry, and checks the Service's DNS name.
        self.context = ssl.create_default_context(cadata=ca_pem.decode())
        self.url = f"https://127.0.0.1:{server.port}{MUTATE_PATH}"
        self.server = server

    async def post(self, body: bytes | dict) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url,
                data=data,
                ssl=self.context,
                server_hostname=NAME,
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            return resp.status, await resp.json()

    async def mutate(self, obj: dict) -> tuple[dict, dict]:
        """(the review's response, the pod after its patch)"""
        sent = review(obj)
        status, answer = await self.post(sent)
        assert status == 200 and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == sent["request"]["uid"] and response["allowed"] is True
        patched = copy.deepcopy(obj)
        if "patch" in response:
            assert response["patchType"] == "JSONPatch"
            patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(response["patch"])))
        return response, patched


async def start_webhook(
    tmp_path: Path, *, native: bool = True, xds_token: bool = False, spiffe_csi: bool = False
) -> tuple[InjectionServer, bytes]:
    ca = new_ca()
    leaf = issue(ca, NAME, dns_names=(NAME,))
    tls = TlsDir(tmp_path / "tls")
    tls.directory.mkdir()
    for name, data in (("tls.crt", leaf.cert_pem), ("tls.key", leaf.key_pem), ("ca.crt", ca.cert_pem)):
        (tls.directory / name).write_bytes(data)
    manifests = tmp_path / "mesh"
    manifests.mkdir()
    listeners = [{"portMapping": {"port": 8080, "protocol": "http"}}]
    write(
        manifests / "mesh.yaml",
        service("reviews", "shop"),
        virtual_node("frontend", "shop", listeners=listeners, backends=["reviews"]),
        virtual_node("reviews-v1", "shop", selector={"app": "reviews", "version": "v1"}, listeners=listeners),
        virtual_node("reviews-v2", "shop", selector={"app": "reviews", "version": "v2"}, listeners=listeners),
        virtual_node("reviews-all", "shop", selector={"app": "reviews"}, listeners=listeners),
    )
    model = load_manifests(manifests)
    config = InjectConfig(native_sidecars=native, xds_token=xds_token, spiffe_csi=spiffe_csi)
    server = InjectionServer(tls, config, address="127.0.0.1", port=0)
    server.model = lambda: model
    await server.prepare()
    await server.start()
    return server, ca.cert_pem


@pytest.fixture
async def webhook(tmp_path):
    server, ca_pem = await start_webhook(tmp_path)
    yield Client(server, ca_pem)
    await server.stop()


def containers(spec: dict, field: str) -> dict[str, dict]:
    return {c["name"]: c for c in spec.get(field) or []}


async def test_a_pod_gets_capture_and_a_native_sidecar_that_validate_and_stay_restricted(webhook):
    _, patched = await webhook.mutate(pod())
    spec = patched["spec"]
    assert [c["name"] for c in spec["initContainers"]] == [CAPTURE_CONTAINER, PROXY_CONTAINER]
    assert [c["name"] for c in spec["containers"]] == ["app"]
    proxy = containers(spec, "initContainers")[PROXY_CONTAINER]
    assert proxy["restartPolicy"] == "Always" and proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 15090}
    assert patched["metadata"]["annotations"]["meshctl.dev/injected"] == "frontend"
    capture = containers(spec, "initContainers")[CAPTURE_CONTAINER]
    assert capture["command"][:2] == ["meshctl", "capture"]
    assert capture["command"][capture["command"].index("--app-ports") + 1] == "8080"
    assert capture["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}

    # The bootstrap: node id from the pod, the VirtualNode, the xDS Service name and the CA it must verify.
    args = proxy["args"]
    bootstrap = json.loads(args[args.index("--config-yaml") + 1])
    assert args[args.index("--service-node") + 1] == "$(POD_NAMESPACE)/frontend/$(POD_NAME)"
    assert bootstrap["node"]["metadata"]["meshctl.virtual_node"] == "shop/frontend"
    assert bootstrap["node"]["metadata"]["meshctl.capture"] == "true"
    assert bootstrap["node"]["metadata"]["meshctl.service_account"] == "default"  # its workload identity (mTLS)
    _, with_account = await webhook.mutate(pod(serviceAccountName="web"))
    with_account_proxy = containers(with_account["spec"], "initContainers")[PROXY_CONTAINER]["args"]
    with_account_boot = json.loads(with_account_proxy[with_account_proxy.index("--config-yaml") + 1])
    assert with_account_boot["node"]["metadata"]["meshctl.service_account"] == "web"
    xds = bootstrap["static_resources"]["clusters"][0]
    socket = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert socket == {"address": NAME, "port_value": 18000}
    tls = xds["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
    assert tls["trusted_ca"]["inline_string"] == (webhook.server.tls_dir.ca_pem())

    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(patched, version, strict=True)
    assert restricted_violations(spec, only={PROXY_CONTAINER}) == []
    # What is not "restricted" in what we add: the capture init container is root with NET_ADMIN and NET_RAW.
    assert restricted_violations(spec, only={CAPTURE_CONTAINER}) == [
        f"{CAPTURE_CONTAINER}: adds capabilities",
        f"{CAPTURE_CONTAINER}: runAsNonRoot is not true",
        f"{CAPTURE_CONTAINER}: runs as uid 0",
        f"{CAPTURE_CONTAINER}: readOnlyRootFilesystem is not true",
    ]

    again, unchanged = await webhook.mutate(patched)  # re-injection is a no-op
    assert "patch" not in again and unchanged == patched


async def test_with_xds_tokens_the_sidecar_sends_its_projected_service_account_token(tmp_path):
    """--inject-xds-token: a projected token (audience meshctl, rotated by the kubelet) mounted into the proxy
    alone, and a bootstrap that sends it on the xDS stream (read for each new stream); the pod still validates."""
    server, ca_pem = await start_webhook(tmp_path, xds_token=True)
    try:
        client = Client(server, ca_pem)
        _, patched = await client.mutate(pod(volumes=[{"name": "data", "emptyDir": {}}]))
    finally:
        await server.stop()
    spec = patched["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "meshctl-xds-token"]
    (source,) = volume["projected"]["sources"]
    assert source["serviceAccountToken"] == {"audience": "meshctl", "expirationSeconds": 3600, "path": "token"}
    assert [v["name"] for v in spec["volumes"]] == ["data", "meshctl-xds-token"]
    proxy = containers(spec, "initContainers")[PROXY_CONTAINER]
    assert proxy["volumeMounts"] == [
        {"name": "meshctl-xds-token", "mountPath": "/var/run/secrets/meshctl/xds", "readOnly": True}
    ]
    assert all("volumeMounts" not in c for c in spec["containers"])  # the app does not get it
    bootstrap = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    (ads,) = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    (credential,) = ads["google_grpc"]["call_credentials"]
    config = credential["from_plugin"]["typed_config"]
    assert config["secret_data"] == {"filename": "/var/run/secrets/meshctl/xds/token"}
    assert config["header_prefix"] == "Bearer "
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(patched, version, strict=True)


async def test_pods_the_webhook_leaves_alone(webhook):
    opted_out = pod(labels={"app": "frontend"})
    opted_out["metadata"]["annotations"] = {"meshctl.dev/inject": "disabled"}
    host = pod(hostNetwork=True)
    unmatched = pod(labels={"app": "batch"})
    ambiguous = pod(labels={"app": "reviews", "version": "v1"})
    # Settings the init container would refuse (so the pod would never start): the pod is left as it is.
    bad_cidr = pod()
    bad_cidr["metadata"]["annotations"] = {"meshctl.dev/egress-ignored-cidrs": "10.0.0.0/33"}
    looping = pod()
    looping["metadata"]["annotations"] = {"meshctl.dev/app-ports": "15001"}
    unknown_proxyless = pod()
    unknown_proxyless["metadata"]["annotations"] = {"meshctl.dev/proxyless": "true"}
    cases = {
        "opt-out": (opted_out, None),
        "hostNetwork": (host, "hostNetwork pods are not injected"),
        "no VirtualNode": (unmatched, "no VirtualNode's podSelector matches"),
        "two VirtualNodes": (ambiguous, "VirtualNodes reviews-all, reviews-v1 all select this pod"),
        "bad CIDR": (bad_cidr, "not injected: ignored CIDR '10.0.0.0/33' is not an address or network"),
        "app port is Envoy's": (looping, "not injected: an app port cannot be Envoy's egress or ingress port"),
        "proxyless other than grpc": (unknown_proxyless, "meshctl.dev/proxyless must be 'grpc', got 'true'"),
    }
    for case, (obj, warning) in cases.items():
        response, patched = await webhook.mutate(obj)
        assert "patch" not in response and patched == obj, case
        assert (
            (response.get("warnings") or [None])[0] is None if warning is None else warning in response["warnings"][0]
        )

    named = pod(labels={"app": "reviews", "version": "v1"})
    named["metadata"]["annotations"] = {"meshctl.dev/virtual-node": "reviews-v1", "meshctl.dev/app-ports": "8080,9090"}
    _, patched = await webhook.mutate(named)
    capture = containers(patched["spec"], "initContainers")[CAPTURE_CONTAINER]["command"]
    assert patched["metadata"]["annotations"]["meshctl.dev/injected"] == "reviews-v1"
    assert capture[capture.index("--app-ports") + 1] == "8080,9090"

    # Through the webhook too, a proxyless pod gets its bootstrap and the CA file, and no container of ours.
    grpc_pod = pod()
    grpc_pod["metadata"]["annotations"] = {"meshctl.dev/proxyless": "grpc"}
    _, patched = await webhook.mutate(grpc_pod)
    assert "initContainers" not in patched["spec"] and len(patched["spec"]["containers"]) == 1
    boot = json.loads(patched["spec"]["containers"][0]["env"][1]["value"])
    assert boot["node"]["id"] == "shop/frontend/$(MESHCTL_POD_NAME)"
    assert boot["xds_servers"][0]["channel_creds"][0]["config"]["ca_certificate_file"] == "/etc/meshctl/grpc/ca.pem"
    assert patched["metadata"]["annotations"]["meshctl.dev/xds-ca"] == webhook.server.tls_dir.ca_pem()
    kubernetes_validate.validate(patched, "1.30.0", strict=True)


async def test_existing_init_containers_run_after_ours_and_old_clusters_get_a_first_container(tmp_path):
    server, ca_pem = await start_webhook(tmp_path, native=False)
    client = Client(server, ca_pem)
    try:
        with_init = pod(initContainers=[{"name": "migrate", "image": "shop/migrate:1"}])
        _, patched = await client.mutate(with_init)
        spec = patched["spec"]
        assert [c["name"] for c in spec["initContainers"]] == [CAPTURE_CONTAINER, "migrate"]
        assert [c["name"] for c in spec["containers"]] == [PROXY_CONTAINER, "app"]
        assert "restartPolicy" not in spec["containers"][0]
        kubernetes_validate.validate(patched, "1.30.0", strict=True)
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("body", "http_status", "message"),
    [
        (b"{not json", 400, "the body is not JSON"),
        ({"kind": "AdmissionReview"}, 400, "request.uid is missing"),
        ({**review(pod(), uid="u1"), "apiVersion": "admission.k8s.io/v1beta1"}, 200, "only admission.k8s.io/v1"),
        (review({"kind": "Pod", "metadata": {"name": "x"}}, uid="u2"), 200, "not a Pod with a spec"),
        (review(["a", "list"], uid="u3"), 200, "not a Pod with a spec"),
    ],
)
async def test_malformed_reviews_get_a_clear_denial(webhook, body, http_status, message):
    status, answer = await webhook.post(body)
    assert status == http_status
    if http_status == 400:
        assert answer["kind"] == "Status" and message in answer["message"]
    else:
        assert answer["response"]["allowed"] is False and message in answer["response"]["status"]["message"]
        assert answer["response"]["uid"] == body["request"]["uid"]
    ok, _ = await webhook.mutate(pod())  # and the webhook keeps serving
    assert "patch" in ok


async def test_a_client_trusting_another_ca_cannot_talk_to_the_webhook(webhook):
    other = Client(webhook.server, new_ca("other").cert_pem)
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await other.post(review(pod()))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--webhook-port", "1"], "meshctl: --webhook-port and --tls-secret need --tls-dir"),
        (["--webhook-port", "1", "--tls-dir", "x", "--tls-secret-interval", "0"], "must be more than 0 seconds"),
        (["--webhook-port", "1", "--tls-dir", "x", "--tls-secret", "a/b"], "meshctl: --tls-secret needs --kubernetes"),
    ],
)
def test_serve_flags_that_do_not_fit_are_one_line_and_exit_2(tmp_path: Path, flags: list[str], message: str):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "serve", "--manifests", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and message in done.stderr


async def test_with_spiffe_csi_the_sidecar_reads_sds_sources_from_spire(tmp_path):
    """--inject-spiffe-csi (App Mesh's SPIRE integration): SPIRE's Workload API socket, mounted read-only by the
    SPIFFE CSI driver into the proxy alone (no hostPath: the proxy stays restricted), named in its bootstrap as
    the SDS agent that ``sds`` certificate and trust sources are fetched from."""
    server, ca_pem = await start_webhook(tmp_path, xds_token=True, spiffe_csi=True)
    try:
        _, patched = await Client(server, ca_pem).mutate(pod())
    finally:
        await server.stop()
    spec = patched["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["meshctl-xds-token", "meshctl-spiffe"]
    assert spec["volumes"][1]["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
    proxy = containers(spec, "initContainers")[PROXY_CONTAINER]
    assert {"name": "meshctl-spiffe", "mountPath": "/spiffe-workload-api", "readOnly": True} in proxy["volumeMounts"]
    assert all("volumeMounts" not in c for c in spec["containers"])
    bootstrap = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    (agent,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "meshctl-sds-agent"]
    (endpoint,) = agent["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"] == {"pipe": {"path": "/spiffe-workload-api/spire-agent.sock"}}
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(patched, version, strict=True)
    assert restricted_violations(spec, only={PROXY_CONTAINER}) == []
