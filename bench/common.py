"""Shared helpers: timing, memory, machine description, result tables."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, {platform.system()}"


def envoy_version() -> str:
    from meshctl.devtools.envoy_process import envoy_binary

    out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True).stdout
    return out.strip().split("version:")[-1].strip().split("/")[1] if "version:" in out else "unknown"


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mib(pid: int | None = None) -> float:
    """Current resident set size of a process (default: this one), from /proc."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def pinned_to_first_core() -> Iterator[None]:
    """Keeps this process (the control plane under test) on core 0 meanwhile; load generators (adsload, kubeapi,
    kubewrite) start on the rest through ``bench.offcore``. On a 2-core machine five busy processes
    otherwise take turns on both cores, and a thread waiting 20-100 ms for the OS to schedule it looks like an
    event-loop stall."""
    before = os.sched_getaffinity(0)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Ticker:
    """Records the loop's gaps: a 5 ms sleep that took much longer means the loop was busy (stalled)."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def longest(self, since: float, until: float) -> tuple[float, float]:
        """The longest gap and the 99th percentile gap (s) between two moments."""
        gaps = [b - a for a, b in itertools.pairwise(t for t in self.ticks if since <= t <= until)]
        return (max(gaps), percentile(gaps, 99)) if gaps else (float("nan"), float("nan"))


class OnceSource:
    """A source that emits one model (a benchmark's synthetic mesh) and then waits, as a quiet cluster would."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def describe(self) -> dict[str, Any]:
        return {"kind": "bench"}

    async def run(self, sink: Any) -> None:
        await sink(self.model)
        await asyncio.Event().wait()
