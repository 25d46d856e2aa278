"""Model -> mesh IR and object statuses. Pure: no I/O, no clock; same input, same output.

Bad input never raises: an invalid or unresolvable VirtualNode or Route gets a status naming the field,
and its last accepted version (passed in by the caller) keeps being served, so one bad edit loses nothing.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from meshctl.model import (
    CloudMapAnswer,
    CloudMapDiscovery,
    DnsAnswer,
    DnsDiscovery,
    DnsResponseType,
    EgressFilter,
    FieldError,
    IpPreference,
    ListenerTls,
    Model,
    ObjectKey,
    Protocol,
    Route,
    RouteSpec,
    Service,
    TlsMode,
    VirtualNode,
    VirtualNodeSpec,
)
from meshctl.model.authz import AuthorizationPolicy, AuthzDefault
from meshctl.model.gateway import HTTPRoute
from meshctl.routing.adapt import match_from_model
from meshctl.routing.shadow import Shadowing, find_shadowed
from meshctl.routing.table import RouteRule, Target, VirtualHost
from meshctl.translate.authz import ListenerKey, translate_authz
from meshctl.translate.endpoints import (
    EndpointIndex,
    cluster_name,
    index_endpoints,
    service_cluster_endpoints,
    service_cluster_name,
    service_of_cluster,
    slices_by_service,
    update_endpoints,
    update_nodes,
)
from meshctl.translate.gamma import GammaIR, MtlsIndex, mtls_index, service_cluster, translate_gamma
from meshctl.translate.gateway import GatewaysIR, translate_gateways, with_gateway_parents
from meshctl.translate.ir import (
    AuthzIR,
    Blocked,
    ClusterIR,
    Condition,
    ConditionStatus,
    DnsIR,
    EndpointIR,
    ObjectStatus,
    RouteIR,
    SidecarParams,
    UpstreamTlsIR,
    WeightedClusterIR,
)
from meshctl.translate.ports import plan_ports, tcp_backends
from meshctl.translate.proxyless import route_notes, virtual_node_notes, with_proxyless_notes

__all__ = ["MeshIR", "Served", "cluster_name", "services_called", "translate_mesh"]

# What the mesh serves of an object (its current or last accepted version): the next build's ``last_accepted``.
Served = VirtualNode | Route | HTTPRoute

_UNSET_PRIORITY = 1001  # routes without a priority are evaluated after all with one
_HTTP_PROTOCOLS = (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshIR:
    virtual_nodes: Mapping[ObjectKey, VirtualNodeSpec]  # the accepted spec of each node being served
    services: Mapping[ObjectKey, Service]  # keyed as ObjectKey("Service", ns, name)
    clusters: Mapping[str, ClusterIR]  # one per VirtualNode listener, as its callers see it
    endpoint_index: EndpointIndex
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]]  # in evaluation order
    route_placement: Mapping[ObjectKey, _Placement]  # each served Route: its Service and sort position
    status_by_key: Mapping[ObjectKey, ObjectStatus]
    accepted: Mapping[ObjectKey, Served]  # what is served; the caller's next last_accepted
    load_errors: tuple[str, ...] = ()
    default_tls_mode: TlsMode | None = None  # what it was translated with (``translate_mesh``)
    authz: Mapping[ListenerKey, AuthzIR] = field(default_factory=dict)  # what each listener enforces
    default_authz: AuthzDefault = AuthzDefault.ALLOW
    # App Mesh's egressFilter for captured proxies: by namespace (label), else the default (serve --egress-filter)
    egress_filters: Mapping[str, EgressFilter] = field(default_factory=dict)
    default_egress: EgressFilter = EgressFilter.ALLOW_ALL
    gamma: GammaIR = field(default_factory=GammaIR)  # HTTPRoutes / GRPCRoutes attached to Services
    gateways: GatewaysIR = field(default_factory=GatewaysIR)  # edge Gateways and the routes attached to them
    # Service-port clusters (HTTPRoute backends, backends with no Route) are in ``clusters``; their endpoints here.
    service_endpoints: Mapping[str, tuple[EndpointIR, ...]] = field(default_factory=dict)
    # Clusters of DNS-discovered (ENDPOINTS) VirtualNodes: the addresses the control plane resolved (sources/dns.py).
    # Carried unchanged by every patch (only a full build reads Model.dns).
    discovered_endpoints: Mapping[str, tuple[EndpointIR, ...]] = field(default_factory=dict)

    @property
    def endpoints(self) -> Mapping[str, tuple[EndpointIR, ...]]:
        maps = [m for m in (self.discovered_endpoints, self.service_endpoints) if m]
        if not maps:
            return self.endpoint_index.endpoints
        return ChainMap(*maps, self.endpoint_index.endpoints)  # type: ignore[arg-type]

    @property
    def statuses(self) -> tuple[ObjectStatus, ...]:
        """VirtualNodes, then Routes, each sorted by namespace and name."""
        return tuple(sorted(self.status_by_key.values(), key=lambda st: (st.key.kind != "VirtualNode", st.key)))

    def with_endpoint_changes(self, model: Model, changed: set[ObjectKey]) -> tuple[MeshIR, set[str]]:
        """This mesh after only EndpointSlices and/or Pods changed: cost proportional to the change."""
        old_slices = self.endpoint_index.slices
        index, clusters = update_endpoints(
            self.endpoint_index, self.virtual_nodes, model.endpoint_slices, model.pods, changed
        )
        if not self.service_endpoints:
            return replace(self, endpoint_index=index), clusters
        # Service-port clusters: those of the Services whose slices changed (a slice names its Service).
        touched = {
            (k.namespace, es.service_name)
            for k in changed
            if k.kind == "EndpointSlice"
            for es in (old_slices.get(k), model.endpoint_slices.get(k))
            if es is not None
        }
        service_endpoints = dict(self.service_endpoints)
        for name in self.service_endpoints:
            found = service_of_cluster(name)
            if found is None or (found[0].namespace, found[0].name) not in touched:
                continue
            service = self.services.get(found[0])
            eps = service_cluster_endpoints(service, found[1], model.endpoint_slices) if service is not None else ()
            if eps != service_endpoints[name]:
                service_endpoints[name] = eps
                clusters.add(name)
        return replace(self, endpoint_index=index, service_endpoints=service_endpoints), clusters

    def with_gamma_changes(
        self,
        model: Model,
        changed: set[ObjectKey],
        last_accepted: Mapping[ObjectKey, Served],
        blocked: Mapping[ObjectKey, Blocked] | None = None,
    ) -> tuple[MeshIR, frozenset[ObjectKey], frozenset[str]]:
        """This mesh after only the HTTPRoutes/GRPCRoutes ``changed`` changed: those translated again
        (``GammaIR.with_changes``), their statuses, the clusters they reach and the marks they leave on Routes; the
        VirtualNodes, endpoint index, Routes and policies are kept as they are. Returns it (equal to
        ``translate_mesh(model)``), the Services whose Gateway API routes may differ and the Service-port clusters
        that may differ."""
        change = self.gamma.with_changes(model, self.virtual_nodes, changed, last_accepted, blocked)
        gamma = change.gamma
        statuses, accepted = dict(self.status_by_key), dict(self.accepted)
        for key in changed:
            statuses.pop(key, None)
            accepted.pop(key, None)
            share = gamma.shares.get(key)
            if share is not None:
                statuses[key] = _with_warnings(share.status, model.http_routes[key])
                if share.accepted is not None:
                    accepted[key] = share.accepted
        routed = change.services & self.routes_by_service.keys()
        _mark_shadowed(statuses, self.routes_by_service, routed)
        _mark_overridden(statuses, self.routes_by_service, gamma, self.services, routed)
        clusters, service_endpoints = self._port_clusters_again(change.clusters, model, gamma, self.gateways)
        mesh = replace(
            self,
            gamma=gamma,
            status_by_key=statuses,
            accepted=accepted,
            clusters=clusters,
            service_endpoints=service_endpoints,
        )
        return mesh, change.services, change.clusters

    def with_gateway_changes(
        self, model: Model, changed: set[ObjectKey], blocked: Mapping[ObjectKey, Blocked] | None = None
    ) -> tuple[MeshIR, frozenset[ObjectKey], frozenset[str]]:
        """After ``with_gamma_changes`` of the same change (only HTTPRoutes/GRPCRoutes changed): the edge gateways'
        share translated again for those routes (``GatewaysIR.with_changes``), their statuses merged with what the
        mesh's share says of them, the Gateways' statuses and the Service-port clusters they reach. Returns it
        (equal to ``translate_mesh(model)``), the Gateways whose proxies may differ and the clusters that may."""
        change = self.gateways.with_changes(model, self.virtual_nodes, changed, blocked, self.routes_by_service)
        gateways = change.gateways
        statuses = dict(self.status_by_key)
        statuses.update(gateways.statuses)  # (the Gateways and classes: only routes changed, none came or went)
        for key in changed:
            parents = gateways.route_parents.get(key)
            if parents is None:
                continue  # (the mesh's status of it, if any, stands)
            route = model.http_routes[key]
            own = statuses.get(key)  # what with_gamma_changes made of its Service parents
            status = with_gateway_parents(own, route, parents)
            statuses[key] = _with_warnings(status, route) if own is None else status
        clusters, service_endpoints = self._port_clusters_again(change.clusters, model, self.gamma, gateways)
        mesh = replace(
            self, gateways=gateways, status_by_key=statuses, clusters=clusters, service_endpoints=service_endpoints
        )
        return mesh, change.touched, change.clusters

    def _port_clusters_again(
        self, names: Iterable[str], model: Model, gamma: GammaIR, gateways: GatewaysIR
    ) -> tuple[Mapping[str, ClusterIR], Mapping[str, tuple[EndpointIR, ...]]]:
        """The clusters and their endpoints with these Service-port clusters made again as a full translation makes
        them: a mesh route's (gamma) first, else a gateway's, else a backend's default route's; dropped when none
        uses them."""
        clusters, service_endpoints = self.clusters, self.service_endpoints
        if not names:
            return clusters, service_endpoints
        clusters, service_endpoints = dict(clusters), dict(service_endpoints)
        index: list[MtlsIndex] = []
        for name in names:
            cluster = gamma.clusters.get(name) or gateways.clusters.get(name)
            found = service_of_cluster(name)
            assert found is not None
            service = self.services.get(found[0])
            if cluster is None and service is not None and self._default_routed(found[0]):
                index = index or [mtls_index(self.virtual_nodes)]
                cluster = service_cluster(service, found[1], index[0])  # still a backend's default route's
            if cluster is None or service is None:
                clusters.pop(name, None)
                service_endpoints.pop(name, None)
                continue
            clusters[name] = cluster
            if name not in service_endpoints:
                service_endpoints[name] = service_cluster_endpoints(service, found[1], model.endpoint_slices)
        return clusters, service_endpoints

    def _default_routed(self, svc: ObjectKey) -> bool:
        """Callers reach the Service by its default routes: a backend of some VirtualNode, with no Route."""
        return svc not in self.routes_by_service and any(
            services_called(spec, (svc,)) for spec in self.virtual_nodes.values()
        )

    def with_route_changes(
        self,
        model: Model,
        changed_routes: set[ObjectKey],
        last_accepted: Mapping[ObjectKey, Served],
        blocked: Mapping[ObjectKey, Blocked] | None = None,
    ) -> tuple[MeshIR, set[ObjectKey]]:
        """This mesh after only Routes changed; returns it and the Services whose routes changed."""
        placement, statuses, accepted = dict(self.route_placement), dict(self.status_by_key), dict(self.accepted)
        affected: set[ObjectKey] = set()
        for key in changed_routes:
            old = placement.pop(key, None)
            if old is not None:
                affected.add(old.service)
            statuses.pop(key, None)
            accepted.pop(key, None)
            route = model.routes.get(key)
            if route is None:
                continue
            served, ir, status = _choose_route(
                key, route, last_accepted.get(key), model, self.virtual_nodes, (blocked or {}).get(key)
            )
            statuses[key] = status
            if served is not None and ir is not None:
                accepted[key] = served
                placement[key] = _place(key, served, ir)
                affected.add(placement[key].service)
        routes_by_service = dict(self.routes_by_service)
        for svc in affected:
            # Keep the routes of this Service that did not change, add the changed ones, sort again.
            kept = [
                placement[_route_key(r)] for r in routes_by_service.pop(svc, ()) if _route_key(r) not in changed_routes
            ]
            new = [placement[k] for k in changed_routes if k in placement and placement[k].service == svc]
            ordered = tuple(p.ir for p in sorted(kept + new, key=lambda p: (p.rank, p.name)))
            if ordered:
                routes_by_service[svc] = ordered
        _mark_shadowed(statuses, routes_by_service, affected)
        _mark_overridden(statuses, routes_by_service, self.gamma, self.services, affected)
        # Outbound TCP listeners (and so port conflicts) depend on tcpRoutes only: skip the scan for HTTP changes.
        tcp_changed = any(
            p.ir.tcp for p in (self.route_placement.get(k) for k in changed_routes) if p is not None
        ) or any(placement[k].ir.tcp for k in changed_routes if k in placement)
        for key, spec in self.virtual_nodes.items() if tcp_changed else ():
            if services_called(spec, affected):
                statuses[key] = _port_status(statuses[key], spec, self.services, routes_by_service)
        clusters, service_endpoints = self.clusters, self.service_endpoints
        unrouted = [s for s in sorted(affected) if s not in routes_by_service and s in self.services]
        if unrouted:  # their callers now take the default routes: the Service ports' clusters must exist
            clusters, service_endpoints = dict(clusters), dict(service_endpoints)
            index = mtls_index(self.virtual_nodes)
            for svc in unrouted:
                service = self.services[svc]
                for name, port, cluster in _port_clusters(service, index, clusters):
                    clusters[name] = cluster
                    service_endpoints[name] = service_cluster_endpoints(service, port, model.endpoint_slices)
        mesh = replace(
            self,
            routes_by_service=routes_by_service,
            route_placement=placement,
            status_by_key=statuses,
            accepted=accepted,
            clusters=clusters,
            service_endpoints=service_endpoints,
        )
        return mesh, affected


@dataclass(frozen=True, slots=True)
class _Placement:
    service: ObjectKey
    rank: int
    name: str
    ir: RouteIR


def _place(key: ObjectKey, route: Route, ir: RouteIR) -> _Placement:
    assert route.spec is not None
    priority = route.spec.priority
    return _Placement(
        ObjectKey("Service", key.namespace, route.spec.service),
        _UNSET_PRIORITY if priority is None else priority,
        key.name,
        ir,
    )


def _route_key(ir: RouteIR) -> ObjectKey:
    namespace, _, name = ir.name.partition("/")
    return ObjectKey("Route", namespace, name)


def translate_mesh(
    model: Model,
    last_accepted: Mapping[ObjectKey, Served] | None = None,
    previous: MeshIR | None = None,
    blocked: Mapping[ObjectKey, Blocked] | None = None,
    *,
    default_tls_mode: TlsMode | None = None,
    default_authz: AuthzDefault = AuthzDefault.ALLOW,
    default_egress: EgressFilter = EgressFilter.ALLOW_ALL,
) -> MeshIR:
    """``previous``: the last result, whose endpoint index is reused when nothing it depends on changed.
    ``blocked``: object versions Envoy cannot take; they are not served (their last accepted version is).
    ``default_tls_mode``: the mesh's mode for listeners without ``tls`` in namespaces without a mode of their own
    (``TLS_MODE_LABEL``); None: such listeners are plaintext."""
    fallback = last_accepted or {}
    blocks = blocked or {}
    statuses: list[ObjectStatus] = []
    accepted: dict[ObjectKey, Served] = {}
    # Values equal to the last build's are replaced by those at once: a full build then holds one copy of what did
    # not change, and what it allocates is freed while it runs, instead of old and new copies of 30,000 objects
    # side by side whose departure leaves the allocator's arenas part used (issue 14: RSS after later builds).
    old_statuses = previous.status_by_key if previous is not None else {}
    old_placement = previous.route_placement if previous is not None else {}

    nodes: dict[ObjectKey, VirtualNodeSpec] = {}
    for key in sorted(model.virtual_nodes):
        vn = model.virtual_nodes[key]
        served, status = _choose_virtual_node(key, vn, fallback.get(key), model, blocks.get(key))
        statuses.append(_same(status, old_statuses.get(key)))
        if served is not None and served.spec is not None:
            mode = _namespace_tls_mode(model, key.namespace) or default_tls_mode
            spec = served.spec if mode is None else _with_tls_mode(served.spec, mode)
            if spec is not served.spec and previous is not None:
                spec = _same(spec, previous.virtual_nodes.get(key))  # keeps its IR and endpoint index reusable
            nodes[key] = spec
            accepted[key] = served

    clusters = _clusters(nodes, previous)
    reused: EndpointIndex | None = None
    if previous is not None:
        old_index = previous.endpoint_index
        if old_index.still_valid_for(nodes, model.endpoint_slices, model.pods):
            reused = old_index  # e.g. only a Route changed
        else:
            reused = update_nodes(old_index, nodes, model.endpoint_slices, model.pods)  # e.g. a listener changed
    endpoint_index = reused if reused is not None else index_endpoints(nodes, model.endpoint_slices, model.pods)

    placement: dict[ObjectKey, _Placement] = {}
    for key in sorted(model.routes):
        route = model.routes[key]
        served_route, route_ir, status = _choose_route(key, route, fallback.get(key), model, nodes, blocks.get(key))
        statuses.append(_same(status, old_statuses.get(key)))
        if served_route is not None and route_ir is not None:
            accepted[key] = served_route
            old_place = old_placement.get(key)
            route_ir = _same(route_ir, old_place.ir if old_place is not None else None)
            placement[key] = _same(_place(key, served_route, route_ir), old_place)
    by_service: dict[ObjectKey, list[_Placement]] = {}
    for p in placement.values():
        by_service.setdefault(p.service, []).append(p)
    routes_by_service = {
        svc: tuple(p.ir for p in sorted(ps, key=lambda p: (p.rank, p.name))) for svc, ps in by_service.items()
    }
    services = model.services  # (keyed ObjectKey("Service", ns, name) as MeshIR wants; the model's keys, not copies)
    status_by_key = {st.key: st for st in statuses}
    _mark_shadowed(status_by_key, routes_by_service, routes_by_service.keys())
    for key, spec in nodes.items():
        status_by_key[key] = _port_status(status_by_key[key], spec, services, routes_by_service)
        if spec.dns is not None:
            status_by_key[key] = _resolution_status(status_by_key[key], spec.dns, model.dns.get(spec.dns.hostname))
        if spec.cloud_map is not None:
            answer = model.cloud_map.get(spec.cloud_map.key)
            status_by_key[key] = _cloud_map_status(status_by_key[key], spec.cloud_map, answer)
    gamma = translate_gamma(model, nodes, fallback, blocks)
    for key, st in gamma.statuses.items():
        status_by_key[key] = _same(_with_warnings(st, model.http_routes[key]), old_statuses.get(key))
    _mark_overridden(status_by_key, routes_by_service, gamma, services, routes_by_service.keys())
    accepted.update(gamma.accepted)
    gateways = translate_gateways(model, nodes, blocks, routes_by_service)
    for key, st in gateways.statuses.items():
        status_by_key[key] = _same(st, old_statuses.get(key))
    for key, gateway_parents in gateways.route_parents.items():
        route_status = status_by_key.get(key)  # (its Service parents', with its warnings, when it has any)
        st = with_gateway_parents(route_status, model.http_routes[key], gateway_parents)
        if route_status is None:
            st = _with_warnings(st, model.http_routes[key])
        status_by_key[key] = _same(st, old_statuses.get(key))
    clusters, service_endpoints = _with_service_clusters(
        clusters, {**gateways.clusters, **gamma.clusters}, nodes, services, routes_by_service, model
    )
    namespace_defaults = {k.name: ns.authz_default for k, ns in model.namespaces.items() if ns.authz_default}
    authz, policy_statuses = translate_authz(model, nodes, routes_by_service, namespace_defaults, default_authz)
    for st in policy_statuses:
        st = _with_warnings(st, model.authorization_policies[st.key])
        status_by_key[st.key] = _same(st, old_statuses.get(st.key))
    mesh = MeshIR(
        virtual_nodes=nodes,
        services=services,
        clusters=clusters,
        endpoint_index=endpoint_index,
        routes_by_service=routes_by_service,
        route_placement=placement,
        status_by_key=status_by_key,
        accepted=accepted,
        load_errors=model.load_errors,
        default_tls_mode=default_tls_mode,
        authz=authz,
        default_authz=default_authz,
        egress_filters={k.name: ns.egress_filter for k, ns in model.namespaces.items() if ns.egress_filter},
        default_egress=default_egress,
        gamma=gamma,
        gateways=gateways,
        service_endpoints=service_endpoints,
        discovered_endpoints=_discovered_endpoints(nodes, model),
    )
    return mesh if previous is None else _sharing_equal_values(mesh, previous)


def _discovered_endpoints(
    nodes: Mapping[ObjectKey, VirtualNodeSpec], model: Model
) -> dict[str, tuple[EndpointIR, ...]]:
    """Each listener cluster of an ENDPOINTS DNS node: every address its hostname resolved to, on the listener's
    port (none until the first answer)."""
    out: dict[str, tuple[EndpointIR, ...]] = {}
    for key, spec in nodes.items():
        if spec.cloud_map is not None:
            out.update(_cloud_map_endpoints(key, spec, model.cloud_map.get(spec.cloud_map.key)))
        dns = spec.dns
        if dns is None or dns.response_type is not DnsResponseType.ENDPOINTS:
            continue
        answer = model.dns.get(dns.hostname)
        addresses = answer.addresses if answer is not None else ()
        for listener in spec.listeners:
            out[cluster_name(key, listener.port)] = tuple(EndpointIR(address=a, port=listener.port) for a in addresses)
    return out


def _cloud_map_endpoints(
    key: ObjectKey, spec: VirtualNodeSpec, answer: CloudMapAnswer | None
) -> dict[str, tuple[EndpointIR, ...]]:
    """A Cloud Map node's listener clusters: its instances, each on its registered port (AWS_INSTANCE_PORT) when the
    node has one listener, else on the listener's; unhealthy ones as unhealthy; the zone as the locality."""
    instances = answer.instances if answer is not None else ()
    out = {}
    for listener in spec.listeners:
        eps = {
            EndpointIR(
                address=i.address,
                port=i.port if i.port is not None and len(spec.listeners) == 1 else listener.port,
                healthy=i.healthy,
                zone=i.zone,
            )
            for i in instances
        }
        out[cluster_name(key, listener.port)] = tuple(sorted(eps))
    return out


