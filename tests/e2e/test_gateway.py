"""Edge gateways with real Envoys: App Mesh's gateway samples imported and behaving as App Mesh did, HTTPS with SNI
for two hostnames, a certificate rotated under load without a failed request, and a bad Gateway that costs nothing
but itself."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from meshctl.devtools.echo_app import Echo, start_echo
from meshctl.devtools.envoy_process import free_port
from tests.conftest import Mesh, eventually
from tests.gateways import GatewayXds, gateway_service, self_signed, tls_secret
from tests.manifests import pod_slice, write

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "testdata" / "appmesh" / "gateway" / "input"
GATEWAY_API = "gateway.networking.k8s.io/v1"


def _pod_and_slice(ns: str, service: str, labels: dict[str, str], address: str, port: int) -> list[dict[str, Any]]:
    pod = f"{service}-6b7f9c5d8-00000"
    return [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns, "labels": labels}},
        pod_slice(ns, service, pod, [{"name": "http-8080", "port": port}], address),
    ]


async def _get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, dict[str, Any] | None]:
    """The status and, from an echo backend, what it saw."""
    async with session.get(url, allow_redirects=False, **kw) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.status == 200 and text.startswith("{") else None)


@pytest.fixture
async def edge(tmp_path: Path):
    """A control plane serving xDS over mutual TLS (gateway proxies prove their Gateway) and what a test starts."""
    keys = tmp_path / "keys"
    keys.mkdir()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    xds = GatewayXds(keys)
    mesh = Mesh(manifests)
    mesh.plane = xds.plane(manifests)
    started: list[Any] = []
    try:
        yield mesh, xds, started
    finally:
        for envoy in started:
            await envoy.stop()
        await mesh.stop()


async def test_app_mesh_gateway_samples_behave_as_app_mesh_did(edge, tmp_path: Path) -> None:
    """``meshctl import appmesh`` of a VirtualGateway and its GatewayRoutes (prefix with App Mesh's default rewrite,
    prefix with rewriting disabled, hostname, header + query with a prefix rewrite, exact path with a path rewrite),
    served by meshctl: through the gateway's Envoy each request reaches the VirtualNode App Mesh sent it to (the mesh
    Route of the target VirtualService), with the path and Host App Mesh gave it."""
    mesh, xds, started = edge
    out = tmp_path / "imported"
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(SAMPLE), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for path in out.iterdir():
        (mesh.dir / path.name).write_text(path.read_text())
    red, blue = Echo(pod="red-0", namespace="edge"), Echo(pod="blue-0", namespace="edge")
    mesh._runners.append(await start_echo(red, 8080, "127.0.0.21"))
    mesh._runners.append(await start_echo(blue, 8080, "127.0.0.22"))
    write(
        mesh.dir / "workloads.yaml",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}},
        *_pod_and_slice("edge", "red", {"app": "color", "version": "red"}, "127.0.0.21", 8080),
        *_pod_and_slice("edge", "blue", {"app": "color", "version": "blue"}, "127.0.0.22", 8080),
        gateway_service("edge", "ingress-gw", "127.0.0.30", (8088,)),
    )
    await mesh.start()
    envoy = xds.envoy(mesh.plane.xds_port, "edge/ingress-gw", "127.0.0.30")
    started.append(envoy)
    await envoy.start()
    await eventually(envoy.ready, timeout=30)
    base = "http://127.0.0.30:8088"  # the VirtualGateway's listener port (above 1024: bound as it is)
    cases = [
        # (path, headers, pod, path the backend sees, Host the backend sees)
        ("/red/shades", {}, "red-0", "/shades", "color-paths.edge.svc.cluster.local"),
        ("/paths/a", {}, "red-0", "/paths/a", "color-paths.edge.svc.cluster.local"),
        ("/", {"Host": "colors.example.com"}, "blue-0", "/", "color-hosts.edge.svc.cluster.local"),
        ("/beta/q?color=blue", {"x-canary": "yes", "Host": "any.example.com"}, "blue-0", "/v2/q?color=blue", None),
        ("/status", {}, "blue-0", "/healthz", "color-hosts.edge.svc.cluster.local"),
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for path, headers, pod, seen_path, seen_host in cases:

            async def reached(path: str = path, headers: dict[str, str] = headers) -> tuple[int, Any]:
                return await _get(session, base + path, headers=headers)

            await eventually(lambda r=reached: _ok(r), timeout=30)
            status, body = await reached()
            assert status == 200 and body is not None
            assert body["pod"] == pod, (path, body)
            assert body["path"] == seen_path, (path, body)
            assert body["host"] == (seen_host or headers.get("Host")), (path, body)
        # What no GatewayRoute matches is not routed: the header or query missing, another method, another host.
        for path, headers, method in (
            ("/beta/q?color=blue", {}, "GET"),
            ("/beta/q?color=red", {"x-canary": "yes"}, "GET"),
            ("/status", {}, "POST"),
        ):
            async with session.request(method, base + path, headers=headers) as r:
                assert r.status == 404, (path, headers, method)
    status = {(o["kind"], o["name"]): o for o in (await mesh.admin("/api/v1/status"))["objects"]}
    gateway = status[("Gateway", "ingress-gw")]
    assert gateway["healthy"], gateway  # Programmed, with the address of its Service's load balancer
    assert gateway["addresses"] == [{"type": "IPAddress", "value": "127.0.0.30"}]
    # The web view draws the gateway entering the mesh: its proxy synced, an edge to each Service it sends to.
    graph = await mesh.admin("/api/v1/graph")
    (node,) = [n for n in graph["nodes"] if n["kind"] == "Gateway"]
    assert (node["id"], node["proxies"], node["sync"]) == ("Gateway/edge/ingress-gw", 1, "SYNCED")
    reached = {e["to"]: e["label"] for e in graph["edges"] if e["from"] == node["id"]}
    assert reached == {"Service/edge/color-hosts": ":8080", "Service/edge/color-paths": ":8080"}
    counts = (await mesh.admin("/api/v1/summary"))["objects"]  # (what meshctl status counts)
    assert (counts["Gateway"], counts["HTTPRoute"]) == (1, 5) and "GRPCRoute" not in counts
    assert [li["attachedRoutes"] for li in gateway["listeners"]] == [5]


async def _ok(reached: Any) -> bool:
    try:
        status, _ = await reached()
    except (aiohttp.ClientError, TimeoutError):
        return False
    return status == 200


def _served_certificate(address: str, port: int, server_name: str) -> x509.Certificate:
    """The certificate the gateway presents for this SNI (a new TLS connection, no verification)."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _gateway_docs(ns: str, pairs: dict[str, tuple[bytes, bytes]], backend_port: int) -> list[dict[str, Any]]:
    listeners = [
        {
            "name": host.split(".")[0],
            "hostname": host,
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": f"{host.split('.')[0]}-cert"}]},
        }
        for host in sorted(pairs)
    ]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {
            "apiVersion": GATEWAY_API,
            "kind": "GatewayClass",
            "metadata": {"name": "meshctl"},
            "spec": {"controllerName": "meshctl.dev/gateway"},
        },
        {
            "apiVersion": GATEWAY_API,
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": ns},
            "spec": {"gatewayClassName": "meshctl", "listeners": listeners},
        },
        *(tls_secret(ns, f"{host.split('.')[0]}-cert", *pair) for host, pair in sorted(pairs.items())),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"ports": [{"name": "http-8080", "port": 80}]},
        },
        *_pod_and_slice(ns, "web", {"app": "web"}, "127.0.0.1", backend_port)[1:],
        {
            "apiVersion": GATEWAY_API,
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        },
    ]


