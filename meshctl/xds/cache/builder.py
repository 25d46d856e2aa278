"""SidecarIR -> Snapshot, reusing the CachedResource of every IR value seen in the previous build.

Building protobuf messages costs ~10x more than serializing them (ENVOY-NOTES), so equal IR maps to
the same CachedResource object: unchanged resources are neither rebuilt nor re-serialized, and groups
that share a cluster share its bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from meshctl.xds.cache.resource import CachedResource
from meshctl.xds.cache.snapshot import Snapshot
from meshctl.xds.cache.wire import encode_route_configuration
from meshctl.xds.envoy.cluster import build_cluster, build_load_assignment
from meshctl.xds.envoy.listener import build_inbound_listener, build_outbound_listener, build_outbound_tcp_listener
from meshctl.xds.envoy.route import build_virtual_host
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from meshctl.xds.translate.ir import ClusterIR, EndpointIR, SidecarIR, VirtualHostIR

__all__ = ["SnapshotBuilder"]


class SnapshotBuilder:
    def __init__(self) -> None:
        self._memo: dict[Hashable, Any] = {}  # CachedResources, and serialized virtual hosts
        self._previous: dict[Hashable, Any] = {}

    def start_generation(self) -> None:
        """Call once per model change: entries not used since the last call are dropped afterwards."""
        self._previous, self._memo = self._memo, {}

    def _get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        found = self._memo.get(key)
        if found is None:
            found = self._previous.get(key) or make()
            self._memo[key] = found
        return found

    def endpoints(self, cluster: ClusterIR, endpoints: tuple[EndpointIR, ...]) -> CachedResource:
        hc_port = cluster.health_check.port if cluster.health_check else None
        return self._get(
            (ENDPOINT, cluster.name, endpoints, hc_port),
            lambda: CachedResource(ENDPOINT, cluster.name, build_load_assignment(cluster.name, endpoints, hc_port)),
        )

    def route_configuration(self, name: str, virtual_hosts: tuple[VirtualHostIR, ...]) -> CachedResource:
        """Spliced from each virtual host's bytes, memoized per host: groups share hosts, and a Route change
        re-encodes one host, not every host of every group that calls the Service."""

        def make() -> CachedResource:
            hosts = [self._get(("vhost", vh), lambda vh=vh: _host_bytes(vh)) for vh in virtual_hosts]
            refs = {(CLUSTER, wc.cluster) for vh in virtual_hosts for r in vh.routes for wc in r.clusters}
            return CachedResource(ROUTE, name, value=encode_route_configuration(name, hosts), references=refs)

        return self._get((ROUTE, name, virtual_hosts), make)

    def build(self, ir: SidecarIR, previous: Snapshot | None = None) -> Snapshot:
        resources: dict[str, dict[str, CachedResource]] = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}

        def put(type_url: str, key: Hashable, name: str, make: Callable[[], Any], refs=()) -> None:
            resources[type_url][name] = self._get((type_url, key), lambda: CachedResource(type_url, name, make(), refs))

        for cluster in ir.clusters:
            refs = ((ENDPOINT, cluster.name),) if cluster.eds else ()
            put(CLUSTER, cluster, cluster.name, lambda c=cluster: build_cluster(c), refs)
            if cluster.eds:
                resources[ENDPOINT][cluster.name] = self.endpoints(cluster, ir.endpoints.get(cluster.name, ()))
        if ir.outbound is not None:
            put(
                LISTENER,
                ir.outbound,
                ir.outbound.name,
                lambda: build_outbound_listener(ir.outbound),
                ((ROUTE, ir.outbound.route_config_name),),
            )
            resources[ROUTE][ir.route_config_name] = self.route_configuration(ir.route_config_name, ir.virtual_hosts)
        for tcp in ir.tcp_outbound:
            refs = {(CLUSTER, wc.cluster) for wc in tcp.route.clusters if wc.weight > 0}
            put(LISTENER, tcp, tcp.name, lambda t=tcp: build_outbound_tcp_listener(t), refs)
        for inbound in ir.inbound:
            put(
                LISTENER,
                inbound,
                inbound.name,
                lambda i=inbound: build_inbound_listener(i),
                ((CLUSTER, inbound.cluster),),
            )
        if previous is None:
            return Snapshot(ir.params.group, resources)
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
        return Snapshot(ir.params.group, kept, versions=versions)


def _host_bytes(vh: VirtualHostIR) -> bytes:
    return build_virtual_host(vh).SerializeToString(deterministic=True)
