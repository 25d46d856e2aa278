"""Child processes for the end-to-end benchmarks: `meshctl serve`, sample apps, Envoys."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

import aiohttp

from meshctl.devtools.envoy_process import EnvoyProcess, free_port, loopback_sidecar, spawn_logged


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[asyncio.subprocess.Process] = []
        self.envoys: list[EnvoyProcess] = []

    async def spawn(self, *args: str, log: str) -> asyncio.subprocess.Process:
        proc = await spawn_logged(*args, log_path=self.workdir / log)
        self.children.append(proc)
        return proc

    async def app(self, name: str, port: int) -> None:
        await self.spawn(
            sys.executable, "-m", "meshctl.devtools.sample_app", "--name", name, "--port", str(port), log=f"{name}.log"
        )
        await wait_http(f"http://127.0.0.1:{port}/")

    async def serve(
        self, manifests: Path | None, kubeconfig: Path | None = None
    ) -> tuple[int, int, asyncio.subprocess.Process]:
        """`meshctl serve` on a manifest directory, or on a cluster (``kubeconfig``)."""
        xds, admin = free_port(), free_port()
        source = ["--manifests", str(manifests)] if manifests else ["--kubernetes", "--kubeconfig", str(kubeconfig)]
        proc = await self.spawn(
            sys.executable,
            "-m",
            "meshctl",
            "serve",
            *source,
            "--xds-port",
            str(xds),
            "--admin-port",
            str(admin),
            log="serve.log",
        )
        await wait_http(f"http://127.0.0.1:{admin}/readyz", timeout=600)
        return xds, admin, proc

    async def envoy(
        self, xds_port: int, virtual_node: str, node_id: str, delta: bool = False, egress: int | None = None
    ) -> tuple[EnvoyProcess, int]:
        egress = egress or free_port()
        envoy = loopback_sidecar(xds_port, virtual_node, node_id, egress_port=egress, delta=delta)
        await envoy.start()
        self.envoys.append(envoy)
        return envoy, egress

    async def stop(self) -> None:
        for envoy in self.envoys:
            await envoy.stop()
        for child in self.children:
            if child.returncode is None:
                child.terminate()
        for child in self.children:
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()


async def wait_http(url: str, timeout: float = 30, headers: dict | None = None, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(url, headers=headers or {}) as r:
                    if r.status in ok:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(url)
            await asyncio.sleep(0.02)
