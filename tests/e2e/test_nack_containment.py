"""One proxy's NACK changes only what that proxy is sent (issue 27, part 1).

A healthy Envoy and a second ADS client in the same VirtualNode; the second NACKs every response it gets, as a
picky client, an Envoy of another version, a proxyless client or an attacker would. The healthy Envoy keeps serving
and keeps getting changes, including ones the second client rejected first; objects are blocked for everyone only
when Envoy's own validator rejects them too, and unblocked when fixed.
"""

from __future__ import annotations

import asyncio
import contextlib

from meshctl.xds.envoy.types import CLUSTER, LISTENER, ROUTE
from tests.ads_client import AdsClient
from tests.conftest import Mesh, eventually
from tests.e2e.test_rejections import BIG_REGEX, objects_by_name
from tests.e2e.test_traffic import basic_mesh, route_version, wait_converged
from tests.manifests import route, workload, write

PICKY = "picky client: unsupported field"


class Nacker:
    """Subscribes to everything as a sidecar of ``virtual_node`` would, and NACKs every response."""

    def __init__(self, m: Mesh, virtual_node: str, node_id: str) -> None:
        self.client = AdsClient(m.plane.xds_port, node_id, virtual_node)
        self.nacked: list[tuple[str, str]] = []  # (type, version)
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        for type_url in (CLUSTER, LISTENER):
            await self.client.send(type_url)
        await self.client.send(ROUTE, ["outbound"])
        while True:
            try:
                resp = await self.client.recv(timeout=0.5)
            except TimeoutError:
                continue
            names = ["outbound"] if resp.type_url == ROUTE else ()
            await self.client.send(resp.type_url, names, version="", nonce=resp.nonce, error=PICKY)
            self.nacked.append((resp.type_url, resp.version_info))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.close()


async def verdicts(m: Mesh, node_id: str) -> list[str | None]:
    return [r["verdict"] for r in (await m.admin("/api/v1/rejections"))["rejections"] if r["node_id"] == node_id]


async def programmed_false(m: Mesh) -> dict[str, str]:
    """Objects with Programmed=False, with the message."""
    objects = objects_by_name(await m.admin("/api/v1/status"))
    return {
        name: c["message"]
        for name, o in objects.items()
        for c in o["conditions"]
        if c["type"] == "Programmed" and c["status"] == "False"
    }


async def test_a_client_that_nacks_everything_takes_nothing_from_the_others(mesh_factory, monkeypatch):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100})
    _, p3 = await m.app("v3")
    nacker = Nacker(m, "demo/frontend", "picky/demo-frontend/0")
    nacker.start()
    try:
        await eventually(lambda: any(t == CLUSTER for t, _ in nacker.nacked))
        # Judged by Envoy's validator: the config is fine, so the rejection is that client's alone.
        await eventually(lambda: _has(verdicts(m, "picky/demo-frontend/0"), "not-confirmed"), timeout=20)
        assert await programmed_false(m) == {}
        assert (await m.split(sidecar, "reviews", 50)) == {"v1": 50}

        # Changes keep reaching the healthy Envoy, even ones the picky client NACKs first (a new cluster: the
        # NACK blames the new VirtualNode, which no other proxy holds yet).
        for _ in range(3):
            old = await route_version(m)
            seen = len(nacker.nacked)
            write(m.dir / "v3.yaml", workload("reviews", "v3", p3))
            write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v3": 100}))
            await wait_converged(m, sidecar, old)
            assert (await m.split(sidecar, "reviews", 20)) == {"v3": 20}
            assert len(nacker.nacked) > seen  # it was sent the change, and NACKed it
            old = await route_version(m)
            write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100}))
            (m.dir / "v3.yaml").unlink()
            await wait_converged(m, sidecar, old)
            assert (await m.split(sidecar, "reviews", 20)) == {"v1": 20}
        assert await programmed_false(m) == {}
        picky = next(p for p in (await m.admin("/api/v1/proxies"))["proxies"] if p["node_id"].startswith("picky/"))
        assert picky["types"]["cds"]["rejected"]["error"] == PICKY  # reported on that proxy, as before

        # A config Envoy's validator rejects too (the parser believes a higher RE2 limit than Envoy's): the healthy
        # Envoy's NACK is confirmed and the Route blocked for everyone; fixed, it is served.
        monkeypatch.setattr("meshctl.parse.route.REGEX_PROGRAM_SIZE_LIMIT", 10**6)
        good = await route_version(m)
        write(
            m.dir / "bad-regex.yaml",
            route("big-regex", "reviews", {"reviews-v2": 100}, match={"path": {"regex": BIG_REGEX}}, priority=1),
        )

        async def blocked() -> bool:
            return "big-regex" in await programmed_false(m)

        await eventually(blocked, timeout=20)
        assert "RE2 program size of 1684" in (await programmed_false(m))["big-regex"]
        assert "confirmed" in await verdicts(m, "demo/frontend/pod-0")
        assert set(await programmed_false(m)) == {"big-regex"}
        await eventually(lambda: _equal(route_version(m), good))  # back to what Envoy holds
        assert (await m.split(sidecar, "reviews", 20)) == {"v1": 20}

        write(
            m.dir / "bad-regex.yaml",
            route("big-regex", "reviews", {"reviews-v2": 100}, match={"path": {"exact": "/v2"}}, priority=1),
        )
        await wait_converged(m, sidecar, good)
        assert (await m.get(sidecar, "reviews", "/v2"))[1] == "v2"
        assert await programmed_false(m) == {}
    finally:
        await nacker.stop()


async def _has(values, wanted: str) -> bool:
    return wanted in await values


async def _equal(value, wanted: str) -> bool:
    return await value == wanted