async def test_https_with_sni_for_two_hostnames_and_a_rotation_under_load(edge, tmp_path: Path) -> None:
    """Two HTTPS listeners on one port, each with a certificate Secret: each SNI gets its own certificate. The
    Secret of one is then replaced (a renewed certificate, as cert-manager writes it) while requests keep coming over
    new connections: none fails, and new connections get the new certificate."""
    mesh, xds, started = edge
    _, port = await mesh.app("web")
    hosts = {"a.example.com": self_signed(["a.example.com"], "a"), "b.example.com": self_signed(["b.example.com"], "b")}
    write(mesh.dir / "edge.yaml", *_gateway_docs("shop", hosts, port))
    await mesh.start()
    envoy = xds.envoy(mesh.plane.xds_port, "shop/edge", "127.0.0.31")
    started.append(envoy)
    await envoy.start()
    await eventually(envoy.ready, timeout=30)
    bound = 10443  # (443, bound 10,000 higher by an unprivileged gateway)
    for host, (cert_pem, _) in hosts.items():
        expected = x509.load_pem_x509_certificate(cert_pem)
        await eventually(lambda h=host, e=expected: _served_certificate("127.0.0.31", bound, h) == e, timeout=30)

    trust = ssl.create_default_context(cadata=b"".join(c for c, _ in hosts.values()).decode())
    renewed = self_signed(["a.example.com"], "a-renewed")
    trust.load_verify_locations(cadata=renewed[0].decode())
    failures: list[str] = []
    done = asyncio.Event()
    sent = 0

    async def load() -> None:
        nonlocal sent
        connector = aiohttp.TCPConnector(force_close=True)  # a new TLS handshake for every request
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session:
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline and sent < 5000:
                sent += 1
                try:
                    async with session.get(
                        f"https://127.0.0.31:{bound}/",
                        headers={"Host": "a.example.com"},
                        ssl=trust,
                        server_hostname="a.example.com",
                    ) as r:
                        if r.status != 200:
                            failures.append(f"status {r.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

    task = asyncio.create_task(load())
    await eventually(lambda: sent >= 50, timeout=30)
    hosts["a.example.com"] = renewed
    write(mesh.dir / "edge.yaml", *_gateway_docs("shop", hosts, port))
    new = x509.load_pem_x509_certificate(renewed[0])
    await eventually(lambda: _served_certificate("127.0.0.31", bound, "a.example.com") == new, timeout=30)
    at_rotation = sent
    await eventually(lambda: sent >= at_rotation + 50, timeout=30)
    done.set()
    await task
    assert not failures, failures[:5]
    assert sent >= 100
    # The other listener kept its certificate throughout.
    assert _served_certificate("127.0.0.31", bound, "b.example.com") == x509.load_pem_x509_certificate(
        hosts["b.example.com"][0]
    )


async def test_a_bad_gateway_or_listener_costs_only_itself(edge, tmp_path: Path) -> None:
    """A listener naming a missing Secret, one with an unserved protocol, and a second Gateway that cannot be read:
    each is reported on its own (listener conditions, the Gateway's Accepted), and the good listener serves."""
    mesh, xds, started = edge
    _, port = await mesh.app("web")
    good = _gateway_docs("shop", {}, port)
    gateway = next(d for d in good if d["kind"] == "Gateway")
    gateway["spec"]["listeners"] = [
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "tls", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "missing"}]}},
        {"name": "udp", "port": 53, "protocol": "UDP"},
    ]
    broken = {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {"name": "broken", "namespace": "shop"},
        "spec": {"gatewayClassName": "meshctl", "listeners": [{"name": "x", "port": "eighty", "protocol": "HTTP"}]},
    }
    write(mesh.dir / "edge.yaml", *good, broken)  # (no Service: Programmed says no address yet)
    await mesh.start()
    envoy = xds.envoy(mesh.plane.xds_port, "shop/edge", "127.0.0.32")
    started.append(envoy)
    await envoy.start()
    await eventually(envoy.ready, timeout=30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await eventually(lambda: _ok(lambda: _get(session, "http://127.0.0.32:10080/")), timeout=30)
    status = {(o["kind"], o["name"]): o for o in (await mesh.admin("/api/v1/status"))["objects"]}
    listeners = {
        li["name"]: {c["type"]: c for c in li["conditions"]} for li in status[("Gateway", "edge")]["listeners"]
    }
    assert listeners["http"]["Programmed"]["status"] == "True"
    assert listeners["tls"]["ResolvedRefs"]["reason"] == "InvalidCertificateRef"
    assert "Secret shop/missing not found" in listeners["tls"]["ResolvedRefs"]["message"]
    assert listeners["udp"]["Accepted"]["reason"] == "UnsupportedProtocol"
    edge_status = {c["type"]: c for c in status[("Gateway", "edge")]["conditions"]}
    assert (edge_status["Accepted"]["status"], edge_status["Accepted"]["reason"]) == ("True", "ListenersNotValid")
    assert "tls, udp" in edge_status["Accepted"]["message"]
    assert status[("Gateway", "edge")]["healthy"] is False  # (its listeners' problems count: get status exits 1)
    assert edge_status["Programmed"]["reason"] == "AddressNotAssigned"
    broken_status = {c["type"]: c for c in status[("Gateway", "broken")]["conditions"]}
    assert broken_status["Accepted"]["status"] == "False"
    assert "spec.listeners[0].port" in broken_status["Accepted"]["message"]
    # Only the good listener is on the proxy.
    dump = envoy.admin_get("/listeners")
    assert "gateway|80" in dump and "gateway|443" not in dump and "gateway|53" not in dump


async def test_the_gateway_calls_a_strict_mtls_workload_with_its_own_identity(edge, tmp_path: Path) -> None:
    """Gateway to mesh: the backend Service's pods take only mTLS (their VirtualNode's listener is STRICT). The
    gateway's proxy, which proved its Gateway on the xDS stream, gets a workload certificate of its own and
    originates mTLS: the request gets through, the callee's Envoy counts the handshake and tells the app who called
    (the gateway's SPIFFE ID); a plaintext client is refused by the same listener."""
    mesh, xds, started = edge
    # The app on 127.0.0.1:app_port; its pod's IP 127.0.0.41, where its sidecar's inbound listener takes callers on
    # the port its EndpointSlice names (capture's job in a cluster).
    app_port, inbound_port = free_port(), free_port()
    mesh._runners.append(await start_echo(Echo(pod="reviews-0", namespace="shop"), app_port))
    pod_ip = "127.0.0.41"
    docs = _gateway_docs("shop", {}, app_port)
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["listeners"] = [{"name": "http", "port": 80, "protocol": "HTTP"}]
    docs = [d for d in docs if d["kind"] not in ("Service", "EndpointSlice", "HTTPRoute")]
    labels = {"app": "reviews"}
    write(
        mesh.dir / "edge.yaml",
        *docs,
        gateway_service("shop", "edge", "127.0.0.33"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"selector": labels, "ports": [{"name": "http-8080", "port": 80, "targetPort": app_port}]},
        },
        *_pod_and_slice("shop", "reviews", labels, pod_ip, inbound_port),
        {
            "apiVersion": "mesh.meshctl.dev/v1alpha1",
            "kind": "VirtualNode",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {
                "podSelector": {"matchLabels": labels},
                "listeners": [{"portMapping": {"port": app_port, "protocol": "http"}, "tls": {"mode": "STRICT"}}],
            },
        },
        {
            "apiVersion": GATEWAY_API,
            "kind": "HTTPRoute",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [{"name": "reviews", "port": 80}]}]},
        },
    )
    await mesh.start()
    callee = xds.sidecar(mesh.plane.xds_port, "shop/reviews", pod_ip, inbound_port, free_port(), admin_port=free_port())
    gateway_envoy = xds.envoy(mesh.plane.xds_port, "shop/edge", "127.0.0.33")
    started.extend((callee, gateway_envoy))
    await callee.start()
    await gateway_envoy.start()
    await eventually(callee.ready, timeout=30)
    await eventually(gateway_envoy.ready, timeout=30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await eventually(lambda: _ok(lambda: _get(session, "http://127.0.0.33:10080/")), timeout=30)
        status, body = await _get(session, "http://127.0.0.33:10080/who")
        assert status == 200 and body is not None
        (xfcc,) = body["headers"]["X-Forwarded-Client-Cert"]
        assert "/ns/shop/sa/default" in xfcc, xfcc  # the gateway's workload identity (its namespace, its account)
        with pytest.raises(aiohttp.ClientError):  # STRICT: plaintext to the pod's port is refused
            await _get(session, f"http://{pod_ip}:{inbound_port}/")
    handshakes = {k: v for k, v in callee.stats().items() if k.endswith("ssl.handshake")}
    assert any(v >= 1 for v in handshakes.values()), handshakes
