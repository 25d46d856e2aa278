"""Proxyless gRPC (issue 34, first part): grpcio's own XdsClient (``xds:///``, no Envoy) routed by meshctl from the
same model and Routes as the Envoy sidecar beside it in the same VirtualNode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import jsonpatch
import kubernetes_validate
import pytest
import yaml

from meshctl.controlplane.plane import ControlPlane
from meshctl.inject.pki import issue, new_ca
from meshctl.inject.pod_patch import (
    ANNOTATION_PROXYLESS,
    ANNOTATION_XDS_CA,
    GRPC_CA_FILE,
    InjectConfig,
    VirtualNodeRef,
    inject,
)
from meshctl.xds.bootstrap import BootstrapOptions, render_grpc_bootstrap
from meshctl.xds.server.tls import XdsTls
from tests.conftest import Mesh, eventually
from tests.e2e.test_explain import run_meshctl
from tests.e2e.test_grpc import SAY, EchoServer, grpc_mesh, grpc_route, mesh_docs
from tests.grpc_interop import shared_port
from tests.manifests import http_route, write
from tests.stats import binomial_bounds

TARGET = "echo.demo:50051"  # the Service's name and port, as a proxyless client dials it


class ProxylessClient:
    """``tests/proxyless_client.py`` in its own process, its JSON lines collected as they come."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    async def start(
        self, m: Mesh, node_id: str, seconds: float, *metadata: str, env: dict | None = None, target: str = TARGET
    ) -> None:
        """``env``: the client's environment as injection made it (else a bootstrap for ``node_id``)."""
        if env is None:
            opts = BootstrapOptions(node_id=node_id, xds_port=m.plane.xds_port)
            env = {"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(render_grpc_bootstrap(opts))}
        env = {**os.environ, **env, "GRPC_VERBOSITY": "ERROR"}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.proxyless_client", target, str(seconds), *metadata,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            if line.startswith(b"{"):
                self.calls.append(json.loads(line))

    def replies(self) -> list[str]:
        return [c["reply"] for c in self.calls if c["ok"]]

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()


@contextlib.asynccontextmanager
async def proxyless(
    m: Mesh, node_id: str, seconds: float, *metadata: str, env: dict | None = None, target: str = TARGET
) -> AsyncIterator[ProxylessClient]:
    client = ProxylessClient()
    try:
        await client.start(m, node_id, seconds, *metadata, env=env, target=target)
        yield client
    finally:
        await client.stop()


async def test_a_proxyless_client_takes_the_routes_a_live_flip_and_shows_in_get_proxies(mesh_factory):
    beta = {"serviceName": "demo.Echo", "metadata": [{"name": "x-tenant", "match": {"exact": "beta"}}]}
    routes = (
        grpc_route("echo-beta", 10, beta, {"echo-v2": 100}),
        grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100}),
    )
    async with (
        grpc_mesh(mesh_factory, ("v1", "v2"), *routes) as (m, _, channel, servers),
        proxyless(m, "demo/client/pl-main", 30) as main,
        proxyless(m, "demo/client/pl-beta", 30, "x-tenant=beta") as tenant,
    ):
        await eventually(lambda: len(main.replies()) >= 5, timeout=20)
        assert set(main.replies()) == {"v1:x"}, main.calls[-5:]

        # The proxies API tells the gRPC clients from the Envoy sidecar of the same VirtualNode.
        async def all_synced() -> bool:
            proxies = (await m.admin("/api/v1/proxies"))["proxies"]
            grpc_clients = [p for p in proxies if p["kind"] == "grpc"]
            return len(grpc_clients) == 2 and all(
                p["types"][t]["sync"]["state"] == "SYNCED" for p in grpc_clients for t in ("lds", "rds", "cds", "eds")
            )

        await eventually(all_synced, timeout=15)
        proxies = {p["node_id"]: p for p in (await m.admin("/api/v1/proxies"))["proxies"]}
        assert proxies["demo/client/pl-main"]["client"].startswith("gRPC"), proxies["demo/client/pl-main"]
        assert proxies["demo/client/pl-main"]["group"] == "demo/client"
        assert proxies["demo/client/pl-main"]["types"]["lds"]["resources"] == [TARGET]
        assert any(p["kind"] == "envoy" for p in proxies.values())

        # A live flip: every call succeeds, the proxyless client and the sidecar both move to v2.
        flip_at = len(main.calls)
        flipped = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v2": 100})
        write(m.dir / "mesh.yaml", *mesh_docs(servers), routes[0], flipped)
        await eventually(lambda: main.replies()[-1:] == ["v2:x"], timeout=20)
        await eventually(lambda: len(main.calls) >= flip_at + 20, timeout=20)
        after = main.calls[flip_at:]
        assert all(c["ok"] for c in after), [c for c in after if not c["ok"]][:3]
        assert await channel.unary_unary(SAY)(b"x") == b"v2:x"  # the Envoy sidecar of the same VirtualNode

        await eventually(lambda: len(tenant.replies()) >= 5, timeout=20)
        assert set(tenant.replies()) == {"v2:x"}, tenant.calls[-3:]  # the metadata match, before and after
        assert all(c["ok"] for c in tenant.calls[next(i for i, c in enumerate(tenant.calls) if c["ok"]) :])


