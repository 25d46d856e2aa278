"""Gateway API routes attached to Services (GAMMA) -> the same ``RouteIR`` a meshctl Route becomes. Pure.

Each (rule, match) pair is one Envoy route. For one parent the routes of all its HTTPRoutes are ordered as the
Gateway API says: an exact path first, then a regular expression, then the longest prefix; then a method match,
then more header matches, then more query matches; ties go to the oldest route, then to namespace/name, then to
rule and match order.

A route in the Service's namespace is a *producer* route: it applies to every meshed caller. One in another
namespace is a *consumer* route: it applies only to callers in its own namespace, and for them it replaces the
producer routes of that Service port. A parentRef with a ``port`` applies to that Service port only.

Backends are Service ports (``service_cluster_name``). A backendRef that does not resolve (no such Service or
port, another kind, another namespace without a ReferenceGrant) keeps its weight and its requests get a 500, as the
spec asks; the route's ResolvedRefs condition says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meshctl.model import Model, ObjectKey, Protocol, RetryPolicy, Service, VirtualNodeSpec
from meshctl.model.gateway import (
    GATEWAY_CONTROLLER,
    BackendRef,
    GatewayRule,
    HTTPRoute,
    ParentRef,
    ReferenceGrant,
)
from meshctl.model.matches import HttpMatch
from meshctl.translate.endpoints import service_cluster_name, service_of_cluster
from meshctl.translate.ir import (
    INVALID_BACKEND,
    Blocked,
    ClusterIR,
    Condition,
    ConditionStatus,
    MirrorIR,
    ObjectStatus,
    ParentStatus,
    RouteIR,
    UpstreamTlsIR,
    WeightedClusterIR,
)

__all__ = [
    "CONTROLLER_NAME",
    "BackendResolver",
    "GammaChange",
    "GammaIR",
    "GammaKey",
    "MtlsIndex",
    "at_origin",
    "match_precedence",
    "mtls_index",
    "parents_document",
    "rule_route",
    "rule_targets",
    "service_cluster",
    "translate_gamma",
    "worst_conditions",
]

# status.parents[].controllerName: the controller that wrote the entry.
CONTROLLER_NAME = "mesh.meshctl.dev/controller"


@dataclass(frozen=True, slots=True)
class GammaKey:
    """Where a group of routes applies: a Service, one of its ports (0: every port) and, for consumer routes, the
    callers' namespace ("" for producer routes)."""

    service: ObjectKey
    port: int
    consumer_namespace: str


@dataclass(frozen=True, slots=True)
class _Placed:
    """One Envoy route of an HTTPRoute/GRPCRoute (``owner``), where it applies and its Gateway API precedence."""

    owner: ObjectKey
    where: GammaKey
    order: tuple[object, ...]
    ir: RouteIR


