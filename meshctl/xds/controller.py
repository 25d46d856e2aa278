"""Glue between sources and the cache: debounce, translate, build a snapshot per attached node group.

The first change after a quiet period is built at once. Changes that arrive while a build runs, or within the
hold-off after one, are coalesced into the next build; while changes keep coming the hold-off doubles (from
``holdoff`` up to ``max_holdoff``), so a burst of a thousand changes becomes a handful of builds, and it
returns to ``holdoff`` after a quiet one (Contour's HoldoffDelay/HoldoffMaxDelay, adaptive).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from meshctl.xds.cache import Snapshot, SnapshotBuilder, SnapshotCache
from meshctl.xds.envoy.types import ENDPOINT
from meshctl.xds.metrics import Metrics
from meshctl.xds.model import Model, ModelDelta, ObjectKey, Route, VirtualNode
from meshctl.xds.translate import MeshIR, translate_mesh, translate_sidecar
from meshctl.xds.translate.ir import ObjectStatus, SidecarParams

__all__ = ["Controller"]

log = logging.getLogger(__name__)
_FULL_GC_EVERY = 50


class Controller:
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: Metrics,
        *,
        holdoff: float = 0.02,
        max_holdoff: float = 0.5,
        on_statuses: Callable[[tuple[ObjectStatus, ...]], None] | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.holdoff = holdoff
        self.max_holdoff = max_holdoff
        self.on_statuses = on_statuses
        self.mesh: MeshIR | None = None
        self._model: Model | None = None
        self._builder = SnapshotBuilder()
        self._groups: dict[str, SidecarParams] = {}
        self._attached: Counter[str] = Counter()
        self._last_accepted: dict[ObjectKey, VirtualNode | Route] = {}
        self._pending: Model | None = None
        self._wake = asyncio.Event()
        self._synced = asyncio.Event()
        self._builds_since_gc = 0

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def submit(self, model: Model) -> None:
        """The source sink: remember the newest model and wake the build loop."""
        pending = self._pending
        if pending is not None and model.delta is not None:
            # The build loop will skip ``pending``: its delta must be folded into this one, or dropped.
            if pending.delta is not None and model.delta.base_revision == pending.revision:
                merged = ModelDelta(
                    base_revision=pending.delta.base_revision,
                    endpoint_slices=pending.delta.endpoint_slices | model.delta.endpoint_slices,
                    routes=pending.delta.routes | model.delta.routes,
                )
                model = replace(model, delta=merged)
            else:
                model = replace(model, delta=None)
        self._pending = model
        self._wake.set()

    async def run(self) -> None:
        holdoff = self.holdoff
        while True:
            await self._wake.wait()
            self._wake.clear()
            model, self._pending = self._pending, None
            if model is not None:
                await self._rebuild(model)
            await asyncio.sleep(holdoff)
            # More changes already waiting means a burst: wait longer next time. A quiet hold-off resets it.
            holdoff = min(holdoff * 2, self.max_holdoff) if self._wake.is_set() else self.holdoff

    async def _rebuild(self, model: Model) -> None:
        started = time.perf_counter()
        change = _small_change(self._model, model) if self.mesh is not None else None
        self._model = model
        if change is not None:
            kind, keys = change
            if kind == "endpoints":
                await self._patch_endpoints(model, keys)
            else:
                await self._patch_routes(model, keys)
            self.metrics.observe_build(time.perf_counter() - started)
            return
        mesh = translate_mesh(model, self._last_accepted, self.mesh)
        self._last_accepted = dict(mesh.accepted)
        self.mesh = mesh
        self._builder.start_generation()
        snapshots = {group: self._build(params) for group, params in self._groups.items()}
        changed = await self.cache.publish(snapshots)
        self.metrics.observe_build(time.perf_counter() - started)
        for problem in mesh.load_errors:
            log.warning("%s", problem)
        for status in mesh.statuses:
            if not status.healthy:
                log.warning("%s: %s", status.key, status.summary())
        if self.on_statuses:
            self.on_statuses(mesh.statuses)
        # The model, IR and resources just built live until the next change: move them out of the
        # collector's sight, or every gen-2 collection rescans millions of objects (100+ ms pauses).
        # Acyclic garbage is still freed by reference counting; cycles among frozen objects wait for
        # the full collection done every _FULL_GC_EVERY builds.
        self._builds_since_gc += 1
        if self._builds_since_gc >= _FULL_GC_EVERY:
            gc.unfreeze()
            gc.collect()
            self._builds_since_gc = 0
        gc.freeze()
        self._synced.set()
        log.info(
            "built %d groups (%d changed) in %.1f ms",
            len(snapshots),
            len(changed),
            1e3 * (time.perf_counter() - started),
        )

    async def _patch_routes(self, model: Model, changed_routes: set[ObjectKey]) -> None:
        """Only Routes changed: re-translate those, rebuild only the groups that call their Services."""
        assert self.mesh is not None
        self.mesh, services = self.mesh.with_route_changes(model, changed_routes, self._last_accepted)
        self._last_accepted = dict(self.mesh.accepted)
        snapshots = {}
        for group, params in self._groups.items():
            spec = self.mesh.virtual_nodes.get(params.virtual_node) if params.virtual_node else None
            if spec is not None and any(ObjectKey("Service", b.namespace, b.name) in services for b in spec.backends):
                snapshots[group] = self._build(params)
        await self.cache.publish(snapshots)
        for key in changed_routes:
            status = self.mesh.status_by_key.get(key)
            if status is not None and not status.healthy:
                log.warning("%s: %s", status.key, status.summary())
        if self.on_statuses:
            self.on_statuses(self.mesh.statuses)

    async def _patch_endpoints(self, model: Model, changed_slices: set[ObjectKey]) -> None:
        """Only EndpointSlices changed: update just the affected ClusterLoadAssignments in each snapshot."""
        assert self.mesh is not None
        self.mesh, changed = self.mesh.with_endpoint_changes(model, changed_slices)
        snapshots = {}
        for group in self._groups:
            snap = self.cache.get(group)
            if snap is None:
                continue
            present = snap.resources[ENDPOINT]
            updates = {
                name: self._builder.endpoints(self.mesh.clusters[name], self.mesh.endpoints[name])
                for name in changed
                if name in present
            }
            if updates:
                snapshots[group] = snap.patched(ENDPOINT, updates)
        await self.cache.publish(snapshots, check=False)

    def _build(self, params: SidecarParams) -> Snapshot:
        assert self.mesh is not None
        return self._builder.build(translate_sidecar(self.mesh, params), self.cache.get(params.group))

    async def attach(self, params: SidecarParams) -> str:
        """A proxy connected: make sure its group has a snapshot (if the mesh is loaded)."""
        group = params.group
        self._attached[group] += 1
        if group not in self._groups:
            self._groups[group] = params
            if self.mesh is not None:
                await self.cache.publish({group: self._build(params)})
        return group

    def detach(self, group: str) -> None:
        self._attached[group] -= 1
        if self._attached[group] <= 0:
            del self._attached[group]
            self._groups.pop(group, None)
            self.cache.forget(group)

    def statuses(self) -> tuple[ObjectStatus, ...]:
        return self.mesh.statuses if self.mesh else ()


def _small_change(old: Model | None, new: Model) -> tuple[str, set[ObjectKey]] | None:
    """("endpoints", slices) or ("routes", routes) when only those changed; None when a full translation
    is needed. A delta from the source is trusted when it is relative to ``old``; otherwise objects are
    compared, identity before equality, so a source that keeps unchanged objects makes this cheap."""
    if old is None:
        return None
    delta = new.delta
    if delta is not None and old.revision and delta.base_revision == old.revision:
        slices, routes = set(delta.endpoint_slices), set(delta.routes)
    else:
        for attr in ("services", "pods", "virtual_nodes", "load_errors"):
            before, after = getattr(old, attr), getattr(new, attr)
            if before is not after and before != after:
                return None
        slices = _changed_keys(old.endpoint_slices, new.endpoint_slices)
        routes = _changed_keys(old.routes, new.routes)
    if slices and routes:
        return None
    return ("routes", routes) if routes else ("endpoints", slices)


def _changed_keys(before, after) -> set[ObjectKey]:
    if before is after:
        return set()
    keys = before.keys() | after.keys()
    return {k for k in keys if before.get(k) is not after.get(k) and before.get(k) != after.get(k)}
