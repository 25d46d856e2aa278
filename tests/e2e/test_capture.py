"""Traffic capture for real: in two network namespaces made here, an injected pod (capture rules from the injected
init container's command, Envoy run as uid 1337 with the injected arguments and bootstrap, over TLS) whose app
calls Service addresses and knows nothing of Envoy, and a peer host running the control plane and the upstreams.

Needs root (``ip netns``) and iptables (scripts/setup installs it)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import jsonpatch
import pytest

from meshctl.devtools.envoy_process import envoy_binary
from meshctl.inject.pki import issue, new_ca
from meshctl.inject.pod_patch import CAPTURE_CONTAINER, PROXY_CONTAINER, InjectConfig, inject
from meshctl.inject.server import virtual_node_refs
from meshctl.sources import load_manifests
from tests.conftest import eventually
from tests.e2e.test_tcp import tcp_route
from tests.manifests import API, route, service, virtual_node, write
from tests.netns import NetNs, make_pair, remove
from tests.stats import assert_split

PY = sys.executable
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
NAME = "meshctl.meshctl-system.svc"
PEER, POD = "10.200.0.1", "10.200.0.2"
REVIEWS_IP, LEDGER_IP = "10.96.0.10", "10.96.0.20"  # ClusterIPs: nothing listens there, capture takes them


def upstream(service_name: str, version: str, port: int, protocol: str) -> list[dict]:
    """A workload on the peer host: its Pod, EndpointSlice and VirtualNode."""
    name = f"{service_name}-{version}"
    labels = {"app": service_name, "version": version}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"{name}-0", "namespace": "shop", "labels": labels}}
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "shop", "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": protocol, "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [PEER], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": f"{name}-0"}}
        ],
    }
    listeners = [{"portMapping": {"port": port, "protocol": protocol}}]
    return [pod, eps, virtual_node(name, "shop", selector=labels, listeners=listeners)]


def mesh(directory: Path, egress: str | None = None) -> None:
    ledger = tcp_route({"ledger-v1": 70, "ledger-v2": 30})
    ledger["metadata"]["namespace"] = "shop"
    labels = {"mesh.meshctl.dev/egress-filter": egress} if egress else {}
    write(
        directory / "mesh.yaml",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels}},
        service("reviews", "shop", port=80),
        service("ledger", "shop", port=5432),
        *upstream("reviews", "v1", 8081, "http"),
        *upstream("reviews", "v2", 8082, "http"),
        *upstream("ledger", "v1", 9001, "tcp"),
        *upstream("ledger", "v2", 9002, "tcp"),
        virtual_node(
            "frontend",
            "shop",
            listeners=[{"portMapping": {"port": 8080, "protocol": "http"}}],
            backends=["reviews", "ledger"],
        ),
        route("reviews", "reviews", {"reviews-v1": 80, "reviews-v2": 20}, ns="shop"),
        ledger,
    )
    assert API in (directory / "mesh.yaml").read_text()


def tool(ns: NetNs, *args: str, check: bool = True) -> dict:
    done = ns.run(PY, "-m", "tests.capture_tool", *args, check=check)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def envoy_stats(pod: NetNs) -> dict[str, int]:
    stats = tool(pod, "get", "http://127.0.0.1:9901/stats?format=json")["stats"]
    return {s["name"]: s["value"] for s in stats if isinstance(s.get("value"), int)}


@pytest.fixture
def namespaces():
    pod, peer = make_pair("mcap")
    yield pod, peer
    remove(pod, peer)


@contextlib.asynccontextmanager
async def captured_pod(namespaces, tmp_path: Path, *, egress: str | None = None) -> AsyncIterator[tuple[NetNs, NetNs]]:
    """The injected pod, ready (its Envoy's /ready), and the peer host running the control plane and upstreams;
    ``egress``: the shop namespace's egress filter label."""
    pod, peer = namespaces
    ca = new_ca()
    tls = tmp_path / "tls"
    tls.mkdir()
    leaf = issue(ca, NAME, dns_names=(NAME,))
    for name, data in (("tls.crt", leaf.cert_pem), ("tls.key", leaf.key_pem), ("ca.crt", ca.cert_pem)):
        (tls / name).write_bytes(data)
    manifests = tmp_path / "mesh"
    manifests.mkdir()
    mesh(manifests, egress)
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        serve = ["serve", "--manifests", str(manifests), "--address", "0.0.0.0", "--tls-dir", str(tls)]
        await peer.start(MESHCTL, *serve, "--xds-port", "18000", "--admin-port", "19000", log=logs / "plane.log")
        for name, port in (("v1", 8081), ("v2", 8082)):
            await peer.start(
                PY,
                "-m",
                "meshctl.devtools.sample_app",
                "--host",
                PEER,
                "--port",
                str(port),
                "--name",
                name,
                log=logs / f"{name}.log",
            )
        # outside the mesh, on the Service port of reviews (80): reached only through the egress filter
        await peer.start(
            PY, "-m", "meshctl.devtools.sample_app", "--host", PEER, "--port", "80", "--name", "outside-http",
            log=logs / "outside-http.log",
        )  # fmt: skip
        aws = issue(ca, "sts.us-east-1.amazonaws.com", dns_names=("sts.us-east-1.amazonaws.com",))
        (tls / "aws.crt").write_bytes(aws.cert_pem)
        (tls / "aws.key").write_bytes(aws.key_pem)
        await peer.start(
            PY, "-m", "tests.capture_tool", "tlsecho", PEER, "443", "aws", str(tls / "aws.crt"), str(tls / "aws.key"),
            log=logs / "aws.log",
        )  # fmt: skip
        for name, port in (("ledger-v1", 9001), ("ledger-v2", 9002), ("ignored", 2222), ("outside", 7000)):
            await peer.start(PY, "-m", "tests.capture_tool", "echo", PEER, str(port), name, log=logs / f"{name}.log")

        # The pod as the webhook injects it (the CA the controller serves with; xDS reached by the peer's address).
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0",
                "namespace": "shop",
                "labels": {"app": "frontend"},
                "annotations": {"meshctl.dev/egress-ignored-ports": "2222"},
            },
            "spec": {"containers": [{"name": "app", "image": "shop/web:1"}]},
        }
        config = InjectConfig(xds_address=PEER, xds_server_name=NAME, ca_pem=ca.cert_pem.decode())
        injected = inject(obj, "shop", virtual_node_refs(load_manifests(manifests), "shop"), config)
        spec = jsonpatch.apply_patch(obj, injected.patch)["spec"]
        init = {c["name"]: c for c in spec["initContainers"]}
        command = init[CAPTURE_CONTAINER]["command"]
        assert command[0] == "meshctl"
        pod.run(MESHCTL, *command[1:])  # the init container
        proxy = init[PROXY_CONTAINER]
        args = [a.replace("$(POD_NAMESPACE)", "shop").replace("$(POD_NAME)", "web-0") for a in proxy["args"]]
        uid = proxy["securityContext"]["runAsUser"]
        await pod.start(str(envoy_binary()), *args, uid=uid, log=logs / "envoy.log")
        await pod.start(
            PY,
            "-m",
            "meshctl.devtools.sample_app",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--name",
            "web",
            log=logs / "app.log",
        )

        def ready() -> bool:
            return (
                pod.run(PY, "-m", "tests.capture_tool", "get", "http://127.0.0.1:15090/ready", check=False).returncode
                == 0
            )

        await eventually(ready, timeout=60, interval=0.5)

        yield pod, peer
    except BaseException:
        for log in sorted(logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        raise
    finally:
        await pod.stop()
        await peer.stop()


async def test_an_unaware_app_gets_the_routes_through_a_captured_envoy(namespaces, tmp_path):
    async with captured_pod(namespaces, tmp_path) as (pod, peer):
        # HTTP: the app calls the Service's address with its name as Host; the Route's weighted split applies.
        counts = tool(pod, "http", f"http://{REVIEWS_IP}/", "reviews.shop", "1000")
        assert_split(counts, {"v1": 80, "v2": 20})
        # TCP: connections to the ledger Service's address are split by its tcpRoute.
        counts = tool(pod, "tcp", LEDGER_IP, "5432", "300")
        assert_split(counts, {"ledger-v1": 70, "ledger-v2": 30})

        stats = envoy_stats(pod)
        upstream_requests = sum(
            stats[f"cluster.shop/reviews-{v}/{p}.upstream_rq_total"] for v, p in (("v1", 8081), ("v2", 8082))
        )
        assert upstream_requests == 1000  # each app request went upstream once
        # Envoy's own connections (upstreams, xDS) were never captured: nothing reached the passthrough.
        assert stats.get("tcp.passthrough.downstream_cx_total", 0) == 0

        # An ignored port bypasses Envoy; another destination outside the mesh goes through, unchanged.
        assert tool(pod, "tcp", PEER, "2222", "5") == {"ignored": 5}
        assert envoy_stats(pod).get("tcp.passthrough.downstream_cx_total", 0) == 0
        assert tool(pod, "tcp", PEER, "7000", "5") == {"outside": 5}
        assert envoy_stats(pod)["tcp.passthrough.downstream_cx_total"] == 5

        # Inbound: the peer calls the pod's app port; Envoy's ingress listener takes it to the app.
        assert tool(peer, "http", f"http://{POD}:8080/", "web", "20") == {"web": 20}
        assert envoy_stats(pod)["http.inbound_8080.downstream_rq_total"] == 20


async def test_the_egress_filter_passes_or_refuses_what_the_mesh_does_not_declare(namespaces, tmp_path):
    """App Mesh's egressFilter, per namespace (label mesh.meshctl.dev/egress-filter). ALLOW_ALL (the test above,
    the default) passes undeclared destinations through: TCP (a port no Service has) and HTTP (an undeclared host on
    a Service's port). DROP_ALL refuses both, counted, while the mesh's own routes keep working."""
    async with captured_pod(namespaces, tmp_path, egress="DROP_ALL") as (pod, _peer):
        assert tool(pod, "http", f"http://{REVIEWS_IP}/", "reviews.shop", "20").keys() <= {"v1", "v2"}  # declared
        assert tool(pod, "tcp", LEDGER_IP, "5432", "10").keys() <= {"ledger-v1", "ledger-v2"}

        # TCP to a destination outside the mesh: closed at once, counted.
        refused = tool(pod, "tcp", PEER, "7000", "3")  # closed or reset by Envoy, never answered
        assert refused.keys() <= {"closed", "ConnectionResetError"} and sum(refused.values()) == 3, refused
        stats = envoy_stats(pod)
        assert stats.get("tcp.egress_denied.downstream_cx_total", 0) == 3, {
            k: v for k, v in stats.items() if "egr" in k
        }
        assert stats.get("cluster.passthrough.upstream_cx_total", 0) == 0  # not one connection went out
        # HTTP to a host the mesh does not declare, on a Service's port: 404 saying why.
        answer = tool(pod, "peek", f"http://{PEER}/", "example.com")
        assert answer["status"] == 404 and "egress filter is DROP_ALL" in answer["body"], answer
        # The port capture leaves alone is still left alone.
        assert tool(pod, "tcp", PEER, "2222", "3") == {"ignored": 3}
        # TLS to AWS's APIs passes, as App Mesh always let it; other TLS does not.
        assert tool(pod, "tlsping", PEER, "443", "sts.us-east-1.amazonaws.com", "3") == {"aws": 3}
        other = tool(pod, "tlsping", PEER, "443", "api.example.com", "2")
        assert "aws" not in other and sum(other.values()) == 2, other
        stats = envoy_stats(pod)
        assert stats["tcp.egress_aws.downstream_cx_total"] == 3 and stats["tcp.egress_denied.downstream_cx_total"] == 5


async def test_allow_all_passes_an_undeclared_http_host_to_where_it_was_going(namespaces, tmp_path):
    async with captured_pod(namespaces, tmp_path, egress="ALLOW_ALL") as (pod, _peer):
        assert tool(pod, "http", f"http://{PEER}/", "example.com", "5") == {"outside-http": 5}
