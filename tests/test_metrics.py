"""``/metrics`` as Prometheus reads it: parsed with prometheus_client's own parser, the series it served before the
move to prometheus_client, and the histograms added with it (build duration, push latency, time to ACK)."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import ROUTE
from tests.ads_client import AdsClient
from tests.conftest import eventually
from tests.manifests import route, write
from tests.test_ads_protocol import handshake

EXAMPLES = Path(__file__).parent.parent / "examples" / "demo"
# What the hand-written renderer served (every name, with its type), before prometheus_client.
SERIES_BEFORE = {
    "meshctl_xds_responses_total": "counter",
    "meshctl_xds_acks_total": "counter",
    "meshctl_xds_nacks_total": "counter",
    "meshctl_xds_connected_streams": "gauge",
    "meshctl_xds_unauthorized_streams_total": "counter",
    "meshctl_snapshot_builds_total": "counter",
    "meshctl_snapshot_full_builds_total": "counter",
    "meshctl_snapshot_route_patches_total": "counter",
    "meshctl_snapshot_build_seconds_total": "counter",
    "meshctl_build_errors_total": "counter",
    "meshctl_rejected_objects": "gauge",
}
HISTOGRAMS = {
    "meshctl_snapshot_build_duration_seconds",
    "meshctl_xds_push_latency_seconds",
    "meshctl_xds_time_to_ack_seconds",
}


async def scrape(admin_port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}}, and checks every family's TYPE against its samples."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{admin_port}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def total(samples: dict[str, dict], name: str, **labels: str) -> float:
    return sum(v for k, v in samples.get(name, {}).items() if set(labels.items()) <= set(k))


async def test_metrics_keep_their_series_and_add_build_push_and_ack_histograms(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    async with ControlPlane.from_manifests(tmp_path) as plane:
        await plane.wait_synced()
        client = AdsClient(plane.xds_port, "demo/frontend/p1", "demo/frontend")
        try:
            got = await handshake(client)
            rds_version = got[ROUTE].version_info
            await eventually(lambda: plane.registry.streams()[0].types[ROUTE].acked_version == rds_version)
            first = await scrape(plane.admin_port)
            assert set(SERIES_BEFORE) <= set(first)
            new = {n for n in first if n not in SERIES_BEFORE}
            # Besides the histograms' series, only prometheus_client's *_created timestamps of the counters.
            assert {n.rsplit("_", 1)[0] for n in new if not n.endswith("_created")} == HISTOGRAMS, new
            assert total(first, "meshctl_xds_connected_streams") == 1
            assert total(first, "meshctl_snapshot_build_duration_seconds_count", path="full") >= 1
            assert total(first, "meshctl_xds_time_to_ack_seconds_count") >= 4  # one ACK per type at least
            assert total(first, "meshctl_xds_acks_total", type="rds") >= 1
            assert total(first, "meshctl_rejected_objects") == 0

            # A Route edit is pushed (not asked for): push latency counts it, and the ACK's time too.
            write(tmp_path / "reviews-route.yaml", route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2": 50}))
            pushed = await client.recv()
            await client.ack(pushed, ["outbound"])

            async def counted() -> bool:
                now = await scrape(plane.admin_port)
                return total(now, "meshctl_xds_push_latency_seconds_count", type="rds") >= 1 and total(
                    now, "meshctl_xds_time_to_ack_seconds_count", type="rds"
                ) > total(first, "meshctl_xds_time_to_ack_seconds_count", type="rds")

            await eventually(counted)
            later = await scrape(plane.admin_port)
            assert total(later, "meshctl_snapshot_builds_total") > total(first, "meshctl_snapshot_builds_total")
        finally:
            await client.close()
