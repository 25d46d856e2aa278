"""Shared fixtures: a mesh harness with the real control plane, real aiohttp upstreams and real Envoys."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import EnvoyProcess, free_port, loopback_sidecar
from meshctl.devtools.sample_app import Behavior, start_app


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files instead of comparing")


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10, interval: float = 0.05) -> None:
    """Waits for a condition with a deadline (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Sidecar:
    def __init__(self, envoy: EnvoyProcess, egress_port: int, ingress_port: int) -> None:
        self.envoy = envoy
        self.egress_port = egress_port
        self.ingress_port = ingress_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.egress_port}"


class Mesh:
    """A manifest directory, a control plane on it, upstream apps and Envoy sidecars, all on loopback."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        # Traffic figures each half second (default 5): progressive shifts and the web view judge short windows.
        self.plane = ControlPlane.from_manifests(directory, traffic_interval=0.5)
        self.apps: dict[str, Behavior] = {}
        self.ports: dict[str, int] = {}
        self._runners: list = []
        self._envoys: list[EnvoyProcess] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await self.plane.start()
        await self.plane.wait_synced()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def app(
        self, name: str, port: int | None = None, host: str = "127.0.0.1", **behavior
    ) -> tuple[Behavior, int]:
        port = port or free_port(host)
        b = Behavior(name=name, **behavior)
        self._runners.append(await start_app(b, port, host))
        self.apps[name] = b
        self.ports[name] = port
        return b, port

    async def sidecar(
        self,
        virtual_node: str,
        node_id: str | None = None,
        *,
        delta: bool = False,
        wait_ready: bool = True,
        stats: bool = False,
        sds_socket: str | None = None,
        dns_resolvers: tuple[str, ...] = (),
    ) -> Sidecar:
        """``stats``: serve /stats/prometheus on a port of its own (what ``meshctl shift --steps`` reads)."""
        egress, ingress = free_port(), free_port()
        envoy = loopback_sidecar(
            self.plane.xds_port,
            virtual_node,
            node_id or f"{virtual_node}/pod-{len(self._envoys)}",
            egress_port=egress,
            ingress_port=ingress,
            delta=delta,
            stats_port=free_port() if stats else None,
            admin_port=free_port() if stats else 0,
            sds_socket=sds_socket,
            dns_resolvers=dns_resolvers,
        )
        await envoy.start()
        self._envoys.append(envoy)
        if wait_ready:
            # Envoy lists listeners in /listeners before its workers accept on them; /ready answers 200 only once
            # the initial config is in and the workers run (ENVOY-NOTES).
            await eventually(lambda: envoy.ready(), timeout=30)
        return Sidecar(envoy, egress, ingress)

    async def get(self, sidecar: Sidecar, host: str, path: str = "/", **kw) -> tuple[int, str, dict]:
        assert self.session is not None
        async with self.session.get(sidecar.url + path, headers={"Host": host, **kw.pop("headers", {})}, **kw) as r:
            return r.status, await r.text(), dict(r.headers)

    async def admin(self, path: str) -> dict:
        """GET the control plane's admin API (what `meshctl get` reads), as JSON."""
        assert self.session is not None
        async with self.session.get(f"http://127.0.0.1:{self.plane.admin_port}{path}") as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def proxy(self, node_prefix: str = "demo/frontend") -> dict:
        """The one connected proxy whose node id starts with ``node_prefix``, from /api/v1/proxies."""
        (found,) = [p for p in (await self.admin("/api/v1/proxies"))["proxies"] if p["node_id"].startswith(node_prefix)]
        return found

    async def served_versions(self, group: str) -> dict[str, str]:
        """The version of each type (cds, eds, lds, rds) the control plane serves to ``group``."""
        dump = await self.admin(f"/api/v1/config_dump?group={quote(group)}")
        return {t: v["version"] for t, v in dump["groups"][group].items()}

    async def wait_routable(self, sidecar: Sidecar, host: str, timeout: float = 15) -> None:
        async def ok() -> bool:
            try:
                status, _, _ = await self.get(sidecar, host)
            except aiohttp.ClientError:
                return False
            return status == 200

        await eventually(ok, timeout)

    async def split(self, sidecar: Sidecar, host: str, n: int, concurrency: int = 20) -> collections.Counter:
        """Sends n requests (bounded concurrency) and counts (status, body)."""
        counts: collections.Counter = collections.Counter()
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                status, body, _ = await self.get(sidecar, host)
                counts[body if status == 200 else status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return counts

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        for envoy in self._envoys:
            await envoy.stop()
        for runner in self._runners:
            await runner.cleanup()
        await self.plane.stop()


@pytest.fixture
def apiserver():
    """The stateful test Kubernetes API server (tests/apiserver.py), started for one test."""
    from tests.apiserver import ApiServer

    server = ApiServer(bookmark_interval=0.2)
    server.start()
    yield server
    server.stop()
    _assert_controller_calls_allowed(server.calls)


def _assert_controller_calls_allowed(calls) -> None:
    """Every call the controller made in this test is one its shipped RBAC allows (tests/least_privilege.py)."""
    from tests.least_privilege import check_rbac, controller_calls, shipped_grants

    denied = check_rbac(shipped_grants(), controller_calls(calls)).denied
    assert not denied, "the controller made calls its shipped RBAC does not allow:\n" + "\n".join(denied)


@pytest.fixture
async def mesh_factory(tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[Mesh]]]:
    meshes: list[Mesh] = []

    async def make() -> Mesh:
        m = Mesh(tmp_path / f"manifests-{len(meshes)}")
        m.dir.mkdir()
        meshes.append(m)
        return m

    yield make
    for m in meshes:
        await m.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory):
    from tests.aws import Moto

    server = Moto(recording=tmp_path_factory.mktemp("moto") / "recording.jsonl")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server, monkeypatch):
    """A fresh moto (state reset) that boto3 reaches through the standard environment settings. Afterwards: every
    AWS call the controller made in the test is one the shipped IAM policy allows."""
    from tests.least_privilege import all_shipped_policies, check_iam, controller_aws_calls, read_recording

    moto_server.reset()
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    start = moto_server.recording.stat().st_size if moto_server.recording.exists() else 0
    yield moto_server
    calls, _ = read_recording(moto_server.recording, start)
    denied = check_iam(all_shipped_policies(), controller_aws_calls(calls)).denied
    assert not denied, "the controller made AWS calls the shipped IAM policies do not allow:\n" + "\n".join(denied)