def _cloud_map_status(
    status: ObjectStatus, discovery: CloudMapDiscovery, answer: CloudMapAnswer | None
) -> ObjectStatus:
    """``Resolved`` for a Cloud Map node: how many instances the last discovery found, or why it failed."""
    if answer is None:
        return status
    healthy = sum(i.healthy for i in answer.instances)
    found = f"{len(answer.instances)} instances ({healthy} healthy)"
    return _with_resolved(status, answer.error, f"{discovery.key}: {found}", f"serving the last {found}")


def _resolution_status(status: ObjectStatus, dns: DnsDiscovery, answer: DnsAnswer | None) -> ObjectStatus:
    """``Resolved``: what the control plane's last lookup of the node's hostname gave (ENDPOINTS nodes are served
    those addresses; LOADBALANCER nodes are resolved by each Envoy, and this says whether the name resolves)."""
    if answer is None:
        return status  # not looked up (yet, or offline: ``meshctl validate``): nothing known to say
    addresses = ", ".join(answer.addresses)
    kept = f"serving the last addresses {addresses}" if answer.addresses else "no address yet"
    return _with_resolved(status, answer.error, f"{dns.hostname}: {addresses}", kept)


def _with_resolved(status: ObjectStatus, error: str | None, found: str, kept: str) -> ObjectStatus:
    """``status`` with the ``Resolved`` condition of a discovered node: ``found`` when the last lookup answered,
    else its ``error`` and what is ``kept`` being served."""
    if error is None:
        condition = Condition(type="Resolved", status=ConditionStatus.TRUE, reason="Resolved", message=found)
    else:
        condition = Condition(
            type="Resolved", status=ConditionStatus.FALSE, reason="ResolutionFailed", message=f"{error}; {kept}"
        )
    return replace(status, conditions=(*status.conditions, condition))


