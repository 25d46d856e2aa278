"""SidecarIR -> Snapshot, reusing the CachedResource of every IR value seen in the previous build.

Building protobuf messages costs ~10x more than serializing them (docs/benchmarks.md), so equal IR maps to
the same CachedResource object: unchanged resources are neither rebuilt nor re-serialized, and groups
that share a cluster share its bytes.

Every resource records the objects it was built from (``origins``). A resource that cannot be built raises
``BuildError`` naming the one object to blame, so the controller can reject that object and build the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from meshctl.model import ObjectKey
from meshctl.translate.endpoints import service_of_cluster
from meshctl.translate.ir import (
    INVALID_BACKEND,
    PASSTHROUGH_CLUSTER,
    ClusterIR,
    EndpointIR,
    GatewayListenerIR,
    RouteIR,
    SidecarIR,
    VirtualHostIR,
)
from meshctl.xds.cache.resource import CachedResource, Origins
from meshctl.xds.cache.route_wire import encode_virtual_host
from meshctl.xds.cache.snapshot import Snapshot
from meshctl.xds.cache.wire import encode_load_assignment, encode_route_configuration, with_name
from meshctl.xds.envoy.cluster import build_cluster
from meshctl.xds.envoy.listener import (
    build_captured_inbound_listener,
    build_gateway_listener,
    build_inbound_listener,
    build_outbound_listener,
    build_outbound_tcp_listener,
)
from meshctl.xds.envoy.route import build_routes
from meshctl.xds.envoy.tls import file_secrets
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, SHORT_NAMES

__all__ = ["BuildError", "SnapshotBuilder", "route_owner"]


class BuildError(Exception):
    """A resource could not be built. ``owner``: the VirtualNode or Route it came from (None if unknown)."""

    def __init__(self, owner: ObjectKey | None, type_url: str, name: str, cause: Exception) -> None:
        super().__init__(f"cannot build {SHORT_NAMES[type_url]} resource {name!r}: {cause}")
        self.owner = owner
        self.cause = cause


def route_owner(ir: RouteIR) -> ObjectKey:
    """Route ``ns/name``; HTTPRoute/GRPCRoute ``Kind/ns/name/rule-i/match-j``; a default route ``ns/svc:port/default``
    (owned by its Service)."""
    kind, _, rest = ir.name.partition("/")
    if kind in ("HTTPRoute", "GRPCRoute"):
        namespace, name = rest.split("/")[:2]
        return ObjectKey(kind, namespace, name)
    if ":" in rest:
        return ObjectKey("Service", kind, rest.split(":", 1)[0])
    return ObjectKey("Route", kind, rest)


def _cluster_owner(cluster: ClusterIR, node: ObjectKey | None) -> ObjectKey | None:
    """An EDS cluster is named namespace/virtualnode/port after the node it reaches; the others (local app,
    tracing collector) come from the proxy's own VirtualNode."""
    if (service := service_of_cluster(cluster.name)) is not None:
        return service[0]
    if cluster.eds or cluster.dns is not None:
        namespace, name, _ = cluster.name.split("/", 2)
        return ObjectKey("VirtualNode", namespace, name)
    return node


