"""Mesh IR + one proxy's params -> what that proxy receives. Pure.

A sidecar of VirtualNode ``ns/vn`` gets:
- one outbound listener (``outbound``, the egress port) whose route config has a virtual host per backend
  Service that has Routes, reachable by the Service's DNS names as Host;
- one inbound listener per VirtualNode listener forwarding to the local app on ``127.0.0.1:<listener port>``,
  on ports allocated by ``allocate_ports``;
- one outbound TCP listener per port of each backend Service with a tcpRoute;
- the clusters and endpoints those reference, nothing more.

Ports never collide: see ``allocate_ports``. What cannot be placed is left out and reported by ``port_conflicts``.

With capture (``SidecarParams.capture``: iptables redirects the pod's traffic) the same routes are reached by
original destination instead: see ``OutboundListenerIR`` and ``CapturedInboundIR``.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import replace

from meshctl.model import (
    Backend,
    ClientPolicy,
    EgressFilter,
    HttpMatch,
    ListenerTls,
    ObjectKey,
    Protocol,
    RetryPolicy,
    Service,
    TlsMode,
    VirtualNodeSpec,
)
from meshctl.translate.endpoints import cluster_listener, service_cluster_name, service_of_cluster
from meshctl.translate.gateway import GatewayProxyIR, bound_port
from meshctl.translate.ir import (
    EGRESS_DENIED_CLUSTER,
    EGRESS_VHOST,
    INVALID_BACKEND,
    PASSTHROUGH_CLUSTER,
    CapturedInboundIR,
    ClusterIR,
    DownstreamTlsIR,
    EndpointIR,
    GatewayListenerIR,
    InboundListenerIR,
    OutboundListenerIR,
    OutboundTcpListenerIR,
    RouteIR,
    SidecarIR,
    SidecarParams,
    TracingIR,
    UpstreamTlsIR,
    VirtualHostIR,
    WeightedClusterIR,
)
from meshctl.translate.mesh import MeshIR, services_called
from meshctl.translate.ports import allocate_ports, tcp_backends

__all__ = [
    "OUTBOUND_ROUTE_CONFIG",
    "default_routes",
    "gateway_listeners",
    "service_domains",
    "service_virtual_host",
    "service_virtual_hosts",
    "translate_sidecar",
    "with_route_changes",
]

OUTBOUND_ROUTE_CONFIG = "outbound"


def service_domains(service: Service, client_namespace: str) -> tuple[str, ...]:
    """The Host values that reach a Service, as cluster DNS would resolve them for the client.

    The bare name is included only within the client's own namespace: otherwise two Services of the same
    name in different namespaces would claim the same domain, which Envoy rejects.
    """
    hosts = _hosts(service, client_namespace)
    ports = sorted({p.port for p in service.ports if p.port})
    return tuple(hosts + [f"{h}:{p}" for h in hosts for p in ports])


def service_virtual_host(mesh: MeshIR, svc_key: ObjectKey, client_namespace: str) -> VirtualHostIR | None:
    """The outbound virtual host of one backend Service's Routes: None without the Service or without HTTP routes."""
    service, routes = mesh.services.get(svc_key), mesh.routes_by_service.get(svc_key, ())
    http_routes = tuple(r for r in routes if not r.tcp)
    if service is None or not http_routes:
        return None
    return VirtualHostIR(
        name=f"{svc_key.namespace}/{svc_key.name}",
        domains=service_domains(service, client_namespace),
        routes=http_routes,
    )


def service_virtual_hosts(
    mesh: MeshIR, svc_key: ObjectKey, client_namespace: str, *, declared: bool
) -> tuple[VirtualHostIR, ...]:
    """What a caller in ``client_namespace`` gets for one Service (``declared``: one of its VirtualNode's backends).

    - Gateway API routes (GAMMA) attached to it that apply to this caller: a virtual host per Service port, each
      with that port's routes (Host ``name:port``; the bare name goes to port 80, or to the first port without one).
      Ports with none take the Service's Routes, else its default route, when the Service is ``declared``.
    - Else, for a declared backend: one virtual host of its Routes, or, with no Route either, a virtual host per
      port whose default route goes to the Service port's endpoints, as kube-proxy would (``default_routes``).
    Undeclared Services get only what Gateway API routes give them (producer routes reach every meshed caller)."""
    service = mesh.services.get(svc_key)
    if service is None:
        return ()
    ports = [p.port for p in service.ports if p.port]
    gamma = {p: routes for p in ports if (routes := mesh.gamma.routes_for(svc_key, p, client_namespace))}
    routed = declared and svc_key in mesh.routes_by_service  # (a Service with only a tcpRoute has no HTTP host)
    own = tuple(r for r in mesh.routes_by_service.get(svc_key, ()) if not r.tcp) if routed else ()
    by_port = any(r.match.port is not None for r in own)  # App Mesh's match.port: a virtual host per port
    if not gamma and not by_port:
        if routed:
            vh = service_virtual_host(mesh, svc_key, client_namespace)
            return (vh,) if vh is not None else ()
        if not declared:
            return ()
    bare = 80 if 80 in ports else (ports[0] if ports else None)
    hosts = _hosts(service, client_namespace)
    out = []
    for port in ports:
        mine = tuple(r for r in own if r.match.port in (None, port))
        routes = gamma.get(port) or mine or (default_routes(svc_key, port) if declared and not routed else ())
        if not routes:
            continue
        domains = (*(hosts if port == bare else ()), *(f"{h}:{port}" for h in hosts))
        out.append(VirtualHostIR(name=f"{svc_key.namespace}/{svc_key.name}:{port}", domains=domains, routes=routes))
    return tuple(out)


