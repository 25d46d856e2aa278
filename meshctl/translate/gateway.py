"""Gateways of meshctl's classes -> what their Envoys serve, and the Gateway API statuses. Pure.

A Gateway whose GatewayClass names ``GATEWAY_CONTROLLER`` is served by the proxies that connect as that Gateway
(node metadata ``meshctl.gateway: namespace/name``). Each port of its listeners becomes one Envoy listener routing
by Host over one RouteConfiguration: a virtual host per hostname, made of the (rule, match) routes of every
HTTPRoute/GRPCRoute attached to a listener on that port, the hostnames being the intersection of the listener's and
the route's as the spec says. Routes are ordered as for the mesh (``gamma.match_precedence``).

A route attaches to a listener when its parentRef names the Gateway (and the listener's ``sectionName`` / ``port``
if given), the listener allows the route's namespace and kind (``allowedRoutes``), and their hostnames intersect.
Each parent gets Accepted (or NoMatchingParent, NotAllowedByListeners, NoMatchingListenerHostname) and
ResolvedRefs; each listener its Accepted, ResolvedRefs, Conflicted, Programmed conditions and ``attachedRoutes``.

A rule whose one backend is a Service with meshctl Routes takes those Routes (``_through_mesh``): traffic from the
gateway into the mesh goes where a sidecar's would.

Each route's share (its parent statuses, Envoy routes by virtual host, listeners attached, clusters) is kept, so a
change of some routes is translated alone (``GatewaysIR.with_changes``); a full translation is the same from empty.

A Gateway port below 1024 is bound 10,000 higher (80 -> 10080), as Envoy Gateway does: the gateway's pod then runs
without privileges, and its Service maps the Gateway port to that one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from meshctl.model import HttpMatch, Model, ObjectKey, Secret, VirtualNodeSpec
from meshctl.model.gateway import (
    GATEWAY_CONTROLLER,
    GATEWAY_GROUP,
    GATEWAY_NAME_LABEL,
    BackendRef,
    Gateway,
    GatewayListener,
    HTTPRoute,
    ParentRef,
)
from meshctl.translate.endpoints import service_of_cluster
from meshctl.translate.gamma import (
    BackendResolver,
    MtlsIndex,
    at_origin,
    match_precedence,
    mtls_index,
    rule_route,
    rule_targets,
    service_cluster,
    worst_conditions,
)
from meshctl.translate.ir import (
    INVALID_BACKEND,
    Blocked,
    ClusterIR,
    Condition,
    ConditionStatus,
    GatewayCertificateIR,
    GatewayStatusDetail,
    ListenerStatus,
    ObjectStatus,
    ParentStatus,
    RouteIR,
    VirtualHostIR,
)

__all__ = [
    "GATEWAY_NAME_LABEL",
    "GatewayPortIR",
    "GatewayProxyIR",
    "GatewaysChange",
    "GatewaysIR",
    "bound_port",
    "certificate_secret_name",
    "gateway_status_document",
    "hostname_intersection",
    "names_listener",
    "namespace_allowed",
    "no_matching_parent",
    "translate_gateways",
    "with_gateway_parents",
]

_SERVED_PROTOCOLS = ("HTTP", "HTTPS")
_ROUTE_KINDS = ((GATEWAY_GROUP, "HTTPRoute"), (GATEWAY_GROUP, "GRPCRoute"))


def bound_port(port: int) -> int:
    """The port a gateway proxy binds for a Gateway listener port (unprivileged: below 1024, 10,000 higher)."""
    return port + 10_000 if port < 1024 else port


def certificate_secret_name(secret: ObjectKey) -> str:
    """The SDS secret a gateway proxy gets a certificate Secret's key pair in."""
    return f"gateway-certificate:{secret.namespace}/{secret.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayPortIR:
    port: int  # the Gateway listener port
    https: bool
    virtual_hosts: tuple[VirtualHostIR, ...]
    certificates: tuple[GatewayCertificateIR, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayProxyIR:
    """What every proxy of one Gateway is sent: its ports, the clusters their routes reach, the Secrets they use."""

    gateway: ObjectKey
    ports: tuple[GatewayPortIR, ...]
    clusters: tuple[str, ...]
    secrets: tuple[ObjectKey, ...] = ()


Where = tuple[ObjectKey, int, str]  # (Gateway, listener port, hostname): one virtual host
_Entry = tuple[tuple[object, ...], ObjectKey, RouteIR]  # (precedence, the route it came from, an Envoy route)


@dataclass(frozen=True, slots=True)
class _RouteShare:
    """What one route contributes to the gateways: its parent statuses, its Envoy routes by virtual host, the
    listeners it attaches to, the Service-port clusters its backendRefs resolve to (True: as a GRPCRoute's) and the
    clusters its Envoy routes send to, per Gateway."""

    parents: tuple[ParentStatus, ...]
    placed: tuple[tuple[Where, tuple[object, ...], RouteIR], ...] = ()
    attached: tuple[tuple[ObjectKey, str], ...] = ()
    reached: Mapping[str, bool] = field(default_factory=dict)
    uses: tuple[tuple[ObjectKey, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaysIR:
    proxies: Mapping[ObjectKey, GatewayProxyIR] = field(default_factory=dict)
    clusters: Mapping[str, ClusterIR] = field(default_factory=dict)  # the Service ports the gateways reach
    statuses: Mapping[ObjectKey, ObjectStatus] = field(default_factory=dict)  # GatewayClasses and Gateways
    # Each route with a Gateway parent of ours: its status for those parents.
    route_parents: Mapping[ObjectKey, tuple[ParentStatus, ...]] = field(default_factory=dict)
    # The certificate Secrets the served HTTPS listeners use (sent to their gateway's proxies only, over SDS).
    certificates: Mapping[ObjectKey, Secret] = field(default_factory=dict, repr=False)
    # What lets a change of some routes be translated alone (``with_changes``):
    shares: Mapping[ObjectKey, _RouteShare] = field(default_factory=dict)
    placed: Mapping[Where, tuple[_Entry, ...]] = field(default_factory=dict)  # in precedence order
    vhosts: Mapping[Where, VirtualHostIR] = field(default_factory=dict)
    hosts: Mapping[tuple[ObjectKey, int], tuple[str, ...]] = field(default_factory=dict)  # in listing order
    attached: Mapping[tuple[ObjectKey, str], int] = field(default_factory=dict)  # routes per (Gateway, listener)
    cluster_users: Mapping[str, Mapping[ObjectKey, bool]] = field(default_factory=dict)
    used: Mapping[ObjectKey, Mapping[str, int]] = field(default_factory=dict)  # clusters each Gateway sends to

    def with_changes(
        self,
        model: Model,
        nodes: Mapping[ObjectKey, VirtualNodeSpec],
        changed: Iterable[ObjectKey],
        blocked: Mapping[ObjectKey, Blocked] | None = None,
        mesh_routes: Mapping[ObjectKey, tuple[RouteIR, ...]] | None = None,
    ) -> GatewaysChange:
        """This translation after the HTTPRoutes/GRPCRoutes ``changed`` changed, everything else in ``model`` being
        as it was translated with (Gateways, classes, Services, Secrets, Namespaces, Routes): those routes
        translated again, the virtual hosts and Gateways they touch redone. From an empty GatewaysIR with every route
        changed: the full translation (``translate_gateways``)."""
        mesh_routes = mesh_routes or {}
        classes = {k.name: c for k, c in model.gateway_classes.items() if c.controller_name == GATEWAY_CONTROLLER}
        if not classes:
            return GatewaysChange(GatewaysIR(), frozenset(self.proxies), frozenset(self.clusters))
        gateways = {k: g for k, g in sorted(model.gateways.items()) if g.class_name in classes}
        listeners = {k: _listeners(g, model) for k, g in gateways.items()}
        backends = BackendResolver(model, tuple(model.reference_grants.values()))
        keys = sorted(changed)
        changed_set = set(keys)
        shares, users = dict(self.shares), dict(self.cluster_users)
        attached, used = dict(self.attached), {g: dict(c) for g, c in self.used.items()}
        where: set[Where] = set()
        names: set[str] = set()
        touched: set[ObjectKey] = set()
        fresh: dict[Where, list[_Entry]] = {}
        for key in keys:
            old = shares.pop(key, None)
            if old is not None:
                _count(old, attached, used, users, key, -1)
                where.update(w for w, _, _ in old.placed)
                names.update(old.reached)
                touched.update(g for g, _ in old.attached)
            share = _route_share(
                model.http_routes.get(key), gateways, listeners, model, backends, (blocked or {}).get(key), mesh_routes
            )
            if share is None:
                continue
            shares[key] = share
            _count(share, attached, used, users, key, +1)
            for w, order, ir in share.placed:
                where.add(w)
                fresh.setdefault(w, []).append((order, key, ir))
            names.update(share.reached)
            touched.update(g for g, _ in share.attached)
        placed, vhosts, hosts = dict(self.placed), dict(self.vhosts), dict(self.hosts)
        reordered: set[tuple[ObjectKey, int]] = set()
        for w in where:
            entries = [e for e in placed.get(w, ()) if e[1] not in changed_set] + fresh.get(w, [])
            if entries:
                entries.sort(key=_entry_order)
                placed[w] = tuple(entries)
                gk, port, hostname = w
                vhosts[w] = VirtualHostIR(
                    name=f"{gk.namespace}/{gk.name}:{port}/{hostname}",
                    domains=(hostname,),
                    routes=tuple(ir for _, _, ir in entries),
                )
                if w not in self.vhosts:
                    reordered.add((gk, port))
            else:
                placed.pop(w, None)
                if vhosts.pop(w, None) is not None:
                    reordered.add((w[0], w[1]))
        if reordered:
            by_port: dict[tuple[ObjectKey, int], list[str]] = {gp: [] for gp in reordered}
            for gk, port, hostname in vhosts:
                if (gk, port) in by_port:
                    by_port[(gk, port)].append(hostname)
            for gp, present in by_port.items():
                if present:
                    hosts[gp] = tuple(sorted(present, key=_host_order))
                else:
                    hosts.pop(gp, None)
        full = not self.shares and not self.proxies  # (every Gateway's proxy and status made)
        statuses = {} if full else dict(self.statuses)
        for cls in classes.values():
            accepted = _cond("Accepted", True, "Accepted", f"served by {GATEWAY_CONTROLLER}")
            statuses[cls.key] = ObjectStatus(
                key=cls.key, observed_generation=cls.meta.generation, origin=cls.meta.origin, conditions=(accepted,)
            )
        proxies = {} if full else dict(self.proxies)
        balancers = _balancers(model) if full or touched else {}
        for key, gateway in gateways.items():
            if not full and key not in touched:
                continue
            proxy, status = _gateway(
                key, gateway, listeners[key], attached, hosts, vhosts, used.get(key, {}), balancers
            )
            statuses[key] = status
            if proxy is not None:
                proxies[key] = proxy
            else:
                proxies.pop(key, None)
        clusters = dict(self.clusters)
        index: list[MtlsIndex] = []
        for name in sorted(names):
            wanted = users.get(name)
            found = service_of_cluster(name)
            service = model.services.get(found[0]) if found is not None else None
            if not wanted or found is None or service is None:
                clusters.pop(name, None)
                continue
            grpc = any(wanted.values())
            was = self.cluster_users.get(name)
            if name in clusters and was is not None and any(was.values()) == grpc:
                continue
            if not index:
                index.append(mtls_index(nodes))
            clusters[name] = service_cluster(service, found[1], index[0], grpc=grpc)
        gateways_ir = GatewaysIR(
            proxies=proxies,
            clusters=clusters,
            statuses=statuses,
            route_parents={k: s.parents for k, s in shares.items()},
            certificates={k: model.secrets[k] for p in proxies.values() for k in p.secrets},
            shares=shares,
            placed=placed,
            vhosts=vhosts,
            hosts=hosts,
            attached=attached,
            cluster_users=users,
            used=used,
        )
        return GatewaysChange(gateways_ir, frozenset(touched), frozenset(names))


@dataclass(frozen=True, slots=True)
class GatewaysChange:
    """``GatewaysIR.with_changes``: the new translation, the Gateways whose proxies or statuses may differ and the
    Service-port clusters that may have been added, changed or dropped."""

    gateways: GatewaysIR
    touched: frozenset[ObjectKey]
    clusters: frozenset[str]


def _entry_order(entry: _Entry) -> tuple[object, ...]:
    return entry[0]


def _count(
    share: _RouteShare,
    attached: dict[tuple[ObjectKey, str], int],
    used: dict[ObjectKey, dict[str, int]],
    users: dict[str, Mapping[ObjectKey, bool]],
    key: ObjectKey,
    sign: int,
) -> None:
    """Adds (+1) or takes away (-1) one route's share from the running counts."""
    for at in share.attached:
        attached[at] = attached.get(at, 0) + sign
        if not attached[at]:
            del attached[at]
    for gk, name in share.uses:
        counts = used.setdefault(gk, {})
        counts[name] = counts.get(name, 0) + sign
        if not counts[name]:
            del counts[name]
    for name, grpc in share.reached.items():
        if sign > 0:
            users[name] = {**users.get(name, {}), key: grpc}
        else:
            rest = {k: g for k, g in users.get(name, {}).items() if k != key}
            if rest:
                users[name] = rest
            else:
                users.pop(name, None)


def _cond(type_: str, ok: bool, reason: str, message: str) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    return Condition(type=type_, status=status, reason=reason, message=message)


def hostname_intersection(listener: str | None, route: tuple[str, ...]) -> tuple[str, ...]:
    """The hostnames a route serves on a listener (spec: HTTPRoute ``hostnames``); ("*",) when neither restricts,
    () when they do not intersect."""
    if not route:
        return (listener or "*",)
    if listener is None:
        return tuple(dict.fromkeys(h.lower() for h in route))
    out: list[str] = []
    for h in (h.lower() for h in route):
        if h == listener or _covers(listener, h):
            out.append(h)  # the route's is the more specific
        elif _covers(h, listener):
            out.append(listener)
    return tuple(dict.fromkeys(out))


def _covers(wildcard: str, name: str) -> bool:
    """``*.example.com`` covers ``a.example.com``, ``a.b.example.com`` and ``*.a.example.com``, not itself."""
    return wildcard.startswith("*.") and name != wildcard and name.endswith(wildcard[1:])


@dataclass(slots=True)
class _Listener:
    spec: GatewayListener
    conditions: list[Condition]
    kinds: tuple[tuple[str, str], ...]

    @property
    def serving(self) -> bool:
        return all(c.status is ConditionStatus.TRUE for c in self.conditions if c.type in ("Accepted", "ResolvedRefs"))


def translate_gateways(
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    blocked: Mapping[ObjectKey, Blocked] | None = None,
    mesh_routes: Mapping[ObjectKey, tuple[RouteIR, ...]] | None = None,
) -> GatewaysIR:
    """``mesh_routes``: the meshctl Routes of each Service (``MeshIR.routes_by_service``): a gateway's request to a
    Service that has them takes them, as a sidecar's would (``_through_mesh``)."""
    return GatewaysIR().with_changes(model, nodes, model.http_routes.keys(), blocked, mesh_routes).gateways


def _route_share(
    route: HTTPRoute | None,
    gateways: Mapping[ObjectKey, Gateway],
    listeners: Mapping[ObjectKey, list[_Listener]],
    model: Model,
    backends: BackendResolver,
    block: Blocked | None,
    mesh_routes: Mapping[ObjectKey, tuple[RouteIR, ...]],
) -> _RouteShare | None:
    """One route's share; None when it is gone or has no parent that is a Gateway of ours."""
    if route is None:
        return None
    parents = route.spec.parents if route.spec is not None else route.parents_if_invalid
    ours = [(p, gk) for p in parents if (gk := _gateway_key(p)) is not None and gk in gateways]
    if not ours:
        return None
    placed: list[tuple[Where, tuple[object, ...], RouteIR]] = []
    attached: list[tuple[ObjectKey, str]] = []
    reached: dict[str, bool] = {}
    statuses = tuple(
        _attach(route, p, gateways[gk], listeners[gk], model, backends, block, mesh_routes, placed, attached, reached)
        for p, gk in ours
    )
    uses = {
        (w[0], c)
        for w, _, ir in placed
        for c in (*(wc.cluster for wc in ir.clusters), *(m.cluster for m in ir.mirrors))
        if c != INVALID_BACKEND
    }
    return _RouteShare(statuses, tuple(placed), tuple(attached), reached, tuple(sorted(uses)))


def _gateway_key(parent: ParentRef) -> ObjectKey | None:
    if parent.group != GATEWAY_GROUP or parent.kind != "Gateway":
        return None
    return ObjectKey("Gateway", parent.namespace, parent.name)


def _listeners(gateway: Gateway, model: Model) -> list[_Listener]:
    """Each listener with its conditions (all but Programmed, which depends on the Gateway as a whole)."""
    out: list[_Listener] = []
    by_port: dict[int, set[str]] = {}
    for li in gateway.listeners:
        by_port.setdefault(li.port, set()).add(li.protocol)
    for li in gateway.listeners:
        conditions: list[Condition] = []
        if li.protocol not in _SERVED_PROTOCOLS:
            conditions.append(
                _cond("Accepted", False, "UnsupportedProtocol", f"protocol {li.protocol} is not served (HTTP, HTTPS)")
            )
        elif li.protocol == "HTTPS" and li.tls_mode == "Passthrough":
            conditions.append(_cond("Accepted", False, "UnsupportedValue", "an HTTPS listener terminates TLS"))
        else:
            conditions.append(_cond("Accepted", True, "Accepted", "accepted"))
        kinds, bad_kinds = _kinds(li)
        resolved = _cond("ResolvedRefs", True, "ResolvedRefs", "resolved")
        if bad_kinds:
            names = ", ".join(f"{g}/{k}" for g, k in bad_kinds)
            resolved = _cond("ResolvedRefs", False, "InvalidRouteKinds", f"route kinds not served: {names}")
        if li.protocol == "HTTPS" and resolved.status is ConditionStatus.TRUE:
            problem = _certificate_problem(li, gateway, model)
            if problem is not None:
                resolved = _cond("ResolvedRefs", False, *problem)
        conditions.append(resolved)
        conflicted = len(by_port[li.port] & set(_SERVED_PROTOCOLS)) > 1
        same_host = [o for o in gateway.listeners if o is not li and o.port == li.port and o.hostname == li.hostname]
        if conflicted:
            conditions.append(
                _cond("Conflicted", True, "ProtocolConflict", f"port {li.port} is taken by another protocol too")
            )
        elif same_host and li.protocol in _SERVED_PROTOCOLS:
            host = li.hostname or "any hostname"
            conditions.append(_cond("Conflicted", True, "HostnameConflict", f"{host} on port {li.port} twice"))
        else:
            conditions.append(_cond("Conflicted", False, "NoConflicts", "no conflicts"))
        if conflicted or same_host:
            conditions[0] = _cond("Accepted", False, conditions[-1].reason, conditions[-1].message)
        out.append(_Listener(spec=li, conditions=conditions, kinds=kinds))
    return out


def _kinds(li: GatewayListener) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """The listener's supported kinds and the kinds it asks for that it cannot have."""
    if not li.allowed.kinds:
        return (_ROUTE_KINDS if li.protocol in _SERVED_PROTOCOLS else ()), ()
    good = tuple(k for k in li.allowed.kinds if k in _ROUTE_KINDS)
    return good, tuple(k for k in li.allowed.kinds if k not in _ROUTE_KINDS)


def _certificate_problem(li: GatewayListener, gateway: Gateway, model: Model) -> tuple[str, str] | None:
    """(reason, message) when an HTTPS listener's certificates cannot be used."""
    if not li.certificates:
        return "InvalidCertificateRef", "an HTTPS listener needs tls.certificateRefs"
    for ref in li.certificates:
        if ref.group not in ("", "core") or ref.kind != "Secret":
            return "InvalidCertificateRef", f"{ref.group or 'core'}/{ref.kind} {ref.name} is not a Secret"
        if ref.namespace != gateway.meta.namespace and not any(
            g.meta.namespace == ref.namespace and g.permits_gateway(gateway.meta.namespace, "Secret", ref.name)
            for g in model.reference_grants.values()
        ):
            return (
                "RefNotPermitted",
                f"no ReferenceGrant in {ref.namespace} lets Gateways of {gateway.meta.namespace} use Secret {ref.name}",
            )
        secret = model.secrets.get(ObjectKey("Secret", ref.namespace, ref.name))
        if secret is None:
            return "InvalidCertificateRef", f"Secret {ref.namespace}/{ref.name} not found"
        if secret.problem is not None:
            return "InvalidCertificateRef", f"Secret {ref.namespace}/{ref.name}: {secret.problem}"
    return None


def names_listener(parent: ParentRef, listener: GatewayListener) -> bool:
    """A Gateway parentRef's ``sectionName`` and ``port``, where given, pick the listener."""
    return (parent.section_name is None or listener.name == parent.section_name) and (
        parent.port is None or listener.port == parent.port
    )


def no_matching_parent(parent: ParentRef, gateway: str) -> Condition:
    what = f"listener {parent.section_name!r}" if parent.section_name else f"listener on port {parent.port}"
    return _cond("Accepted", False, "NoMatchingParent", f"Gateway {gateway} has no {what}")


def namespace_allowed(li: GatewayListener, gateway: Gateway, namespace: str, model: Model) -> bool:
    allowed = li.allowed
    if allowed.namespaces_from == "All":
        return True
    if allowed.namespaces_from == "Same":
        return namespace == gateway.meta.namespace
    if allowed.namespaces_from != "Selector":
        return False
    ns = model.namespaces.get(ObjectKey("Namespace", "", namespace))
    return allowed.selector is not None and allowed.selector.matches(ns.meta.labels if ns is not None else {})


def _attach(
    route: HTTPRoute,
    parent: ParentRef,
    gateway: Gateway,
    listeners: list[_Listener],
    model: Model,
    backends: BackendResolver,
    block: Blocked | None,
    mesh_routes: Mapping[ObjectKey, tuple[RouteIR, ...]],
    placed: list[tuple[Where, tuple[object, ...], RouteIR]],
    attached: list[tuple[ObjectKey, str]],
    reached: dict[str, bool],
) -> ParentStatus:
    """The route's status for one Gateway parent; its Envoy routes appended to ``placed`` for each virtual host of
    the listeners it attaches to (which are appended to ``attached``)."""

    def entry(*conditions: Condition) -> ParentStatus:
        return ParentStatus(parent=parent, conditions=tuple(at_origin(route.meta.origin, c) for c in conditions))

    resolved = _cond("ResolvedRefs", True, "ResolvedRefs", "resolved")
    if route.spec is None:
        message = "; ".join(str(e) for e in route.errors)
        return entry(_cond("Accepted", False, "UnsupportedValue", message), resolved)
    if block is not None and block.spec == route.spec:
        return entry(_cond("Accepted", False, block.reason, block.message), resolved)
    candidates = [li for li in listeners if names_listener(parent, li.spec)]
    if not candidates:
        return entry(no_matching_parent(parent, gateway.meta.name), resolved)
    kind = (GATEWAY_GROUP, route.kind)
    allowed = [
        li
        for li in candidates
        if li.serving and kind in li.kinds and namespace_allowed(li.spec, gateway, route.meta.namespace, model)
    ]
    if not allowed:
        message = f"no listener of Gateway {gateway.meta.name} allows {route.kind}s of {route.meta.namespace}"
        return entry(_cond("Accepted", False, "NotAllowedByListeners", message), resolved)
    hosts = [(li, hostname_intersection(li.spec.hostname, route.spec.hostnames)) for li in allowed]
    hosts = [(li, h) for li, h in hosts if h]
    if not hosts:
        message = f"no hostname of the route matches a listener of Gateway {gateway.meta.name}"
        return entry(_cond("Accepted", False, "NoMatchingListenerHostname", message), resolved)
    problems: list[tuple[str, str]] = []
    irs: list[tuple[tuple[object, ...], RouteIR]] = []
    for i, rule in enumerate(route.spec.rules):
        weighted, mirrors = rule_targets(route, i, rule, backends, problems, reached)
        for j, match in enumerate(rule.matches):
            ir = rule_route(route, i, j, rule, match, weighted, mirrors)
            order = match_precedence(match, route, i, j)
            irs.extend(((*order, k), r) for k, r in enumerate(_through_mesh(ir, rule.backends, mesh_routes)))
    gateway_key = gateway_key_of(gateway)
    for li, names in hosts:
        attached.append((gateway_key, li.spec.name))
        on_listener = [(order, _redirect_port(ir, li.spec.port)) for order, ir in irs]
        for hostname in names:
            placed.extend(((gateway_key, li.spec.port, hostname), order, ir) for order, ir in on_listener)
    if problems:
        reason, _ = problems[0]
        resolved = _cond("ResolvedRefs", False, reason, "; ".join(m for _, m in problems))
    return entry(_cond("Accepted", True, "Accepted", "accepted"), resolved)


def _through_mesh(
    ir: RouteIR, backends: tuple[BackendRef, ...], mesh_routes: Mapping[ObjectKey, tuple[RouteIR, ...]]
) -> list[RouteIR]:
    """The Envoy routes of one (rule, match) when its one backend is a Service the mesh routes (meshctl Routes):
    one per mesh route, matching both (the gateway's path, or the mesh route's when the gateway's matches any path;
    their headers, query parameters and method together), sending where the mesh route sends with its retries and
    timeout unless the rule has its own. A mesh route whose path cannot be combined with the rule's (both match
    paths) is left out; with none left, the rule sends to the Service's endpoints."""
    live = [b for b in backends if b.weight > 0]
    if len(live) != 1 or not live[0].is_service or ir.redirect is not None or ir.direct_status is not None:
        return [ir]
    backend = live[0]
    routes = mesh_routes.get(ObjectKey("Service", backend.namespace, backend.name), ())
    out: list[RouteIR] = []
    for mesh_route in routes:
        if mesh_route.tcp or (mesh_route.match.port is not None and mesh_route.match.port != backend.port):
            continue
        match = _both(ir.match, mesh_route.match)
        if match is None:
            continue
        out.append(
            replace(
                ir,
                match=match,
                clusters=mesh_route.clusters,
                retry_policy=ir.retry_policy or mesh_route.retry_policy,
                timeout_ms=ir.timeout_ms if ir.timeout_ms is not None else mesh_route.timeout_ms,
                idle_timeout_ms=mesh_route.idle_timeout_ms,
                mirrors=(*ir.mirrors, *mesh_route.mirrors),
                direct_status=mesh_route.direct_status,
                direct_body=mesh_route.direct_body,
            )
        )
    return out or [ir]


def _path_of(m: HttpMatch) -> bool:
    """Whether the match constrains the path (a prefix of "/" does not)."""
    return any((m.path_exact, m.path_regex, m.segment_prefix)) or m.prefix not in (None, "/")


def _both(gateway: HttpMatch, mesh: HttpMatch) -> HttpMatch | None:
    """A match of both, or None when Envoy has no single match for it (two paths, two methods)."""
    if _path_of(gateway) and _path_of(mesh):
        return None
    if gateway.method and mesh.method and gateway.method != mesh.method:
        return None
    path = mesh if _path_of(mesh) else gateway
    return HttpMatch(
        prefix=path.prefix if path.prefix is not None or _path_of(path) else "/",
        segment_prefix=path.segment_prefix,
        path_exact=path.path_exact,
        path_regex=path.path_regex,
        method=gateway.method or mesh.method,
        headers=(*gateway.headers, *mesh.headers),
        query_parameters=(*gateway.query_parameters, *mesh.query_parameters),
        grpc=gateway.grpc or mesh.grpc,
    )


def _redirect_port(ir: RouteIR, listener_port: int) -> RouteIR:
    """A RequestRedirect without a port redirects to the listener's port, or with a scheme to its well-known one
    (the spec's rule; Envoy would keep the Host's port, or drop it)."""
    r = ir.redirect
    if r is None or r.port is not None:
        return ir
    port = listener_port if r.scheme is None else 443 if r.scheme == "https" else 80
    return replace(ir, redirect=replace(r, port=port))


def gateway_key_of(gateway: Gateway) -> ObjectKey:
    return ObjectKey("Gateway", gateway.meta.namespace, gateway.meta.name)


def _gateway(
    key: ObjectKey,
    gateway: Gateway,
    listeners: list[_Listener],
    attached: Mapping[tuple[ObjectKey, str], int],
    hosts: Mapping[tuple[ObjectKey, int], tuple[str, ...]],
    vhosts: Mapping[Where, VirtualHostIR],
    used: Mapping[str, int],
    balancers: Mapping[tuple[str, str], list[str]],
) -> tuple[GatewayProxyIR | None, ObjectStatus]:
    origin = gateway.meta.origin
    listener_statuses = []
    serving = [li for li in listeners if li.serving]
    for li in listeners:
        if li.serving:
            programmed = _cond("Programmed", True, "Programmed", "programmed")
        else:
            programmed = _cond("Programmed", False, "Invalid", "not served: see Accepted and ResolvedRefs")
        listener_statuses.append(
            ListenerStatus(
                name=li.spec.name,
                supported_kinds=li.kinds,
                attached_routes=attached.get((key, li.spec.name), 0),
                conditions=(*li.conditions, programmed),
            )
        )
    if gateway.errors:
        message = "; ".join(str(e) for e in gateway.errors)
        accepted = _cond("Accepted", False, "Invalid", f"{origin}: {message}" if origin else message)
    elif not serving:
        accepted = _cond("Accepted", False, "ListenersNotValid", "no listener can be served")
    elif len(serving) < len(listeners):  # (the spec's reason, with Accepted True: the others are served)
        names = ", ".join(li.spec.name for li in listeners if not li.serving)
        accepted = _cond("Accepted", True, "ListenersNotValid", f"listeners not served: {names}")
    else:
        accepted = _cond("Accepted", True, "Accepted", "accepted")
    ports: list[GatewayPortIR] = []
    secrets: set[ObjectKey] = set()
    if accepted.status is ConditionStatus.TRUE:
        for port in sorted({li.spec.port for li in serving}):
            on_port = [li for li in serving if li.spec.port == port]
            port_hosts = tuple(vhosts[(key, port, hostname)] for hostname in hosts.get((key, port), ()))
            https = on_port[0].spec.protocol == "HTTPS"
            certificates: tuple[GatewayCertificateIR, ...] = ()
            if https:  # (a listener's first certificate: one key pair per listener)
                ordered = sorted(on_port, key=lambda li: _host_order(li.spec.hostname or "*"))
                refs = [
                    ObjectKey("Secret", li.spec.certificates[0].namespace, li.spec.certificates[0].name)
                    for li in ordered
                ]
                certificates = tuple(
                    GatewayCertificateIR(
                        server_names=(li.spec.hostname,) if li.spec.hostname else (),
                        secret=certificate_secret_name(ref),
                    )
                    for li, ref in zip(ordered, refs, strict=True)
                )
                secrets.update(refs)
            ports.append(GatewayPortIR(port=port, https=https, virtual_hosts=port_hosts, certificates=certificates))
    addresses = _addresses(gateway, balancers)
    if accepted.status is not ConditionStatus.TRUE:
        programmed = _cond("Programmed", False, "Invalid", "not served: see Accepted")
    elif not addresses:
        programmed = _cond(
            "Programmed",
            False,
            "AddressNotAssigned",
            f"served by meshctl's gateway proxies, but no address yet: no spec.addresses, and no Service labelled "
            f"{GATEWAY_NAME_LABEL}={gateway.meta.name} (meshctl install --gateway) has a load balancer address",
        )
    else:
        programmed = _cond("Programmed", True, "Programmed", "served by meshctl's gateway proxies")
    status = ObjectStatus(
        key=key,
        observed_generation=gateway.meta.generation,
        origin=origin,
        conditions=(accepted, programmed),
        gateway=GatewayStatusDetail(listeners=tuple(listener_statuses), addresses=addresses),
    )
    if accepted.status is not ConditionStatus.TRUE:
        return None, status
    proxy = GatewayProxyIR(
        gateway=key, ports=tuple(ports), clusters=tuple(sorted(used)), secrets=tuple(sorted(secrets))
    )  # (every cluster its routes send to: those of listeners not served are never placed)
    return proxy, status


def _balancers(model: Model) -> dict[tuple[str, str], list[str]]:
    """(namespace, Gateway name) -> the load balancer addresses of the Services labelled as that Gateway's
    (``meshctl install --gateway``'s NLB), in Service name order."""
    out: dict[tuple[str, str], list[str]] = {}
    for key in sorted(k for k, s in model.services.items() if s.load_balancer):
        service = model.services[key]
        if (name := service.meta.labels.get(GATEWAY_NAME_LABEL)) is not None:
            out.setdefault((key.namespace, name), []).extend(service.load_balancer)
    return out


def _addresses(gateway: Gateway, balancers: Mapping[tuple[str, str], list[str]]) -> tuple[tuple[str, str], ...]:
    """Where the Gateway answers: its ``spec.addresses``, then its Services' load balancers, as (type, value)."""
    found = list(gateway.addresses)
    for a in balancers.get((gateway.meta.namespace, gateway.meta.name), ()):
        found.append(("IPAddress" if _is_ip(a) else "Hostname", a))
    return tuple(dict.fromkeys(found))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _host_order(hostname: str) -> tuple[int, int, str]:
    """Exact names first, then wildcards from the longest, "*" last (Envoy picks by domain, not order, but the
    listing reads best this way)."""
    if hostname == "*":
        return (2, 0, hostname)
    return (1 if hostname.startswith("*.") else 0, -len(hostname), hostname)


def with_gateway_parents(
    status: ObjectStatus | None, route: HTTPRoute, parents: tuple[ParentStatus, ...]
) -> ObjectStatus:
    """A route's status with its Gateway parents' entries after its Service parents' (``status``, if any); each
    condition type's worst over all of them is the route's own (what ``get status`` shows)."""
    every = (*(status.parents if status is not None else ()), *parents)
    worst = worst_conditions(every)
    types = {c.type for c in worst}
    extra = tuple(c for c in (status.conditions if status is not None else ()) if c.type not in types)
    return ObjectStatus(
        key=route.key,
        observed_generation=route.meta.generation,
        origin=route.meta.origin,
        conditions=(*worst, *extra),
        parents=every,
    )


def gateway_status_document(status: ObjectStatus) -> dict[str, Any]:
    """A Gateway's ``status`` as the API has it: ``addresses``, ``conditions`` and ``listeners`` (what the status
    writer writes and ``/api/v1/status`` shows)."""
    generation = status.observed_generation

    def conditions(items: tuple[Condition, ...]) -> list[dict[str, Any]]:
        return [
            {
                "type": c.type,
                "status": c.status.value,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": generation,
            }
            for c in items
        ]

    detail = status.gateway or GatewayStatusDetail()
    return {
        "addresses": [{"type": t, "value": v} for t, v in detail.addresses],
        "conditions": conditions(status.conditions),
        "listeners": [
            {
                "name": li.name,
                "supportedKinds": [{"group": g, "kind": k} for g, k in li.supported_kinds],
                "attachedRoutes": li.attached_routes,
                "conditions": conditions(li.conditions),
            }
            for li in detail.listeners
        ],
    }