async def test_a_route_without_retries_is_taken_by_the_proxyless_client_and_the_sidecar(mesh_factory):
    """``maxRetries: 0`` was written as ``num_retries: 0``, which gRPC rejects with the whole RouteConfiguration
    (gRFC A44): every call of the proxyless client failed while the Envoy sidecar beside it was fine. No retries is
    now no retry policy, for both."""
    no_retries = {"grpcRetryEvents": ["unavailable"], "maxRetries": 0}
    route = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, retryPolicy=no_retries)
    async with (
        grpc_mesh(mesh_factory, ("v1",), route) as (m, _, channel, _servers),
        proxyless(m, "demo/client/pl", 30) as client,
    ):
        await eventually(lambda: len(client.replies()) >= 5, timeout=20)
        assert all(c["ok"] for c in client.calls), client.calls[:3]
        proxies = (await m.admin("/api/v1/proxies"))["proxies"]
        assert len(proxies) == 2 and all(p["types"]["rds"]["rejected"] is None for p in proxies), proxies
        assert await channel.unary_unary(SAY)(b"x") == b"v1:x"  # and the sidecar beside it


async def test_an_injected_proxyless_pod_streams_xds_over_tls_with_what_injection_gave_it(mesh_factory, tmp_path):
    """``meshctl.dev/proxyless: grpc``: no Envoy and no capture; each container gets GRPC_XDS_BOOTSTRAP_CONFIG
    (its node id naming the pod through ``$(MESHCTL_POD_NAME)``) and the xDS CA as a file from a downward API
    volume. Played as the kubelet would (env expanded, the annotation written where the volume mounts it), a real
    grpcio client verifies meshctl's certificate with that CA and is routed."""
    ca = new_ca()
    serving = issue(ca, "localhost", dns_names=("localhost",))
    (tmp_path / "xds.crt").write_bytes(serving.cert_pem)
    (tmp_path / "xds.key").write_bytes(serving.key_pem)
    m: Mesh = await mesh_factory()
    server = EchoServer("v1")
    await server.server.start()
    try:
        write(m.dir / "mesh.yaml", *mesh_docs({"v1": server}))
        m.plane = ControlPlane.from_manifests(m.dir, xds_tls=XdsTls(tmp_path / "xds.crt", tmp_path / "xds.key"))
        await m.start()
        config = InjectConfig(xds_address="localhost", xds_port=m.plane.xds_port, ca_pem=ca.cert_pem.decode())
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client-0", "namespace": "demo", "labels": {"app": "client"},
                         "annotations": {ANNOTATION_PROXYLESS: "grpc"}},
            "spec": {"containers": [{"name": "app", "image": "demo/app:1", "env": [{"name": "A", "value": "1"}]}]},
        }  # fmt: skip
        nodes = [VirtualNodeRef("client", {"app": "client"}, ())]
        injected = jsonpatch.apply_patch(pod, inject(pod, "demo", nodes, config).patch)
        kubernetes_validate.validate(injected, "1.30.0", strict=True)
        spec = injected["spec"]
        assert "initContainers" not in spec and [c["name"] for c in spec["containers"]] == ["app"]
        assert injected["metadata"]["annotations"][ANNOTATION_XDS_CA] == ca.cert_pem.decode()
        (volume,) = spec["volumes"]
        (item,) = volume["downwardAPI"]["items"]
        assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{ANNOTATION_XDS_CA}']"
        (app,) = spec["containers"]
        assert [e["name"] for e in app["env"]] == ["A", "MESHCTL_POD_NAME", "GRPC_XDS_BOOTSTRAP_CONFIG"]
        assert app["volumeMounts"][0]["mountPath"] + "/" + item["path"] == GRPC_CA_FILE

        # The kubelet's part: expand $(MESHCTL_POD_NAME), mount the annotation as the CA file (here: tmp_path).
        ca_file = tmp_path / "ca.pem"
        ca_file.write_text(injected["metadata"]["annotations"][ANNOTATION_XDS_CA])
        bootstrap = (
            app["env"][2]["value"].replace("$(MESHCTL_POD_NAME)", "client-0").replace(GRPC_CA_FILE, str(ca_file))
        )
        async with proxyless(m, "", 30, env={"GRPC_XDS_BOOTSTRAP_CONFIG": bootstrap}) as client:
            await eventually(lambda: len(client.replies()) >= 3, timeout=20)
            assert set(client.replies()) == {"v1:x"}
            (proxy,) = (await m.admin("/api/v1/proxies"))["proxies"]
            assert proxy["node_id"] == "demo/client/client-0" and proxy["kind"] == "grpc"
    finally:
        await server.server.stop(0)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grpc" / "echo.yaml"