def default_routes(svc_key: ObjectKey, port: int) -> tuple[RouteIR, ...]:
    """A Service port with no route: every request to its endpoints (with the mesh's default retries)."""
    cluster = service_cluster_name(svc_key.namespace, svc_key.name, port)
    return (
        RouteIR(
            name=f"{svc_key.namespace}/{svc_key.name}:{port}/default",
            match=HttpMatch(prefix="/"),
            clusters=(WeightedClusterIR(cluster=cluster, weight=1),),
        ),
    )


def _hosts(service: Service, client_namespace: str) -> list[str]:
    """The Service's DNS names (``service_domains``) without a port."""
    ns, name = service.meta.namespace, service.meta.name
    hosts = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"]
    if ns == client_namespace:
        hosts.insert(0, name)
    return hosts


def with_route_changes(
    ir: SidecarIR, old: MeshIR, mesh: MeshIR, services: Iterable[ObjectKey], clusters: Iterable[str] = ()
) -> SidecarIR | None:
    """``ir`` (translated from ``old``) after only the routes (Routes, HTTPRoutes, GRPCRoutes) of ``services``
    changed, with just those Services' virtual hosts redone: equal to ``translate_sidecar(mesh, ir.params)`` but
    for the endpoints, which it keeps as they are in ``ir`` (a snapshot's IR has none: see ``Snapshot``), or None
    when the change reaches beyond the RouteConfiguration (a tcpRoute involved, clusters used or made differently,
    a Service gaining or losing its hosts under capture), and the caller translates the whole sidecar. Lets a
    route change patch RDS alone (issue 14). ``clusters``: those the change may have made differently (a GRPCRoute
    makes a Service port's cluster a gRPC one for every route reaching it)."""
    key = ir.params.virtual_node
    spec = mesh.virtual_nodes.get(key) if key else None
    if key is None or spec is None or ir.outbound is None:
        return None
    declared = services_called(spec, services)
    gamma_before, gamma_after = old.gamma.routed_services, mesh.gamma.routed_services
    touched = declared | {s for s in services if s in gamma_before or s in gamma_after}
    if any(r.tcp for svc in touched for m in (old, mesh) for r in m.routes_by_service.get(svc, ())):
        return None
    hosts = list(ir.virtual_hosts)  # sorted by Service (translate_sidecar), each Service's hosts together
    before: set[tuple[str, str]] = set()  # (virtual host, cluster)
    after: set[tuple[str, str]] = set()
    for svc in sorted(touched, reverse=True):  # from the end: earlier positions stay valid
        at = (svc.namespace, svc.name)
        lo = bisect_left(hosts, at, key=_service_order)
        hi = bisect_right(hosts, at, key=_service_order)
        vhs = service_virtual_hosts(mesh, svc, key.namespace, declared=svc in declared)
        if ir.params.capture and (lo == hi) != (not vhs):
            return None  # a Service gained or lost its virtual hosts: its ports' captured listeners change too
        before.update((vh.name, c) for vh in hosts[lo:hi] for c in _clusters_of(vh))
        after.update((vh.name, c) for vh in vhs for c in _clusters_of(vh))
        hosts[lo:hi] = vhs
    if before != after:
        # A cluster is used or unused now (whether CDS/EDS change depends on the other hosts), or reached through
        # another backend (whose client policy it takes): redo it all.
        return None
    remade = {c for c in clusters if old.clusters.get(c) != mesh.clusters.get(c)}
    if remade and any(c.name in remade for c in ir.clusters):
        return None  # a cluster it uses is made differently: CDS changes
    return replace(ir, virtual_hosts=tuple(hosts))


