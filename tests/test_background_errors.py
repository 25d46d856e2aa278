"""No silent failures (issue 27, part 5): work done in the background is logged with its traceback, counted, and
shown by `meshctl status`; a client's bad metadata cannot leak its node group."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import aiohttp
from google.protobuf import struct_pb2

from bench import meshgen
from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import CLUSTER
from tests.ads_client import AdsClient
from tests.conftest import eventually
from tests.controller_driver import apply, controller_for

EXAMPLES = Path(__file__).parent.parent / "examples" / "demo"


async def test_bad_stats_port_metadata_leaves_no_group_behind(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    async with ControlPlane.from_manifests(tmp_path) as plane:
        await plane.wait_synced()
        for bad in (float("nan"), 1e20, "99999999999", "http"):
            client = AdsClient(plane.xds_port, "demo/frontend/odd", "demo/frontend")
            value = struct_pb2.Value()
            if isinstance(bad, float):
                value.number_value = bad
            else:
                value.string_value = bad
            client.node.metadata.fields["meshctl.stats_port"].CopyFrom(value)
            try:
                await client.send(CLUSTER)
                response = await client.recv()  # served, the port read as absent
                assert response.resources
                proxy = next(p for p in plane.registry.describe() if p["node_id"] == "demo/frontend/odd")
                assert proxy.get("statsUrl") is None
            finally:
                await client.close()
            await eventually(lambda: not plane.registry.streams())
            await eventually(lambda: plane.cache.groups() == [])  # the group went with its last proxy


async def test_a_failure_in_the_build_thread_is_logged_counted_and_shown(monkeypatch, caplog, tmp_path) -> None:
    def broken(old, new) -> None:
        raise RuntimeError("emptying failed")

    monkeypatch.setattr("meshctl.controlplane.controller.release_gently", broken)
    async with controller_for([meshgen.GATEWAY]) as controller:
        model = meshgen.build(5)
        await apply(controller, model)
        # A full build (the Services changed) with new endpoints (a Pod relabelled) makes a new endpoint index;
        # the build thread empties the old one after.
        changed = meshgen.with_pod_relabel(model, 1, "v9")
        await apply(controller, replace(changed, services={}, delta=None, revision=changed.revision + 1))
        await eventually(lambda: controller.metrics.background_errors() == {"release-endpoint-index": 1})
    assert "emptying a replaced endpoint index failed" in caplog.text and "RuntimeError: emptying failed" in caplog.text


async def test_meshctl_status_shows_background_errors(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    async with ControlPlane.from_manifests(tmp_path) as plane, aiohttp.ClientSession() as session:
        await plane.wait_synced()
        plane.metrics.background_failed("certificate-sync")
        async with session.get(f"http://127.0.0.1:{plane.admin_port}/api/v1/summary") as r:
            assert (await r.json())["backgroundErrors"] == {"certificate-sync": 1}
