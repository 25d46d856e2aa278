"""Behavioural parity of ``meshctl import appmesh``: imported App Mesh configurations, served by our control plane to
a real Envoy, route requests the way App Mesh says they should. The color app: header matches in priority order,
method + path + query with an inverted header range, the 80/20 weighted default, App Mesh's implicit retry on a 503.
The gRPC service: service/method/metadata matches, a 90/10 split, a gRPC retry event. The TCP service: a 75/25
connection split. The policies case: the route's retries on 5xx and its per-retry timeout, on a two-listener node.
The secure mesh (TLS reported, not converted) serves in plaintext. An imported VirtualGateway is an edge gateway now;
its parity (paths, hosts and App Mesh's rewrites through a real gateway Envoy) is tests/e2e/test_gateway.py's."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc

from meshctl.devtools.envoy_process import free_port
from tests.conftest import Mesh, eventually
from tests.e2e.test_grpc import SAY, EchoServer
from tests.manifests import write
from tests.stats import assert_split

CASE = Path(__file__).parent.parent / "testdata" / "appmesh" / "color-app" / "input"
NS = "howto-k8s"
COLORS = ("white", "blue", "red", "yellow", "green")
HOST = f"color.{NS}.svc.cluster.local"


def pods_and_slices(port: int, ns: str = NS, app: str = "color", versions: tuple[str, ...] = COLORS) -> list[dict]:
    """What the cluster would have: one pod per version, on its own loopback address, and its slice."""
    docs: list[dict] = []
    for i, color in enumerate(versions):
        pod = f"{app}-{color}-0"
        labels = {"app": app, "version": color}
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns, "labels": labels}})
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": f"{app}-{color}", "namespace": ns, "labels": {"kubernetes.io/service-name": app}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [f"127.0.0.{i + 2}"],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": pod},
                    }
                ],
            }
        )
    return docs


def import_into(m: Mesh, case: Path, tmp_path: Path, port_from: int, port: int) -> None:
    """Runs the real CLI on the case's App Mesh manifests (with the port changed) into the mesh's directory."""
    source = tmp_path / "appmesh"
    source.mkdir()
    for file in case.iterdir():
        text = file.read_text().replace(f"port: {port_from}", f"port: {port}")
        (source / file.name).write_text(text.replace(f"value: {port_from}", f"value: {port}"))
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(source), "-o", str(m.dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


async def test_imported_color_app_routes_as_app_mesh_would(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    port = free_port()
    import_into(m, CASE, tmp_path, 8080, port)
    write(m.dir / "cluster.yaml", pods_and_slices(port))
    apps = {color: (await m.app(color, port=port, host=f"127.0.0.{i + 2}"))[0] for i, color in enumerate(COLORS)}
    await m.start()
    sidecar = await m.sidecar(f"{NS}/front")
    await m.wait_routable(sidecar, HOST)

    async def color_of(path: str = "/", method: str = "GET", **headers: str) -> str:
        assert m.session is not None
        async with m.session.request(method, sidecar.url + path, headers={"Host": HOST, **headers}) as r:
            assert r.status == 200, (path, headers, r.status)
            return await r.text()

    # Header routes, in App Mesh priority order: exact, regex, prefix, then "present" (no match given).
    assert await color_of(color_header="blue") == "blue"
    assert await color_of(color_header="dark-green-ish") == "green"
    assert await color_of(color_header="reddish") == "red"
    assert await color_of(color_header="purple") == "yellow"
    # POST /paint?shade=dark with x-tier outside [1, 3) (an inverted range: the header must be present, as in
    # Envoy, which App Mesh ran too) goes to red; anything else falls through to the weighted default route.
    assert await color_of("/paint?shade=dark", "POST", **{"x-tier": "5"}) == "red"
    for path, method, headers in [
        ("/paint?shade=dark", "POST", {"x-tier": "2"}),
        ("/paint?shade=dark", "POST", {}),
        ("/paint?shade=light", "POST", {"x-tier": "5"}),
        ("/paint?shade=dark", "GET", {"x-tier": "5"}),
    ]:
        assert await color_of(path, method, **headers) in ("white", "blue"), (path, method, headers)
    # No header: the weighted default route, 80/20, within binomial bounds.
    counts = await m.split(sidecar, HOST, 1000)
    assert_split(counts, {"white": 80, "blue": 20})
    # A route without a retryPolicy keeps App Mesh's implicit retry: a 503 from blue is retried.
    apps["blue"].seen.clear()
    apps["blue"].fail_first = 1
    assert await color_of("/retry", color_header="blue") == "blue"
    assert apps["blue"].seen["/retry"] == 2


async def test_imported_grpc_routes_as_app_mesh_would(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    port = free_port()
    import_into(m, CASE.parent.parent / "grpc-and-tcp" / "input", tmp_path, 50051, port)
    write(m.dir / "cluster.yaml", pods_and_slices(port, "rpc", "echo", ("v1", "v2")))
    servers = {v: EchoServer(f"echo-{v}", host=f"127.0.0.{i + 2}", port=port) for i, v in enumerate(("v1", "v2"))}
    for server in servers.values():
        await server.server.start()
    try:
        await m.start()
        sidecar = await m.sidecar("rpc/client")
        target = f"127.0.0.1:{sidecar.egress_port}"
        async with grpc.aio.insecure_channel(target, options=[("grpc.default_authority", "echo.rpc")]) as channel:
            say = channel.unary_unary(SAY)

            async def who(**metadata: str) -> str:
                reply = await say(b"x", timeout=5, metadata=tuple(metadata.items()))
                return bytes(reply).decode().split(":")[0]

            async def routed() -> bool:
                try:
                    return await who() in ("echo-v1", "echo-v2")
                except grpc.aio.AioRpcError:
                    return False

            await eventually(routed, timeout=15)
            # echo-say (priority 1): method Say with x-beta: true and x-region not starting eu- -> v2 only.
            assert {await who(**{"x-beta": "true", "x-region": "us-east-1"}) for _ in range(20)} == {"echo-v2"}
            # Otherwise the service route (priority 2): 90/10 over v1/v2.
            counts: dict[str, int] = {}
            for _ in range(400):
                name = await who(**{"x-beta": "true", "x-region": "eu-west-1"})
                counts[name] = counts.get(name, 0) + 1
            assert_split(counts, {"echo-v1": 90, "echo-v2": 10})
            # echo-say retries UNAVAILABLE (its grpcRetryEvents): one failure is invisible to the caller.
            servers["v2"].calls, servers["v2"].fail_first = 0, 1
            assert await who(**{"x-beta": "true", "x-region": "us-east-1"}) == "echo-v2"
            assert servers["v2"].calls == 2
    finally:
        for server in servers.values():
            await server.server.stop(0)


async def test_imported_tcp_route_splits_connections_as_app_mesh_would(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    port = free_port()  # the ledger's port: its pods' and the Service's (the sidecar listens on it)
    import_into(m, CASE.parent.parent / "grpc-and-tcp" / "input", tmp_path, 5432, port)
    write(m.dir / "cluster.yaml", pods_and_slices(port, "rpc", "ledger", ("a", "b")))

    async def serve(name: str, host: str) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(1024):
                writer.write(f"{name}:".encode() + data)
                await writer.drain()
            writer.close()

        return await asyncio.start_server(handle, host, port)

    servers = [await serve("ledger-a", "127.0.0.2"), await serve("ledger-b", "127.0.0.3")]
    try:
        await m.start()
        await m.sidecar("rpc/client")

        async def who() -> str:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"ping")
                await writer.drain()
                return (await asyncio.wait_for(reader.read(1024), 5)).decode().split(":")[0]
            finally:
                writer.close()

        async def connected() -> bool:
            try:
                return await who() in ("ledger-a", "ledger-b")
            except (OSError, TimeoutError):
                return False

        await eventually(connected, timeout=15)
        counts: dict[str, int] = {}
        for _ in range(300):
            name = await who()
            counts[name] = counts.get(name, 0) + 1
        assert_split(counts, {"ledger-a": 75, "ledger-b": 25})
    finally:
        for server in servers:
            server.close()


async def test_imported_policies_retry_and_time_out_as_app_mesh_would(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    port = free_port()
    import_into(m, CASE.parent.parent / "policies" / "input", tmp_path, 8080, port)
    write(m.dir / "cluster.yaml", pods_and_slices(port, "shop", "catalog", ("v1",)))
    catalog, _ = await m.app("catalog-v1", port=port, host="127.0.0.2")
    await m.start()
    sidecar = await m.sidecar("shop/web")
    host = "catalog.shop.svc.cluster.local"
    await m.wait_routable(sidecar, host)
    # retryPolicy: server-error, maxRetries 2 -> a 500 then a 503 are both retried.
    catalog.seen.clear()
    catalog.fail_first, catalog.fail_status = 2, 500
    assert (await m.get(sidecar, host, "/retried"))[:2] == (200, "catalog-v1")
    assert catalog.seen["/retried"] == 3
    # A slow answer: each try is cut by perRetryTimeout (250 ms) and retried twice, so the caller gets a 504 after
    # three tries, well before the route's 3 s perRequest. Envoy counts the three per-try timeouts.
    catalog.fail_first, catalog.delay = 0, 2.0  # would answer within the 3 s perRequest, but not within a try
    started = time.monotonic()
    status, _, _ = await m.get(sidecar, host, "/slow")
    assert status == 504 and time.monotonic() - started >= 0.7
    assert sidecar.envoy.stats()[f"cluster.shop/catalog-v1/{port}.upstream_rq_per_try_timeout"] == 3


async def test_imported_secure_mesh_keeps_its_mtls(mesh_factory, tmp_path: Path):
    """The listener's STRICT TLS is converted (its SDS sources become the mesh CA's, as reported), so callers
    originate mTLS to payments with no client policy: the frontend's cluster carries an UpstreamTlsContext naming
    the mesh identity and roots. (Traffic over it is proven with real sidecars on both ends: tests/e2e/test_mtls.py.)"""
    m: Mesh = await mesh_factory()
    port = free_port()
    import_into(m, CASE.parent.parent / "reported" / "input", tmp_path, 8443, port)
    write(m.dir / "cluster.yaml", pods_and_slices(port, "secure", "payments", ("v1",)))
    await m.start()
    await m.sidecar("secure/frontend", wait_ready=False)

    async def frontend_clusters() -> list[dict]:
        dump = await m.admin("/api/v1/config_dump")
        groups = [g for name, g in dump["groups"].items() if name.startswith("secure/frontend")]
        return groups[0]["cds"]["resources"] if groups else []

    await eventually(frontend_clusters, timeout=15)
    (cluster,) = [c for c in await frontend_clusters() if c["name"].startswith("secure/payments/")]
    context = cluster["transport_socket"]["typed_config"]
    assert context["@type"].endswith("UpstreamTlsContext")
    common = context["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"][0]["name"] == "meshctl-identity"
    assert common["combined_validation_context"]["validation_context_sds_secret_config"]["name"] == "meshctl-trust"