def _service_order(vh: VirtualHostIR) -> tuple[str, str]:
    """A virtual host's Service as (namespace, name): per-port hosts are named ``namespace/name:port``."""
    namespace, _, name = vh.name.partition(":")[0].partition("/")
    return namespace, name


def _clusters_of(vh: VirtualHostIR) -> Iterator[str]:
    for r in vh.routes:
        yield from (wc.cluster for wc in r.clusters)
        yield from (m.cluster for m in r.mirrors)


def _sorted_backends(spec: VirtualNodeSpec) -> list[Backend]:
    """The order of the outbound virtual hosts."""
    return sorted(spec.backends, key=lambda b: (b.namespace, b.name))


def translate_gateway_proxy(mesh: MeshIR, params: SidecarParams) -> SidecarIR:
    """An edge gateway's proxy: a listener per port of its Gateway (``translate/gateway.py``); nothing when the
    Gateway is not served (unknown, not our class, not accepted)."""
    assert params.gateway is not None
    proxy = mesh.gateways.proxies.get(params.gateway)
    used = proxy.clusters if proxy is not None else ()
    return replace(
        _no_sidecar(params),
        clusters=tuple(mesh.clusters[name] for name in used),
        endpoints={name: mesh.endpoints.get(name, ()) for name in used},
        gateway_listeners=gateway_listeners(proxy, params),
    )


def gateway_listeners(proxy: GatewayProxyIR | None, params: SidecarParams) -> tuple[GatewayListenerIR, ...]:
    """The listeners of an edge gateway's proxies: one per port, bound where the proxy says (``bound_port``)."""
    if proxy is None:
        return ()
    return tuple(
        GatewayListenerIR(
            name=f"gateway|{port.port}",
            address=params.bind_address,
            port=bound_port(port.port),
            route_config_name=f"gateway|{port.port}",
            virtual_hosts=port.virtual_hosts,
            certificates=port.certificates,
        )
        for port in proxy.ports
    )


def _no_sidecar(params: SidecarParams) -> SidecarIR:
    """Nothing to serve: no listener, route or cluster."""
    return SidecarIR(
        params=params,
        outbound=None,
        inbound=(),
        route_config_name=OUTBOUND_ROUTE_CONFIG,
        virtual_hosts=(),
        clusters=(),
        endpoints={},
    )