def _with_service_clusters(
    clusters: dict[str, ClusterIR],
    routed: Mapping[str, ClusterIR],
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    services: Mapping[ObjectKey, Service],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
    model: Model,
) -> tuple[dict[str, ClusterIR], dict[str, tuple[EndpointIR, ...]]]:
    """The VirtualNode clusters plus the Service-port ones: HTTPRoute backends (``routed``: the mesh's and the
    gateways'), and every port of a backend Service that has no Route (its callers reach it as kube-proxy would: see
    ``sidecar.default_routes``)."""
    extra = dict(routed)
    unrouted = {
        svc
        for spec in nodes.values()
        for b in spec.backends
        if (svc := ObjectKey("Service", b.namespace, b.name)) not in routes_by_service and svc in services
    }
    index = mtls_index(nodes) if unrouted else {}
    for svc in sorted(unrouted):
        extra.update((name, cluster) for name, _, cluster in _port_clusters(services[svc], index, extra))
    if not extra:
        return clusters, {}
    endpoints = {}
    by_service = slices_by_service(model.endpoint_slices)
    for name in extra:
        found = service_of_cluster(name)
        assert found is not None
        endpoints[name] = service_cluster_endpoints(services[found[0]], found[1], model.endpoint_slices, by_service)
    return {**clusters, **extra}, endpoints


