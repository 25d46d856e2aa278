"""Glue between sources and the cache: debounce, translate, build a snapshot per attached node group.

The first change after a quiet period is built at once. Changes that arrive while a build runs, or within the
hold-off after one, are coalesced into the next build; while changes keep coming the hold-off doubles (from
``holdoff`` up to ``max_holdoff``), so a burst of a thousand changes becomes a handful of builds, and it
returns to ``holdoff`` after a quiet one (Contour's HoldoffDelay/HoldoffMaxDelay, adaptive).

Translation and snapshot building run in one worker thread, never on the event loop that serves ADS, the admin
API and leader election: a full build of a large mesh takes seconds of CPU, and the loop must keep answering
meanwhile (issue 14). The worker gets copies of what it reads; only the loop changes the controller's state and
publishes, and one lock makes each compute-and-publish step (a rebuild, a patch, a new group) whole.

Nothing one object does can stop the loop: a resource that cannot be built blocks the object version it came
from (its previous version is served, its status says why) and the build is redone without it; an object that
Envoy rejects is blocked the same way (``reject_from_envoy``); any other failure keeps the last good snapshots
and the next change is built from scratch.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from functools import partial
from operator import attrgetter
from typing import Literal, ParamSpec, TypeVar

from meshctl.controlplane.metrics import BuildMetrics
from meshctl.controlplane.nacks import NackJudge
from meshctl.identity.ca import Issuer, MeshCA, spiffe_id
from meshctl.identity.keeper import Identity, IdentityKeeper
from meshctl.model import EgressFilter, Model, ModelDelta, ObjectKey, TlsMode
from meshctl.model.authz import AuthzDefault
from meshctl.translate import MeshIR, translate_mesh, translate_sidecar
from meshctl.translate.authz import authz_dependencies
from meshctl.translate.endpoints import release_gently
from meshctl.translate.gateway import GATEWAY_NAME_LABEL, certificate_secret_name
from meshctl.translate.ir import IDENTITY_SECRET, TRUST_SECRET, Blocked, ObjectStatus, SidecarParams
from meshctl.translate.mesh import Served, services_called
from meshctl.translate.sidecar import gateway_listeners, with_route_changes
from meshctl.xds.cache import Snapshot, SnapshotBuilder, SnapshotCache, prepare
from meshctl.xds.cache.builder import BuildError
from meshctl.xds.cache.resource import CachedResource
from meshctl.xds.envoy.tls import identity_secret, trust_secret
from meshctl.xds.envoy.types import ENDPOINT, ROUTE, SECRET, SHORT_NAMES
from meshctl.xds.server.nack import Nack

__all__ = ["Controller", "classify_change"]

log = logging.getLogger(__name__)
_FULL_GC_EVERY = 50
_STATUS_KEY = attrgetter("key")
_P = ParamSpec("_P")
_T = TypeVar("_T")


class Controller:
    def __init__(
        self,
        cache: SnapshotCache,
        metrics: BuildMetrics | None = None,
        *,
        holdoff: float = 0.02,
        max_holdoff: float = 0.5,
        on_statuses: Callable[[tuple[ObjectStatus, ...]], None] | None = None,
        incremental: bool = True,
        identities: IdentityKeeper | None = None,
        default_tls_mode: TlsMode | None = None,
        default_authz: AuthzDefault = AuthzDefault.ALLOW,
    ) -> None:
        """``incremental=False``: every model is translated whole, never patched (the reference the incremental
        paths are tested against). ``default_tls_mode``: the mesh-wide mode of listeners without ``tls``."""
        self.cache = cache
        self.incremental = incremental
        self.metrics = metrics if metrics is not None else BuildMetrics()
        self.metrics.count_rejected(lambda: sum(not s.accepted for s in self.statuses()))
        self.holdoff = holdoff
        self.max_holdoff = max_holdoff
        self.on_statuses = on_statuses
        self._identities = identities
        self.default_tls_mode = default_tls_mode
        self.default_authz = default_authz  # for listeners of namespaces without the authorization label
        self.default_egress = EgressFilter.ALLOW_ALL  # for captured proxies of namespaces without the egress label
        self._secret_resources: dict[tuple[Identity, int, bytes], dict[str, CachedResource]] = {}
        self._certificate_resources: dict[tuple[str, bytes, bytes], CachedResource] = {}
        self.mesh: MeshIR | None = None
        self._model: Model | None = None
        self.last_push = 0.0  # wall clock of the latest snapshot published
        self._builder = SnapshotBuilder()
        self._groups: dict[str, SidecarParams] = {}
        self._attached: Counter[str] = Counter()
        self._last_accepted: dict[ObjectKey, Served] = {}
        self._prior: dict[ObjectKey, Served] = {}  # the accepted version before the current one
        self._blocked: dict[ObjectKey, Blocked] = {}
        self._statuses: tuple[ObjectStatus, ...] = ()
        self._statuses_of: Mapping[ObjectKey, ObjectStatus] | None = None  # the mesh statuses ``_statuses`` lists
        self._force_full = False  # the next build is from scratch, whatever changed
        self._pending: Model | None = None
        self._wake = asyncio.Event()
        self._route_waiting = asyncio.Event()  # a pending model changes Routes: end the hold-off now
        self._synced = asyncio.Event()
        self._builds_since_gc = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshctl-build")
        self._lock = asyncio.Lock()  # one compute-and-publish step at a time
        self.nacks = NackJudge(self.cache.get, self._block_rejected, on_verdict=self.metrics.nack_judged)

    async def _in_worker(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Runs CPU work in the build thread. It holds the GIL while it runs, but the interpreter hands the GIL
        back to the loop's thread every switch interval (5 ms), so the loop keeps ticking."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, partial(fn, *args, **kwargs))

    def _background_done(self, future: Future[None]) -> None:
        """Work handed to the build thread without waiting for it: its failure is logged and counted, not lost."""
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.error("emptying a replaced endpoint index failed", exc_info=exc)
            self.metrics.background_failed("release-endpoint-index")

    def close(self) -> None:
        """Stops taking work: a queued build is dropped (one under way finishes in its thread, unpublished)."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def _publish(self, snapshots: dict[str, Snapshot]) -> list[str]:
        """Publishes only groups still attached: one may have gone while its snapshot was built."""
        published = await self.cache.publish({g: s for g, s in snapshots.items() if g in self._groups})
        if published:
            self.last_push = time.time()
        return published

    @property
    def model(self) -> Model | None:
        """The newest model built from (what translation last read)."""
        return self._model

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
                    pods=pending.delta.pods | model.delta.pods,
                    routes=pending.delta.routes | model.delta.routes,
                    http_routes=pending.delta.http_routes | model.delta.http_routes,
                )
                model = replace(model, delta=merged)
            else:
                model = replace(model, delta=None)
        self._pending = model
        self._wake.set()
        if model.delta is not None and (model.delta.routes or model.delta.http_routes):
            self._route_waiting.set()  # cuts a burst's hold-off short: a Route edit is not kept behind endpoint churn

    async def run(self) -> None:
        holdoff = self.holdoff
        while True:
            await self._wake.wait()
            self._wake.clear()
            model, self._pending = self._pending, None
            if model is not None:
                try:
                    await self._rebuild(model)
                except Exception:
                    # A bug, not bad input (that is blocked per object): keep serving the last snapshots and keep
                    # taking changes; the next one is built from scratch.
                    log.exception("build failed; proxies keep the last good config")
                    self.metrics.build_failed()
                    self._force_full = True
            await self._hold_off(holdoff)
            self._route_waiting.clear()
            # More changes already waiting means a burst: wait longer next time. A quiet hold-off resets it.
            holdoff = min(holdoff * 2, self.max_holdoff) if self._wake.is_set() else self.holdoff

    async def _hold_off(self, seconds: float) -> None:
        """Waits ``seconds``, or less when a Route edit arrives. Not ``wait_for``: on Python 3.11 it can swallow the
        task's cancellation when its timeout fires at the same moment (the run loop then never stops)."""
        if self._route_waiting.is_set():
            return
        waiter = asyncio.ensure_future(self._route_waiting.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _rebuild(self, model: Model) -> None:
        async with self._lock:
            await self._rebuild_locked(model)

    async def _rebuild_locked(self, model: Model) -> None:
        started = time.perf_counter()
        full = self.mesh is None or self._force_full or not self.incremental
        change = None if full else classify_change(self._model, model)
        self._model = model
        if change is not None:
            kind, keys = change
            try:
                if kind == "endpoints":
                    await self._patch_endpoints(model, keys)
                elif kind == "routes":
                    await self._patch_routes(model, keys)
                elif kind == "gamma":
                    await self._patch_gamma(model, keys)
                else:  # both in one model (a manifest poll that saw slice files and a Route file): one, then the other
                    await self._patch_endpoints(model, {k for k in keys if k.kind != "Route"})
                    await self._patch_routes(model, {k for k in keys if k.kind == "Route"})
                self.metrics.observe_build(kind, time.perf_counter() - started)
                return
            except BuildError as exc:
                log.warning("%s; building from scratch to isolate it", exc)
        self._force_full = False
        self.metrics.full_build_started()
        blocked, prior = dict(self._blocked), dict(self._prior)
        build = await self._in_worker(
            self._full_build, model, dict(self._groups), dict(self._last_accepted), prior, blocked, self.mesh
        )
        mesh, previous = build.mesh, self.mesh
        # Blocks the build added; the loop may have added others meanwhile (a NACK), which stay.
        self._blocked.update((k, v) for k, v in blocked.items() if self._blocked.get(k) is not v)
        if previous is not None and previous.endpoint_index is not mesh.endpoint_index:
            released = self._worker.submit(release_gently, previous.endpoint_index, mesh.endpoint_index)
            released.add_done_callback(self._background_done)
        self.mesh, self._statuses, self._statuses_of = mesh, build.statuses, mesh.status_by_key
        del previous
        self._last_accepted, self._prior = build.last_accepted, prior
        self._drop_stale_blocks(model)
        changed = await self._publish(build.snapshots)
        self.metrics.observe_build("full", time.perf_counter() - started)
        for problem in mesh.load_errors:
            log.warning("%s", problem)
        for status in build.unhealthy:
            log.warning("%s: %s", status.key, status.summary())
        if self.on_statuses:
            self.on_statuses(build.statuses)
        self._synced.set()
        log.info(
            "built %d groups (%d changed) in %.1f ms",
            len(build.snapshots),
            len(changed),
            1e3 * (time.perf_counter() - started),
        )

    def _full_build(
        self,
        model: Model,
        groups: Mapping[str, SidecarParams],
        last_accepted: dict[ObjectKey, Served],
        prior: dict[ObjectKey, Served],
        blocked: dict[ObjectKey, Blocked],
        previous: MeshIR | None,
    ) -> _FullBuild:
        """In the worker: everything a full build needs that is O(mesh), so the loop only assigns the results."""
        # No automatic collections while the build allocates: they would be full ones (everything is new), each
        # holding the GIL for ~80 ms at 2,000 services and finding nothing to free (the build makes no cycles).
        with self._collector_paused(full_build=True):
            mesh, snapshots = self._translate_and_build(model, groups, last_accepted, blocked, previous)
        statuses = mesh.statuses
        return _FullBuild(
            mesh=mesh,
            snapshots=snapshots,
            last_accepted=_remember_accepted(mesh, last_accepted, prior),
            statuses=statuses,
            unhealthy=tuple(s for s in statuses if not s.healthy),
        )

    def _translate_and_build(
        self,
        model: Model,
        groups: Mapping[str, SidecarParams],
        last_accepted: Mapping[ObjectKey, Served],
        blocked: dict[ObjectKey, Blocked],
        previous: MeshIR | None,
    ) -> tuple[MeshIR, dict[str, Snapshot]]:
        """Full translation and a snapshot per group (in the worker). A resource that cannot be built blocks the
        object version it came from (added to ``blocked``) and translation starts again without it, at most once
        per object. A group that still fails, for a reason no object explains, keeps its last snapshot."""
        limit = len(model.virtual_nodes) + len(model.routes) + 1
        for _ in range(limit):
            mesh = translate_mesh(
                model,
                last_accepted,
                previous,
                blocked,
                default_tls_mode=self.default_tls_mode,
                default_authz=self.default_authz,
                default_egress=self.default_egress,
            )
            self._builder.start_generation()
            snapshots: dict[str, Snapshot] = {}
            retry = False
            for group, params in groups.items():
                try:
                    snapshots[group] = self._build(mesh, params)
                except BuildError as exc:
                    message = f"cannot be programmed into Envoy: {exc}"
                    if _block(blocked, exc.owner, mesh, "InvalidForEnvoy", message):
                        log.warning("%s: %s; blocked, building again without it", exc.owner, exc)
                        retry = True
                        break
                    log.error("group %s keeps its last config: %s", group, exc)
                    self.metrics.build_failed()
                except Exception:
                    log.exception("group %s keeps its last config", group)
                    self.metrics.build_failed()
            if not retry:
                break
        return mesh, snapshots

    @contextmanager
    def _collector_paused(self, *, full_build: bool) -> Iterator[None]:
        """In the worker: no automatic collections while a build or patch allocates, then what it made (the model,
        IR and resources live until the next change) moved out of the collector's sight, or each young collection
        rescans its 20,000- and 100,000-entry maps until they age out (issue 14: 11-16 ms with the GIL held, on the
        loop's thread or this one, during a Pod burst; every gen-2 collection rescans millions of objects: 100+
        ms). Acyclic garbage is still freed by reference counting; cycles among frozen objects wait for the full
        collection done every _FULL_GC_EVERY full builds."""
        gc.disable()
        try:
            yield
        finally:
            if full_build:
                self._builds_since_gc += 1
                if self._builds_since_gc >= _FULL_GC_EVERY:
                    gc.unfreeze()
                    gc.collect()
                    self._builds_since_gc = 0
            gc.freeze()
            gc.enable()

    def _accept(self, mesh: MeshIR, model: Model, changed: set[ObjectKey] | None = None) -> None:
        """Remember what is served now, the version served before it (what a NACK falls back to), and drop
        blocks of objects that changed or are gone. ``changed``: only these objects can differ (a Route patch),
        so a Route change costs O(change), not O(mesh)."""
        self._last_accepted = _remember_accepted(mesh, self._last_accepted, self._prior, changed)
        self._drop_stale_blocks(model)

    def _drop_stale_blocks(self, model: Model) -> None:
        for key, block in list(self._blocked.items()):
            current = _objects_of_kind(model, key.kind).get(key)
            if current is None or current.spec != block.spec:
                del self._blocked[key]

    def reject_from_envoy(self, nack: Nack) -> None:
        """A proxy NACKed an update. Only that proxy is affected until Envoy's validator confirms the rejection
        (``NackJudge``, off the serving loop); then the objects new in it are blocked (``_block_rejected``)."""
        if self.mesh is not None:
            self.nacks.submit(nack)

    def _block_rejected(self, nack: Nack) -> list[ObjectKey]:
        """A confirmed rejection: block the served versions of the objects new in it, fall back to the versions
        served before, and rebuild so every other change keeps flowing."""
        if self.mesh is None:
            return []
        blocked = []
        type_name = SHORT_NAMES.get(nack.type_url, nack.type_url)
        for owner in sorted(nack.owners):
            text = f"Envoy rejected the {type_name.upper()} update that carried this version: {nack.message}"
            if _block(self._blocked, owner, self.mesh, "RejectedByEnvoy", text):
                prior = self._prior.pop(owner, None)
                if prior is not None and prior.spec != self._blocked[owner].spec:
                    self._last_accepted[owner] = prior
                else:
                    self._last_accepted.pop(owner, None)
                blocked.append(owner)
        if blocked:
            log.warning("blocked %s: %s", ", ".join(map(str, blocked)), nack.message)
            self._rebuild_from_scratch()
        return blocked

    def _rebuild_from_scratch(self) -> None:
        """Schedules a full build of the newest model, whether or not a new one arrives."""
        self._force_full = True
        self._pending = self._pending or self._model
        self._wake.set()

    async def _patch_gamma(self, model: Model, changed: set[ObjectKey]) -> None:
        """Only HTTPRoutes/GRPCRoutes changed: translate those again (``with_gamma_changes``, then
        ``with_gateway_changes`` for edge gateways) and, in each group, patch just the virtual hosts of the Services
        they route (every meshed caller may see a producer route), or rebuild the group when the change reaches
        further (clusters used or made differently); rebuild the edge gateways' groups they touch."""
        mesh, snapshots = await self._in_worker(
            self._gamma_patch, model, changed, dict(self._groups), dict(self._last_accepted), dict(self._blocked)
        )
        await self._serve_patch(mesh, model, changed, snapshots)

    async def _serve_patch(
        self, mesh: MeshIR, model: Model, changed: set[ObjectKey], snapshots: dict[str, Snapshot]
    ) -> None:
        """After a route patch (Routes or Gateway API routes): serve its mesh and snapshots, say what is wrong with
        the changed objects, as a full build does, and hand the statuses over."""
        self.mesh = mesh
        self._accept(mesh, model, changed)
        await self._publish(snapshots)
        for key in changed:
            status = mesh.status_by_key.get(key)
            if status is not None and not status.healthy:
                log.warning("%s: %s", status.key, status.summary())
        if self.on_statuses:
            self.on_statuses(self.statuses())

    def _gamma_patch(
        self,
        model: Model,
        changed: set[ObjectKey],
        groups: Mapping[str, SidecarParams],
        last_accepted: Mapping[ObjectKey, Served],
        blocked: Mapping[ObjectKey, Blocked],
    ) -> tuple[MeshIR, dict[str, Snapshot]]:
        assert self.mesh is not None
        with self._collector_paused(full_build=False):
            old = self.mesh
            mesh, services, clusters = old.with_gamma_changes(model, changed, last_accepted, blocked)
            mesh, gateways, gateway_clusters = mesh.with_gateway_changes(model, changed, blocked)
            remade = {c for c in clusters | gateway_clusters if old.clusters.get(c) != mesh.clusters.get(c)}
            snapshots = {}
            for group, params in groups.items():
                if params.gateway is not None:
                    proxy = old.gateways.proxies.get(params.gateway)
                    if params.gateway in gateways or (proxy is not None and remade & set(proxy.clusters)):
                        snapshots[group] = self._patched_gateway(group, params, old, mesh, remade)
                    continue
                if params.virtual_node is None or params.virtual_node not in mesh.virtual_nodes:
                    continue  # no outbound routes (an unknown node gets none)
                snapshots[group] = self._patched_routes(group, params, old, mesh, services, clusters | gateway_clusters)
        return mesh, snapshots

    def _patched_routes(
        self,
        group: str,
        params: SidecarParams,
        old: MeshIR,
        mesh: MeshIR,
        services: Iterable[ObjectKey],
        clusters: Iterable[str] = (),
    ) -> Snapshot:
        """The group's snapshot after only the routes of ``services`` changed: its RouteConfiguration patched when
        nothing else differs (``with_route_changes``), else built again. A BuildError leaves everything as it was."""
        snap = self.cache.get(group)
        ir = with_route_changes(snap.ir, old, mesh, services, clusters) if snap is not None and snap.ir else None
        if snap is None or ir is None:
            return self._build(mesh, params)
        self.metrics.route_patched()
        routes = self._builder.route_configuration(ir.route_config_name, ir.virtual_hosts)
        return snap.patched(ROUTE, {ir.route_config_name: routes}, ir)

    def _patched_gateway(
        self, group: str, params: SidecarParams, old: MeshIR, mesh: MeshIR, remade: set[str]
    ) -> Snapshot:
        """An edge gateway group's snapshot after some of its routes changed: its RouteConfigurations patched when
        nothing else differs (the same ports, certificates and clusters, none made differently), else built again
        (the builder reuses the bytes of every virtual host and resource that did not change)."""
        assert params.gateway is not None
        snap = self.cache.get(group)
        before, after = old.gateways.proxies.get(params.gateway), mesh.gateways.proxies.get(params.gateway)
        if (
            snap is None
            or snap.ir is None
            or before is None
            or after is None
            or before.clusters != after.clusters
            or before.secrets != after.secrets
            or remade & set(after.clusters)
            or [(p.port, p.https, p.certificates) for p in before.ports]
            != [(p.port, p.https, p.certificates) for p in after.ports]
            or snap.ir.gateway_listeners != gateway_listeners(before, params)  # (what it serves is not `before`'s)
        ):
            return self._build(mesh, params)
        listeners = gateway_listeners(after, params)
        ir = replace(snap.ir, gateway_listeners=listeners)
        self.metrics.route_patched()
        routes = {
            li.route_config_name: self._builder.gateway_route_configuration(li)
            for li, was in zip(listeners, snap.ir.gateway_listeners, strict=True)
            if li.virtual_hosts != was.virtual_hosts
        }
        return snap.patched(ROUTE, routes, ir) if routes else snap

    async def _patch_routes(self, model: Model, changed_routes: set[ObjectKey]) -> None:
        """Only Routes changed: re-translate those; in each group that calls their Services, patch just the
        RouteConfiguration (as endpoint changes patch ClusterLoadAssignments), or rebuild the group when the change
        reaches further (a tcpRoute, a cluster used or no longer used)."""
        mesh, snapshots = await self._in_worker(
            self._route_patch, model, changed_routes, dict(self._groups), dict(self._last_accepted), dict(self._blocked)
        )
        await self._serve_patch(mesh, model, changed_routes, snapshots)

    def _route_patch(
        self,
        model: Model,
        changed_routes: set[ObjectKey],
        groups: Mapping[str, SidecarParams],
        last_accepted: Mapping[ObjectKey, Served],
        blocked: Mapping[ObjectKey, Blocked],
    ) -> tuple[MeshIR, dict[str, Snapshot]]:
        assert self.mesh is not None
        with self._collector_paused(full_build=False):
            old = self.mesh
            mesh, services = old.with_route_changes(model, changed_routes, last_accepted, blocked)
            snapshots = {}
            for group, params in groups.items():
                spec = mesh.virtual_nodes.get(params.virtual_node) if params.virtual_node else None
                # (a Service with Gateway API routes is reached by callers that do not declare it)
                if spec is None or not (services_called(spec, services) or services & mesh.gamma.routed_services):
                    continue
                snapshots[group] = self._patched_routes(group, params, old, mesh, services)
        return mesh, snapshots

    async def _patch_endpoints(self, model: Model, changed_keys: set[ObjectKey]) -> None:
        """Only EndpointSlices and/or Pods changed: update just the affected ClusterLoadAssignments in each snapshot."""
        mesh, snapshots = await self._in_worker(self._endpoint_patch, model, changed_keys, list(self._groups))
        self.mesh = mesh
        await self._publish(snapshots)

    def _endpoint_patch(
        self, model: Model, changed_keys: set[ObjectKey], groups: list[str]
    ) -> tuple[MeshIR, dict[str, Snapshot]]:
        assert self.mesh is not None
        with self._collector_paused(full_build=False):
            mesh, changed = self.mesh.with_endpoint_changes(model, changed_keys)
            snapshots = {}
            for group in groups:
                snap = self.cache.get(group)
                if snap is None:
                    continue
                present = snap.resources[ENDPOINT]
                updates = {
                    name: self._builder.endpoints(mesh.clusters[name], mesh.endpoints[name])
                    for name in changed
                    if name in present
                }
                if updates:
                    snapshots[group] = snap.patched(ENDPOINT, updates)
        return mesh, snapshots

    def _build(self, mesh: MeshIR, params: SidecarParams) -> Snapshot:
        """In the worker: the group's snapshot, checked and with its versions computed (see ``prepare``)."""
        ir = translate_sidecar(mesh, params)
        secrets = self._secrets(params) if ir.uses_mesh_secrets else None
        if params.gateway is not None and (proxy := mesh.gateways.proxies.get(params.gateway)) is not None:
            secrets = {**(secrets or {}), **self._certificates(mesh, proxy.secrets)}
        return prepare(self._builder.build(ir, self.cache.get(params.group), secrets))

    def _certificates(self, mesh: MeshIR, keys: Iterable[ObjectKey]) -> dict[str, CachedResource]:
        """An edge gateway's certificate Secrets as SDS secrets, made once per key pair."""
        out = {}
        for key in keys:
            secret = mesh.gateways.certificates[key]
            name = certificate_secret_name(key)
            memo = (name, secret.certificate_pem, secret.key_pem)
            found = self._certificate_resources.get(memo)
            if found is None:
                found = CachedResource(SECRET, name, identity_secret(secret.certificate_pem, secret.key_pem, name))
                for old in [m for m in self._certificate_resources if m[0] == name]:
                    del self._certificate_resources[old]  # (only the current pair of each Secret is kept)
                self._certificate_resources[memo] = found
            out[name] = found
        return out

    @property
    def identities(self) -> IdentityKeeper:
        """The workload certificates; an in-memory CA unless one was given (``meshctl serve --ca-dir``)."""
        if self._identities is None:
            self._identities = IdentityKeeper(MeshCA.generate())
        return self._identities

    def proven_identities(self, virtual_node: ObjectKey) -> list[str]:
        """The workload identities (SPIFFE IDs) of the connected proxies of a VirtualNode, by service account."""
        domain = self.identities.ca.trust_domain
        accounts = sorted({p.service_account for p in self._groups.values() if p.virtual_node == virtual_node})
        return [spiffe_id(domain, virtual_node.namespace, sa) for sa in accounts]

    @staticmethod
    def _identity(params: SidecarParams) -> Identity | None:
        """A sidecar's workload identity: its VirtualNode's namespace and its service account (an edge gateway's
        proxy: its Gateway's namespace)."""
        owner = params.virtual_node or params.gateway
        return None if owner is None else (owner.namespace, params.service_account)

    def _secrets(self, params: SidecarParams) -> dict[str, CachedResource] | None:
        """The group's SDS secrets: its workload certificate and key, and the roots. Shared by the groups of one
        identity, built once per certificate."""
        identity = self._identity(params)
        if identity is None:
            return None
        keeper = self.identities
        cert, bundle = keeper.certificate(identity), keeper.ca.bundle_pem
        key = (identity, cert.serial, bundle)
        found = self._secret_resources.get(key)
        if found is None:
            found = {
                IDENTITY_SECRET: CachedResource(SECRET, IDENTITY_SECRET, identity_secret(cert.chain_pem, cert.key_pem)),
                TRUST_SECRET: CachedResource(SECRET, TRUST_SECRET, trust_secret(bundle)),
            }
            # Only current certificates: an entry per identity (a replaced one is dropped, key and all).
            for old in [k for k in self._secret_resources if k[0] == identity]:
                del self._secret_resources[old]
            self._secret_resources[key] = found
        return found

    async def renew_identities(self, *, longest_wait: float = 60.0) -> None:
        """Issues each workload certificate again at its renewal time and sends it to the groups of that
        identity (only their SDS secret changes: Envoy keeps its listeners and clusters, and uses the new
        certificate for new connections)."""
        while True:
            keeper = self.identities
            due_at = keeper.next_renewal()
            # With a CA directory (or Secret), look at it every poll interval (``meshctl ca rotate`` is taken then).
            wait = keeper.ca_source.poll_interval if keeper.ca_source is not None else longest_wait
            if due_at is not None:
                wait = min(wait, max(0.0, (due_at - datetime.datetime.now(datetime.UTC)).total_seconds()))
            await asyncio.sleep(wait)
            if await self._in_worker(self._paused, keeper.reload_ca):
                await self.republish_secrets()
            renewed = await self._in_worker(self._paused, keeper.renew_due)
            if renewed:
                await self.republish_secrets(set(renewed))

    async def rotate_signer(self, issuer: Issuer) -> None:
        """A new issuer signs: every identity is issued again and sent (``meshctl ca rotate --stage sign`` does
        this through the CA directory)."""
        await self._in_worker(self._paused, partial(self.identities.rotate_ca, issuer))
        await self.republish_secrets()

    def _paused(self, fn: Callable[[], _T]) -> _T:
        """In the worker, with no automatic collection: a thousand certificates issued at once otherwise set off a
        full collection (96 ms with the GIL held, measured in benchmark 10's rotation wave)."""
        with self._collector_paused(full_build=False):
            return fn()

    async def republish_secrets(self, identities: set[Identity] | None = None) -> None:
        """Sends the current secrets to every group of these identities (all, when None) that uses them: made in
        one go in the worker, published together (the cache wakes the streams a bounded number per iteration)."""
        async with self._lock:
            groups = {
                group: params
                for group, params in self._groups.items()
                if (snap := self.cache.get(group)) is not None
                and snap.resources[SECRET].keys() & _MESH_SECRETS  # not the groups that name files alone
                and (identity := self._identity(params)) is not None
                and (identities is None or identity in identities)
            }
            snapshots = await self._in_worker(self._paused, partial(self._secret_patches, groups))
            await self._publish(snapshots)

    def _secret_patches(self, groups: Mapping[str, SidecarParams]) -> dict[str, Snapshot]:
        patches = {}
        for group, params in groups.items():
            snap, secrets = self.cache.get(group), self._secrets(params)
            if snap is not None and secrets:
                patches[group] = snap.patched(SECRET, secrets)
        return patches

    async def attach(self, params: SidecarParams) -> str:
        """A proxy connected: make sure its group has a snapshot (if the mesh is loaded)."""
        group = params.group
        self._attached[group] += 1
        if group not in self._groups:
            self._groups[group] = params
            async with self._lock:  # a build under way includes the group or finishes first
                mesh = self.mesh
                if mesh is not None and group in self._groups and self.cache.get(group) is None:
                    try:
                        snap = await self._in_worker(self._build, mesh, params)
                        await self._publish({group: snap})
                    except BuildError as exc:  # e.g. its own inbound listener: rebuild all, isolating the cause
                        log.warning("%s; building from scratch to isolate it", exc)
                        self._rebuild_from_scratch()
        return group

    async def pod_refusal(self, pod: ObjectKey, virtual_node: ObjectKey) -> str | None:
        """Why a proxy whose token names ``pod`` may not stream as ``virtual_node``: the pod is not known, or the
        node's podSelector does not select it. Waits for the first model (a restarted control plane)."""
        await self._synced.wait()
        model = self._model
        pods = model.pods if model is not None else {}
        found = pods.get(pod)
        if found is None:
            return f"pod {pod.namespace}/{pod.name} is not known"
        if virtual_node.kind == "Gateway":  # an edge gateway's pod carries its Gateway's name (meshctl install)
            if found.labels.get(GATEWAY_NAME_LABEL) != virtual_node.name:
                return f"pod {pod.namespace}/{pod.name} is not a proxy of Gateway {virtual_node.name}"
            return None
        vn = model.virtual_nodes.get(virtual_node) if model is not None else None
        if vn is None or vn.spec is None:
            return f"VirtualNode {virtual_node.namespace}/{virtual_node.name} is not known"
        selector = vn.spec.pod_selector
        if not selector or any(found.labels.get(k) != v for k, v in selector.items()):
            node = f"{virtual_node.namespace}/{virtual_node.name}"
            return f"VirtualNode {node} does not select pod {pod.namespace}/{pod.name}"
        return None

    def detach(self, group: str) -> None:
        self._attached[group] -= 1
        if self._attached[group] <= 0:
            del self._attached[group]
            gone = self._groups.pop(group, None)
            self.cache.forget(group)
            if gone is not None and self._identities is not None:
                self._forget_identities()

    def _forget_identities(self) -> None:
        """Drops the workload keys no connected proxy uses (a proxy that comes back is issued a fresh one), so
        they are neither kept in memory nor renewed for ever."""
        keep = {i for p in self._groups.values() if (i := self._identity(p)) is not None}
        assert self._identities is not None
        self._identities.forget(keep)
        for key in [k for k in self._secret_resources if k[0] not in keep]:
            del self._secret_resources[key]

    def statuses(self) -> tuple[ObjectStatus, ...]:
        """Sorted once per full build, in the worker (20,000 objects at 10,000 services); after Route patches,
        brought up to date when asked for, not on every patch (a lookup per object: ~10 ms at 10,000 services,
        a tenth of the Route propagation budget)."""
        mesh = self.mesh
        if mesh is not None and self._statuses_of is not mesh.status_by_key:
            self._statuses, self._statuses_of = _updated_statuses(self._statuses, mesh), mesh.status_by_key
        return self._statuses


_MESH_SECRETS = frozenset({IDENTITY_SECRET, TRUST_SECRET})


@dataclass(frozen=True, slots=True)
class _FullBuild:
    mesh: MeshIR
    snapshots: dict[str, Snapshot]
    last_accepted: dict[ObjectKey, Served]
    statuses: tuple[ObjectStatus, ...]
    unhealthy: tuple[ObjectStatus, ...]


def _updated_statuses(previous: tuple[ObjectStatus, ...], mesh: MeshIR) -> tuple[ObjectStatus, ...]:
    """``mesh.statuses`` after a Route patch: the same objects in the same order (only their statuses changed) is a
    lookup per object, not a sort of 20,000 statuses; when objects came or went, sorted again."""
    by_key = mesh.status_by_key
    if len(previous) != len(by_key):
        return mesh.statuses
    try:  # as many keys and every previous one still there: the same objects (map: C speed, ~5x a genexpr)
        return tuple(map(by_key.__getitem__, map(_STATUS_KEY, previous)))
    except KeyError:
        return mesh.statuses


def _remember_accepted(
    mesh: MeshIR,
    last_accepted: dict[ObjectKey, Served],
    prior: dict[ObjectKey, Served],
    changed: set[ObjectKey] | None = None,
) -> dict[ObjectKey, Served]:
    """The versions served now (returned; ``last_accepted`` itself when ``changed`` is given), recording in ``prior``
    the version each replaced; ``prior`` forgets objects no longer served."""
    for key in mesh.accepted if changed is None else changed:
        obj, old = mesh.accepted.get(key), last_accepted.get(key)
        if old is not None and (obj is None or old.spec != obj.spec):
            prior[key] = old
        if changed is not None:
            if obj is None:
                last_accepted.pop(key, None)
            else:
                last_accepted[key] = obj
    candidates = prior.keys() if changed is None else changed & prior.keys()
    for key in [k for k in candidates if k not in mesh.accepted]:
        del prior[key]
    return dict(mesh.accepted) if changed is None else last_accepted


def _objects_of_kind(model: Model, kind: str) -> Mapping[ObjectKey, Served]:
    """The model map an object that can be blocked lives in."""
    if kind == "VirtualNode":
        return model.virtual_nodes
    return model.http_routes if kind in ("HTTPRoute", "GRPCRoute") else model.routes


def _block(blocked: dict[ObjectKey, Blocked], owner: ObjectKey | None, mesh: MeshIR, reason: str, message: str) -> bool:
    """Blocks (in ``blocked``) the version of ``owner`` that ``mesh`` serves. False if there is nothing new to block."""
    served = mesh.accepted.get(owner) if owner is not None else None
    if owner is None or served is None or served.spec is None:
        return False
    existing = blocked.get(owner)
    if existing is not None and existing.spec == served.spec:
        return False
    blocked[owner] = Blocked(spec=served.spec, reason=reason, message=message)
    return True


# Model fields a change may touch and still take a fast path; "revision" and "delta" describe the model itself.
_FAST_PATHS = frozenset({"endpoint_slices", "pods", "routes", "http_routes"})
_BOOKKEEPING = frozenset({"revision", "delta"})
# Model fields translation never reads (the ingress reconciler's): a change to them alone needs no build.
INGRESS_ONLY = frozenset(
    {
        "ingresses",
        "ingress_classes",
        "ingress_class_params",
        "nodes",
        "target_group_bindings",
        "l4_routes",
        "load_balancer_configurations",
        "target_group_configurations",
        "listener_rule_configurations",
    }
)


def classify_change(
    old: Model | None, new: Model
) -> tuple[Literal["endpoints", "routes", "endpoints+routes", "gamma"], set[ObjectKey]] | None:
    """("endpoints", slices and pods), ("routes", routes), or both ("endpoints+routes": patched one after the other)
    when only those changed; None when a full translation is needed. Deny by default: every Model field other than
    the fast-path ones must be unchanged, so a field added to Model later means a full build until someone proves a
    faster path for it.

    A source's delta is trusted (for which slices or routes changed) when it is relative to ``old``; otherwise
    objects are compared, identity before equality, so a source that keeps unchanged objects makes this cheap."""
    if old is None:
        return None
    for f in fields(Model):
        if f.name in _FAST_PATHS or f.name in _BOOKKEEPING or f.name in INGRESS_ONLY:
            continue
        before, after = getattr(old, f.name), getattr(new, f.name)
        if before is not after and before != after:
            return None
    delta = new.delta
    trusted = delta is not None and bool(old.revision) and delta.base_revision == old.revision
    if delta is not None and trusted and delta.http_routes:
        if delta.endpoint_slices or delta.pods or delta.routes:
            return None
        return "gamma", set(delta.http_routes)
    gamma = _changed_keys(old.http_routes, new.http_routes)
    if gamma:  # Gateway API routes alone, the mesh's and the edge gateways' (with anything else: a full build)
        alone = new.delta is None or not (new.delta.endpoint_slices or new.delta.pods or new.delta.routes)
        others = _changed_keys(old.endpoint_slices, new.endpoint_slices) or _changed_keys(old.pods, new.pods)
        if alone and not others and not _changed_keys(old.routes, new.routes):
            return "gamma", gamma
        return None
    if delta is not None and trusted:
        endpoints, routes = set(delta.endpoint_slices | delta.pods), set(delta.routes)
    else:
        endpoints = _changed_keys(old.endpoint_slices, new.endpoint_slices) | _changed_keys(old.pods, new.pods)
        routes = _changed_keys(old.routes, new.routes)
    if routes and (old.gateways or new.gateways):
        return None  # edge gateways take the mesh's Routes too (translate/gateway.py): translated whole
    pods_changed = any(k.kind == "Pod" for k in endpoints)
    if routes or pods_changed:
        on_routes, on_pods = authz_dependencies(new.authorization_policies)
        if (routes and on_routes) or (pods_changed and on_pods):
            return None  # what a policy enforces may change with them: redo it (translate/authz.py)
    if endpoints and routes:
        return "endpoints+routes", endpoints | routes
    return ("routes", routes) if routes else ("endpoints", endpoints)


def _changed_keys(before: Mapping[ObjectKey, object], after: Mapping[ObjectKey, object]) -> set[ObjectKey]:
    if before is after:
        return set()
    keys = before.keys() | after.keys()
    return {k for k in keys if before.get(k) is not after.get(k) and before.get(k) != after.get(k)}