def translate_sidecar(mesh: MeshIR, params: SidecarParams) -> SidecarIR:
    if params.gateway is not None:
        return translate_gateway_proxy(mesh, params)
    key = params.virtual_node
    spec = mesh.virtual_nodes.get(key) if key else None
    if key is None or spec is None:
        return _no_sidecar(params)
    access_log = spec.logging
    tracing = None
    collector: list[ClusterIR] = []
    if (tc := spec.tracing) is not None:
        cluster = None if tc.provider == "xray" else f"tracing|{tc.host}:{tc.port}"
        tracing = TracingIR(config=tc, service_name=f"{key.namespace}/{key.name}", collector_cluster=cluster)
        if cluster is not None:
            collector.append(ClusterIR(name=cluster, protocol=Protocol.HTTP, dns_endpoint=(tc.host, tc.port)))

    virtual_hosts: list[VirtualHostIR] = []
    http_services: list[Service] = []  # the Services those virtual hosts reach
    declared = {ObjectKey("Service", b.namespace, b.name) for b in spec.backends}
    for svc_key in sorted(declared | mesh.gamma.routed_services):
        vhs = service_virtual_hosts(mesh, svc_key, key.namespace, declared=svc_key in declared)
        if vhs:
            virtual_hosts.extend(vhs)
            http_services.append(mesh.services[svc_key])
    tcp = tcp_backends(spec, mesh.services, mesh.routes_by_service)
    ports = allocate_ports(params, spec, [port for _, port, _ in tcp])
    tcp_outbound: dict[int, OutboundTcpListenerIR] = {}
    for svc_key, port, tcp_route in tcp:
        if port in ports.tcp:
            # One listener per port: with two TCP Services on one port, the first by name keeps it.
            tcp_outbound.setdefault(
                port,
                OutboundTcpListenerIR(
                    name=f"outbound|tcp|{svc_key.namespace}/{svc_key.name}|{port}",
                    address=params.bind_address,
                    port=port,
                    route=tcp_route,
                    bind_to_port=not params.capture,
                ),
            )

    routes_used = [r for vh in virtual_hosts for r in vh.routes] + [t.route for t in tcp_outbound.values()]
    used = sorted(
        {wc.cluster for r in routes_used for wc in r.clusters if wc.cluster != INVALID_BACKEND}
        | {m.cluster for r in routes_used for m in r.mirrors}
    )
    policies = _client_policies(spec, virtual_hosts, tcp) if _has_client_policy(spec) else {}
    clusters: list[ClusterIR] = [
        _with_policy(mesh.clusters[name], policies[name]) if name in policies else mesh.clusters[name] for name in used
    ] + collector
    endpoints: dict[str, tuple[EndpointIR, ...]] = {name: mesh.endpoints.get(name, ()) for name in used}

    inbound: list[InboundListenerIR] = []
    app_ports: list[int] = []  # the app port each inbound listener forwards to
    for listener, inbound_port in zip(spec.listeners, ports.inbound, strict=True):
        if inbound_port > 65535:
            continue
        local = f"inbound|{key.namespace}/{key.name}|{listener.port}"
        clusters.append(
            ClusterIR(
                name=local,
                protocol=listener.protocol,
                connection_pool=listener.connection_pool,
                static_endpoint=EndpointIR(address="127.0.0.1", port=listener.port),
            )
        )
        timeout = listener.timeout
        inbound.append(
            InboundListenerIR(
                name=f"inbound|{listener.port}",
                address=params.bind_address,
                port=inbound_port,
                protocol=listener.protocol,
                cluster=local,
                timeout_ms=timeout.per_request_ms if timeout else None,
                idle_timeout_ms=timeout.idle_ms if timeout else None,
                access_log=access_log,
                tracing=tracing,
                tls=_downstream_tls(listener.tls),
                authz=mesh.authz.get((key, listener.port)),
            )
        )
        app_ports.append(listener.port)

    outbound = OutboundListenerIR(
        name="outbound",
        address=params.bind_address,
        port=params.egress_port,
        route_config_name=OUTBOUND_ROUTE_CONFIG,
        access_log=access_log,
        tracing=tracing,
        capture=params.capture,
    )
    ir = SidecarIR(
        params=params,
        outbound=outbound,
        inbound=tuple(inbound),
        route_config_name=OUTBOUND_ROUTE_CONFIG,
        virtual_hosts=tuple(virtual_hosts),
        clusters=tuple(clusters),
        endpoints=endpoints,
        tcp_outbound=tuple(tcp_outbound.values()),
    )
    if not params.capture:
        return ir
    egress = mesh.egress_filters.get(key.namespace, mesh.default_egress) if key else mesh.default_egress
    return _captured(ir, http_services, app_ports, egress)


def _downstream_tls(tls: ListenerTls | None) -> DownstreamTlsIR | None:
    if tls is None or tls.mode is TlsMode.DISABLED:
        return None
    files = None
    if tls.certificate_chain_file is not None and tls.private_key_file is not None:
        files = (tls.certificate_chain_file, tls.private_key_file)
    return DownstreamTlsIR(
        mode=tls.mode,
        certificate_files=files,
        certificate_sds=tls.certificate_sds,
        trust_file=tls.trust_file,
        trust_sds=tls.trust_sds,
        subject_alt_names=tls.subject_alt_names,
    )


def _has_client_policy(spec: VirtualNodeSpec) -> bool:
    return spec.backend_defaults is not None or any(b.client_policy is not None for b in spec.backends)


def _client_policies(
    spec: VirtualNodeSpec, virtual_hosts: list[VirtualHostIR], tcp: list[tuple[ObjectKey, int, RouteIR]]
) -> dict[str, ClientPolicy]:
    """The client policy of each cluster this node calls, from the backend whose routes reach it (its own
    ``clientPolicy``, else ``backendDefaults``) when the policy covers the cluster's port. A cluster reached through
    two backends takes an explicit backend policy before the defaults, then the first backend by name."""
    reached: dict[ObjectKey, set[str]] = {}
    for vh in virtual_hosts:
        ns, name = vh.name.split(":", 1)[0].split("/", 1)
        reached.setdefault(ObjectKey("Service", ns, name), set()).update(
            wc.cluster for r in vh.routes for wc in r.clusters
        )
    for svc_key, _, route in tcp:
        reached.setdefault(svc_key, set()).update(wc.cluster for wc in route.clusters)
    ordered = sorted(spec.backends, key=lambda b: (b.client_policy is None, b.namespace, b.name))
    policies: dict[str, ClientPolicy] = {}
    for backend in ordered:
        policy = backend.client_policy or spec.backend_defaults
        if policy is None:
            continue
        for cluster in sorted(reached.get(ObjectKey("Service", backend.namespace, backend.name), ())):
            if policy.covers(_namespace_port(cluster)[1]):
                policies.setdefault(cluster, policy)
    return policies


