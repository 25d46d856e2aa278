"""Benchmark 16 (issue 35): the web view of a 1,000-service mesh in Debian's headless chromium.

Benchmark 1's mesh (1,000 Services, 2,000 VirtualNodes, a gateway calling every Service) served by a control plane
in this process; the page at /ui/ is opened and timed until drawn (``data-version`` set: the graph document fetched,
parsed and 3,001 nodes and 3,000 edges drawn), then left polling each second for 15 s while a 5 ms ticker on the
control plane's loop records its longest stall (the serving loop must stay responsive while the page polls)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import meshgen
from bench.common import OnceSource, Ticker, table
from meshctl.controlplane.plane import ControlPlane
from tests.browser import Browser

SERVICES = 1_000
POLLING = 15.0


async def _run() -> list[Any]:
    plane = ControlPlane(OnceSource(meshgen.build(SERVICES)))
    await plane.start()
    await plane.wait_synced()
    url = f"http://127.0.0.1:{plane.admin_port}/ui/"
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(f"http://127.0.0.1:{plane.admin_port}/api/v1/graph") as r:
            size = len(await r.read())
        api_ms = (time.perf_counter() - started) * 1e3
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(Path(profile))
        await browser.start()
        ticker = Ticker()
        ticker.start()
        try:
            page = await browser.page("about:blank")
            opened = time.perf_counter()
            await page.call("Page.navigate", url=url)
            while not await page.evaluate("!!(document.documentElement && document.documentElement.dataset.version)"):
                await asyncio.sleep(0.02)
                if time.perf_counter() - opened > 60:
                    raise TimeoutError("the page did not draw in 60 s")
            drawn_s = time.perf_counter() - opened
            nodes = await page.evaluate("document.querySelectorAll('#graph g.node').length")
            polling_from = time.monotonic()
            await asyncio.sleep(POLLING)
            stall, stall_p99 = ticker.longest(polling_from, time.monotonic())
        finally:
            ticker.stop()
            await browser.stop()
            await plane.stop()
    return [
        SERVICES,
        nodes,
        f"{size / 1e6:.2f}",
        f"{api_ms:.0f}",
        f"{drawn_s:.2f}",
        f"{stall * 1e3:.0f} / {stall_p99 * 1e3:.0f}",
    ]


def run() -> str:
    row = asyncio.run(_run())
    headers = ["services", "nodes drawn", "graph MB", "/api/v1/graph ms", "page drawn s", "loop stall max / p99 ms"]
    return table(headers, [row])
