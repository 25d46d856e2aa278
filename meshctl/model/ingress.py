"""The model objects only the ingress reconciler reads: Ingresses, IngressClasses, Nodes, TargetGroupBindings and
how a Service is exposed (type LoadBalancer / NodePort, annotations, finalizers).

They live in the same immutable ``Model`` as the mesh (one source, one model), but translation never reads them:
``classify_change`` knows these fields, so an Ingress edit never rebuilds the mesh. Plain Services carry no
``Exposure`` at all, keeping a 10,000-Service model as slim as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from meshctl.model.meta import LabelSelector, Meta

__all__ = [
    "CHECKPOINT_ANNOTATION",
    "ELBV2_GROUP",
    "GATE_PREFIX",
    "Exposure",
    "Ingress",
    "IngressBackend",
    "IngressClass",
    "IngressClassParams",
    "IngressPath",
    "IngressRule",
    "Lifecycle",
    "ListenerConfiguration",
    "ListenerRuleConfiguration",
    "LoadBalancerConfiguration",
    "Node",
    "TargetGroupBinding",
    "TargetGroupConfiguration",
]

# Our API group for TargetGroupBinding (LBC's is elbv2.k8s.aws) and the readiness-gate condition prefix.
ELBV2_GROUP = "elbv2.meshctl.dev"
GATE_PREFIX = "target-health.elbv2.meshctl.dev/"
# {target group resource id: hash of (target group ARN, desired targets)}: lets a restarted reconciler skip target
# groups whose targets it already applied (LBC #3326: minutes of throttled re-reconciling after every restart).
CHECKPOINT_ANNOTATION = "elbv2.meshctl.dev/checkpoints"
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    """What a reconciler that owns cloud resources needs of an object's metadata and status."""

    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    finalizers: tuple[str, ...] = ()
    deleting: bool = False  # metadata.deletionTimestamp is set
    uid: str = ""
    hostnames: tuple[str, ...] = ()  # status.loadBalancer.ingress[].hostname as the cluster has it
    # The checkpoint annotation as listed. Not compared: our own checkpoint writes must not look like changes (the
    # reconciler keeps the current ones in memory; this is read only after a restart).
    checkpoints: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """How a Service is exposed beyond the mesh; only Services that are not plain ClusterIP (or that carry load
    balancer annotations or our finalizer) have one."""

    type: str  # ClusterIP | NodePort | LoadBalancer
    load_balancer_class: str | None = None
    external_traffic_policy: str = "Cluster"
    health_check_node_port: int | None = None
    source_ranges: tuple[str, ...] = ()  # spec.loadBalancerSourceRanges
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressBackend:
    service: str  # a Service in the Ingress's namespace (or an actions.<name> annotation, with port "use-annotation")
    port_number: int | None = None
    port_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressPath:
    path: str | None
    path_type: str  # Prefix | Exact | ImplementationSpecific
    backend: IngressBackend


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressRule:
    host: str | None
    paths: tuple[IngressPath, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Ingress:
    meta: Meta
    class_name: str | None
    rules: tuple[IngressRule, ...] = ()
    default_backend: IngressBackend | None = None
    tls_hosts: tuple[str, ...] = ()
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressClass:
    meta: Meta  # cluster-scoped: namespace ""
    controller: str
    default: bool = False  # annotated ingressclass.kubernetes.io/is-default-class: "true"
    parameters: str | None = None  # spec.parameters naming an IngressClassParams of ours: its name


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressClassParams:
    """Settings an IngressClass imposes on its Ingresses, overriding their annotations (LBC's fields). ``annotations``
    holds them as the ``alb.ingress.kubernetes.io/`` annotations they stand for, so the builder reads and checks them
    the one way it reads annotations."""

    meta: Meta  # cluster-scoped: namespace ""
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)  # override the Ingress's
    tags: tuple[tuple[str, str], ...] = ()  # merged with the Ingress's tags, these winning
    attributes: tuple[tuple[str, str], ...] = ()  # merged with load-balancer-attributes, these winning
    namespace_selector: LabelSelector | None = None  # the Namespaces whose Ingresses may use the class


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    meta: Meta  # cluster-scoped: namespace ""
    internal_ip: str | None
    instance_id: str | None = None  # from spec.providerID aws:///<zone>/<instance id>: instance targets are these
    ready: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetGroupBinding:
    """Binds an existing target group to a Service port (LBC's ``elbv2.k8s.aws/v1beta1`` spec shape)."""

    meta: Meta
    target_group_arn: str | None
    target_group_name: str | None
    service_name: str
    service_port: int | str
    target_type: str | None = None  # ip | instance; read from the target group when unset
    lifecycle: Lifecycle = field(default_factory=Lifecycle)


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerConfiguration:
    """``listenerConfigurations[]`` of a LoadBalancerConfiguration: one listener's TLS settings."""

    protocol: str  # HTTP | HTTPS | TCP | UDP | TLS | TCP_UDP
    port: int
    certificates: tuple[str, ...] = ()  # the default certificate first
    ssl_policy: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancerConfiguration:
    """LBC's LoadBalancerConfiguration (``gateway.k8s.aws/v1beta1``), ours under ELBV2_GROUP: named by a
    GatewayClass's or a Gateway's parametersRef. Like IngressClassParams, its load balancer settings are kept as the
    ``alb.ingress.kubernetes.io/`` annotations they stand for, so they are read and checked the one way."""

    meta: Meta
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    listeners: tuple[ListenerConfiguration, ...] = ()
    prefer_gateway: bool = False  # mergingMode prefer-gateway (default prefer-gateway-class)
    default_target_group: str | None = None  # defaultTargetGroupConfiguration.name (same namespace)
    problem: str | None = None  # a field that cannot be read: the Gateways using it are not programmed


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetGroupConfiguration:
    """LBC's TargetGroupConfiguration: target group settings for a Service's target groups (``service`` set by
    ``targetReference``), or Gateway-wide defaults (none, named by a LoadBalancerConfiguration). Its
    ``defaultConfiguration`` as the target-group annotations it stands for (``target-type``, ``healthcheck-*``...)."""

    meta: Meta
    service: str | None
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    problem: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerRuleConfiguration:
    """LBC's ListenerRuleConfiguration, ours: what an HTTPRoute rule's ExtensionRef filter adds to its ALB rules (a
    fixed response instead of the forward, a redirect's query, source-ip conditions). ``problem``: an action meshctl
    does not serve yet (authentication, JWT validation, stickiness); the routes using it say so."""

    meta: Meta
    fixed_response: tuple[str, str | None, str | None] | None = None  # (status code, content type, body)
    redirect_query: str | None = None
    source_ips: tuple[str, ...] = ()
    problem: str | None = None
