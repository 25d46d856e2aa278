"""Benchmark 8: memory under endpoint churn. The controller with the mesh of N built and the gateway's stream
(every ClusterLoadAssignment) takes 100,000 one-endpoint changes, each sent to the stream and ACKed; the RSS after
the first 1,000 is compared with the RSS after all of them (no growth with churn: within 5 %).

Also checked: what an endpoint patch and a Route patch make (20,000-entry maps at 10,000 services) is frozen out of
the collector's sight (``gc.get_objects()`` no longer lists it), or each young collection rescans it until it ages
out: 11-16 ms with the GIL held during a Pod burst (issue 14)."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from bench import meshgen
from bench.common import rss_mib, table
from bench.incremental import _ack_all, gateway_stream
from meshctl.controlplane.controller import Controller


async def _churn(n: int, changes: int, baseline_after: int) -> list[object]:
    model, controller, stream = await gateway_stream(n)
    started = time.monotonic()
    baseline = float("nan")
    for k in range(changes):
        model = meshgen.with_endpoint_change(model, k % n, generation=k + 2)
        await controller._rebuild(model)
        stream.next_responses(controller.cache.get(stream.group))
        _ack_all(stream)
        if k + 1 == baseline_after:
            gc.collect()
            baseline = rss_mib()
    gc.collect()
    final = rss_mib()
    assert controller.metrics.full_builds == 1, "every change should take the endpoint path"
    endpoints_frozen = _patch_frozen(controller, stream.group)
    await controller._rebuild(meshgen.with_route_weight(model, 0, 10))
    assert controller.metrics.full_builds == 1, "the Route change should be a patch"
    route_frozen = _patch_frozen(controller, stream.group)
    assert endpoints_frozen and route_frozen, "a patch's results are left to the young collections"
    return [
        n,
        changes,
        f"{baseline:.1f} MiB",
        f"{final:.1f} MiB",
        f"{100 * (final / baseline - 1):+.2f} %",
        len(controller._builder),
        "yes" if endpoints_frozen and route_frozen else "no",
        f"{time.monotonic() - started:.0f}",
    ]


def _patch_frozen(controller: Controller, group: str) -> bool:
    """The latest patch's maps are frozen: the collector no longer lists them."""
    listed = {id(o) for o in gc.get_objects()}
    snap = controller.cache.get(group)
    assert controller.mesh is not None and snap is not None
    return id(controller.mesh.endpoints) not in listed and id(snap.resources) not in listed


def _one(n: int, changes: int, baseline_after: int) -> list[object]:
    return asyncio.run(_churn(n, changes, baseline_after))


def run(n: int = 1000, changes: int = 100_000, baseline_after: int = 1000) -> str:
    # In a fresh process: its RSS is this benchmark's alone (freed memory is rarely returned to the OS).
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        row = pool.submit(_one, n, changes, baseline_after).result()
    headers = [
        "services",
        "changes",
        f"RSS after {baseline_after}",
        "RSS after all",
        "growth",
        "builder memo entries",
        "patches frozen",
        "run s",
    ]
    return table(headers, [row])


if __name__ == "__main__":
    print(run())