def _port_clusters(
    service: Service, index: MtlsIndex, existing: Mapping[str, ClusterIR]
) -> list[tuple[str, int, ClusterIR]]:
    """(name, port, cluster) of each of a Service's ports whose cluster is not in ``existing`` (a backend with no
    Route reaches every port)."""
    ns, name = service.meta.namespace, service.meta.name
    return [
        (cluster, sp.port, service_cluster(service, sp.port, index))
        for sp in service.ports
        if sp.port and (cluster := service_cluster_name(ns, name, sp.port)) not in existing
    ]


def _namespace_tls_mode(model: Model, namespace: str) -> TlsMode | None:
    ns = model.namespaces.get(ObjectKey("Namespace", "", namespace)) if model.namespaces else None
    return ns.tls_mode if ns is not None else None


def _with_tls_mode(spec: VirtualNodeSpec, mode: TlsMode) -> VirtualNodeSpec:
    """The spec as served under a default mode: its listeners without ``tls`` take ``mode`` (with the mesh CA's
    certificate and roots); a listener's own ``tls`` always wins."""
    if not any(li.tls is None for li in spec.listeners):
        return spec
    tls = ListenerTls(mode=mode)
    listeners = tuple(li if li.tls is not None else replace(li, tls=tls) for li in spec.listeners)
    return replace(spec, listeners=listeners)


