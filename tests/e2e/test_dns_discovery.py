"""DNS discovery (issue 33): a VirtualNode's endpoints from ``serviceDiscovery.dns``, against a DNS server on loopback
that both the control plane (``serve --dns-resolver``) and the real Envoy (``bootstrap --dns-resolver``) ask, upstreams
on 127.0.0.2, .3, .4 (one port, as pods).

ENDPOINTS (the control plane resolves, Envoy gets the addresses over EDS) spreads traffic over every A record and
keeps the last addresses through an NXDOMAIN, which the VirtualNode's ``Resolved`` condition shows; LOADBALANCER
(App Mesh's default: Envoy's logical DNS) follows a changed record and keeps its address through an NXDOMAIN too.
Envoy's own view is read from its admin ``/clusters`` and the cluster's ``update_*`` counters, with deadlines."""

from __future__ import annotations

import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port
from meshctl.inject.pki import issue, new_ca
from tests.conftest import Mesh, Sidecar, eventually
from tests.dns_server import LoopbackDns
from tests.manifests import API, route, service, virtual_node, write

HOST = "backend.ext.test"


def dns_node(port: int, response_type: str, **dns: Any) -> dict:
    """A VirtualNode with no pods: its endpoints are what HOST resolves to, on ``port``."""
    return {
        "apiVersion": API,
        "kind": "VirtualNode",
        "metadata": {"name": "backend-ext", "namespace": "demo"},
        "spec": {
            "serviceDiscovery": {"dns": {"hostname": HOST, "responseType": response_type, **dns}},
            "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        },
    }


@contextlib.asynccontextmanager
async def dns_mesh(
    mesh_factory, response_type: str, records: list[str], hosts: tuple[str, ...]
) -> AsyncIterator[tuple[Mesh, Sidecar, LoopbackDns, int]]:
    """Apps on ``hosts`` (one port), DNS answering ``records`` for HOST, a Route on Service backend to the DNS node,
    and the client's sidecar resolving through that DNS server."""
    dns = LoopbackDns({HOST: records})
    dns.start()
    m: Mesh = await mesh_factory()
    port = free_port()
    try:
        for i, host in enumerate(hosts):
            await m.app(f"b{i}-{host}", port=port, host=host)
        m.plane = ControlPlane.from_manifests(m.dir, dns_resolvers=(dns.address,))
        write(
            m.dir / "mesh.yaml",
            service("backend"),
            dns_node(port, response_type, ipPreference="IPv4_ONLY"),
            route("backend", "backend", {"backend-ext": 100}),
            virtual_node("client", backends=["backend"]),
        )
        await m.start()
        sidecar = await m.sidecar("demo/client", stats=True, dns_resolvers=(dns.address,))
        yield m, sidecar, dns, port
    finally:
        dns.stop()


def hosts_of(sidecar: Sidecar, cluster: str) -> set[str]:
    """The addresses Envoy holds for a cluster (admin /clusters: ``cluster::address:port::...``)."""
    text = sidecar.envoy.admin_get("/clusters")
    return set(re.findall(rf"^{re.escape(cluster)}::([0-9.]+):\d+::cx_active", text, re.M))


async def served_by(m: Mesh, sidecar: Sidecar, n: int) -> list[str]:
    out = []
    for _ in range(n):
        status, body, _ = await m.get(sidecar, "backend")
        assert status == 200, (status, body)
        out.append(body.split("-", 1)[1])
    return out


async def test_endpoints_spread_traffic_over_every_a_record_and_a_failed_lookup_keeps_them(mesh_factory):
    async with dns_mesh(mesh_factory, "ENDPOINTS", ["127.0.0.2", "127.0.0.3"], ("127.0.0.2", "127.0.0.3")) as (
        m,
        sidecar,
        dns,
        port,
    ):
        cluster = f"demo/backend-ext/{port}"
        await eventually(lambda: hosts_of(sidecar, cluster) == {"127.0.0.2", "127.0.0.3"}, timeout=15)
        assert set(await served_by(m, sidecar, 20)) == {"127.0.0.2", "127.0.0.3"}  # round robin: both

        assert (await resolved(m))["status"] == "True"

        # NXDOMAIN: the control plane keeps the last addresses (Envoy's own DNS cluster would drop them all) and the
        # VirtualNode says so; traffic goes on to both.
        queries = dns.queries[HOST]
        dns.records.pop(HOST)
        await eventually(lambda: dns.queries[HOST] > queries, timeout=10)

        async def failed() -> bool:
            return (await resolved(m))["status"] == "False"

        await eventually(failed, timeout=10)
        condition = await resolved(m)
        assert condition["reason"] == "ResolutionFailed", condition
        assert "NXDOMAIN" in condition["message"] and "127.0.0.2, 127.0.0.3" in condition["message"], condition
        assert hosts_of(sidecar, cluster) == {"127.0.0.2", "127.0.0.3"}
        assert set(await served_by(m, sidecar, 10)) == {"127.0.0.2", "127.0.0.3"}

        dns.records[HOST] = ["127.0.0.3"]  # back, with one address: followed
        await eventually(lambda: hosts_of(sidecar, cluster) == {"127.0.0.3"}, timeout=15)
        assert set(await served_by(m, sidecar, 5)) == {"127.0.0.3"}


async def resolved(m: Mesh) -> dict:
    status = {o["name"]: o for o in (await m.admin("/api/v1/status"))["objects"]}
    return next(c for c in status["backend-ext"]["conditions"] if c["type"] == "Resolved")


async def test_loadbalancer_is_one_address_that_follows_a_changed_record(mesh_factory):
    async with dns_mesh(mesh_factory, "LOADBALANCER", ["127.0.0.2"], ("127.0.0.2", "127.0.0.4")) as (
        m,
        sidecar,
        dns,
        port,
    ):
        assert set(await served_by(m, sidecar, 5)) == {"127.0.0.2"}
        dns.records[HOST] = ["127.0.0.4"]

        async def moved() -> bool:
            return set(await served_by(m, sidecar, 3)) == {"127.0.0.4"}

        await eventually(moved, timeout=15)  # the record's TTL is 1 s: Envoy resolves again at that pace

        # NXDOMAIN: Envoy's logical DNS counts a failed update and keeps its address.
        cluster = f"demo/backend-ext/{port}"
        failures = sidecar.envoy.stats().get(f"cluster.{cluster}.update_failure", 0)
        dns.records.pop(HOST)
        await eventually(lambda: sidecar.envoy.stats().get(f"cluster.{cluster}.update_failure", 0) > failures, 15)
        assert set(await served_by(m, sidecar, 5)) == {"127.0.0.4"}


async def test_tls_is_originated_to_an_external_host_with_its_name_checked(mesh_factory, tmp_path):
    """An external service over TLS, App Mesh's way: a DNS VirtualNode and the caller's backend clientPolicy.tls
    (validation trust: a CA file). The app speaks plain HTTP to its sidecar; the sidecar originates TLS with the
    host's name as SNI, checks the server certificate names it, and presents no client certificate. A server whose
    certificate names another host is refused (503), never spoken to in the clear."""
    ca = new_ca()
    ca_file = tmp_path / "external-ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    port = free_port()
    seen_sni: list[str | None] = []

    async def serve_tls(address: str, name: str) -> web.AppRunner:
        leaf = issue(ca, name, dns_names=(name,))
        (tmp_path / f"{name}.crt").write_bytes(leaf.cert_pem)
        (tmp_path / f"{name}.key").write_bytes(leaf.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        context.verify_mode = ssl.CERT_OPTIONAL  # asks for a client certificate: one not from this CA fails
        context.load_verify_locations(ca_file)
        context.sni_callback = lambda sock, server_name, ctx: seen_sni.append(server_name)

        async def hello(request: web.Request) -> web.Response:
            peer_cert = request.transport.get_extra_info("peercert") if request.transport else None
            return web.Response(text=f"tls:{name}:client-cert={bool(peer_cert)}")

        app = web.Application()
        app.router.add_get("/", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, address, port, ssl_context=context).start()
        return runner

    runners = [await serve_tls("127.0.0.5", "api.external.test"), await serve_tls("127.0.0.6", "other.test")]
    dns = LoopbackDns({"api.external.test": ["127.0.0.5"], "wrong.external.test": ["127.0.0.6"]})
    dns.start()
    try:
        m: Mesh = await mesh_factory()
        m.plane = ControlPlane.from_manifests(m.dir, dns_resolvers=(dns.address,))
        policy = {"tls": {"validation": {"trust": {"file": {"certificateChain": str(ca_file)}}}}}
        client = virtual_node("client", backends=["api", "wrong"])
        for backend in client["spec"]["backends"]:
            backend["virtualService"]["clientPolicy"] = policy
        write(
            m.dir / "mesh.yaml",
            service("api"),
            service("wrong"),
            external_node("api-ext", "api.external.test", port),
            external_node("wrong-ext", "wrong.external.test", port),
            route("api", "api", {"api-ext": 100}),
            route("wrong", "wrong", {"wrong-ext": 100}),
            client,
        )
        await m.start()
        sidecar = await m.sidecar("demo/client")

        async def answered() -> bool:
            status, body, _ = await m.get(sidecar, "api")
            return status == 200 and body == "tls:api.external.test:client-cert=False"

        await eventually(answered, timeout=20)
        assert "api.external.test" in seen_sni
        status, body, _ = await m.get(sidecar, "wrong")  # the certificate names other.test: refused
        assert status == 503, (status, body)
    finally:
        dns.stop()
        for runner in runners:
            await runner.cleanup()


def external_node(name: str, hostname: str, port: int) -> dict:
    return {
        "apiVersion": API,
        "kind": "VirtualNode",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {
            "serviceDiscovery": {"dns": {"hostname": hostname, "responseType": "ENDPOINTS"}},
            "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        },
    }
