"""Gateway API objects, ``gateway.networking.k8s.io/v1``: HTTPRoute/GRPCRoute and ReferenceGrant (the mesh, GAMMA, and
edge gateways), Gateway and GatewayClass (edge gateways served by Envoys meshctl configures).

An HTTPRoute whose parent is a Service routes the calls meshed callers make to that Service (a *producer* route
when it lives in the Service's namespace, a *consumer* route, for its own namespace's callers only, when it lives
elsewhere). Its rules become the same ``RouteIR`` a meshctl Route does; backends are Services (their
EndpointSlices), not VirtualNodes. Matches reuse the mesh model's ``HttpMatch``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshctl.model.ingress import Lifecycle
from meshctl.model.matches import HttpMatch
from meshctl.model.meta import FieldError, LabelSelector, Meta, ObjectKey

__all__ = [
    "GATEWAY_CONTROLLER",
    "GATEWAY_GROUP",
    "GATEWAY_NAME_LABEL",
    "GATEWAY_VERSION",
    "AllowedRoutes",
    "BackendRef",
    "CertificateRef",
    "ExtensionRef",
    "Gateway",
    "GatewayClass",
    "GatewayListener",
    "GatewayRouteSpec",
    "GatewayRule",
    "HTTPRoute",
    "HeaderModifier",
    "L4Route",
    "Mirror",
    "ParametersRef",
    "ParentRef",
    "Redirect",
    "ReferenceGrant",
    "Rewrite",
    "RouteRetry",
]

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_VERSION = f"{GATEWAY_GROUP}/v1"
# GatewayClass ``spec.controllerName`` of the classes whose Gateways meshctl serves with its own Envoys.
GATEWAY_CONTROLLER = "meshctl.dev/gateway"
# The label naming the Gateway (of its namespace) an object serves: on a gateway's pods (injection gives them the
# gateway Envoy; a pod-bound xDS token may stream as that Gateway only) and on its Service (whose load balancer's
# address is the Gateway's). ``meshctl install --gateway`` sets it.
GATEWAY_NAME_LABEL = "meshctl.dev/gateway"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentRef:
    """``spec.parentRefs[]``: in the mesh, a Service (group "", kind Service), optionally one of its ports."""

    group: str
    kind: str
    namespace: str  # defaulted to the route's
    name: str
    port: int | None = None
    section_name: str | None = None

    @property
    def is_service(self) -> bool:
        return self.group in ("", "core") and self.kind == "Service"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderModifier:
    """RequestHeaderModifier / ResponseHeaderModifier: ``set`` replaces, ``add`` appends, ``remove`` drops."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    """RequestRedirect: what the Location is made of; unset parts keep the request's."""

    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix_path: str | None = None  # ReplacePrefixMatch: replaces the rule's PathPrefix
    status_code: int = 302