def _sharing_equal_values(mesh: MeshIR, previous: MeshIR) -> MeshIR:
    """``mesh`` with each map, and each status (shadowing and port conflicts may have replaced some after the
    loops above), that equals ``previous``'s replaced by it."""
    statuses = {key: _same(st, previous.status_by_key.get(key)) for key, st in mesh.status_by_key.items()}
    return replace(
        mesh,
        virtual_nodes=_same(mesh.virtual_nodes, previous.virtual_nodes),
        services=_same(mesh.services, previous.services),
        clusters=_same(mesh.clusters, previous.clusters),
        routes_by_service=_same(mesh.routes_by_service, previous.routes_by_service),
        route_placement=_same(mesh.route_placement, previous.route_placement),
        status_by_key=_same(statuses, previous.status_by_key),
        accepted=_same(mesh.accepted, previous.accepted),
        authz=_same(mesh.authz, previous.authz),  # equal IR objects: the builder's cache knows their hashes
    )


def services_called(spec: VirtualNodeSpec, services: Iterable[ObjectKey]) -> set[ObjectKey]:
    """Those of ``services`` (Service keys: the few a change touched) that the node calls. Scans the change, not
    the node's backends (hundreds, each needing a key made to look up)."""
    return {s for s in services if any(b.name == s.name and b.namespace == s.namespace for b in spec.backends)}


_T = TypeVar("_T")


def _same(new: _T, old: _T | None) -> _T:
    """``old`` if it equals ``new`` (a value of the previous build), else ``new``."""
    return old if old is not None and (old is new or old == new) else new


# --- VirtualNodes --------------------------------------------------------------------------------


def _virtual_node_ref_errors(spec: VirtualNodeSpec, model: Model) -> list[FieldError]:
    errors = []
    for i, backend in enumerate(spec.backends):
        if ObjectKey("Service", backend.namespace, backend.name) not in model.services:
            errors.append(
                FieldError(
                    path=f"spec.backends[{i}].virtualService.virtualServiceRef",
                    message=f"Service {backend.namespace}/{backend.name} not found",
                    unresolved_ref=True,
                )
            )
    return errors


def _choose_virtual_node(
    key: ObjectKey, vn: VirtualNode, previous: Served | None, model: Model, block: Blocked | None = None
) -> tuple[VirtualNode | None, ObjectStatus]:
    served, status = _choose_virtual_node_as_is(key, vn, previous, model, block)
    notes = virtual_node_notes(served.spec) if served is not None and served.spec is not None else ()
    return served, with_proxyless_notes(_with_warnings(status, vn), notes)


