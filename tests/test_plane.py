"""The control plane process: a crashed core task is loud and fails /healthz."""

from __future__ import annotations

import aiohttp

from meshctl.xds.plane import ControlPlane
from tests.conftest import eventually


class BrokenSource:
    async def run(self, sink) -> None:
        raise RuntimeError("cannot read the manifests")


async def test_a_crashed_source_fails_healthz() -> None:
    async with ControlPlane(BrokenSource()) as plane, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{plane.admin_port}"
        await eventually(lambda: plane.failures)
        async with session.get(url + "/healthz") as r:
            assert r.status == 500
            assert "source stopped: RuntimeError('cannot read the manifests')" in await r.text()
        async with session.get(url + "/readyz") as r:
            assert r.status == 503