@dataclass(frozen=True, slots=True, kw_only=True)
class Rewrite:
    """URLRewrite: the Host and/or path the backend sees."""

    hostname: str | None = None
    full_path: str | None = None
    prefix_path: str | None = None  # ReplacePrefixMatch


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendRef:
    """A backendRef (or a mirror's): a Service port. ``kind``/``group`` other than a core Service are kept so the
    status can say InvalidKind."""

    group: str
    kind: str
    namespace: str  # defaulted to the route's
    name: str
    port: int | None
    weight: int = 1
    request_headers: HeaderModifier | None = None  # backendRefs[].filters
    response_headers: HeaderModifier | None = None

    @property
    def is_service(self) -> bool:
        return self.group in ("", "core") and self.kind == "Service"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    backend: BackendRef
    percent: float | None = None  # None: every request


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRetry:
    """GEP-1731 ``retry``: retried on these status codes (and connection errors), ``attempts`` times."""

    attempts: int
    codes: tuple[int, ...] = ()
    backoff_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtensionRef:
    """A rule's ``ExtensionRef`` filter: an object of the route's namespace (an ALB Gateway's
    ListenerRuleConfiguration; the mesh serves none, and answers such a rule with a 500)."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRule:
    name: str | None
    matches: tuple[HttpMatch, ...]
    backends: tuple[BackendRef, ...] = ()
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: tuple[Mirror, ...] = ()
    request_timeout_ms: int | None = None  # timeouts.request (0: none)
    backend_timeout_ms: int | None = None  # timeouts.backendRequest: each try
    retry: RouteRetry | None = None
    extensions: tuple[ExtensionRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRouteSpec:
    parents: tuple[ParentRef, ...]
    hostnames: tuple[str, ...] = ()  # ignored for Service parents (GAMMA), kept for Gateways
    rules: tuple[GatewayRule, ...] = ()
    grpc: bool = False  # a GRPCRoute: its matches are gRPC service/method paths


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPRoute:
    """An HTTPRoute (or, with ``spec.grpc``, a GRPCRoute: ``kind`` says which)."""

    meta: Meta
    spec: GatewayRouteSpec | None
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    kind: str = "HTTPRoute"
    parents_if_invalid: tuple[ParentRef, ...] = ()  # the parentRefs of a route whose spec was rejected: its status
    created: str = ""  # metadata.creationTimestamp (RFC 3339 sorts as text): the older route's rules win ties

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.meta.namespace, self.meta.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceGrant:
    """Lets routes of the ``from`` namespaces/kinds refer to objects in this grant's namespace."""

    meta: Meta
    from_: tuple[tuple[str, str, str], ...]  # (group, kind, namespace)
    to: tuple[tuple[str, str, str | None], ...]  # (group, kind, name or None for any)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("ReferenceGrant", self.meta.namespace, self.meta.name)

    def permits(self, route_kind: str, route_namespace: str, kind: str, name: str) -> bool:
        from_ok = any(
            g == "gateway.networking.k8s.io" and k == route_kind and ns == route_namespace for g, k, ns in self.from_
        )
        return from_ok and any(g in ("", "core") and k == kind and n in (None, name) for g, k, n in self.to)

    def permits_gateway(self, gateway_namespace: str, kind: str, name: str) -> bool:
        """Lets Gateways of ``gateway_namespace`` refer to this grant's ``kind`` ``name`` (a certificate Secret)."""
        from_ok = any(g == GATEWAY_GROUP and k == "Gateway" and ns == gateway_namespace for g, k, ns in self.from_)
        return from_ok and any(g in ("", "core") and k == kind and n in (None, name) for g, k, n in self.to)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayClass:
    """Cluster-scoped; meshctl serves the Gateways of classes whose ``controllerName`` is GATEWAY_CONTROLLER with its
    own Envoys, and those of its ALB and NLB controllers (meshctl/ingress/gateways.py) with AWS load balancers."""

    meta: Meta
    controller_name: str
    parameters: ParametersRef | None = None  # spec.parametersRef (namespaced kinds name their namespace)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("GatewayClass", "", self.meta.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParametersRef:
    """A GatewayClass's ``spec.parametersRef`` or a Gateway's ``spec.infrastructure.parametersRef``."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRef:
    """``tls.certificateRefs[]``: a Secret of type kubernetes.io/tls (other kinds are kept so the status can say
    InvalidCertificateRef)."""

    group: str
    kind: str
    namespace: str  # defaulted to the Gateway's
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AllowedRoutes:
    """``allowedRoutes``: from which namespaces (Same, All, Selector with ``selector``) and which route kinds (empty:
    the listener protocol's defaults)."""

    namespaces_from: str = "Same"
    selector: LabelSelector | None = None  # with namespaces_from Selector: the Namespaces' labels
    kinds: tuple[tuple[str, str], ...] = ()  # (group, kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayListener:
    name: str
    port: int
    protocol: str  # HTTP | HTTPS | TLS | TCP | UDP (what the API allows; meshctl serves HTTP and HTTPS)
    hostname: str | None = None
    tls_mode: str | None = None  # Terminate | Passthrough
    certificates: tuple[CertificateRef, ...] = ()
    allowed: AllowedRoutes = AllowedRoutes()


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    meta: Meta
    class_name: str
    listeners: tuple[GatewayListener, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()  # spec.addresses: (type, value)
    parameters: ParametersRef | None = None  # spec.infrastructure.parametersRef
    errors: tuple[FieldError, ...] = ()
    warnings: tuple[FieldError, ...] = ()
    # Finalizers, deletion, annotations and status addresses: what the load balancer reconciler needs of Gateways
    # it builds AWS load balancers for.
    lifecycle: Lifecycle = field(default_factory=Lifecycle)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Gateway", self.meta.namespace, self.meta.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class L4Route:
    """A TCPRoute, UDPRoute or TLSRoute (``kind``): its parents, its backends (each rule's, in order) and, for a
    TLSRoute, the SNI hostnames. Served by NLB Gateways only."""

    meta: Meta
    kind: str
    parents: tuple[ParentRef, ...]
    backends: tuple[BackendRef, ...] = ()
    hostnames: tuple[str, ...] = ()
    rules: int = 1  # how many rules it has (an NLB listener forwards to one rule's backends)
    errors: tuple[FieldError, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.meta.namespace, self.meta.name)
