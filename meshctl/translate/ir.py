"""Intermediate representation between the mesh model and Envoy protos.

Plain frozen, hashable values, so the Envoy layer can memoize one built resource per distinct IR
value and a change touches only the resources whose IR changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import StrEnum
from operator import attrgetter
from typing import Any, NamedTuple

from meshctl.model import (
    ConnectionPool,
    HealthCheck,
    HttpMatch,
    Logging,
    ObjectKey,
    OutlierDetection,
    Protocol,
    RetryPolicy,
    RouteSpec,
    TlsMode,
    Tracing,
    VirtualNodeSpec,
)
from meshctl.model.authz import AuthzAction, AuthzDefault, PathMatch
from meshctl.model.gateway import GatewayRouteSpec, HeaderModifier, ParentRef, Redirect, Rewrite

# The cluster named by a backendRef that does not resolve: never defined, so Envoy answers its share of requests with
# the route's cluster_not_found_response_code (500, as the Gateway API asks).
INVALID_BACKEND = "meshctl|invalid-backend"

_COMPARED: dict[type, Callable[[Any], Any]] = {}  # per class: its compared fields as a tuple, in C


def _compared(cls: type) -> Callable[[Any], Any]:
    names = [f.name for f in fields(cls) if f.compare]
    get = attrgetter(*names)
    return get if len(names) > 1 else lambda obj: (get(obj),)


def _cached_hash(self: Any) -> int:
    """Frozen dataclasses recompute their hash (recursively) on every call; IR values are memo keys and
    are hashed once per node group per build, so the first result is kept."""
    cached: int | None = self._hash
    if cached is None:
        values = _COMPARED.get(type(self))
        if values is None:
            values = _COMPARED[type(self)] = _compared(type(self))
        cached = hash(values(self))
        object.__setattr__(self, "_hash", cached)
    return cached


__all__ = [
    "EGRESS_DENIED_CLUSTER",
    "EGRESS_VHOST",
    "IDENTITY_SECRET",
    "INVALID_BACKEND",
    "PASSTHROUGH_CLUSTER",
    "SDS_AGENT_CLUSTER",
    "TRUST_SECRET",
    "AuthzIR",
    "AuthzPolicyIR",
    "AuthzRuleIR",
    "Blocked",
    "CapturedInboundIR",
    "ClusterIR",
    "Condition",
    "ConditionStatus",
    "DownstreamTlsIR",
    "EndpointIR",
    "InboundListenerIR",
    "MirrorIR",
    "ObjectStatus",
    "OutboundListenerIR",
    "OutboundTcpListenerIR",
    "ParentStatus",
    "RouteIR",
    "SidecarIR",
    "SidecarParams",
    "TlsSourcesIR",
    "TracingIR",
    "UpstreamTlsIR",
    "VirtualHostIR",
    "WeightedClusterIR",
    "group_node",
]


# With capture: the cluster of connections whose destination is not in the mesh (Envoy keeps their destination).
PASSTHROUGH_CLUSTER = "passthrough"
EGRESS_DENIED_CLUSTER = "egress_denied"  # a blackhole: captured connections the egress filter refuses
# The catch-all virtual host of a captured proxy's routes: undeclared hosts, passed through or refused (egress filter).
# Named to sort after every Service's host ("namespace/name"), where the route patch path expects it.
EGRESS_VHOST = "~egress"
# The SDS secrets every proxy of a group is sent when it uses the mesh CA: its workload certificate and key, and
# the roots it trusts (the same two names in every group, so clusters and listeners stay shared between groups).
IDENTITY_SECRET = "meshctl-identity"
TRUST_SECRET = "meshctl-trust"
# The static cluster a bootstrap made with ``--sds-socket`` has: the node's SDS agent (SPIRE) on a Unix socket.
SDS_AGENT_CLUSTER = "meshctl-sds-agent"


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarParams:
    """What a proxy tells us about itself (node metadata); proxies with equal params share one snapshot."""

    virtual_node: ObjectKey | None  # None: a proxy not bound to any VirtualNode gets an empty config
    egress_port: int = 15001
    ingress_port: int = 15000
    bind_address: str = "0.0.0.0"
    # Traffic reaches the proxy through iptables (``meshctl capture``): listeners route by original destination.
    capture: bool = False
    service_account: str = "default"  # the workload identity's service account (node metadata)
    gateway: ObjectKey | None = None  # an edge gateway's proxy (node metadata ``meshctl.gateway``): its Gateway

    @property
    def group(self) -> str:
        if self.gateway is not None:
            return f"gateway:{self.gateway.namespace}/{self.gateway.name};bind={self.bind_address}"
        vn = f"{self.virtual_node.namespace}/{self.virtual_node.name}" if self.virtual_node else "-"
        defaults = SidecarParams(virtual_node=self.virtual_node)
        if self == defaults:
            return vn
        group = f"{vn};egress={self.egress_port};ingress={self.ingress_port};bind={self.bind_address}"
        group += ";capture" if self.capture else ""
        return group + (f";sa={self.service_account}" if self.service_account != "default" else "")


def group_node(group: str) -> str:
    """The VirtualNode (``namespace/name``) of a node group (``SidecarParams.group``: ``ns/vn`` or ``ns/vn;...``)."""
    return group.split(";", 1)[0]


class EndpointIR(NamedTuple):
    """A tuple, not a dataclass: there is one per endpoint (100,000 at 10,000 services) and they are hashed and
    compared in sets; a tuple does both in C and needs no cached hash (a third less memory)."""

    address: str
    port: int
    healthy: bool = True
    zone: str = ""  # "" when the slice names none: a string either way, so endpoints sort as plain tuples


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSourcesIR:
    """Where a TLS side gets its certificate and roots: ``certificate_files`` (chain, key) on the proxy's file
    system or ``certificate_sds`` (a secret of the node's SDS agent, e.g. SPIRE), else the mesh identity;
    ``trust_file`` / ``trust_sds``, else the mesh roots; ``subject_alt_names``: the exact peer identities taken."""

    certificate_files: tuple[str, str] | None = None
    certificate_sds: str | None = None
    trust_file: str | None = None
    trust_sds: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    present_certificate: bool = True  # False: one-way TLS (to a host outside the mesh, with no certificate given)

    @property
    def uses_mesh_secrets(self) -> bool:
        """Whether it names the mesh identity or roots (IDENTITY_SECRET, TRUST_SECRET)."""
        mesh_certificate = self.present_certificate and self.certificate_files is None and self.certificate_sds is None
        return mesh_certificate or (self.trust_file is None and self.trust_sds is None)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTlsIR(TlsSourcesIR):
    """TLS a caller originates. By default (``namespace`` alone) mTLS to a listener that takes it: the caller
    presents its mesh identity and accepts a peer the mesh roots signed, for an identity of the callee's namespace;
    a client policy may name other sources (``TlsSourcesIR``)."""

    namespace: str
    sni: str | None = None  # the server name asked for (a host outside the mesh: its DNS name)


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamTlsIR(TlsSourcesIR):
    """A listener's TLS: STRICT takes only mTLS; PERMISSIVE mTLS and plaintext (told apart by the first bytes).
    Without ``subject_alt_names`` any mesh identity is taken."""

    mode: TlsMode


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsIR:
    """Where a DNS-discovered VirtualNode's listener is: ``hostname`` on ``port``, every address a host or one
    (``logical``: App Mesh's LOADBALANCER), and which address families (Envoy's DnsLookupFamily name)."""

    hostname: str
    port: int
    logical: bool
    lookup_family: str  # AUTO, V4_PREFERRED, V4_ONLY, V6_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterIR:
    """An upstream: a VirtualNode listener seen from its callers (EDS), or the local app (static)."""

    name: str
    protocol: Protocol
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    static_endpoint: EndpointIR | None = None  # set for the inbound cluster to the local app, else EDS
    dns_endpoint: tuple[str, int] | None = None  # a host name resolved by Envoy (e.g. a tracing collector)
    original_dst: bool = False  # captured traffic for destinations outside the mesh: to where it was going
    tls: UpstreamTlsIR | None = None  # the listener it reaches takes mTLS: originate it
    dns: DnsIR | None = None  # a VirtualNode found by DNS (serviceDiscovery.dns): each caller's Envoy resolves it
    blackhole: bool = False  # no endpoint, ever: where refused connections go (the egress filter's DROP_ALL)
    # A VirtualNode found by DNS: its hostname, the server name callers' TLS asks for and checks (a client policy)
    server_name: str | None = None

    @property
    def eds(self) -> bool:
        """Endpoints come over EDS (every cluster but the local app, collectors, DNS nodes, the passthrough and the
        blackhole)."""
        return (
            self.static_endpoint is None
            and self.dns_endpoint is None
            and self.dns is None
            and not self.original_dst
            and not self.blackhole
        )

    def settings(self) -> tuple[Any, ...]:
        """Every compared field but the name: an EDS cluster is its name and these (cache/builder.py encodes
        clusters of equal settings once)."""
        return _cluster_settings(self)

    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _cached_hash


_cluster_settings = attrgetter(*(f.name for f in fields(ClusterIR) if f.compare and f.name != "name"))


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedClusterIR:
    cluster: str  # INVALID_BACKEND: a backendRef that does not resolve (its share of requests gets a 500)
    weight: int
    request_headers: HeaderModifier | None = None  # an HTTPRoute backendRef's own filters
    response_headers: HeaderModifier | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MirrorIR:
    cluster: str
    percent: float | None = None  # None: every request


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteIR:
    name: str  # namespace/route
    match: HttpMatch
    clusters: tuple[WeightedClusterIR, ...]
    retry_policy: RetryPolicy | None = None
    timeout_ms: int | None = None
    idle_timeout_ms: int | None = None
    tcp: bool = False  # a tcpRoute: only clusters and idle_timeout_ms apply
    # HTTPRoute filters (Gateway API): header modifiers, a redirect (instead of clusters), a rewrite, mirrors
    request_headers: HeaderModifier | None = None
    response_headers: HeaderModifier | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirrors: tuple[MirrorIR, ...] = ()
    direct_status: int | None = None  # answer with this status, no backend (a rule without valid backends: 500)
    direct_body: str | None = None  # and this text (the egress filter's refusal says why)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _cached_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHostIR:
    name: str  # namespace/service
    domains: tuple[str, ...]
    routes: tuple[RouteIR, ...]
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _cached_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class TracingIR:
    config: Tracing
    service_name: str  # how this node appears in traces: namespace/virtualnode
    collector_cluster: str | None  # None for X-Ray (UDP to the daemon, no cluster)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundListenerIR:
    """The egress listener: the app sends to it with the Service's name as Host.

    With capture, ``capture`` marks the egress listener that every redirected connection reaches first: Envoy
    hands each to the listener of its original destination port (``bind_to_port=False`` ones: an HTTP backend's
    port, routed by Host, or a TCP route's), and passes the rest through to where they were going (``passthrough``
    cluster); connections made to the egress port itself are still routed by Host."""

    name: str
    address: str
    port: int
    route_config_name: str
    access_log: Logging | None = None
    tracing: TracingIR | None = None
    capture: bool = False
    bind_to_port: bool = True
    # Captured connections to destinations the mesh does not declare are refused (App Mesh's egressFilter DROP_ALL)
    # instead of passed through (ALLOW_ALL); counted as ``tcp.egress_denied.downstream_cx_total``.
    drop_undeclared: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundTcpListenerIR:
    """A Service reached over TCP: the sidecar listens on the Service's port and splits connections."""

    name: str
    address: str
    port: int
    route: RouteIR
    bind_to_port: bool = True  # False with capture: reached by original destination, never bound


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzRuleIR:
    """``principals``: SPIFFE ID regexes, any of which the caller's certificate must name (None: any caller, even
    one that proved nothing; (): no one); then any of ``paths`` and any of ``methods`` (each empty: any)."""

    principals: tuple[str, ...] | None = None
    paths: tuple[PathMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzPolicyIR:
    name: str  # namespace/name: the RBAC policy name, and so its per-policy counters
    action: AuthzAction
    audit: bool
    rules: tuple[AuthzRuleIR, ...]  # any of; none: the policy matches nothing
    invalid: bool = False  # fail safe: stands in for a policy that could not be read


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzIR:
    """What one listener enforces: DENY policies first (any match denies), then, if an ALLOW policy selects it or
    its default is deny, a match of an ALLOW policy is needed. Audit policies and an ``audit`` default count and
    log would-be denials (Envoy's shadow rules) without enforcing them."""

    policies: tuple[AuthzPolicyIR, ...]
    default: AuthzDefault = AuthzDefault.ALLOW


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundListenerIR:
    """Traffic arriving for one VirtualNode listener, forwarded to the local app."""

    name: str
    address: str
    port: int
    protocol: Protocol
    cluster: str
    timeout_ms: int | None = None
    idle_timeout_ms: int | None = None
    access_log: Logging | None = None
    tracing: TracingIR | None = None
    tls: DownstreamTlsIR | None = None  # None (or DISABLED): plaintext
    authz: AuthzIR | None = None  # None: every caller may call it


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedInboundIR:
    """With capture, the ingress port receives every app port's redirected connections: one filter chain per
    VirtualNode listener, chosen by the original destination port; direct connections take the first."""

    name: str
    address: str
    port: int
    chains: tuple[InboundListenerIR, ...]  # each chain's ``port`` is the app port it serves


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayCertificateIR:
    """An HTTPS listener's certificate for some server names (SNI; empty: any), from a kubernetes.io/tls Secret.
    ``secret``: the SDS secret's name; the key material travels only in that secret."""

    server_names: tuple[str, ...]
    secret: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayListenerIR:
    """One port of an edge gateway: the Gateway listeners on that port, routed by Host over one RouteConfiguration."""

    name: str
    address: str
    port: int  # the port the proxy binds (a Gateway port below 1024 is bound 10,000 higher: see translate/gateway.py)
    route_config_name: str
    virtual_hosts: tuple[VirtualHostIR, ...]
    certificates: tuple[GatewayCertificateIR, ...] = ()  # HTTPS: TLS terminated with these; empty: plaintext


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarIR:
    """Everything one node group receives."""

    params: SidecarParams
    outbound: OutboundListenerIR | None
    inbound: tuple[InboundListenerIR, ...]
    route_config_name: str
    virtual_hosts: tuple[VirtualHostIR, ...]
    clusters: tuple[ClusterIR, ...]
    endpoints: dict[str, tuple[EndpointIR, ...]] = field(hash=False, compare=True)
    tcp_outbound: tuple[OutboundTcpListenerIR, ...] = ()
    http_outbound: tuple[OutboundListenerIR, ...] = ()  # capture: one per HTTP backend port, Host-routed
    captured_inbound: CapturedInboundIR | None = None  # capture: replaces ``inbound``
    gateway_listeners: tuple[GatewayListenerIR, ...] = ()  # an edge gateway's proxy: one per Gateway port

    @property
    def uses_mesh_secrets(self) -> bool:
        """Whether a listener or cluster names the mesh identity or roots (IDENTITY_SECRET, TRUST_SECRET)."""
        chains = self.captured_inbound.chains if self.captured_inbound else self.inbound
        return any(c.tls is not None and c.tls.uses_mesh_secrets for c in self.clusters) or any(
            li.tls is not None and li.tls.uses_mesh_secrets for li in chains
        )

    @property
    def tls_settings(self) -> list[TlsSourcesIR]:
        """Every TLS setting of its listeners and clusters (for the file secrets they name)."""
        chains = self.captured_inbound.chains if self.captured_inbound else self.inbound
        found: list[TlsSourcesIR] = [c.tls for c in self.clusters if c.tls is not None]
        found.extend(li.tls for li in chains if li.tls is not None)
        return found

    @property
    def listeners(self) -> tuple[object, ...]:
        """Every listener IR: equal tuples mean equal LDS."""
        return (
            self.outbound,
            self.inbound,
            self.tcp_outbound,
            self.http_outbound,
            self.captured_inbound,
            self.gateway_listeners,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Blocked:
    """One version of an object that cannot be programmed into Envoy: the builder could not build it
    (``InvalidForEnvoy``) or Envoy rejected the update that carried it (``RejectedByEnvoy``). That version is left
    out and the object's previous one is served; the block ends when the object changes."""

    spec: VirtualNodeSpec | RouteSpec | GatewayRouteSpec
    reason: str
    message: str


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str  # Accepted, ResolvedRefs, Programmed
    status: ConditionStatus
    reason: str
    message: str


_FIELDS = "FieldsRecognized"
_PROXYLESS = "ProxylessCompatible"  # translate/proxyless.py
_WARNINGS = frozenset((_FIELDS, _PROXYLESS))  # said, but the object is served as written


@dataclass(frozen=True, slots=True, kw_only=True)
class ParentStatus:
    """A Gateway API route's status for one of its parents (``status.parents[]``)."""

    parent: ParentRef
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerStatus:
    """A Gateway listener's ``status.listeners[]`` entry."""

    name: str
    supported_kinds: tuple[tuple[str, str], ...]  # (group, kind)
    attached_routes: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayStatusDetail:
    """What a Gateway's status says beyond its conditions."""

    listeners: tuple[ListenerStatus, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()  # (type, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStatus:
    key: ObjectKey
    observed_generation: int
    origin: str
    conditions: tuple[Condition, ...]  # for a Gateway API route: each type's worst over its parents
    parents: tuple[ParentStatus, ...] = ()  # Gateway API routes only
    gateway: GatewayStatusDetail | None = None  # Gateways only

    @property
    def accepted(self) -> bool:
        """The Accepted condition: the object (or its last accepted version) is being served."""
        return any(c.type == "Accepted" and c.status is ConditionStatus.TRUE for c in self.conditions)

    @property
    def healthy(self) -> bool:
        """Every condition is True: accepted and all references resolved; a Gateway's listeners too.
        (ProxylessCompatible is advice: what gRPC clients would skip, if any call.)"""
        return (
            all(c.status is ConditionStatus.TRUE or c.type == _PROXYLESS for c in self.conditions)
            and not self.listener_problems
        )

    @property
    def problems(self) -> tuple[Condition, ...]:
        """Conditions not True, except the warnings (FieldsRecognized: fields ignored, unless parsed --strict;
        ProxylessCompatible: fields gRPC clients ignore); then a Gateway's listeners' problems."""
        own = tuple(c for c in self.conditions if c.status is not ConditionStatus.TRUE and c.type not in _WARNINGS)
        return own + self.listener_problems

    @property
    def listener_problems(self) -> tuple[Condition, ...]:
        """A Gateway's listeners that are not served, or conflict, each condition saying which listener."""
        if self.gateway is None:
            return ()
        return tuple(
            Condition(type=c.type, status=c.status, reason=c.reason, message=f"listener {li.name}: {c.message}")
            for li in self.gateway.listeners
            for c in li.conditions
            if (c.type == "Conflicted") == (c.status is ConditionStatus.TRUE)
        )

    @property
    def warnings(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.type in _WARNINGS and c.status is not ConditionStatus.TRUE)

    def summary(self) -> str:
        bad = [c for c in self.conditions if c.status is not ConditionStatus.TRUE] + list(self.listener_problems)
        return "; ".join(c.message for c in bad) if bad else "ok"