class SnapshotBuilder:
    def __init__(self) -> None:
        self._memo: dict[Hashable, Any] = {}  # CachedResources, and serialized virtual hosts
        self._previous: dict[Hashable, Any] = {}
        # The memo key of each cluster's current endpoints: an endpoint patch replaces it instead of adding one
        # more entry per change (they used to pile up, ~1.5 KB each, until the next full build).
        self._endpoint_keys: dict[str, Hashable] = {}

    def start_generation(self) -> None:
        """Call once per full build: entries not used since the last call are dropped afterwards."""
        self._previous, self._memo = self._memo, {}
        self._endpoint_keys = {}

    def __len__(self) -> int:
        """Memo entries held (both generations): bounded by the resources in use, whatever the number of patches."""
        return len(self._memo) + len(self._previous)

    def _get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        found = self._memo.get(key)
        if found is None:
            found = self._previous.get(key) or make()
            self._memo[key] = found
        return found

    def endpoints(
        self, cluster: ClusterIR, endpoints: tuple[EndpointIR, ...], owner: ObjectKey | None = None
    ) -> CachedResource:
        """``owner``: the node the cluster reaches (``_cluster_owner``), when the caller knows it already."""
        hc_port = cluster.health_check.port if cluster.health_check else None
        key = (ENDPOINT, cluster.name, endpoints, hc_port)
        old = self._endpoint_keys.get(cluster.name)
        if old is not None and old != key:
            self._memo.pop(old, None)
            self._previous.pop(old, None)
        self._endpoint_keys[cluster.name] = key
        # Endpoints come from EndpointSlices: blame the node they belong to.
        blamed = owner or _cluster_owner(cluster, None)
        found: CachedResource = self._get(key, partial(_load_assignment, cluster.name, endpoints, hc_port, blamed))
        return found

    def _eds_cluster(self, cluster: ClusterIR, owner: ObjectKey | None) -> CachedResource:
        """The cluster's name, then the bytes of every cluster with the same settings (one per kind of VirtualNode
        listener, not one per cluster: 20,000 clusters at 10,000 services share a few). The same memo key as
        ``build``'s other resources, without its generic closures (40,000 resources)."""
        found: CachedResource = self._get(
            (CLUSTER, ((owner, cluster),)), partial(self._new_eds_cluster, cluster, owner)
        )
        return found

    def _new_eds_cluster(self, cluster: ClusterIR, owner: ObjectKey | None) -> CachedResource:
        settings = partial(self._get, (CLUSTER, "unnamed", cluster.settings()), partial(_unnamed_cluster, cluster))
        value = with_name(cluster.name, _built(owner, CLUSTER, cluster.name, settings))
        origins: Origins = frozenset(((owner, cluster),)) if owner is not None else frozenset()
        return CachedResource(
            CLUSTER, cluster.name, value=value, references=((ENDPOINT, cluster.name),), origins=origins
        )

    def route_configuration(
        self, name: str, virtual_hosts: tuple[VirtualHostIR, ...], *, ignore_port: bool = False
    ) -> CachedResource:
        """Spliced from each virtual host's bytes, memoized per host: groups share hosts, and a Route change
        re-encodes one host, not every host of every group that calls the Service."""

        def make() -> CachedResource:
            hosts: list[bytes] = [self._get(("vhost", vh), partial(_host_bytes, vh)) for vh in virtual_hosts]
            # (a backendRef that does not resolve names INVALID_BACKEND, which is never defined: not a reference)
            refs = {
                (CLUSTER, c)
                for vh in virtual_hosts
                for r in vh.routes
                for c in (*(wc.cluster for wc in r.clusters), *(m.cluster for m in r.mirrors))
                if c != INVALID_BACKEND
            }
            origins: Origins = frozenset((route_owner(r), r) for vh in virtual_hosts for r in vh.routes)
            value = encode_route_configuration(name, hosts, ignore_port=ignore_port)
            return CachedResource(ROUTE, name, value=value, references=refs, origins=origins)

        found: CachedResource = self._get((ROUTE, name, virtual_hosts, ignore_port), make)
        return found

    def gateway_route_configuration(self, listener: GatewayListenerIR) -> CachedResource:
        """An edge gateway port's RouteConfiguration: its virtual hosts picked by the Host without its port."""
        return self.route_configuration(listener.route_config_name, listener.virtual_hosts, ignore_port=True)

    def build(
        self, ir: SidecarIR, previous: Snapshot | None = None, secrets: Mapping[str, CachedResource] | None = None
    ) -> Snapshot:
        """Raises BuildError for a resource that cannot be built (a value the parser should have refused).
        ``secrets``: the group's SDS secrets (its workload identity and the roots), when it uses the mesh CA."""
        resources: dict[str, dict[str, CachedResource]] = {
            CLUSTER: {},
            ENDPOINT: {},
            LISTENER: {},
            ROUTE: {},
            SECRET: dict(secrets or {}),
        }
        for secret in file_secrets(ir.tls_settings):  # names of files on the proxy, not keys
            resources[SECRET][secret.name] = self._get(
                (SECRET, secret.name), partial(CachedResource, SECRET, secret.name, secret)
            )
        node = ir.params.virtual_node

        def put(
            type_url: str,
            owners: tuple[tuple[ObjectKey | None, Hashable], ...],
            name: str,
            make: Callable[[], Any],
            refs: Any = (),
        ) -> None:
            """``owners``: (object, IR) pairs it is built from, the first one blamed if building fails."""

            def cached() -> CachedResource:
                message = _built(owners[0][0], type_url, name, make)
                origins: Origins = frozenset((o, v) for o, v in owners if o is not None)
                return CachedResource(type_url, name, message, refs, origins=origins)

            resources[type_url][name] = self._get((type_url, owners), cached)

        clusters, endpoints = resources[CLUSTER], resources[ENDPOINT]
        for cluster in ir.clusters:
            owner = _cluster_owner(cluster, node)
            if cluster.eds:
                clusters[cluster.name] = self._eds_cluster(cluster, owner)
                endpoints[cluster.name] = self.endpoints(cluster, ir.endpoints.get(cluster.name, ()), owner)
            else:
                put(CLUSTER, ((owner, cluster),), cluster.name, partial(build_cluster, cluster))
        if (outbound := ir.outbound) is not None:
            for http in (outbound, *ir.http_outbound):
                refs: Any = ((ROUTE, http.route_config_name),)
                if http.capture:
                    refs += ((CLUSTER, PASSTHROUGH_CLUSTER),)
                put(LISTENER, ((node, http),), http.name, partial(build_outbound_listener, http), refs)
            resources[ROUTE][ir.route_config_name] = self.route_configuration(ir.route_config_name, ir.virtual_hosts)
        for gw in ir.gateway_listeners:
            refs = ((ROUTE, gw.route_config_name), *((SECRET, c.secret) for c in gw.certificates))
            put(LISTENER, ((ir.params.gateway, gw),), gw.name, partial(build_gateway_listener, gw), refs)
            resources[ROUTE][gw.route_config_name] = self.gateway_route_configuration(gw)
        for tcp in ir.tcp_outbound:
            refs = {(CLUSTER, wc.cluster) for wc in tcp.route.clusters if wc.weight > 0}
            put(
                LISTENER,
                ((route_owner(tcp.route), tcp.route), (node, tcp)),
                tcp.name,
                partial(build_outbound_tcp_listener, tcp),
                refs,
            )
        for inbound in ir.inbound:
            put(
                LISTENER,
                ((node, inbound),),
                inbound.name,
                partial(build_inbound_listener, inbound),
                ((CLUSTER, inbound.cluster),),
            )
        if (captured := ir.captured_inbound) is not None:
            put(
                LISTENER,
                ((node, captured),),
                captured.name,
                partial(build_captured_inbound_listener, captured),
                tuple((CLUSTER, chain.cluster) for chain in captured.chains),
            )
        if previous is None:
            return Snapshot(ir.params.group, resources, ir=ir)
        # Types whose resources are the very same objects as before keep their map and version: a Route
        # change then costs one RDS version computation, not a hash over every cluster and endpoint.
        kept: dict[str, Mapping[str, CachedResource]] = {}
        versions: dict[str, str] = {}
        for type_url, built in resources.items():
            old = previous.resources[type_url]
            if len(old) == len(built) and all(old.get(n) is r for n, r in built.items()):
                kept[type_url], versions[type_url] = old, previous.version(type_url)
            else:
                kept[type_url] = built
        return Snapshot(ir.params.group, kept, versions=versions, ir=ir)


def _built(owner: ObjectKey | None, type_url: str, name: str, make: Callable[[], Any]) -> Any:
    """``make()``, its failure turned into a BuildError that blames ``owner``."""
    try:
        return make()
    except Exception as exc:
        raise BuildError(owner, type_url, name, exc) from exc


def _load_assignment(
    name: str, endpoints: tuple[EndpointIR, ...], hc_port: int | None, owner: ObjectKey | None
) -> CachedResource:
    value = _built(owner, ENDPOINT, name, partial(encode_load_assignment, name, endpoints, hc_port))
    return CachedResource(ENDPOINT, name, value=value)


def _unnamed_cluster(cluster: ClusterIR) -> bytes:
    return bytes(build_cluster(replace(cluster, name="")).SerializeToString(deterministic=True))


def _host_bytes(vh: VirtualHostIR) -> bytes:
    try:
        return encode_virtual_host(vh)
    except Exception as exc:
        for route in vh.routes:  # which Route? (rare: only when a value slipped past validation)
            try:
                build_routes(route)
            except Exception as route_exc:
                raise BuildError(route_owner(route), ROUTE, vh.name, route_exc) from route_exc
        raise BuildError(None, ROUTE, vh.name, exc) from exc