def _with_warnings(status: ObjectStatus, obj: VirtualNode | Route | AuthorizationPolicy | HTTPRoute) -> ObjectStatus:
    """Fields the parser did not know (or does not implement yet) as a condition of their own: served without
    them. Positive polarity, as Kubernetes conditions go: FieldsRecognized=False names them."""
    if not obj.warnings:
        return status
    reason = "UnknownFields" if any(w.message.startswith("unknown field") for w in obj.warnings) else "NotImplemented"
    message = _describe(obj.meta.origin, list(obj.warnings))
    warning = Condition(type="FieldsRecognized", status=ConditionStatus.FALSE, reason=reason, message=message)
    return replace(status, conditions=(*status.conditions, warning))


def _choose_virtual_node_as_is(
    key: ObjectKey, vn: VirtualNode, previous: Served | None, model: Model, block: Blocked | None = None
) -> tuple[VirtualNode | None, ObjectStatus]:
    if not isinstance(previous, VirtualNode) or _is_blocked(previous.spec, block):
        previous = None
    if vn.spec is not None and _is_blocked(vn.spec, block):
        assert block is not None
        served = previous if previous is not vn else None
        return served, _not_programmed(key, vn.meta.generation, vn.meta.origin, block, served)
    if vn.spec is None:
        return previous, _rejected(key, vn.meta.generation, vn.meta.origin, vn.errors, previous)
    # A missing backend Service is not fatal: the node is served without it until it appears.
    ref_errors = _virtual_node_ref_errors(vn.spec, model)
    conditions = _VALID_AND_RESOLVED
    if ref_errors:
        unresolved = Condition(
            type="ResolvedRefs",
            status=ConditionStatus.FALSE,
            reason="BackendNotFound",
            message=_describe(vn.meta.origin, ref_errors),
        )
        conditions = (_VALID, unresolved)
    return vn, ObjectStatus(
        key=key, observed_generation=vn.meta.generation, origin=vn.meta.origin, conditions=conditions
    )


def _clusters(nodes: Mapping[ObjectKey, VirtualNodeSpec], previous: MeshIR | None) -> dict[str, ClusterIR]:
    clusters: dict[str, ClusterIR] = {}
    for key, spec in nodes.items():
        if previous is not None and previous.virtual_nodes.get(key) is spec:
            # Same spec object: reuse the same IR objects, whose hashes are already known to the builder.
            clusters.update((n, previous.clusters[n]) for n in (cluster_name(key, li.port) for li in spec.listeners))
            continue
        for listener in spec.listeners:
            name = cluster_name(key, listener.port)
            clusters[name] = ClusterIR(
                name=name,
                protocol=listener.protocol,
                connection_pool=listener.connection_pool,
                outlier_detection=listener.outlier_detection,
                health_check=listener.health_check,
                # Callers originate mTLS to a listener that takes it (STRICT or PERMISSIVE): App Mesh made every
                # caller configure a client policy; meshed callers here need none.
                tls=UpstreamTlsIR(namespace=key.namespace) if listener.accepts_mtls else None,
                # LOADBALANCER: Envoy's logical DNS; ENDPOINTS: EDS from the control plane's answers (sources/dns.py)
                dns=(
                    _dns_ir(spec.dns, listener.port)
                    if spec.dns is not None and spec.dns.response_type is DnsResponseType.LOADBALANCER
                    else None
                ),
                server_name=spec.dns.hostname if spec.dns is not None else None,
            )
    return clusters


# App Mesh's ipPreference -> Envoy's DnsLookupFamily (unset: Envoy's AUTO, IPv6 first then IPv4, as App Mesh's
# default); AUTO and V4_PREFERRED fall back to the other family when the preferred one has no address.
_LOOKUP_FAMILY = {
    None: "AUTO",
    IpPreference.IPV6_PREFERRED: "AUTO",
    IpPreference.IPV4_PREFERRED: "V4_PREFERRED",
    IpPreference.IPV4_ONLY: "V4_ONLY",
    IpPreference.IPV6_ONLY: "V6_ONLY",
}


def _dns_ir(dns: DnsDiscovery, port: int) -> DnsIR:
    return DnsIR(
        hostname=dns.hostname,
        port=port,
        logical=dns.response_type is DnsResponseType.LOADBALANCER,
        lookup_family=_LOOKUP_FAMILY[dns.ip_preference],
    )


# --- Routes --------------------------------------------------------------------------------------


def _route_ir(
    key: ObjectKey, spec: RouteSpec, model: Model, nodes: Mapping[ObjectKey, VirtualNodeSpec]
) -> tuple[RouteIR | None, list[FieldError]]:
    errors: list[FieldError] = []
    http = spec.http_route
    kind = "tcpRoute" if spec.tcp else "grpcRoute" if spec.grpc else "httpRoute"
    service = model.services.get(ObjectKey("Service", key.namespace, spec.service))
    if service is None:
        errors.append(
            FieldError(
                path="spec.serviceRef.name",
                message=f"Service {key.namespace}/{spec.service} not found",
                unresolved_ref=True,
            )
        )
    elif http.match.port is not None and all(p.port != http.match.port for p in service.ports):
        ports = ", ".join(str(p.port) for p in service.ports) or "none"
        errors.append(
            FieldError(
                path=f"spec.{kind}.match.port",
                message=f"Service {spec.service} has no port {http.match.port} (its ports: {ports})",
            )
        )
    weighted: list[WeightedClusterIR] = []

    def at(i: int) -> str:  # a target's field path, made only for an error (10,000 Routes, 20,000 targets)
        return f"spec.{kind}.action.weightedTargets[{i}]"

    for i, target in enumerate(http.weighted_targets):
        vn_key = ObjectKey("VirtualNode", target.namespace, target.virtual_node)
        node = nodes.get(vn_key)
        if node is None:
            reason = "is not valid" if vn_key in model.virtual_nodes else "not found"
            errors.append(
                FieldError(
                    path=f"{at(i)}.virtualNodeRef",
                    message=f"VirtualNode {target.namespace}/{target.virtual_node} {reason}",
                    unresolved_ref=True,
                )
            )
            continue
        if target.port is not None:
            listener = next((li for li in node.listeners if li.port == target.port), None)
            if listener is None:
                errors.append(
                    FieldError(
                        path=f"{at(i)}.port", message=f"VirtualNode {vn_key.name} has no listener on port {target.port}"
                    )
                )
                continue
        elif len(node.listeners) == 1:
            listener = node.listeners[0]
        else:
            errors.append(
                FieldError(
                    path=f"{at(i)}.port",
                    message=f"is required: VirtualNode {vn_key.name} has {len(node.listeners)} listeners",
                )
            )
            continue
        if spec.tcp:
            if listener.protocol is not Protocol.TCP:
                errors.append(
                    FieldError(
                        path=f"{at(i)}.port",
                        message=f"listener {listener.port} speaks {listener.protocol}; a tcpRoute needs a tcp listener",
                    )
                )
                continue
        elif spec.grpc and listener.protocol not in (Protocol.GRPC, Protocol.HTTP2):
            errors.append(
                FieldError(
                    path=f"{at(i)}.port",
                    message=f"listener {listener.port} speaks {listener.protocol}; "
                    "a grpcRoute needs a grpc or http2 listener",
                )
            )
            continue
        elif listener.protocol not in _HTTP_PROTOCOLS:
            errors.append(
                FieldError(
                    path=f"{at(i)}.port", message=f"listener {listener.port} speaks {listener.protocol}, not HTTP"
                )
            )
            continue
        weighted.append(WeightedClusterIR(cluster=cluster_name(vn_key, listener.port), weight=target.weight))
    if errors:
        return None, errors
    timeout = http.timeout
    return RouteIR(
        name=f"{key.namespace}/{key.name}",
        match=http.match,
        clusters=tuple(weighted),
        retry_policy=http.retry_policy,
        timeout_ms=timeout.per_request_ms if timeout else None,
        idle_timeout_ms=timeout.idle_ms if timeout else None,
        tcp=spec.tcp,
    ), []