def example_docs(port: int, weights: tuple[int, int] | None = None) -> list[dict]:
    """examples/grpc/echo.yaml as shipped, its listeners moved to ``port`` (the servers share one on two loopback
    addresses, as pods share a container port), the default route's weights replaced when given."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    for doc in docs:
        for listener in doc.get("spec", {}).get("listeners", []):
            listener["portMapping"]["port"] = port
        if weights and doc["kind"] == "Route" and doc["metadata"]["name"] == "echo":
            targets = doc["spec"]["grpcRoute"]["action"]["weightedTargets"]
            targets[0]["weight"], targets[1]["weight"] = weights
    return docs


def example_workloads(servers: dict[str, EchoServer], port: int) -> list[dict]:
    docs: list[dict] = []
    for version, server in servers.items():
        labels = {"app": "echo", "version": version}
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"echo-{version}-0", "namespace": "rpc",
                                                                     "labels": labels}})  # fmt: skip
        docs.append({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": f"echo-{version}", "namespace": "rpc", "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [server.host], "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": f"echo-{version}-0"}}],
        })  # fmt: skip
    return docs


async def test_the_grpc_example_splits_matches_and_flips_for_proxyless_clients(mesh_factory):
    """examples/grpc served to proxyless clients: the 90/10 canary split (each call's version within the exact
    Binomial bounds at 1e-6), the beta tenant's metadata match (every call to v2), and a live flip to v2 with no
    failed call."""
    port = shared_port()
    servers = {"v1": EchoServer("v1", "127.0.0.41", port), "v2": EchoServer("v2", "127.0.0.42", port)}
    for server in servers.values():
        await server.server.start()
    m: Mesh = await mesh_factory()
    try:
        write(m.dir / "mesh.yaml", *example_docs(port), *example_workloads(servers, port))
        await m.start()
        async with (
            proxyless(m, "rpc/client/pl-0", 60, target="echo.rpc:50051") as main,
            proxyless(m, "rpc/client/pl-1", 60, "x-tenant=beta", target="echo.rpc:50051") as beta,
        ):
            await eventually(lambda: len(main.replies()) >= 50 and len(beta.replies()) >= 50, timeout=30)
            first = len(main.calls)
            await eventually(lambda: len(main.calls) >= first + 1000, timeout=30)
            window = main.calls[first : first + 1000]
            assert all(c["ok"] for c in window), [c for c in window if not c["ok"]][:3]
            canary = sum(c["reply"] == "v2:x" for c in window)
            lo, hi = binomial_bounds(1000, 0.1)
            assert lo <= canary <= hi, (canary, (lo, hi))
            assert set(beta.replies()) == {"v2:x"}

            flip_at = len(main.calls)
            write(m.dir / "mesh.yaml", *example_docs(port, (0, 100)), *example_workloads(servers, port))
            await eventually(lambda: main.replies()[-50:] == ["v2:x"] * 50, timeout=20)
            assert all(c["ok"] for c in main.calls[flip_at:]), [c for c in main.calls[flip_at:] if not c["ok"]][:3]
            assert all(c["ok"] for c in beta.calls[next(i for i, c in enumerate(beta.calls) if c["ok"]) :])
    finally:
        for server in servers.values():
            await server.server.stop(0)


async def sidecar_answers(channel: grpc.aio.Channel, expected: bytes) -> bool:
    """Whether a call through the Envoy sidecar gets ``expected`` now (a failed call: not yet)."""
    try:
        return bool(await channel.unary_unary(SAY)(b"x", timeout=2) == expected)
    except grpc.aio.AioRpcError:
        return False


def prefix_to_v2(servers: dict[str, EchoServer]) -> list[dict]:
    """Service echo-v2 (gRPC) over the v2 server and an HTTPRoute on Service echo sending PathPrefix /demo.Echo there."""
    v2 = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo-v2", "namespace": "demo"},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "appProtocol": "grpc"}]},
    }
    slice_v2 = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "echo-v2-svc", "namespace": "demo", "labels": {"kubernetes.io/service-name": "echo-v2"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": servers["v2"].port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }
    prefix = [{"path": {"type": "PathPrefix", "value": "/demo.Echo"}}]
    return [
        v2,
        slice_v2,
        http_route("echo-prefix", "echo", {"echo-v2": 1}, port=50051, backend_port=50051, matches=prefix),
    ]


async def test_an_httproute_path_prefix_is_taken_by_the_sidecar_and_the_proxyless_client_of_one_group(mesh_factory):
    """A mixed group: an Envoy sidecar and a proxyless client under one VirtualNode, an HTTPRoute matching a
    PathPrefix. It was written as Envoy's ``path_separated_prefix``, which gRPC rejects with the whole
    RouteConfiguration ("invalid path specifier"): the sidecar was routed, the proxyless client failed every call.
    Now the path and the prefix below it, which both take."""
    first = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100})
    async with grpc_mesh(mesh_factory, ("v1", "v2"), first) as (m, _, channel, servers):
        write(m.dir / "mesh.yaml", *mesh_docs(servers), *prefix_to_v2(servers))

        await eventually(lambda: sidecar_answers(channel, b"v2:x"), timeout=20)
        async with proxyless(m, "demo/client/pl-0", 30) as client:
            await eventually(lambda: len(client.replies()) >= 5, timeout=20)
            assert set(client.replies()) == {"v2:x"} and all(c["ok"] for c in client.calls), client.calls[:3]
            proxies = (await m.admin("/api/v1/proxies"))["proxies"]
            assert {p["kind"] for p in proxies} == {"envoy", "grpc"}
            assert all(p["types"]["rds"]["rejected"] is None for p in proxies), proxies
            assert await channel.unary_unary(SAY)(b"x") == b"v2:x"


async def test_explain_from_a_group_with_proxyless_callers_says_what_they_skip(mesh_factory):
    """``explain --from`` reads the routes a proxyless client of the VirtualNode is sent (the group's), and says what
    gRPC clients do not honour of the matched Route and of the VirtualNode it reaches (ProxylessCompatible)."""
    retry = {"grpcRetryEvents": ["unavailable"], "maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 800}}
    route = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, retryPolicy=retry)
    async with (
        grpc_mesh(mesh_factory, ("v1",), route) as (m, _, _channel, _servers),
        proxyless(m, "demo/client/pl-0", 30) as client,
    ):
        await eventually(lambda: len(client.replies()) >= 3, timeout=20)
        admin = f"http://127.0.0.1:{m.plane.admin_port}"
        request = ("POST", f"http://{TARGET}{SAY}", "-H", "content-type: application/grpc")
        code, out, err = await run_meshctl("explain", "--admin", admin, "--from", "demo/client", *request)
        assert code == 0, err
        said = [line for line in out.splitlines() if line.startswith("route demo/echo-service: for proxyless gRPC")]
        assert said and "perRetryTimeout: gRPC has no per-try timeout" in " ".join(out.split()), out
        code, out, err = await run_meshctl("explain", "--admin", admin, "--from", "demo/client", *request, "-o", "json")
        assert code == 0, err
        doc = json.loads(out)
        assert (
            doc["matched"] == "demo/echo-service"
            and "perRetryTimeout" in doc["proxylessNotes"]["routes"][doc["matched"]]
        )


async def test_a_route_timeout_does_not_fail_proxyless_calls_and_still_bounds_the_sidecars(mesh_factory):
    """A Route timeout of 1.5 s was also written as ``max_stream_duration`` (gRFC A31): grpcio 1.85 then failed every
    call at once with DEADLINE_EXCEEDED under a 5 s call deadline (the interop client too). Envoy alone takes the
    route timeout now; the proxyless client's own deadline bounds its calls (said on the Route)."""
    timeout = {"perRequest": {"unit": "ms", "value": 1500}}
    route = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, timeout=timeout)
    async with (
        grpc_mesh(mesh_factory, ("v1",), route) as (m, _, channel, servers),
        proxyless(m, "demo/client/pl-0", 30) as client,
    ):
        await eventually(lambda: len(client.calls) >= 20, timeout=20)
        assert all(c["ok"] for c in client.calls), client.calls[:3]
        servers["v1"].delay = 3.0  # the sidecar still cuts a call at the route's 1.5 s
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await channel.unary_unary(SAY)(b"x", timeout=10)
        assert cut.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), cut.value
        status = await m.admin("/api/v1/status")
        assert "timeout.perRequest: not sent to gRPC clients" in json.dumps(status), status


