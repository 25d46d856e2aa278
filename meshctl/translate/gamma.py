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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshctl.model import Model, ObjectKey, Protocol, RetryPolicy, Service, VirtualNodeSpec
from meshctl.model.gateway import (
    BackendRef,
    GatewayRule,
    HTTPRoute,
    ParentRef,
    ReferenceGrant,
)
from meshctl.model.matches import HttpMatch
from meshctl.translate.endpoints import service_cluster_name
from meshctl.translate.ir import (
    INVALID_BACKEND,
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
    "GammaIR",
    "GammaKey",
    "MtlsIndex",
    "mtls_index",
    "parents_document",
    "service_cluster",
    "translate_gamma",
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


@dataclass(frozen=True, slots=True, kw_only=True)
class GammaIR:
    routes: Mapping[GammaKey, tuple[RouteIR, ...]] = field(default_factory=dict)  # in evaluation order
    clusters: Mapping[str, ClusterIR] = field(default_factory=dict)  # the Service ports the routes reach
    statuses: Mapping[ObjectKey, ObjectStatus] = field(default_factory=dict)
    accepted: Mapping[ObjectKey, HTTPRoute] = field(default_factory=dict)
    routed_services: frozenset[ObjectKey] = frozenset()  # the Services with any route (GammaKey.service)

    def routes_for(self, service: ObjectKey, port: int, caller_namespace: str) -> tuple[RouteIR, ...]:
        """The routes a caller in ``caller_namespace`` gets for calls to ``service`` on ``port``: its namespace's
        consumer routes when there are any, else the producer routes. Empty: no Gateway API route applies."""
        for consumer in (caller_namespace, ""):
            if consumer == service.namespace and consumer:
                continue  # a route in the Service's own namespace is a producer route
            # (a port's routes include the whole Service's: translate_gamma merged them in precedence order)
            found = self.routes.get(GammaKey(service, port, consumer)) or self.routes.get(
                GammaKey(service, 0, consumer)
            )
            if found:
                return found
        return ()


_GOOD = Condition(type="Accepted", status=ConditionStatus.TRUE, reason="Accepted", message="accepted")
_RESOLVED = Condition(type="ResolvedRefs", status=ConditionStatus.TRUE, reason="ResolvedRefs", message="resolved")


def translate_gamma(
    model: Model,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    last_accepted: Mapping[ObjectKey, HTTPRoute] | None = None,
) -> GammaIR:
    """Every HTTPRoute/GRPCRoute with a Service parent -> routes per ``GammaKey`` and a status per route."""
    if not model.http_routes:
        return GammaIR()
    clusters: dict[str, ClusterIR] = {}
    backends = _Backends(model, tuple(model.reference_grants.values()), mtls_index(nodes), clusters)
    placed: list[tuple[GammaKey, tuple[object, ...], RouteIR]] = []
    statuses: dict[ObjectKey, ObjectStatus] = {}
    accepted: dict[ObjectKey, HTTPRoute] = {}
    for key in sorted(model.http_routes):
        route = model.http_routes[key]
        served = route if route.spec is not None else (last_accepted or {}).get(key)
        if served is not None and served.spec is None:
            served = None
        mesh_parents = _service_parents(route) or _service_parents(served)
        if not mesh_parents:
            continue  # a Gateway's route: the edge gateway's business, not the mesh's
        parent_statuses: list[ParentStatus] = []
        for parent in mesh_parents:
            service = model.services.get(ObjectKey("Service", parent.namespace, parent.name))
            accepted_cond, resolved_cond = _GOOD, _RESOLVED
            if route.spec is None:
                message = "; ".join(str(e) for e in route.errors)
                if served is not None:
                    message += " (its last accepted version is still served)"
                accepted_cond = _false("Accepted", "UnsupportedValue", message)
            elif service is None:
                accepted_cond = _false(
                    "Accepted", "NoMatchingParent", f"Service {parent.namespace}/{parent.name} not found"
                )
            elif parent.port is not None and all(p.port != parent.port for p in service.ports):
                accepted_cond = _false(
                    "Accepted", "NoMatchingParent", f"Service {parent.name} has no port {parent.port}"
                )
            if served is not None and served.spec is not None and service is not None:
                problems = _place(served, parent, backends, placed)
                if problems:
                    reason, message = problems[0]
                    resolved_cond = _false("ResolvedRefs", reason, "; ".join(m for _, m in problems))
                if accepted_cond.status is ConditionStatus.TRUE or route.spec is None:
                    accepted[key] = served
            conditions = tuple(_at(route.meta.origin, c) for c in (accepted_cond, resolved_cond))
            parent_statuses.append(ParentStatus(parent=parent, conditions=conditions))
        statuses[key] = ObjectStatus(
            key=key,
            observed_generation=route.meta.generation,
            origin=route.meta.origin,
            conditions=_worst(parent_statuses),
            parents=tuple(parent_statuses),
        )
    grouped: dict[GammaKey, list[tuple[tuple[object, ...], RouteIR]]] = {}
    for gk, order, ir in placed:
        grouped.setdefault(gk, []).append((order, ir))
    for gk, items in grouped.items():
        if gk.port:  # a port's routes and the whole Service's compete in one order
            items.extend(grouped.get(GammaKey(gk.service, 0, gk.consumer_namespace), ()))
    routes = {gk: tuple(ir for _, ir in sorted(items, key=lambda t: t[0])) for gk, items in grouped.items()}
    return GammaIR(
        routes=routes,
        clusters=clusters,
        statuses=statuses,
        accepted=accepted,
        routed_services=frozenset(k.service for k in routes),
    )


def _service_parents(route: HTTPRoute | None) -> tuple[ParentRef, ...]:
    if route is None:
        return ()
    parents = route.spec.parents if route.spec is not None else route.parents_if_invalid
    return tuple(p for p in parents if p.is_service)


def _at(origin: str, c: Condition) -> Condition:
    """A problem's message says where the route came from (a manifest file and line), as other objects' do."""
    if c.status is ConditionStatus.TRUE or not origin:
        return c
    return Condition(type=c.type, status=c.status, reason=c.reason, message=f"{origin}: {c.message}")


def _false(type_: str, reason: str, message: str) -> Condition:
    return Condition(type=type_, status=ConditionStatus.FALSE, reason=reason, message=message)


def _worst(parents: list[ParentStatus]) -> tuple[Condition, ...]:
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
    backends: _Backends,
    placed: list[tuple[GammaKey, tuple[object, ...], RouteIR]],
) -> list[tuple[str, str]]:
    """Appends the route's (rule, match) routes for ``parent``; returns the backendRef problems (reason, message)."""
    assert route.spec is not None
    ns = route.meta.namespace
    consumer = "" if ns == parent.namespace else ns
    gk = GammaKey(ObjectKey("Service", parent.namespace, parent.name), parent.port or 0, consumer)
    problems: list[tuple[str, str]] = []
    grpc = route.spec.grpc
    for i, rule in enumerate(route.spec.rules):
        weighted = tuple(
            WeightedClusterIR(
                cluster=backends.cluster(b, route, grpc, f"spec.rules[{i}].backendRefs[{j}]", problems),
                weight=b.weight,
                request_headers=b.request_headers,
                response_headers=b.response_headers,
            )
            for j, b in enumerate(rule.backends)
        )
        mirrors = tuple(
            MirrorIR(cluster=c, percent=m.percent)
            for k, m in enumerate(rule.mirrors)
            if (c := backends.cluster(m.backend, route, grpc, f"spec.rules[{i}].filters.requestMirror[{k}]", problems))
            != INVALID_BACKEND
        )
        for j, match in enumerate(rule.matches):
            ir = _route_ir(route, i, j, rule, match, weighted, mirrors)
            placed.append((gk, _precedence(match, route, i, j), ir))
    return problems