def _choose_route(
    key: ObjectKey,
    route: Route,
    previous: Served | None,
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    block: Blocked | None = None,
) -> tuple[Route | None, RouteIR | None, ObjectStatus]:
    served, ir, status = _choose_route_as_is(key, route, previous, model, nodes, block)
    spec = served.spec if served is not None else None
    notes = route_notes(spec) if spec is not None and _reaches_grpc(spec, nodes) else ()
    return served, ir, with_proxyless_notes(_with_warnings(status, route), notes)


def _reaches_grpc(spec: RouteSpec, nodes: Mapping[ObjectKey, VirtualNodeSpec]) -> bool:
    """Proxyless gRPC clients may take the Route: a grpcRoute, or a route to some gRPC listener."""
    if spec.grpc:
        return True
    for target in spec.http_route.weighted_targets:
        node = nodes.get(ObjectKey("VirtualNode", target.namespace, target.virtual_node))
        if node is not None and any(li.protocol is Protocol.GRPC for li in node.listeners):
            return True
    return False


def _choose_route_as_is(
    key: ObjectKey,
    route: Route,
    previous: Served | None,
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    block: Blocked | None = None,
) -> tuple[Route | None, RouteIR | None, ObjectStatus]:
    errors: list[FieldError] = list(route.errors)
    if not isinstance(previous, Route) or _is_blocked(previous.spec, block):
        previous = None
    if route.spec is not None and _is_blocked(route.spec, block):
        assert block is not None
        served, served_ir = _previous_route(route, previous, model, nodes)
        return served, served_ir, _not_programmed(key, route.meta.generation, route.meta.origin, block, served)
    if route.spec is not None:
        ir, errors = _route_ir(key, route.spec, model, nodes)
        if ir is not None:
            status = ObjectStatus(
                key=key,
                observed_generation=route.meta.generation,
                origin=route.meta.origin,
                conditions=_VALID_AND_RESOLVED,
            )
            return route, ir, status
    served, served_ir = _previous_route(route, previous, model, nodes)
    return served, served_ir, _rejected(key, route.meta.generation, route.meta.origin, errors, served)


def _previous_route(
    route: Route, previous: Route | None, model: Model, nodes: Mapping[ObjectKey, VirtualNodeSpec]
) -> tuple[Route | None, RouteIR | None]:
    """The last accepted version, if there is one and it still resolves."""
    if previous is None or previous.spec is None or previous is route:
        return None, None
    served_ir, _ = _route_ir(route.key, previous.spec, model, nodes)
    return (previous, served_ir) if served_ir is not None else (None, None)


def _is_blocked(spec: VirtualNodeSpec | RouteSpec | None, block: Blocked | None) -> bool:
    return block is not None and spec is not None and spec == block.spec


# --- Conditions ----------------------------------------------------------------------------------


def shadowed_routes(service: ObjectKey, routes: list[RouteIR]) -> list[Shadowing]:
    """The shadowing findings among one Service's HTTP routes (in evaluation order); witnesses use the Host
    ``name.namespace``, which reaches the Service from every namespace. Routes with a port match only compete with
    those of their port (and those without one): a route is shadowed when it is on every port it serves."""
    ports = sorted({r.match.port for r in routes if r.match.port is not None})
    if not ports:
        return _shadowed_among(service, routes)
    groups = [[r for r in routes if r.match.port in (None, p)] for p in ports]
    groups.append([r for r in routes if r.match.port is None])  # the Service's other ports
    found: dict[str, list[Shadowing]] = {}
    memberships: dict[str, int] = {}
    for group in groups:
        for r in group:
            memberships[r.name] = memberships.get(r.name, 0) + 1
        for finding in _shadowed_among(service, group) if len(group) > 1 else ():
            found.setdefault(finding.route, []).append(finding)
    return [fs[0] for name, fs in found.items() if len(fs) == memberships[name]]


def _shadowed_among(service: ObjectKey, routes: list[RouteIR]) -> list[Shadowing]:
    rules = tuple(
        RouteRule(r.name, match_from_model(r.match), tuple(Target(c.cluster, c.weight) for c in r.clusters))
        for r in routes
    )
    return find_shadowed(
        VirtualHost(f"{service.namespace}/{service.name}", (f"{service.name}.{service.namespace}",), rules)
    )


