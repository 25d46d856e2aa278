"""``meshctl demo``: the control plane, two versions of a service and a real Envoy sidecar, on loopback.

Every piece is a real process a user would run (``meshctl serve``, ``python -m meshctl.devtools.sample_app``,
``envoy``); the demo only wires them together, sends traffic, edits the Route file and shows the split
moving with no restart. Ctrl-C (or ``--duration``) stops every process it started.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from meshctl.devtools.envoy_process import EnvoyProcess, free_port, loopback_sidecar, spawn_logged

__all__ = ["run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "demo"
APP_PORTS = {"v1": 18081, "v2": 18082}  # as in examples/demo/reviews-v*.yaml
SHIFTS = [(50, 50), (0, 100)]
HOST = "reviews.demo"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _bar(share: float, width: int = 40) -> str:
    return "█" * round(width * share)


def _split_line(counts: collections.Counter[Any]) -> str:
    total = sum(counts.values()) or 1
    parts = [f"{k} {100 * counts[k] / total:5.1f}%" for k in ("v1", "v2")]
    errors = total - counts["v1"] - counts["v2"]
    return "   ".join(parts) + f"   non-2xx {errors}"


def _set_weights(route_file: Path, v1: int, v2: int) -> None:
    text = route_file.read_text()
    weights = iter((v1, v2))
    text = re.sub(r"weight: \d+", lambda _: f"weight: {next(weights)}", text)
    tmp = route_file.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(route_file)  # atomic: the control plane never reads half a file


class _Demo:
    def __init__(self, requests: int) -> None:
        self.requests = requests
        self.workdir = Path(tempfile.mkdtemp(prefix="meshctl-demo-"))
        self.manifests = self.workdir / "manifests"
        self.children: list[asyncio.subprocess.Process] = []
        self.envoy: EnvoyProcess | None = None
        self.session: aiohttp.ClientSession | None = None
        self.egress = free_port()
        self.xds_port, self.admin_port = free_port(), free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.errors_during_shift = 0

    async def _spawn(self, *args: str, log: str) -> asyncio.subprocess.Process:
        proc = await spawn_logged(*args, log_path=self.workdir / log)
        self.children.append(proc)
        return proc

    async def _wait_http(self, url: str, timeout: float = 20, headers: dict[str, str] | None = None) -> None:
        assert self.session is not None
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self.session.get(url, headers=headers or {}) as r:
                    if r.status == 200:
                        return
            for child in self.children:
                if child.returncode is not None:
                    raise RuntimeError(f"a demo process exited early; logs in {self.workdir}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout}s; logs in {self.workdir}")
            await asyncio.sleep(0.05)

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        shutil.copytree(EXAMPLES, self.manifests)
        _say(f"meshctl demo — manifests copied to {self.manifests} (the demo edits this copy)\n")
        py = sys.executable
        for name, port in APP_PORTS.items():
            await self._spawn(
                py, "-m", "meshctl.devtools.sample_app", "--name", name, "--port", str(port), log=f"app-{name}.log"
            )
        await self._spawn(
            py,
            "-m",
            "meshctl",
            "-v",
            "serve",
            "--manifests",
            str(self.manifests),
            "--xds-port",
            str(self.xds_port),
            "--admin-port",
            str(self.admin_port),
            log="meshctl-serve.log",
        )
        for port in APP_PORTS.values():
            await self._wait_http(f"http://127.0.0.1:{port}/")
        await self._wait_http(self.admin + "/readyz")
        self.envoy = loopback_sidecar(
            self.xds_port,
            "demo/frontend",
            "demo/frontend/demo-pod",
            egress_port=self.egress,
            log_path=self.workdir / "envoy.log",
            stats_port=free_port(),  # read by the control plane: the web view's live traffic figures
        )
        await self.envoy.start()
        await self._wait_http(f"http://127.0.0.1:{self.egress}/", headers={"Host": HOST})
        _say("  reviews v1       python -m meshctl.devtools.sample_app   http://127.0.0.1:18081")
        _say("  reviews v2       python -m meshctl.devtools.sample_app   http://127.0.0.1:18082")
        _say(f"  control plane    meshctl serve                  xDS 127.0.0.1:{self.xds_port}, admin {self.admin}")
        sidecar = f"egress 127.0.0.1:{self.egress}, admin {self.envoy.admin_url}"
        _say(f"  envoy sidecar    demo/frontend (envoy 1.40)     {sidecar}")
        _say(f"  logs             {self.workdir}\n")
        _say(f"  try: meshctl get proxies --admin {self.admin}")
        _say(
            f"  web view: {self.admin}/ui/  (the mesh as a picture with live traffic; meshctl dashboard --admin "
            f"{self.admin})"
        )
        _say(f"       curl -H 'Host: {HOST}' http://127.0.0.1:{self.egress}/\n")

    async def _one(self) -> str:
        assert self.session is not None
        try:
            async with self.session.get(f"http://127.0.0.1:{self.egress}/", headers={"Host": HOST}) as r:
                body = await r.text()
                return body if r.status == 200 else str(r.status)
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    async def measure(self, n: int, concurrency: int = 10) -> collections.Counter[Any]:
        counts: collections.Counter[Any] = collections.Counter()
        todo = iter(range(n))

        async def worker() -> None:
            for _ in todo:
                counts[await self._one()] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return counts

    async def proxy_route_version(self) -> str:
        assert self.session is not None
        async with self.session.get(self.admin + "/api/v1/proxies") as r:
            proxies = (await r.json())["proxies"]
        return proxies[0]["types"]["rds"]["acked_version"] if proxies else ""

    async def show_split(self, title: str) -> None:
        counts = await self.measure(self.requests)
        total = sum(counts.values())
        _say(f"  {title}: {total} requests through Envoy (Host: {HOST})")
        for version in ("v1", "v2"):
            share = counts[version] / total
            _say(f"    {version}  {_bar(share):<40} {100 * share:5.1f}%")
        errors = total - counts["v1"] - counts["v2"]
        _say(f"    non-2xx or errors: {errors}\n")

    async def shift(self, v1: int, v2: int) -> None:
        """Edit the Route file under load; report when Envoy ACKed it and any failed request."""
        route_file = self.manifests / "reviews-route.yaml"
        before = await self.proxy_route_version()
        stop = asyncio.Event()
        during: collections.Counter[Any] = collections.Counter()

        async def load() -> None:
            while not stop.is_set() and sum(during.values()) < 100_000:
                during[await self._one()] += 1

        loaders = [asyncio.create_task(load()) for _ in range(4)]
        started = time.monotonic()
        _set_weights(route_file, v1, v2)
        _say(f"▶ edited {route_file.name}: v1 {v1} / v2 {v2} — no restart, Envoy keeps running")
        deadline = started + 10
        while await self.proxy_route_version() == before and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        applied_ms = 1000 * (time.monotonic() - started)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*loaders)
        failed = sum(v for k, v in during.items() if k not in ("v1", "v2"))
        self.errors_during_shift += failed
        _say(
            f"  Envoy ACKed the new routes {applied_ms:.0f} ms after the file write "
            f"(incl. file polling); {sum(during.values())} requests sent across the shift, {failed} failed\n"
        )

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        if self.envoy:
            await self.envoy.stop()
        for child in self.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):  # Ctrl-C reaches the whole process group
                    child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                await asyncio.wait_for(child.wait(), 5)
            except TimeoutError:
                child.kill()
                await child.wait()


async def run_demo(*, duration: float, requests: int) -> int:
    demo = _Demo(requests)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def script() -> None:
        await demo.start()
        await demo.show_split("Route demo/reviews, v1 80 / v2 20")
        for v1, v2 in SHIFTS:
            await demo.shift(v1, v2)
            await demo.show_split(f"after the shift, v1 {v1} / v2 {v2}")
        _say(f"non-2xx responses during all shifts: {demo.errors_during_shift}")
        if duration:
            _say(f"running {duration:g} s more, then stopping (live split every second)")
        else:
            _say("running until Ctrl-C (live split every second)")
        ends = time.monotonic() + duration if duration else float("inf")
        # Check the event too: on Python 3.11, wait_for can swallow a cancel that races its inner wait.
        while time.monotonic() < ends and not stop.is_set():
            counts = await demo.measure(100, concurrency=5)
            _say("  live  " + _split_line(counts))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1)

    task = asyncio.create_task(script())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            _say("\nstopped.")
        elif task.exception():
            _say(f"demo failed: {task.exception()}")
            return 1
    finally:
        stopper.cancel()
        await demo.stop()
        _say("all demo processes stopped.")
    return 0 if demo.errors_during_shift == 0 else 1