def _route_ir(
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
        clusters=() if direct is not None or rule.redirect is not None else live,
        retry_policy=retry,
        timeout_ms=rule.request_timeout_ms,
        request_headers=rule.request_headers,
        response_headers=rule.response_headers,
        redirect=rule.redirect,
        rewrite=rule.rewrite,
        mirrors=mirrors,
        direct_status=direct,
    )


def _precedence(match: HttpMatch, route: HTTPRoute, i: int, j: int) -> tuple[object, ...]:
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
        i,
        j,
    )


@dataclass(frozen=True, slots=True)
class _Backends:
    """Resolves backendRefs to Service-port clusters for one translation, adding each cluster once to
    ``clusters``."""

    model: Model
    grants: tuple[ReferenceGrant, ...]
    index: MtlsIndex
    clusters: dict[str, ClusterIR]

    def cluster(
        self, backend: BackendRef, route: HTTPRoute, grpc: bool, path: str, problems: list[tuple[str, str]]
    ) -> str:
        """The backend's cluster, or INVALID_BACKEND with the problem appended to ``problems``."""
        ns = route.meta.namespace
        if not backend.is_service:
            problems.append(("InvalidKind", f"{path}: {backend.group or 'core'}/{backend.kind} is not a Service"))
            return INVALID_BACKEND
        # A consumer route may send to the Service it is attached to (GAMMA: no grant needed to call it as it is).
        own_parent = any(p.namespace == backend.namespace and p.name == backend.name for p in _service_parents(route))
        if (
            backend.namespace != ns
            and not own_parent
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
        name = service_cluster_name(backend.namespace, backend.name, backend.port)
        if name not in self.clusters:
            self.clusters[name] = service_cluster(service, backend.port, self.index, grpc=grpc)
        return name


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
    return all(selector.get(k, v) == v for k, v in service.selector.items())


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
        out.append({"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": conditions})
    return out
