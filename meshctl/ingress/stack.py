"""The desired state of one load balancer and what hangs off it: plain frozen values, no boto3.

A stack is what one IngressGroup (or one Service) wants; the deployer makes AWS match it. Every resource has a
stable resource id (LBC's formats: ``LoadBalancer``, ``ns/ingress-svc:port``, the listener port) carried as a tag,
so actual state is matched to desired state by tag, never by a name someone else might have used."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshctl.model import ObjectKey, ServicePort

__all__ = [
    "Action",
    "Binding",
    "Condition",
    "FixedResponse",
    "Forward",
    "HealthCheck",
    "Listener",
    "LoadBalancer",
    "Problem",
    "Redirect",
    "Rule",
    "SecurityGroups",
    "Stack",
    "TargetGroup",
    "Transform",
]

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """Bad input on one object: becomes a Warning Event and a log line; the object's stack is not deployed."""

    owner: ObjectKey
    reason: str  # InvalidAnnotation, InvalidBackend, GroupConflict, ...
    message: str

    def __str__(self) -> str:
        return f"{self.owner}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    protocol: str  # HTTP | HTTPS | TCP
    port: str  # "traffic-port" or a number
    path: str | None
    interval_seconds: int
    timeout_seconds: int
    healthy_threshold: int
    unhealthy_threshold: int
    success_codes: str | None  # the Matcher's codes; None for TCP checks
    matcher: str = "HttpCode"  # GrpcCode for a GRPC target group (gRPC status codes 0-99)


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """Which endpoints become a target group's targets."""

    service: ObjectKey
    port: ServicePort
    target_type: str  # ip | instance
    gate: str  # readiness-gate suffix this binding answers for (the Service or TargetGroupBinding name)


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetGroup:
    resource_id: str
    name: str  # deterministic, <= 32 characters; it changes whenever an immutable setting does
    protocol: str  # HTTP | HTTPS | TCP | UDP | TCP_UDP
    protocol_version: str | None = None  # HTTP1 | HTTP2 | GRPC for HTTP and HTTPS groups (None: AWS's, HTTP1)
    port: int
    target_type: str
    health_check: HealthCheck
    attributes: tuple[tuple[str, str], ...] = ()
    tags: Tags = ()
    binding: Binding
    owner: ObjectKey  # the Ingress or Service whose annotation holds this group's checkpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """Forward to target groups: (our resource id or an existing target group ARN, weight)."""

    targets: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    protocol: str = "#{protocol}"
    port: str = "#{port}"
    host: str = "#{host}"
    path: str = "/#{path}"
    query: str = "#{query}"
    status_code: str = "HTTP_301"


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedResponse:
    status_code: str
    content_type: str | None = None
    message_body: str | None = None


Action = Forward | Redirect | FixedResponse


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One ALB rule condition; all of a rule's hold together."""

    field: str  # host-header | path-pattern | http-header | http-request-method | query-string | source-ip
    values: tuple[str, ...] = ()
    header: str | None = None  # http-header: the header's name
    pairs: tuple[tuple[str | None, str], ...] = ()  # query-string: (key or None for any, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    port: int
    protocol: str  # HTTP | HTTPS | TCP | UDP | TLS | TCP_UDP
    default_action: Action
    certificates: tuple[str, ...] = ()  # the first is the default certificate
    ssl_policy: str | None = None


# A rule transform (LBC's transforms.* annotation; ALB's RuleTransform): (host-header-rewrite | url-rewrite,
# ((regex, replace), ...)).
Transform = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    listener_port: int
    priority: int
    conditions: tuple[Condition, ...]
    action: Action
    transforms: tuple[Transform, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityGroups:
    """A load balancer's security groups, LBC's way: a managed frontend group opening the listen ports to
    ``inbound`` plus the cluster's shared backend group (the source the targets' groups allow), or the user's own
    groups (``given``: IDs or names), then the backend group only with ``backend``."""

    given: tuple[str, ...] = ()
    inbound: tuple[str, ...] = ("0.0.0.0/0",)  # CIDRs the frontend group opens the listen ports to
    prefix_lists: tuple[str, ...] = ()  # managed prefix lists (pl-...) it opens them to as well
    backend: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancer:
    name: str
    type: str  # application | network
    scheme: str  # internal | internet-facing
    subnets: tuple[str, ...] = ()  # empty: discovered from subnet tags
    tags: Tags = ()
    security_groups: SecurityGroups | None = None  # None: none managed (an NLB without security groups)
    attributes: tuple[tuple[str, str], ...] = ()  # load-balancer-attributes: only these keys are set
    ip_address_type: str = "ipv4"  # ipv4 | dualstack | dualstack-without-public-ipv4 (ALB)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stack:
    """``load_balancer`` None with no problems means: delete whatever this stack owns."""

    id: str  # ingress group name, or namespace/name of an Ingress or Service
    kind: str  # ingress | service
    owners: tuple[ObjectKey, ...]  # objects served by it: they carry ``finalizer`` while it exists
    leaving: tuple[ObjectKey, ...] = ()  # objects with ``finalizer`` it no longer serves: released once deployed
    finalizer: str = ""
    load_balancer: LoadBalancer | None = None
    listeners: tuple[Listener, ...] = ()
    rules: tuple[Rule, ...] = ()
    target_groups: tuple[TargetGroup, ...] = ()
    problems: tuple[Problem, ...] = field(default=())

    @property
    def valid(self) -> bool:
        return not self.problems
