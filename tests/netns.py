"""Network namespaces made by a test (``ip netns``, as root): two "hosts" joined by a veth pair, processes started
in either, everything removed afterwards. Nothing touches the machine's own network namespace."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class NetNs:
    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.processes: list[asyncio.subprocess.Process] = []

    def command(self, *args: str, uid: int | None = None) -> list[str]:
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        return [*prefix, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} in {self.name} failed ({done.returncode}): {done.stderr}")
        return done

    async def start(self, *args: str, log: Path, uid: int | None = None) -> asyncio.subprocess.Process:
        with open(log, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *self.command(*args, uid=uid), stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
            )
        self.processes.append(process)
        return process

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
                    await process.wait()


def make_pair(prefix: str, subnet: str = "10.200.0") -> tuple[NetNs, NetNs]:
    """Two namespaces, ``<prefix>-a`` at <subnet>.2 and ``<prefix>-b`` at <subnet>.1, b being a's default route."""
    tag = f"{os.getpid() % 100000}"
    a, b = NetNs(f"{prefix}-a-{tag}", f"{subnet}.2"), NetNs(f"{prefix}-b-{tag}", f"{subnet}.1")
    for ns in (a, b):
        _ip("netns", "add", ns.name)
        _ip("-n", ns.name, "link", "set", "lo", "up")
    _ip("-n", a.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.name)
    for ns in (a, b):
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", "eth0")
        _ip("-n", ns.name, "link", "set", "eth0", "up")
    _ip("-n", a.name, "route", "add", "default", "via", b.address)
    return a, b


def remove(*namespaces: NetNs) -> None:
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


def make_isolated(prefix: str) -> NetNs:
    """A namespace with only its own loopback: nothing on the machine's network is reachable from it."""
    ns = NetNs(f"{prefix}-{os.getpid() % 100000}", "127.0.0.1")
    _ip("netns", "add", ns.name)
    _ip("-n", ns.name, "link", "set", "lo", "up")
    return ns
