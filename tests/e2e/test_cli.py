"""The CLI contract users' scripts rely on: `meshctl serve`, `meshctl bootstrap`, `/healthz`, `meshctl get`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import yaml

from meshctl.devtools.envoy_process import EnvoyProcess, envoy_binary, free_port
from meshctl.devtools.sample_app import Behavior, start_app
from tests.conftest import eventually

ROOT = Path(__file__).parent.parent.parent
MESHCTL = [sys.executable, "-m", "meshctl"]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_bootstrap_is_valid_for_envoy(tmp_path: Path) -> None:
    out = subprocess.run(
        [*MESHCTL, "bootstrap", "--node-id", "demo/frontend/pod-1", "--xds-port", "18123"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    boot = yaml.safe_load(out)
    assert boot["node"] == {
        "id": "demo/frontend/pod-1",
        "cluster": "demo/frontend",
        "metadata": {"meshctl.virtual_node": "demo/frontend", "meshctl.stats_port": "15090"},
    }
    assert boot["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"] is True
    (tmp_path / "bootstrap.yaml").write_text(out)
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(tmp_path / "bootstrap.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration" in result.stdout and "OK" in result.stdout


async def test_serve_health_metrics_and_live_routing(tmp_path: Path) -> None:
    # The demo manifests with the upstreams on ports the OS chose (the demo itself uses 18081 and 18082).
    runners = [await start_app(Behavior(name="v1"), 0), await start_app(Behavior(name="v2"), 0)]
    manifests = tmp_path / "manifests"
    shutil.copytree(ROOT / "examples" / "demo", manifests)
    for fixed, runner in zip(("18081", "18082"), runners, strict=True):
        port = str(runner.addresses[0][1])
        for path in manifests.glob("*.yaml"):
            path.write_text(path.read_text().replace(fixed, port))
    xds_port, admin_port = free_port(), free_port()
    serve = await asyncio.create_subprocess_exec(
        *MESHCTL,
        "serve",
        "--manifests",
        str(manifests),
        "--xds-port",
        str(xds_port),
        "--admin-port",
        str(admin_port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    admin = f"http://127.0.0.1:{admin_port}"
    envoy = None
    try:
        await eventually(lambda: _up(admin + "/readyz"), timeout=20)
        assert http_get(admin + "/healthz") == (200, "ok\n")
        egress = free_port()
        out = subprocess.run(
            [
                *MESHCTL,
                "bootstrap",
                "--node-id",
                "demo/frontend/cli",
                "--xds-port",
                str(xds_port),
                "--admin-port",
                "0",
                "--egress-port",
                str(egress),
                "--bind-address",
                "127.0.0.1",
                "-o",
                "json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        envoy = EnvoyProcess(json.loads(out), name="cli")
        await envoy.start()

        async def routed() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{egress}/", headers={"Host": "reviews.demo"}) as r,
                ):
                    return r.status == 200 and await r.text() in ("v1", "v2")
            except aiohttp.ClientError:
                return False

        await eventually(routed, timeout=15)
        status, metrics = http_get(admin + "/metrics")
        assert status == 200 and 'meshctl_xds_acks_total{type="rds"}' in metrics
        assert "meshctl_xds_connected_streams 1" in metrics

        proxies = subprocess.run([*MESHCTL, "get", "proxies", "--admin", admin], capture_output=True, text=True)
        assert proxies.returncode == 0 and "demo/frontend/cli" in proxies.stdout, proxies.stderr
        header, row = proxies.stdout.splitlines()[:2]
        assert header.split() == ["NODE", "VIRTUALNODE", "CDS", "EDS", "LDS", "RDS", "REPLICA", "CLIENT"]
        assert row.split()[-2] == "envoy" and re.fullmatch(r"\d+\.\d+\.\d+", row.split()[-1]), row
        assert row.split()[:6] == ["demo/frontend/cli", "demo/frontend", "SYNCED", "SYNCED", "SYNCED", "SYNCED"]
        summary = subprocess.run([*MESHCTL, "status", "--admin", admin, "-o", "json"], capture_output=True, text=True)
        assert summary.returncode == 0, summary.stderr
        about = json.loads(summary.stdout)
        assert about["source"]["kind"] == "manifests" and about["proxies"] == 1 and about["objects"]["Route"] == 1
        status_cmd = subprocess.run(
            [*MESHCTL, "get", "status", "--admin", admin, "-o", "json"], capture_output=True, text=True
        )
        assert status_cmd.returncode == 0
        assert {o["name"] for o in json.loads(status_cmd.stdout)["objects"]} == {
            "frontend",
            "reviews-v1",
            "reviews-v2",
            "reviews",
        }
    finally:
        if envoy:
            await envoy.stop()
        for r in runners:
            await r.cleanup()
        serve.terminate()
        await asyncio.wait_for(serve.wait(), 10)
    assert serve.returncode == 0, (await serve.stderr.read()).decode()


def _up(url: str) -> bool:
    try:
        return http_get(url)[0] == 200
    except OSError:
        return False


def test_validate_reports_file_and_field(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples" / "demo", tmp_path, dirs_exist_ok=True)
    route = tmp_path / "reviews-route.yaml"
    route.write_text(route.read_text().replace("weight: 80", "weight: 0").replace("weight: 20", "weight: 0"))
    result = subprocess.run([*MESHCTL, "validate", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert (
        "error Route demo/reviews: reviews-route.yaml: spec.httpRoute.action.weightedTargets: weights sum to 0"
        in result.stdout
    )
