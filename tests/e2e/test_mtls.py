"""Workload mTLS for real (issue 28): in two network namespaces made here, a callee pod (its app, iptables capture
and a captured Envoy) and a peer host (the control plane, a meshed caller's Envoy, unmeshed clients). Both Envoys
prove their VirtualNode on the xDS stream with a client certificate; the control plane issues each its workload
certificate over SDS.

- STRICT: the meshed caller gets through over mTLS (the callee's Envoy counts TLS handshakes, the app is told the
  caller's SPIFFE ID); a plaintext client and a client with another CA's certificate are refused, and the app
  sees neither.
- PERMISSIVE: the same port takes both the meshed caller (mTLS) and the plaintext client.

Needs root (``ip netns``) and iptables (scripts/setup installs it)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from meshctl.devtools.envoy_process import envoy_binary
from meshctl.inject.pki import KeyPair, issue, new_ca, spiffe_identity
from tests.conftest import eventually
from tests.manifests import route, service, virtual_node, write
from tests.netns import NetNs, make_pair, remove

PY = sys.executable
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
NAME = "meshctl.meshctl-system.svc"
PEER, POD = "10.201.0.1", "10.201.0.2"
APP_PORT = 8080


def _mesh(directory: Path, mode: str) -> None:
    labels = {"app": "reviews", "version": "v1"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reviews-0", "namespace": "shop", "labels": labels},
        "spec": {"serviceAccountName": "reviews"},
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "reviews-v1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": APP_PORT, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [POD], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "reviews-0"}}
        ],
    }
    listener = {"portMapping": {"port": APP_PORT, "protocol": "http"}, "tls": {"mode": mode}}
    write(
        directory / "mesh.yaml",
        service("reviews", "shop", port=80),
        pod,
        eps,
        virtual_node("reviews-v1", "shop", selector=labels, listeners=[listener]),
        virtual_node("frontend", "shop", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}, ns="shop"),
    )


def _files(directory: Path, name: str, pair: KeyPair) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o644)  # Envoy runs as uid 1337 in the pod
    return str(cert), str(key)


def _tool(ns: NetNs, *args: str) -> dict:
    done = ns.run(PY, "-m", "tests.capture_tool", *args, check=False)
    return json.loads(done.stdout) if done.stdout.strip() else {"error": done.stderr[-300:]}


def _stats(ns: NetNs, admin: int) -> dict[str, int]:
    done = ns.run(PY, "-m", "tests.capture_tool", "get", f"http://127.0.0.1:{admin}/stats?format=json", check=False)
    if done.returncode != 0:
        return {}
    return {s["name"]: s["value"] for s in json.loads(done.stdout)["stats"] if isinstance(s.get("value"), int)}


@pytest.fixture
def namespaces():
    pod, peer = make_pair("mtls", subnet="10.201.0")
    yield pod, peer
    remove(pod, peer)


@pytest.fixture
def readable_dir():
    """A directory Envoy's uid (1337) can read: pytest's tmp_path is its owner's alone."""
    path = Path(tempfile.mkdtemp(prefix="meshctl-mtls-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_sidecars_talk_mtls_strict_refuses_others_permissive_takes_both(namespaces, tmp_path, readable_dir):
    pod, peer = namespaces
    files = readable_dir
    ca, clients = new_ca(), new_ca("meshctl xDS clients")
    (files / "ca.crt").write_bytes(ca.cert_pem)
    (files / "clients.crt").write_bytes(clients.cert_pem)
    server = _files(files, "xds", issue(ca, NAME, dns_names=(NAME,)))
    callee_xds = _files(
        files, "reviews", issue(clients, "r", uris=(spiffe_identity("shop", "reviews-v1"),), client=True)
    )
    caller_xds = _files(
        files, "frontend", issue(clients, "f", uris=(spiffe_identity("shop", "frontend"),), client=True)
    )
    stranger = _files(
        files, "stranger", issue(new_ca("someone else"), "s", uris=("spiffe://shop.test/ns/shop/sa/x",), client=True)
    )
    manifests = tmp_path / "mesh"
    manifests.mkdir()
    _mesh(manifests, "STRICT")
    logs = tmp_path / "logs"
    logs.mkdir()

    def bootstrap(name: str, node: str, xds: tuple[str, str], *extra: str) -> Path:
        args = ["bootstrap", "--node-id", node, "--xds-address", PEER, "--xds-ca", str(files / "ca.crt")]
        args += ["--xds-server-name", NAME, "--xds-client-cert", xds[0], "--xds-client-key", xds[1], "-o", "json"]
        done = peer.run(MESHCTL, *args, *extra)
        path = files / f"{name}.json"
        path.write_text(done.stdout)
        path.chmod(0o644)
        return path

    try:
        serve = ["serve", "--manifests", str(manifests), "--address", "0.0.0.0", "--xds-port", "18000"]
        serve += ["--admin-port", "19000", "--trust-domain", "shop.test", "--xds-tls-cert", server[0]]
        serve += ["--xds-tls-key", server[1], "--xds-tls-client-ca", str(files / "clients.crt")]
        await peer.start(MESHCTL, *serve, log=logs / "plane.log")
        await pod.start(
            PY, "-m", "meshctl.devtools.sample_app", "--host", "0.0.0.0", "--port", str(APP_PORT), "--name", "reviews",
            log=logs / "app.log",
        )  # fmt: skip
        pod.run(MESHCTL, "capture", "--proxy-uid", "1337", "--app-ports", str(APP_PORT))
        callee = bootstrap(
            "callee", "shop/reviews-v1/reviews-0", callee_xds, "--capture", "--service-account", "reviews",
            "--admin-port", "9901", "--stats-port", "0",
        )  # fmt: skip
        await pod.start(str(envoy_binary()), "-c", str(callee), "--base-id", "11", uid=1337, log=logs / "callee.log")
        caller = bootstrap(
            "caller", "shop/frontend/web-0", caller_xds, "--service-account", "web", "--bind-address", "127.0.0.1",
            "--admin-port", "9902", "--stats-port", "0",
        )  # fmt: skip
        await peer.start(str(envoy_binary()), "-c", str(caller), "--base-id", "12", log=logs / "caller.log")

        through_mesh = ("peek", "http://127.0.0.1:15001/whoami", "reviews.shop")
        await eventually(lambda: _tool(peer, *through_mesh).get("status") == 200, timeout=60, interval=0.5)
        answer = _tool(peer, *through_mesh)
        # The app is told who called: the caller's workload identity, proven by its certificate.
        assert "URI=spiffe://shop.test/ns/shop/sa/web" in answer["client_cert"], answer
        stats = _stats(pod, 9901)
        handshakes = stats.get("listener.0.0.0.0_15000.ssl.handshake", 0)
        assert handshakes >= 1, {k: v for k, v in stats.items() if "ssl" in k}
        served = stats["cluster.inbound|shop/reviews-v1|8080.upstream_rq_total"]

        # STRICT: plaintext to the pod's port, and a client with another CA's certificate: refused, the app sees none.
        plain = _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews")
        assert "error" in plain, plain
        foreign = _tool(
            peer, "peek", f"https://{POD}:{APP_PORT}/", "reviews", "--cert", stranger[0], "--key", stranger[1]
        )
        assert "error" in foreign, foreign
        stats = _stats(pod, 9901)
        assert stats["cluster.inbound|shop/reviews-v1|8080.upstream_rq_total"] == served
        assert (
            stats.get("listener.0.0.0.0_15000.ssl.fail_verify_error", 0) >= 1
            or stats.get("listener.0.0.0.0_15000.ssl.connection_error", 0) >= 1
        )

        # PERMISSIVE: the plaintext client gets in on the same port; the meshed caller still uses mTLS.
        _mesh(manifests, "PERMISSIVE")
        await eventually(
            lambda: _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews").get("status") == 200,
            timeout=30,
            interval=0.5,
        )
        answer = _tool(peer, *through_mesh)
        assert answer["status"] == 200 and "spiffe://shop.test/ns/shop/sa/web" in answer["client_cert"], answer
        plain = _tool(peer, "peek", f"http://{POD}:{APP_PORT}/whoami", "reviews")
        assert plain["status"] == 200 and not plain["client_cert"], plain  # nothing claimed for a plaintext caller
    except BaseException:
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        await pod.stop()
        await peer.stop()