@dataclass(frozen=True, slots=True)
class _Share:
    """What one mesh route contributes: its status, the version served (None: none), its Envoy routes, and the
    Service-port clusters its backendRefs resolve to (True: as a GRPCRoute's backend)."""

    status: ObjectStatus
    accepted: HTTPRoute | None
    placed: tuple[_Placed, ...]
    backends: Mapping[str, bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class GammaIR:
    routes: Mapping[GammaKey, tuple[RouteIR, ...]] = field(default_factory=dict)  # in evaluation order
    clusters: Mapping[str, ClusterIR] = field(default_factory=dict)  # the Service ports the routes reach
    routed_services: frozenset[ObjectKey] = frozenset()  # the Services with any route (GammaKey.service)
    # What lets one route change be translated alone (``with_changes``):
    shares: Mapping[ObjectKey, _Share] = field(default_factory=dict)
    placed: Mapping[GammaKey, tuple[_Placed, ...]] = field(default_factory=dict)  # each key's own, in order
    cluster_users: Mapping[str, Mapping[ObjectKey, bool]] = field(default_factory=dict)

    @property
    def statuses(self) -> dict[ObjectKey, ObjectStatus]:
        """Each mesh route's status (a route whose parents are all Gateways has none)."""
        return {k: share.status for k, share in self.shares.items()}

    @property
    def accepted(self) -> dict[ObjectKey, HTTPRoute]:
        """The version of each mesh route that is served."""
        return {k: share.accepted for k, share in self.shares.items() if share.accepted is not None}

    def routes_for(self, service: ObjectKey, port: int, caller_namespace: str) -> tuple[RouteIR, ...]:
        """The routes a caller in ``caller_namespace`` gets for calls to ``service`` on ``port``: its namespace's
        consumer routes when there are any, else the producer routes. Empty: no Gateway API route applies."""
        for consumer in (caller_namespace, ""):
            if consumer == service.namespace and consumer:
                continue  # a route in the Service's own namespace is a producer route
            # (a port's routes include the whole Service's: with_changes merged them in precedence order)
            found = self.routes.get(GammaKey(service, port, consumer)) or self.routes.get(
                GammaKey(service, 0, consumer)
            )
            if found:
                return found
        return ()

    def with_changes(
        self,
        model: Model,
        nodes: Mapping[ObjectKey, VirtualNodeSpec],
        changed: Iterable[ObjectKey],
        last_accepted: Mapping[ObjectKey, object],
        blocked: Mapping[ObjectKey, Blocked] | None = None,
    ) -> GammaChange:
        """This translation after the HTTPRoutes/GRPCRoutes ``changed`` changed (added, edited or gone), everything
        else in ``model`` and ``nodes`` being as it was translated with: those routes translated again, the groups
        and clusters they touch redone. From an empty GammaIR with every route changed: the full translation.
        ``blocked``: route versions Envoy cannot take; their last accepted version is served instead."""
        keys = sorted(changed)
        changed_set = set(keys)
        shares, users = dict(self.shares), dict(self.cluster_users)
        backends = BackendResolver(model, tuple(model.reference_grants.values()))
        fresh: dict[GammaKey, list[_Placed]] = {}
        where: set[GammaKey] = set()
        names: set[str] = set()
        for key in keys:
            old = shares.pop(key, None)
            if old is not None:
                where.update(p.where for p in old.placed)
                for name in old.backends:
                    names.add(name)
                    rest = {k: g for k, g in users[name].items() if k != key}
                    if rest:
                        users[name] = rest
                    else:
                        del users[name]
            route = model.http_routes.get(key)
            previous = last_accepted.get(key)
            previous = previous if isinstance(previous, HTTPRoute) else None
            share = _translate_route(route, previous, model, backends, (blocked or {}).get(key))
            if share is None:
                continue
            shares[key] = share
            for p in share.placed:
                where.add(p.where)
                fresh.setdefault(p.where, []).append(p)
            for name, grpc in share.backends.items():
                names.add(name)
                users[name] = {**users.get(name, {}), key: grpc}
        placed = dict(self.placed)
        for gk in where:
            items = [p for p in placed.get(gk, ()) if p.owner not in changed_set] + fresh.get(gk, [])
            if items:
                placed[gk] = tuple(sorted(items, key=lambda p: p.order))
            else:
                placed.pop(gk, None)
        routes = dict(self.routes)
        keys_before = len(routes)
        for gk in _merged_keys(where, placed, model):
            own = placed.get(gk, ())
            if own and gk.port:  # a port's routes and the whole Service's compete in one order
                whole = placed.get(GammaKey(gk.service, 0, gk.consumer_namespace), ())
                own = tuple(sorted(own + whole, key=lambda p: p.order)) if whole else own
            if own:
                routes[gk] = tuple(p.ir for p in own)
            else:
                routes.pop(gk, None)
        clusters = dict(self.clusters)
        index: list[MtlsIndex] = []  # made once, when a cluster is (the fast path rarely needs it)
        for name in names:
            wanted = users.get(name)
            if not wanted:
                clusters.pop(name, None)
                continue
            grpc = any(wanted.values())  # a GRPCRoute's backend speaks gRPC to every route that reaches it
            was = self.cluster_users.get(name)
            if name in clusters and was is not None and any(was.values()) == grpc:
                continue
            if not index:
                index.append(mtls_index(nodes))
            found = service_of_cluster(name)
            assert found is not None
            clusters[name] = service_cluster(model.services[found[0]], found[1], index[0], grpc=grpc)
        gamma = GammaIR(
            routes=routes,
            clusters=clusters,
            routed_services=(
                self.routed_services
                if len(routes) == keys_before and all(gk in routes for gk in where)
                else frozenset(k.service for k in routes)  # (a group came or went)
            ),
            shares=shares,
            placed=placed,
            cluster_users=users,
        )
        touched = frozenset(gk.service for gk in where)
        return GammaChange(gamma=gamma, services=touched, clusters=frozenset(names))


@dataclass(frozen=True, slots=True)
class GammaChange:
    """``GammaIR.with_changes``: the new translation, the Services whose routes may differ and the Service-port
    clusters that may have been added, changed or dropped."""

    gamma: GammaIR
    services: frozenset[ObjectKey]
    clusters: frozenset[str]


def _merged_keys(where: set[GammaKey], placed: Mapping[GammaKey, object], model: Model) -> set[GammaKey]:
    """The keys whose merged routes may differ: those touched, and each port key of a Service whose whole-Service
    (port 0) routes were touched."""
    out = set(where)
    for gk in where:
        if gk.port == 0 and (service := model.services.get(gk.service)) is not None:
            ports = (GammaKey(gk.service, p.port, gk.consumer_namespace) for p in service.ports)
            out.update(k for k in ports if k in placed)
    return out


_GOOD = Condition(type="Accepted", status=ConditionStatus.TRUE, reason="Accepted", message="accepted")
_RESOLVED = Condition(type="ResolvedRefs", status=ConditionStatus.TRUE, reason="ResolvedRefs", message="resolved")


def translate_gamma(
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    last_accepted: Mapping[ObjectKey, object] | None = None,
    blocked: Mapping[ObjectKey, Blocked] | None = None,
) -> GammaIR:
    """Every HTTPRoute/GRPCRoute with a Service parent -> routes per ``GammaKey`` and a status per route."""
    if not model.http_routes:
        return GammaIR()
    return GammaIR().with_changes(model, nodes, model.http_routes.keys(), last_accepted or {}, blocked).gamma


def _translate_route(
    route: HTTPRoute | None,
    previous: HTTPRoute | None,
    model: Model,
    backends: BackendResolver,
    block: Blocked | None = None,
) -> _Share | None:
    """One route's share; None when it is gone or is not the mesh's (no Service parent: a Gateway's route)."""
    if route is None:
        return None
    if previous is not None and block is not None and previous.spec == block.spec:
        previous = None  # (the version Envoy rejected is never served again)
    is_blocked = block is not None and route.spec is not None and route.spec == block.spec
    served = route if route.spec is not None and not is_blocked else previous
    if served is not None and served.spec is None:
        served = None
    mesh_parents = _service_parents(route) or _service_parents(served)
    if not mesh_parents:
        return None
    parent_statuses: list[ParentStatus] = []
    placed: list[_Placed] = []
    reached: dict[str, bool] = {}
    accepted = None
    for parent in mesh_parents:
        service = model.services.get(ObjectKey("Service", parent.namespace, parent.name))
        accepted_cond, resolved_cond = _GOOD, _RESOLVED
        if route.spec is None or is_blocked:
            # Invalid as written, or valid but Envoy cannot take it (the reason says which: InvalidForEnvoy,
            # RejectedByEnvoy, as a Route's Programmed condition does).
            message = block.message if is_blocked and block is not None else "; ".join(str(e) for e in route.errors)
            if served is not None:
                message += " (its last accepted version is still served)"
            reason = block.reason if is_blocked and block is not None else "UnsupportedValue"
            accepted_cond = _false("Accepted", reason, message)
        elif service is None:
            accepted_cond = _false(
                "Accepted", "NoMatchingParent", f"Service {parent.namespace}/{parent.name} not found"
            )
        elif parent.port is not None and all(p.port != parent.port for p in service.ports):
            accepted_cond = _false("Accepted", "NoMatchingParent", f"Service {parent.name} has no port {parent.port}")
        if served is not None and served.spec is not None and service is not None:
            problems = _place(served, parent, backends, placed, reached)
            if problems:
                reason, _ = problems[0]
                resolved_cond = _false("ResolvedRefs", reason, "; ".join(m for _, m in problems))
            if accepted_cond.status is ConditionStatus.TRUE or served is not route:
                accepted = served
        conditions = tuple(at_origin(route.meta.origin, c) for c in (accepted_cond, resolved_cond))
        parent_statuses.append(ParentStatus(parent=parent, conditions=conditions))
    status = ObjectStatus(
        key=route.key,
        observed_generation=route.meta.generation,
        origin=route.meta.origin,
        conditions=worst_conditions(parent_statuses),
        parents=tuple(parent_statuses),
    )
    return _Share(status=status, accepted=accepted, placed=tuple(placed), backends=reached)


def _service_parents(route: HTTPRoute | None) -> tuple[ParentRef, ...]:
    if route is None:
        return ()
    parents = route.spec.parents if route.spec is not None else route.parents_if_invalid
    return tuple(p for p in parents if p.is_service)


def at_origin(origin: str, c: Condition) -> Condition:
    """A problem's message says where the route came from (a manifest file and line), as other objects' do."""
    if c.status is ConditionStatus.TRUE or not origin:
        return c
    return Condition(type=c.type, status=c.status, reason=c.reason, message=f"{origin}: {c.message}")


def _false(type_: str, reason: str, message: str) -> Condition:
    return Condition(type=type_, status=ConditionStatus.FALSE, reason=reason, message=message)


def worst_conditions(parents: Sequence[ParentStatus]) -> tuple[Condition, ...]:
    """Per condition type, the first False over the parents, else the True one: what ``get status`` shows."""
    if not parents:
        return (_false("Accepted", "NoMatchingParent", "no parentRef is a Service of this mesh"),)
    out: dict[str, Condition] = {}
    for p in parents:
        for c in p.conditions:
            if c.type not in out or (
                out[c.type].status is ConditionStatus.TRUE and c.status is not ConditionStatus.TRUE
            ):
                out[c.type] = c
    return tuple(out.values())


def _place(
    route: HTTPRoute,
    parent: ParentRef,
    backends: BackendResolver,
    placed: list[_Placed],
    reached: dict[str, bool],
) -> list[tuple[str, str]]:
    """Appends the route's (rule, match) routes for ``parent`` and the clusters they reach; returns the backendRef
    problems (reason, message)."""
    assert route.spec is not None
    ns = route.meta.namespace
    consumer = "" if ns == parent.namespace else ns
    gk = GammaKey(ObjectKey("Service", parent.namespace, parent.name), parent.port or 0, consumer)
    problems: list[tuple[str, str]] = []
    for i, rule in enumerate(route.spec.rules):
        weighted, mirrors = rule_targets(route, i, rule, backends, problems, reached)
        for j, match in enumerate(rule.matches):
            ir = rule_route(route, i, j, rule, match, weighted, mirrors)
            placed.append(_Placed(route.key, gk, match_precedence(match, route, i, j), ir))
    return problems


def rule_targets(
    route: HTTPRoute,
    i: int,
    rule: GatewayRule,
    backends: BackendResolver,
    problems: list[tuple[str, str]],
    reached: dict[str, bool],
) -> tuple[tuple[WeightedClusterIR, ...], tuple[MirrorIR, ...]]:
    """Rule ``i``'s weighted backends (one that does not resolve: INVALID_BACKEND, its problem appended to
    ``problems``) and its mirrors (those that resolve); every cluster resolved is recorded in ``reached`` (True: as
    a GRPCRoute's backend)."""
    assert route.spec is not None
    grpc = route.spec.grpc
    if rule.extensions:
        # An ExtensionRef filter must not be skipped (the spec): the mesh serves none, so the rule answers 500.
        ref = rule.extensions[0]
        problems.append(
            (
                "InvalidKind",
                f"spec.rules[{i}].filters: ExtensionRef {ref.group}/{ref.kind} {ref.name} is not served here",
            )
        )
        return (WeightedClusterIR(cluster=INVALID_BACKEND, weight=1),), ()

    def cluster(backend: BackendRef, path: str) -> str:
        name = backends.cluster(backend, route, path, problems)
        if name != INVALID_BACKEND:
            reached[name] = grpc
        return name

    weighted = tuple(
        WeightedClusterIR(
            cluster=cluster(b, f"spec.rules[{i}].backendRefs[{j}]"),
            weight=b.weight,
            request_headers=b.request_headers,
            response_headers=b.response_headers,
        )
        for j, b in enumerate(rule.backends)
    )
    mirrors = tuple(
        MirrorIR(cluster=c, percent=m.percent)
        for k, m in enumerate(rule.mirrors)
        if (c := cluster(m.backend, f"spec.rules[{i}].filters.requestMirror[{k}]")) != INVALID_BACKEND
    )
    return weighted, mirrors


def rule_route(
    route: HTTPRoute,
    i: int,
    j: int,
    rule: GatewayRule,
    match: HttpMatch,
    weighted: tuple[WeightedClusterIR, ...],
    mirrors: tuple[MirrorIR, ...],
) -> RouteIR:
    live = tuple(w for w in weighted if w.weight > 0)
    direct = None
    if rule.redirect is None and (not live or all(w.cluster == INVALID_BACKEND for w in live)):
        direct = 500  # no backend to send to: the spec's answer
    retry = None
    if rule.retry is not None or rule.backend_timeout_ms is not None:
        r = rule.retry
        retry = RetryPolicy(
            tcp_retry_events=("connection-error",) if r is not None and r.attempts else (),
            max_retries=r.attempts if r is not None else 0,
            status_codes=r.codes if r is not None else (),
            per_retry_timeout_ms=rule.backend_timeout_ms,
            backoff_base_ms=r.backoff_ms if r is not None else None,
        )
    return RouteIR(
        name=f"{route.kind}/{route.meta.namespace}/{route.meta.name}/rule-{i}/match-{j}",
        match=match,
        # Weight-0 backends stay (with no share): a weight shift is then an RDS change alone, the clusters being
        # in place already, and Envoy needs no cluster warmed before the new weights apply.
        clusters=()
        if direct is not None or rule.redirect is not None
        else tuple(w for w in weighted if w.weight > 0 or w.cluster != INVALID_BACKEND),
        retry_policy=retry,
        timeout_ms=rule.request_timeout_ms,
        request_headers=rule.request_headers,
        response_headers=rule.response_headers,
        redirect=rule.redirect,
        rewrite=rule.rewrite,
        mirrors=mirrors,
        direct_status=direct,
    )


def match_precedence(match: HttpMatch, route: HTTPRoute, i: int, j: int) -> tuple[object, ...]:
    if match.path_exact is not None:
        path: tuple[int, int] = (0, -len(match.path_exact))
    elif match.path_regex is not None:
        path = (1, -len(match.path_regex))
    else:
        path = (2, -len(match.segment_prefix or match.prefix or ""))
    return (
        *path,
        match.method is None,
        -len(match.headers),
        -len(match.query_parameters),
        route.created or "~",  # (routes without a timestamp, from files, after those with one)
        route.meta.namespace,
        route.meta.name,
        route.kind,  # (an HTTPRoute and a GRPCRoute may share a name: a total order all the same)
        i,
        j,
    )


@dataclass(frozen=True, slots=True)
class BackendResolver:
    """Resolves backendRefs to the names of Service-port clusters."""

    model: Model
    grants: tuple[ReferenceGrant, ...]

    def cluster(self, backend: BackendRef, route: HTTPRoute, path: str, problems: list[tuple[str, str]]) -> str:
        """The backend's cluster name, or INVALID_BACKEND with the problem appended to ``problems``."""
        ns = route.meta.namespace
        if not backend.is_service:
            problems.append(("InvalidKind", f"{path}: {backend.group or 'core'}/{backend.kind} is not a Service"))
            return INVALID_BACKEND
        # A consumer route may send to the Service it is attached to (GAMMA: no grant needed to call it as it is).
        if (
            backend.namespace != ns
            and not any(p.namespace == backend.namespace and p.name == backend.name for p in _service_parents(route))
            and not any(
                g.meta.namespace == backend.namespace and g.permits(route.kind, ns, "Service", backend.name)
                for g in self.grants
            )
        ):
            problems.append(
                (
                    "RefNotPermitted",
                    f"{path}: no ReferenceGrant in {backend.namespace} lets {route.kind}s of {ns} refer "
                    f"to Service {backend.name}",
                )
            )
            return INVALID_BACKEND
        service = self.model.services.get(ObjectKey("Service", backend.namespace, backend.name))
        if service is None:
            problems.append(("BackendNotFound", f"{path}: Service {backend.namespace}/{backend.name} not found"))
            return INVALID_BACKEND
        assert backend.port is not None  # (the parser requires it for a Service)
        if all(p.port != backend.port for p in service.ports):
            problems.append(("BackendNotFound", f"{path}: Service {backend.name} has no port {backend.port}"))
            return INVALID_BACKEND
        return service_cluster_name(backend.namespace, backend.name, backend.port)


_H2C = ("kubernetes.io/h2c", "h2c", "http2")


MtlsIndex = Mapping[tuple[str, str, str], tuple[VirtualNodeSpec, ...]]


def mtls_index(nodes: Mapping[ObjectKey, VirtualNodeSpec]) -> MtlsIndex:
    """(namespace, label, value) -> the VirtualNodes with a listener that takes mTLS whose selector has that label:
    a Service-port cluster looks only at nodes sharing a selector label with its Service (one pass per build)."""
    out: dict[tuple[str, str, str], list[VirtualNodeSpec]] = {}
    for key, spec in nodes.items():
        if any(li.accepts_mtls for li in spec.listeners):
            for label, value in spec.pod_selector.items():
                out.setdefault((key.namespace, label, value), []).append(spec)
    return {k: tuple(v) for k, v in out.items()}


def service_cluster(service: Service, port: int, index: MtlsIndex, *, grpc: bool = False) -> ClusterIR:
    """The cluster of a Service port. Its protocol is the port's appProtocol (h2c, grpc) or, for a GRPCRoute, gRPC;
    callers originate mTLS to it when a VirtualNode that may select its pods (its selector shares a label with the
    Service's and agrees on every label both name) takes mTLS on the target port."""
    sp = next(p for p in service.ports if p.port == port)
    app = (sp.app_protocol or "").lower()
    protocol = Protocol.GRPC if grpc or app == "grpc" else Protocol.HTTP2 if app in _H2C else Protocol.HTTP
    target = sp.target_port if isinstance(sp.target_port, int) else sp.port if sp.target_port is None else None
    tls = None
    ns = service.meta.namespace
    candidates = (spec for item in service.selector.items() for spec in index.get((ns, *item), ()))
    for spec in candidates:
        if _overlap(spec, service) and any(
            li.accepts_mtls and (target is None or li.port == target) for li in spec.listeners
        ):
            tls = UpstreamTlsIR(namespace=ns)
            break
    return ClusterIR(
        name=service_cluster_name(service.meta.namespace, service.meta.name, port), protocol=protocol, tls=tls
    )


def _overlap(spec: VirtualNodeSpec, service: Service) -> bool:
    """Some pod may carry both selectors: they agree on every label they both name."""
    selector = spec.pod_selector
    return bool(selector) and all(selector.get(k, v) == v for k, v in service.selector.items())


def parents_document(status: ObjectStatus) -> list[dict[str, Any]]:
    """A Gateway API route's ``status.parents``, as the API has it (what the status writer writes)."""
    out = []
    for p in status.parents:
        ref: dict[str, Any] = {"group": p.parent.group, "kind": p.parent.kind, "namespace": p.parent.namespace}
        ref["name"] = p.parent.name
        if p.parent.port is not None:
            ref["port"] = p.parent.port
        if p.parent.section_name is not None:
            ref["sectionName"] = p.parent.section_name
        conditions = [
            {
                "type": c.type,
                "status": c.status.value,
                "reason": c.reason,
                "message": c.message,
                "observedGeneration": status.observed_generation,
            }
            for c in p.conditions
        ]
        # A Gateway parent's entry is written as its GatewayClass's controller (the edge gateways'), a Service's as
        # the mesh's.
        controller = GATEWAY_CONTROLLER if p.parent.kind == "Gateway" else CONTROLLER_NAME
        out.append({"parentRef": ref, "controllerName": controller, "conditions": conditions})
    return out
