"""Benchmark 1: translate + build + serialize a mesh of N services, against serializing the same resources.

The gateway sidecar receives everything: 2N clusters, 2N ClusterLoadAssignments (5 endpoints each),
one RouteConfiguration with N virtual hosts, one listener. "serialize only" re-serializes those
already-built protobuf messages: the floor for any Python control plane on this protobuf runtime.

Timed as the controller runs a full build (issue 14): automatic garbage collection off during it (in the build
thread the controller turns it off, because each full collection rescans everything the build allocated). The
"with GC" column is the same build with collection on, as this benchmark measured before.
"""

from __future__ import annotations

import gc
import time
import tracemalloc

from bench import meshgen
from bench.common import best_of, table
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.xds.cache import SnapshotBuilder


def run(sizes: tuple[int, ...] = (100, 1_000, 10_000)) -> str:
    rows = []
    for n in sizes:
        model = meshgen.build(n)

        def full(model=model):
            mesh = translate_mesh(model)
            snap = SnapshotBuilder().build(translate_sidecar(mesh, meshgen.GATEWAY))
            for resources in snap.resources.values():
                for res in resources.values():
                    res.any_bytes  # noqa: B018 - serialization is the point
            return mesh, snap

        repeat = 3 if n < 10_000 else 1
        gc.collect()
        t_full_gc = best_of(full, repeat)
        gc.collect()
        gc.disable()
        try:
            t_full = best_of(full, repeat)
            started = time.perf_counter()
            translate_mesh(model)
            t_translate = time.perf_counter() - started
        finally:
            gc.enable()
        _, snap = full()
        messages = [r.message for rs in snap.resources.values() for r in rs.values()]

        def serialize_only(messages=messages):
            for m in messages:
                m.SerializeToString(deterministic=True)

        t_ser = best_of(serialize_only, 3)
        gc.collect()
        tracemalloc.start()
        full()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        size = sum(len(r.any_bytes) for rs in snap.resources.values() for r in rs.values())
        rows.append(
            [
                n,
                len(messages),
                f"{size / 2**20:.1f} MiB",
                t_translate,
                t_full,
                t_full_gc,
                t_ser,
                t_full / t_ser,
                f"{peak / 2**20:.0f} MiB",
            ]
        )
    return table(
        [
            "services",
            "resources",
            "bytes",
            "translate s",
            "translate+build+serialize s",
            "same, with GC s",
            "serialize-only s",
            "ratio",
            "peak alloc",
        ],
        rows,
    )


if __name__ == "__main__":
    print(run())