def _namespace_port(cluster: str) -> tuple[str, int]:
    """The callee's namespace and port of a VirtualNode-listener or Service-port cluster."""
    service = service_of_cluster(cluster)
    if service is not None:
        return service[0].namespace, service[1]
    node, port = cluster_listener(cluster)
    return node.namespace, port


def _with_policy(cluster: ClusterIR, policy: ClientPolicy) -> ClusterIR:
    """The cluster as this caller reaches it: plaintext (``enforce: false``) or TLS with the policy's sources."""
    if not policy.enforce:
        return replace(cluster, tls=None) if cluster.tls is not None else cluster
    files = None
    if policy.certificate_chain_file is not None and policy.private_key_file is not None:
        files = (policy.certificate_chain_file, policy.private_key_file)
    # A host outside the mesh (found by DNS): TLS names it (SNI, its DNS name checked), and presents a client
    # certificate only when the policy gives one (the mesh identity means nothing there).
    external = cluster.server_name
    tls = UpstreamTlsIR(
        namespace=_namespace_port(cluster.name)[0],
        certificate_files=files,
        certificate_sds=policy.certificate_sds,
        trust_file=policy.trust_file,
        trust_sds=policy.trust_sds,
        subject_alt_names=policy.subject_alt_names,
        sni=external,
        present_certificate=external is None or files is not None or policy.certificate_sds is not None,
    )
    return cluster if cluster.tls == tls else replace(cluster, tls=tls)


_NO_RETRIES = RetryPolicy(max_retries=0)


def _egress_host(egress: EgressFilter) -> VirtualHostIR:
    """What a captured proxy does with an HTTP request to a host no Service of the mesh has (App Mesh's
    egressFilter): passes it to where it was going, or answers 404 saying why (App Mesh answered 404)."""
    match = HttpMatch(prefix="/")
    if egress is EgressFilter.ALLOW_ALL:
        route = RouteIR(
            name="egress-allowed",
            match=match,
            clusters=(WeightedClusterIR(cluster=PASSTHROUGH_CLUSTER, weight=1),),
            timeout_ms=0,  # a request outside the mesh is bounded by the app, not by a route timeout of ours
            retry_policy=_NO_RETRIES,  # nor retried by us: we know nothing of what it is
        )
    else:
        body = "meshctl: this host is not declared in the mesh and the egress filter is DROP_ALL\n"
        route = RouteIR(name="egress-denied", match=match, clusters=(), direct_status=404, direct_body=body)
    return VirtualHostIR(name=EGRESS_VHOST, domains=("*",), routes=(route,))


def _captured(ir: SidecarIR, http_services: list[Service], app_ports: list[int], egress: EgressFilter) -> SidecarIR:
    """The capture form of a sidecar: the same routes, reached by original destination (module docstring); what
    the mesh does not declare is passed through or refused by the egress filter."""
    params, outbound = ir.params, ir.outbound
    assert outbound is not None
    outbound = replace(outbound, drop_undeclared=egress is EgressFilter.DROP_ALL)
    own = {params.egress_port, params.ingress_port} | {t.port for t in ir.tcp_outbound}
    http_ports = sorted({p.port for svc in http_services for p in svc.ports if p.port and p.port not in own})
    http = tuple(
        replace(outbound, name=f"outbound|http|{port}", port=port, capture=False, bind_to_port=False)
        for port in http_ports
    )
    chains = tuple(replace(li, port=port) for li, port in zip(ir.inbound, app_ports, strict=True))
    captured = (
        CapturedInboundIR(name="inbound", address=params.bind_address, port=params.ingress_port, chains=chains)
        if chains
        else None
    )
    passthrough = ClusterIR(name=PASSTHROUGH_CLUSTER, protocol=Protocol.TCP, original_dst=True)
    if egress is EgressFilter.DROP_ALL:  # refused connections go nowhere (the passthrough stays for HTTP's sake)
        passthrough_extra: tuple[ClusterIR, ...] = (
            ClusterIR(name=EGRESS_DENIED_CLUSTER, protocol=Protocol.TCP, blackhole=True),
        )
    else:
        passthrough_extra = ()
    return replace(
        ir,
        outbound=outbound,
        inbound=(),
        captured_inbound=captured,
        http_outbound=http,
        clusters=(*ir.clusters, passthrough, *passthrough_extra),
        virtual_hosts=(*ir.virtual_hosts, _egress_host(egress)),
    )