def _mark_shadowed(
    statuses: dict[ObjectKey, ObjectStatus],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
    services: Iterable[ObjectKey],
) -> None:
    """Reachable=False (or Unknown, when a regex keeps it from proof) on each HTTP Route of ``services`` that
    earlier Routes of its Service leave no request to, with a witness request; cleared on the others."""
    for svc in services:
        routes = [r for r in routes_by_service.get(svc, ()) if not r.tcp]
        findings = {f.route: f for f in shadowed_routes(svc, routes)} if len(routes) > 1 else {}
        for r in routes:
            key = _route_key(r)
            status = statuses.get(key)
            if status is None:
                continue
            kept = tuple(c for c in status.conditions if c.type != "Reachable")
            finding = findings.get(r.name)
            if finding is not None:
                condition = Condition(
                    type="Reachable",
                    status=ConditionStatus.FALSE if finding.certain else ConditionStatus.UNKNOWN,
                    reason="Shadowed" if finding.certain else "PossiblyShadowed",
                    message=_at(status.origin, finding.message()),
                )
                kept += (condition,)
            if kept != status.conditions:
                statuses[key] = replace(status, conditions=_VALID_AND_RESOLVED if kept == _VALID_AND_RESOLVED else kept)


def _mark_overridden(
    statuses: dict[ObjectKey, ObjectStatus],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
    gamma: GammaIR,
    services: Mapping[ObjectKey, Service],
    touched: Iterable[ObjectKey],
) -> None:
    """Reachable=False (every port) or Unknown (some ports) on the HTTP Routes of a Service whose ports have Gateway
    API producer routes: for a port, those win (docs/gateway-api.md), so these Routes apply to its other ports only.
    Runs after ``_mark_shadowed``, which clears Reachable first."""
    for svc in touched:
        service = services.get(svc)
        if service is None or svc not in gamma.routed_services:
            continue
        ports = [p.port for p in service.ports if p.port]
        taken = {p: routes for p in ports if (routes := gamma.routes_for(svc, p, svc.namespace))}
        if not taken:
            continue
        rest = [p for p in ports if p not in taken]
        owners = sorted({r.name.split("/rule-")[0] for routes in taken.values() for r in routes})
        message = (
            f"Gateway API routes ({', '.join(owners)}) route port(s) {', '.join(map(str, taken))} of Service "
            f"{svc.name}: this Route applies to "
            + (f"port(s) {', '.join(map(str, rest))} only" if rest else "none of its ports")
        )
        for r in routes_by_service.get(svc, ()):
            key = _route_key(r)
            status = statuses.get(key)
            if r.tcp or status is None:
                continue
            condition = Condition(
                type="Reachable",
                status=ConditionStatus.UNKNOWN if rest else ConditionStatus.FALSE,
                reason="OverriddenByHTTPRoute",
                message=_at(status.origin, message),
            )
            kept = tuple(c for c in status.conditions if c.type != "Reachable")
            statuses[key] = replace(status, conditions=(*kept, condition))


_DEFAULTS = SidecarParams(virtual_node=None)
_EGRESS, _INGRESS = _DEFAULTS.egress_port, _DEFAULTS.ingress_port


def _port_status(
    status: ObjectStatus,
    spec: VirtualNodeSpec,
    services: Mapping[ObjectKey, Service],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
) -> ObjectStatus:
    """Adds PortsAllocated=False when a listener of this node's sidecar (default ports) has no port to bind."""
    tcp_ports = tuple(port for _, port, _ in tcp_backends(spec, services, routes_by_service))
    conflicts = plan_ports(_EGRESS, _INGRESS, tuple(li.port for li in spec.listeners), tcp_ports).conflicts
    if not conflicts and status.conditions is _VALID_AND_RESOLVED:
        return status  # (the usual case, without rebuilding the conditions to compare them)
    conditions = tuple(c for c in status.conditions if c.type != "PortsAllocated")
    if conflicts:
        message = _at(status.origin, "; ".join(conflicts))
        conditions += (
            Condition(type="PortsAllocated", status=ConditionStatus.FALSE, reason="PortConflict", message=message),
        )
    return status if conditions == status.conditions else replace(status, conditions=conditions)


def _ok(type_: str, reason: str, message: str) -> Condition:
    return Condition(type=type_, status=ConditionStatus.TRUE, reason=reason, message=message)


# Most objects are fine: their conditions are one shared tuple, not 10,000 equal ones (issue 14, memory).
_VALID = _ok("Accepted", "Accepted", "valid")
_VALID_AND_RESOLVED = (_VALID, _ok("ResolvedRefs", "ResolvedRefs", "all references resolved"))


def _at(origin: str, message: str, served: VirtualNode | Route | None = None) -> str:
    """A status message: where the object came from, what is wrong, and whether an older version is served."""
    text = f"{origin}: {message}" if origin else message
    return text + " (its last accepted version is still served)" if served is not None else text


def _describe(
    origin: str, errors: tuple[FieldError, ...] | list[FieldError], served: VirtualNode | Route | None = None
) -> str:
    return _at(origin, "; ".join(str(e) for e in errors), served)


def _not_programmed(
    key: ObjectKey, generation: int, origin: str, block: Blocked, served: VirtualNode | Route | None
) -> ObjectStatus:
    """Valid as written, but Envoy cannot take it: Accepted stays True, Programmed is False with the reason."""
    message = _at(origin, block.message, served)
    return ObjectStatus(
        key=key,
        observed_generation=generation,
        origin=origin,
        conditions=(
            _ok("Accepted", "Accepted", "valid"),
            Condition(type="Programmed", status=ConditionStatus.FALSE, reason=block.reason, message=message),
        ),
    )


def _rejected(
    key: ObjectKey,
    generation: int,
    origin: str,
    errors: tuple[FieldError, ...] | list[FieldError],
    served: VirtualNode | Route | None,
) -> ObjectStatus:
    message = _describe(origin, errors, served)
    reason = "RefNotFound" if all(e.unresolved_ref for e in errors) else "Invalid"
    return ObjectStatus(
        key=key,
        observed_generation=generation,
        origin=origin,
        conditions=(Condition(type="Accepted", status=ConditionStatus.FALSE, reason=reason, message=message),),
    )