async def test_a_rejection_by_the_proxyless_client_alone_changes_only_what_it_is_sent(mesh_factory, monkeypatch):
    """Containment for gRPC clients as for Envoys: a RouteConfiguration only gRPC rejects (here: the PathPrefix written
    as Envoy's path_separated_prefix again, as before the fix) is a NACK of that client alone, Envoy's validator
    accepts it: the sidecar of the same VirtualNode takes it, the proxyless client keeps its last routes and every
    call still succeeds, and the NACK is shown for it alone."""
    import meshctl.xds.cache.route_wire as route_wire
    import meshctl.xds.envoy.route as envoy_route

    first = grpc_route("echo-service", 20, {"serviceName": "demo.Echo"}, {"echo-v1": 100})
    async with (
        grpc_mesh(mesh_factory, ("v1", "v2"), first) as (m, _, channel, servers),
        proxyless(m, "demo/client/pl-0", 60) as client,
    ):
        await eventually(lambda: len(client.replies()) >= 5, timeout=20)
        for module in (route_wire, envoy_route):
            monkeypatch.setattr(module, "envoy_matches", lambda match: (match,))
        # (uncached while patched: the real cache never holds a patched value)
        uncached = route_wire._match_bytes.__wrapped__
        monkeypatch.setattr(route_wire, "_match_bytes", uncached)
        write(m.dir / "mesh.yaml", *mesh_docs(servers), *prefix_to_v2(servers))

        await eventually(lambda: sidecar_answers(channel, b"v2:x"), timeout=20)

        async def grpc_client_rejected() -> bool:
            proxies = {p["kind"]: p for p in (await m.admin("/api/v1/proxies"))["proxies"]}
            return proxies["grpc"]["types"]["rds"]["rejected"] is not None

        await eventually(grpc_client_rejected, timeout=20)
        proxies = {p["kind"]: p for p in (await m.admin("/api/v1/proxies"))["proxies"]}
        assert "invalid path specifier" in proxies["grpc"]["types"]["rds"]["rejected"]["error"]
        assert proxies["envoy"]["types"]["rds"]["rejected"] is None
        seen = len(client.calls)
        await eventually(lambda: len(client.calls) >= seen + 20, timeout=20)
        assert all(c["ok"] for c in client.calls) and set(client.replies()) == {"v1:x"}, client.calls[-3:]
        status = {o["name"]: o for o in (await m.admin("/api/v1/status"))["objects"]}
        assert status["echo-prefix"]["healthy"], status["echo-prefix"]  # not blocked: Envoy takes it
