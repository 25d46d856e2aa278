"""The mesh model: one immutable snapshot of everything the sources know.

Every source (manifest directory, Kubernetes watch) produces this same shape, and the translator reads
nothing else. Specs use App Mesh v1beta2 field names (in snake_case) so App Mesh users feel at home.
An object whose spec failed validation keeps ``spec=None`` and carries its ``errors``; the translator
then serves that object's last accepted version, if it has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from meshctl.model.authz import AuthorizationPolicy, AuthzDefault
from meshctl.model.gateway import Gateway, GatewayClass, HTTPRoute, L4Route, ReferenceGrant
from meshctl.model.ingress import (
    Exposure,
    Ingress,
    IngressClass,
    IngressClassParams,
    ListenerRuleConfiguration,
    LoadBalancerConfiguration,
    Node,
    TargetGroupBinding,
    TargetGroupConfiguration,
)
from meshctl.model.matches import HeaderMatch, HttpMatch, QueryParameterMatch, StringMatch
from meshctl.model.meta import API_GROUP, API_VERSION, EMPTY_LABELS, FieldError, Meta, ObjectKey

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "EGRESS_FILTER_LABEL",
    "TLS_MODE_LABEL",
    "Backend",
    "ClientPolicy",
    "CloudMapAnswer",
    "CloudMapDiscovery",
    "CloudMapInstance",
    "ConnectionPool",
    "DnsAnswer",
    "DnsDiscovery",
    "DnsResponseType",
    "EgressFilter",
    "Endpoint",
    "EndpointSlice",
    "FieldError",
    "HeaderMatch",
    "HealthCheck",
    "HttpMatch",
    "HttpRoute",
    "IpPreference",
    "Listener",
    "ListenerTimeout",
    "ListenerTls",
    "Logging",
    "Meta",
    "Model",
    "ModelDelta",
    "Namespace",
    "ObjectKey",
    "OutlierDetection",
    "Pod",
    "Protocol",
    "QueryParameterMatch",
    "RetryPolicy",
    "Route",
    "RouteSpec",
    "Secret",
    "Service",
    "ServicePort",
    "StringMatch",
    "TlsMode",
    "Tracing",
    "VirtualNode",
    "VirtualNodeSpec",
    "WeightedTarget",
]


class Protocol(StrEnum):
    HTTP = "http"
    HTTP2 = "http2"
    GRPC = "grpc"
    TCP = "tcp"


# --- Kubernetes core objects (only the fields the mesh needs) ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str | None = None
    protocol: str = "TCP"
    node_port: int | None = None  # Services of type NodePort / LoadBalancer (the ingress's instance targets)
    app_protocol: str | None = None  # appProtocol: http, kubernetes.io/h2c, grpc ... (a backendRef's protocol)


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    meta: Meta
    ports: tuple[ServicePort, ...] = ()
    selector: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)  # spec.selector
    exposure: Exposure | None = None  # only for Services the ingress reconciler may act on
    # status.loadBalancer.ingress (hostname or ip), read for an edge gateway's Service (GATEWAY_NAME_LABEL) only:
    # its Gateway's addresses.
    load_balancer: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    # The first of the endpoint's addresses: Kubernetes calls them fungible and lets consumers use the first only,
    # as kube-proxy does (kubernetes/kubernetes#106267). One string, not a tuple: 100,000 endpoints, 6 MiB.
    address: str
    ready: bool = True
    pod_name: str | None = None  # targetRef of kind Pod, in the slice's namespace
    zone: str | None = None
    terminating: bool = False  # conditions.terminating: the ingress deregisters it at once
    node_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSlice:
    meta: Meta
    service_name: str  # the kubernetes.io/service-name label
    ports: tuple[ServicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    """What the mesh reads of a Pod. No name or namespace (the model's key says them) and no identity of its own:
    Pods alike are one shared object, so 100,000 Pods of a few Deployments cost their keys, not 100,000 objects."""

    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)  # which VirtualNode a pod belongs to
    # Only for pods carrying our target-health readiness gates (else empty, so status updates stay no-ops):
    gates: tuple[tuple[str, bool | None], ...] = ()  # (condition type, its status is True; None: not set yet)
    containers_ready: bool = False
    service_account: str = "default"  # spec.serviceAccountName: its workload identity (authorization sources)
    # Security groups for pods (the VPC CNI's vpc.amazonaws.com/pod-eni): the pod's own branch interface, whose
    # groups are the ones a load balancer's ip target needs a rule on (not the node's).
    branch_eni: str | None = None


# --- VirtualNode ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionPool:
    """Circuit-breaker thresholds (App Mesh ``connectionPool``); ``None`` keeps Envoy's default."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    retry_budget_percent: int | None = None  # retries may be at most this % of active requests ...
    retry_budget_min_concurrency: int | None = None  # ... or this many, whichever is more
    connect_timeout_ms: int | None = None  # how long callers wait for a TCP connection


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    max_server_errors: int
    interval_ms: int
    base_ejection_duration_ms: int
    max_ejection_percent: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    protocol: Protocol
    path: str | None
    port: int | None
    interval_ms: int
    timeout_ms: int
    healthy_threshold: int
    unhealthy_threshold: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTimeout:
    per_request_ms: int | None = None
    idle_ms: int | None = None


class TlsMode(StrEnum):
    """App Mesh's listener TLS modes: STRICT takes only mTLS, PERMISSIVE takes mTLS and plaintext on one port."""

    STRICT = "STRICT"
    PERMISSIVE = "PERMISSIVE"
    DISABLED = "DISABLED"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTls:
    """``listeners[].tls``. With no ``certificate``, the mesh CA's certificate for the workload's identity (served
    over SDS); with one, files on the proxy's file system (App Mesh's ``certificate.file``). ``trust_file``:
    ``validation.trust.file.certificateChain`` (else the mesh CA's bundle); ``subject_alt_names``: the callers
    accepted (``validation.subjectAlternativeNames.match.exact``; else any identity of the trust domain)."""

    mode: TlsMode
    certificate_chain_file: str | None = None
    private_key_file: str | None = None
    certificate_sds: str | None = None  # ``certificate.sds.secretName``: from the SDS agent (SPIRE) on the node
    trust_file: str | None = None
    trust_sds: str | None = None  # ``validation.trust.sds.secretName``
    subject_alt_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientPolicy:
    """App Mesh's ``clientPolicy.tls``, on a backend or in ``backendDefaults``: how this node calls its backends.
    Meshed callers need none (mTLS is originated to every listener that takes it); a policy narrows or widens that:
    ``enforce: false`` calls in plaintext, ``enforce: true`` originates TLS even to a listener not declared to take
    it; ``ports`` limits the policy to those listener ports (else all); ``certificate``: the client certificate
    (else the mesh identity); ``validation``: the roots and server names accepted (else the mesh roots and any
    identity of the callee's namespace)."""

    enforce: bool = True
    ports: tuple[int, ...] = ()
    certificate_chain_file: str | None = None
    private_key_file: str | None = None
    certificate_sds: str | None = None
    trust_file: str | None = None
    trust_sds: str | None = None
    subject_alt_names: tuple[str, ...] = ()

    def covers(self, port: int) -> bool:
        return not self.ports or port in self.ports


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    port: int
    protocol: Protocol
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    health_check: HealthCheck | None = None
    timeout: ListenerTimeout | None = None
    tls: ListenerTls | None = None

    @property
    def accepts_mtls(self) -> bool:
        """Meshed callers should originate mTLS to it (STRICT or PERMISSIVE)."""
        return self.tls is not None and self.tls.mode is not TlsMode.DISABLED


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    """A Kubernetes Service this node may call (App Mesh ``backends[].virtualService``)."""

    namespace: str
    name: str
    client_policy: ClientPolicy | None = None  # else the node's ``backend_defaults``


@dataclass(frozen=True, slots=True, kw_only=True)
class Logging:
    """An access log file; ``text_format`` or ``json_format`` (key, Envoy command) pairs, else DEFAULT_ACCESS_LOG."""

    access_log_path: str
    text_format: str | None = None
    json_format: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracing:
    """Where this node's Envoy sends spans: a Zipkin or OpenTelemetry (OTLP/HTTP) collector, or an X-Ray daemon."""

    provider: str  # zipkin | opentelemetry | xray
    host: str
    port: int
    path: str  # zipkin: /api/v2/spans, opentelemetry: /v1/traces; unused for xray
    sampling_percent: float = 100.0


class DnsResponseType(StrEnum):
    """App Mesh's ``serviceDiscovery.dns.responseType``: every address a host (ENDPOINTS) or one logical host
    resolved again for new connections (LOADBALANCER, App Mesh's default: Route 53 answers at most 8 records)."""

    ENDPOINTS = "ENDPOINTS"
    LOADBALANCER = "LOADBALANCER"


class IpPreference(StrEnum):
    """App Mesh's ``ipPreference``: which address family first, or only."""

    IPV6_PREFERRED = "IPv6_PREFERRED"
    IPV4_PREFERRED = "IPv4_PREFERRED"
    IPV4_ONLY = "IPv4_ONLY"
    IPV6_ONLY = "IPv6_ONLY"


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsDiscovery:
    """``serviceDiscovery.dns``: the node's endpoints are what ``hostname`` resolves to (on the listener's port),
    resolved by each caller's Envoy and refreshed at the records' TTL."""

    hostname: str
    response_type: DnsResponseType = DnsResponseType.LOADBALANCER
    ip_preference: IpPreference | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudMapDiscovery:
    """``serviceDiscovery.awsCloudMap``: the node's endpoints are the instances of a Cloud Map service (those with
    every one of ``attributes``), discovered by the control plane."""

    namespace_name: str
    service_name: str
    attributes: tuple[tuple[str, str], ...] = ()  # sorted (key, value)
    ip_preference: IpPreference | None = None

    @property
    def key(self) -> str:
        """What identifies one discovery (Model.cloud_map's key): namespace, service and the attributes asked."""
        attrs = "&".join(f"{k}={v}" for k, v in self.attributes)
        return f"{self.namespace_name}/{self.service_name}" + (f"?{attrs}" if attrs else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudMapInstance:
    address: str
    port: int | None  # AWS_INSTANCE_PORT, when registered
    healthy: bool  # not UNHEALTHY (HEALTHY, or UNKNOWN: no health check)
    zone: str = ""  # AVAILABILITY_ZONE


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudMapAnswer:
    """The instances of the control plane's last discovery (sorted), or, after a failure, the last ones it had and
    the ``error``."""

    instances: tuple[CloudMapInstance, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswer:
    """What the control plane's last lookup of a DNS-discovered VirtualNode's hostname gave: its addresses (sorted),
    or, after a failure, the last addresses it had and the ``error``."""

    addresses: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualNodeSpec:
    pod_selector: Mapping[str, str]  # empty for a node whose endpoints come from service discovery
    listeners: tuple[Listener, ...] = ()
    backends: tuple[Backend, ...] = ()
    logging: Logging | None = None
    tracing: Tracing | None = None
    backend_defaults: ClientPolicy | None = None  # ``backendDefaults.clientPolicy.tls``
    dns: DnsDiscovery | None = None  # ``serviceDiscovery.dns``: endpoints from DNS, not EndpointSlices
    cloud_map: CloudMapDiscovery | None = None  # ``serviceDiscovery.awsCloudMap``: endpoints from AWS Cloud Map


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualNode:
    meta: Meta
    spec: VirtualNodeSpec | None
    errors: tuple[FieldError, ...] = ()
    # Fields the parser does not know, or knows but does not implement yet: served without them, and said so.
    warnings: tuple[FieldError, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("VirtualNode", self.meta.namespace, self.meta.name)


# --- Route ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedTarget:
    namespace: str
    virtual_node: str
    weight: int
    port: int | None = None  # which listener of the VirtualNode; optional when it has one


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    http_retry_events: tuple[str, ...] = ()
    tcp_retry_events: tuple[str, ...] = ()
    grpc_retry_events: tuple[str, ...] = ()
    max_retries: int = 1
    status_codes: tuple[int, ...] = ()  # HTTPRoute retry.codes: also retried on these statuses
    per_retry_timeout_ms: int | None = None
    backoff_base_ms: int | None = None  # Envoy's default 25 ms when unset
    backoff_max_ms: int | None = None  # default 10x the base


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRoute:
    match: HttpMatch
    weighted_targets: tuple[WeightedTarget, ...]
    retry_policy: RetryPolicy | None = None
    timeout: ListenerTimeout | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    service: str  # the Kubernetes Service (virtual service) the Route is attached to, same namespace
    http_route: HttpRoute  # an httpRoute, or a grpcRoute expressed as the HTTP/2 route it is
    grpc: bool = False  # written as a grpcRoute: its targets must speak HTTP/2 (grpc or http2 listeners)
    tcp: bool = False  # written as a tcpRoute: only weighted targets and the idle timeout apply
    priority: int | None = None  # 0 is evaluated first; unset routes come after every set one


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    meta: Meta
    spec: RouteSpec | None
    errors: tuple[FieldError, ...] = ()
    # Fields the parser does not know, or knows but does not implement yet: served without them, and said so.
    warnings: tuple[FieldError, ...] = ()

    @property
    def key(self) -> ObjectKey:
        return ObjectKey("Route", self.meta.namespace, self.meta.name)


# --- Namespace ----------------------------------------------------------------------------------

# The Namespace label that sets the TLS mode of every VirtualNode listener there that has no ``tls`` of its own.
TLS_MODE_LABEL = f"{API_GROUP}/tls-mode"
# The Namespace label that sets App Mesh's egress filter for the proxies there (``serve --egress-filter`` otherwise).
EGRESS_FILTER_LABEL = f"{API_GROUP}/egress-filter"


class EgressFilter(StrEnum):
    """App Mesh's ``egressFilter``: may a captured proxy reach destinations the mesh does not declare?"""

    ALLOW_ALL = "ALLOW_ALL"  # passed through to where they were going
    DROP_ALL = "DROP_ALL"  # refused: HTTP answered 404 with why, TCP closed; counted


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    """What the mesh reads of a Namespace: the default mode of its listeners (label ``TLS_MODE_LABEL``)."""

    meta: Meta  # namespace "" (cluster-scoped), name: the namespace
    tls_mode: TlsMode | None = None
    authz_default: AuthzDefault | None = None  # label AUTHZ_LABEL: allow | deny | audit
    egress_filter: EgressFilter | None = None  # label EGRESS_FILTER_LABEL: ALLOW_ALL | DROP_ALL


# --- Secret ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A ``kubernetes.io/tls`` Secret (what a Gateway's HTTPS listener names): the PEM chain and key, or why it
    cannot be used. The key is never shown: not in ``repr``, logs, statuses or dumps."""

    meta: Meta
    certificate_pem: bytes = field(default=b"", repr=False)
    key_pem: bytes = field(default=b"", repr=False)
    problem: str | None = None  # e.g. "has no tls.key": the listener's ResolvedRefs says it


# --- The whole model -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Model:
    """Everything the translator reads, keyed by ``ObjectKey``."""

    services: Mapping[ObjectKey, Service] = field(default_factory=dict)
    endpoint_slices: Mapping[ObjectKey, EndpointSlice] = field(default_factory=dict)
    pods: Mapping[ObjectKey, Pod] = field(default_factory=dict)
    virtual_nodes: Mapping[ObjectKey, VirtualNode] = field(default_factory=dict)
    routes: Mapping[ObjectKey, Route] = field(default_factory=dict)
    namespaces: Mapping[ObjectKey, Namespace] = field(default_factory=dict)  # keyed ("Namespace", "", name)
    authorization_policies: Mapping[ObjectKey, AuthorizationPolicy] = field(default_factory=dict)
    http_routes: Mapping[ObjectKey, HTTPRoute] = field(default_factory=dict)  # HTTPRoutes and GRPCRoutes
    reference_grants: Mapping[ObjectKey, ReferenceGrant] = field(default_factory=dict)
    gateways: Mapping[ObjectKey, Gateway] = field(default_factory=dict)
    gateway_classes: Mapping[ObjectKey, GatewayClass] = field(default_factory=dict)  # ("GatewayClass", "", name)
    secrets: Mapping[ObjectKey, Secret] = field(default_factory=dict)  # kubernetes.io/tls Secrets (gateway certs)
    # Read by the ingress reconciler only (translation never does; see classify_change).
    ingresses: Mapping[ObjectKey, Ingress] = field(default_factory=dict)
    ingress_classes: Mapping[ObjectKey, IngressClass] = field(default_factory=dict)
    ingress_class_params: Mapping[ObjectKey, IngressClassParams] = field(default_factory=dict)
    nodes: Mapping[ObjectKey, Node] = field(default_factory=dict)
    target_group_bindings: Mapping[ObjectKey, TargetGroupBinding] = field(default_factory=dict)
    l4_routes: Mapping[ObjectKey, L4Route] = field(default_factory=dict)  # TCPRoutes, UDPRoutes, TLSRoutes (NLBs)
    load_balancer_configurations: Mapping[ObjectKey, LoadBalancerConfiguration] = field(default_factory=dict)
    target_group_configurations: Mapping[ObjectKey, TargetGroupConfiguration] = field(default_factory=dict)
    listener_rule_configurations: Mapping[ObjectKey, ListenerRuleConfiguration] = field(default_factory=dict)
    # DNS answers for the hostnames of DNS-discovered VirtualNodes (sources/dns.py), by hostname.
    dns: Mapping[str, DnsAnswer] = field(default_factory=dict)
    # Cloud Map instances for the discoveries of Cloud Map VirtualNodes (sources/cloudmap.py), by CloudMapDiscovery.key.
    cloud_map: Mapping[str, CloudMapAnswer] = field(default_factory=dict)
    # Problems with objects that could not even be identified (bad YAML, unknown kind), by origin.
    load_errors: tuple[str, ...] = ()
    revision: int = 0  # set by the source; increases with every model it emits
    delta: ModelDelta | None = None  # what changed since an earlier revision, when the source knows


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDelta:
    """A source's account of a change: only these EndpointSlices, Pods, Routes and HTTPRoutes/GRPCRoutes changed since
    ``base_revision``.

    Event-driven sources (a Kubernetes watch) know this for free; it lets the controller skip comparing
    every object to find a small change. Without it, the controller compares."""

    base_revision: int
    endpoint_slices: frozenset[ObjectKey] = frozenset()
    pods: frozenset[ObjectKey] = frozenset()
    routes: frozenset[ObjectKey] = frozenset()
    http_routes: frozenset[ObjectKey] = frozenset()  # (Model.http_routes: HTTPRoutes and GRPCRoutes)
