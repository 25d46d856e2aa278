"""Gateways of our ALB and NLB GatewayClasses -> load balancer stacks and their Gateway API statuses (pure: the
model in, desired stacks and statuses out; no AWS calls), the way the AWS Load Balancer Controller v3 maps them.

- One load balancer per Gateway: an ALB for a class whose controller is ``meshctl.dev/alb`` (or LBC's
  ``gateway.k8s.aws/alb``), serving HTTPRoutes and GRPCRoutes; an NLB for ``meshctl.dev/nlb`` (``gateway.k8s.aws/nlb``),
  serving TCPRoutes, UDPRoutes and TLSRoutes.
- Settings come from LoadBalancerConfigurations (ours, LBC's fields) named by the GatewayClass's and the Gateway's
  parametersRef, merged by the class's ``mergingMode``; target groups from TargetGroupConfigurations.
- Listeners by port; as in LBC a listener is made once a route attaches (its default action a 404). Each route rule
  match and hostname is one ALB rule; rules are ordered by LBC's precedence (hostname, then path type and length,
  method, headers, query parameters, then the older route) and numbered 1..N per listener.
- A Gateway whose own input is bad is left as AWS has it (never half-applied); a bad route costs only itself (its
  status says why) and a missing backend gets a fixed 500, as in LBC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from meshctl.ingress.alb import (
    GRPC_HEALTH_DEFAULTS,
    HEALTH_ANNOTATIONS,
    HEALTH_DEFAULTS,
    CertificateLookup,
    alb_security_groups,
)
from meshctl.ingress.annotations import ALB, AnnotationError, Annotations, map_value
from meshctl.ingress.naming import load_balancer_name
from meshctl.ingress.nlb import NLB_HEALTH_DEFAULTS
from meshctl.ingress.stack import (
    Action,
    Condition,
    FixedResponse,
    Forward,
    Listener,
    LoadBalancer,
    Problem,
    Redirect,
    Rule,
    Stack,
    TargetGroup,
)
from meshctl.ingress.target_groups import attributes, health_check, load_balancer_attributes, target_group
from meshctl.model import Model, ObjectKey, Service, ServicePort
from meshctl.model.gateway import (
    GATEWAY_GROUP,
    BackendRef,
    Gateway,
    GatewayClass,
    GatewayListener,
    GatewayRule,
    HTTPRoute,
    L4Route,
    ParametersRef,
    ParentRef,
)
from meshctl.model.ingress import (
    ELBV2_GROUP,
    ListenerConfiguration,
    ListenerRuleConfiguration,
    LoadBalancerConfiguration,
)
from meshctl.model.matches import HttpMatch
from meshctl.model.meta import Meta
from meshctl.translate.gateway import hostname_intersection, names_listener, namespace_allowed, no_matching_parent
from meshctl.translate.ir import Condition as Status
from meshctl.translate.ir import ConditionStatus, ListenerStatus, ParentStatus

__all__ = [
    "ALB_CONTROLLERS",
    "GATEWAY_FINALIZER",
    "NLB_CONTROLLERS",
    "GatewayPlan",
    "GatewayReport",
    "RouteReport",
    "build_gateway_stacks",
    "gateway_stack_id",
]

ALB_CONTROLLERS = ("meshctl.dev/alb", "gateway.k8s.aws/alb")
NLB_CONTROLLERS = ("meshctl.dev/nlb", "gateway.k8s.aws/nlb")
GATEWAY_FINALIZER = "gateway.elbv2.meshctl.dev/resources"
_CONFIG_GROUPS = (ELBV2_GROUP, "gateway.k8s.aws")  # a parametersRef written for LBC finds ours of the same name
_ALB_KINDS = ((GATEWAY_GROUP, "HTTPRoute"), (GATEWAY_GROUP, "GRPCRoute"))
_NLB_KINDS = {"TCP": "TCPRoute", "UDP": "UDPRoute", "TLS": "TLSRoute"}
_REDIRECT_CODES = {301: "HTTP_301", 302: "HTTP_302"}


def gateway_stack_id(gateway: ObjectKey) -> str:
    """``gateway/<ns>/<name>``: two slashes, so never an Ingress's or a Service's (one) or a group name's (none)."""
    return f"gateway/{gateway.namespace}/{gateway.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayReport:
    """What a Gateway's status says before AWS is asked: Accepted, and each listener's conditions (the reconciler
    adds Programmed and the load balancer's DNS name)."""

    key: ObjectKey
    generation: int
    controller: str
    stack_id: str
    accepted: Status
    listeners: tuple[ListenerStatus, ...]
    made: frozenset[str] = frozenset()  # the listeners a load balancer listener serves (a route attached)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteReport:
    """A route's ``status.parents`` entries for our Gateways, each with the controller that writes it."""

    key: ObjectKey
    generation: int
    parents: tuple[tuple[str, ParentStatus], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayPlan:
    stacks: tuple[Stack, ...] = ()
    gateways: tuple[GatewayReport, ...] = ()
    routes: tuple[RouteReport, ...] = ()
    classes: tuple[tuple[ObjectKey, int, Status], ...] = ()  # (GatewayClass, its generation, Accepted)


def _ok(type_: str, reason: str, message: str) -> Status:
    return Status(type=type_, status=ConditionStatus.TRUE, reason=reason, message=message)


def _bad(type_: str, reason: str, message: str) -> Status:
    return Status(type=type_, status=ConditionStatus.FALSE, reason=reason, message=message)


class _Unsupported(Exception):
    """A route field an ALB cannot serve: the route's Accepted says so (UnsupportedValue)."""


def build_gateway_stacks(
    model: Model,
    *,
    cluster: str,
    default_target_type: str = "instance",
    certificates: CertificateLookup | None = None,
) -> GatewayPlan:
    classes = {
        k.name: c
        for k, c in model.gateway_classes.items()
        if c.controller_name in ALB_CONTROLLERS or c.controller_name in NLB_CONTROLLERS
    }
    plan_classes = []
    class_configs: dict[str, tuple[LoadBalancerConfiguration | None, str | None]] = {}
    for name, klass in sorted(classes.items()):
        config, problem = _config(model, klass.parameters, None)
        class_configs[name] = (config, problem)
        accepted = (
            _bad("Accepted", "InvalidParameters", problem)
            if problem
            else _ok("Accepted", "Accepted", f"served by {klass.controller_name}")
        )
        plan_classes.append((klass.key, klass.meta.generation, accepted))
    stacks: list[Stack] = []
    reports: list[GatewayReport] = []
    parents: dict[ObjectKey, list[tuple[str, ParentStatus]]] = {}
    for key in sorted(model.gateways):
        gateway = model.gateways[key]
        gc = classes.get(gateway.class_name)
        stack_id = gateway_stack_id(key)
        if gc is None or gateway.lifecycle.deleting:
            if GATEWAY_FINALIZER in gateway.lifecycle.finalizers:  # deleted, or no longer ours: delete what it owns
                stacks.append(
                    Stack(id=stack_id, kind="gateway", owners=(), leaving=(key,), finalizer=GATEWAY_FINALIZER)
                )
            continue
        builder = _GatewayBuilder(model, cluster, gateway, gc, default_target_type, certificates)
        stack, report = builder.build(class_configs[gc.meta.name])
        stacks.append(stack)
        reports.append(report)
        for route_key, entry in builder.route_parents:
            parents.setdefault(route_key, []).append((gc.controller_name, entry))
    routes = []
    for route_key in sorted(parents):
        route = model.http_routes.get(route_key) or model.l4_routes.get(route_key)
        assert route is not None
        routes.append(RouteReport(key=route_key, generation=route.meta.generation, parents=tuple(parents[route_key])))
    return GatewayPlan(stacks=tuple(stacks), gateways=tuple(reports), routes=tuple(routes), classes=tuple(plan_classes))


def _config(
    model: Model, ref: ParametersRef | None, namespace: str | None
) -> tuple[LoadBalancerConfiguration | None, str | None]:
    """The LoadBalancerConfiguration a parametersRef names (a class's names its namespace; a Gateway's is its own),
    or why it cannot be used."""
    if ref is None:
        return None, None
    if ref.group not in _CONFIG_GROUPS or ref.kind != "LoadBalancerConfiguration":
        return None, f"parametersRef {ref.group}/{ref.kind} is not a {ELBV2_GROUP} LoadBalancerConfiguration"
    ns = namespace or ref.namespace
    if not ns:
        return None, f"parametersRef LoadBalancerConfiguration {ref.name} needs a namespace"
    config = model.load_balancer_configurations.get(ObjectKey("LoadBalancerConfiguration", ns, ref.name))
    if config is None:
        return None, f"LoadBalancerConfiguration {ns}/{ref.name} not found"
    if config.problem is not None:
        return None, f"LoadBalancerConfiguration {ns}/{ref.name}: {config.problem}"
    return config, None


@dataclass(slots=True)
class _Attached:
    """A route attached to one listener: for the listener's rules and counts."""

    route: HTTPRoute | L4Route
    hostnames: tuple[str, ...]


@dataclass(slots=True)
class _ListenerState:
    spec: GatewayListener
    conditions: list[Status]
    kinds: tuple[tuple[str, str], ...]
    attached: list[_Attached] = field(default_factory=list)
    certificates: tuple[str, ...] = ()  # HTTPS / TLS: the first is the default

    @property
    def serving(self) -> bool:
        return all(c.status is ConditionStatus.TRUE for c in self.conditions if c.type in ("Accepted", "ResolvedRefs"))


class _GatewayBuilder:
    def __init__(
        self,
        model: Model,
        cluster: str,
        gateway: Gateway,
        gc: GatewayClass,
        default_target_type: str,
        certificates: CertificateLookup | None,
    ) -> None:
        self.model, self.cluster, self.gateway, self.gc = model, cluster, gateway, gc
        self.key = gateway.key
        self.stack_id = gateway_stack_id(self.key)
        self.alb = gc.controller_name in ALB_CONTROLLERS
        self.default_target_type = default_target_type
        self.certificates = certificates
        self.route_parents: list[tuple[ObjectKey, ParentStatus]] = []
        self.target_groups: dict[str, TargetGroup] = {}
        self.tg_defaults: Mapping[str, str] = MappingProxyType({})
        self.config_problems: list[str] = []  # a TargetGroupConfiguration that cannot be used: the Gateway waits

    # --- the Gateway as a whole -----------------------------------------------------------------------------

    def build(self, class_config: tuple[LoadBalancerConfiguration | None, str | None]) -> tuple[Stack, GatewayReport]:
        own, own_problem = _config(self.model, self.gateway.parameters, self.key.namespace)
        problem = class_config[1] or own_problem
        if self.gateway.errors:
            problem = "; ".join(str(e) for e in self.gateway.errors)
        listeners = self._listeners()
        try:
            settings = self._settings(class_config[0], own)
        except AnnotationError as exc:  # (a tag or attribute the two configurations cannot merge)
            problem = problem or _config_message(str(exc))
            settings = _Settings(ann=Annotations(ALB, {}), listeners={})
        self._attach_routes(listeners)
        self._certificates(listeners, settings)
        made = [li for li in listeners if li.serving and li.attached]
        load_balancer = None
        rules: list[Rule] = []
        stack_listeners: list[Listener] = []
        if problem is None:
            try:
                load_balancer = self._load_balancer(settings)
                for li in made:
                    listener, listener_rules = self._listener(li, settings)
                    stack_listeners.append(listener)
                    rules.extend(listener_rules)
            except AnnotationError as exc:
                problem = _config_message(str(exc))
            if self.config_problems:
                problem = "; ".join(dict.fromkeys(self.config_problems))
        accepted = _ok("Accepted", "Accepted", f"accepted by {self.gc.controller_name}")
        if problem is not None:
            reason = "Invalid" if self.gateway.errors else "InvalidParameters"
            accepted = _bad("Accepted", reason, problem)
        elif not any(li.serving for li in listeners):
            accepted = _bad("Accepted", "ListenersNotValid", "no listener is valid")
        elif not all(li.serving for li in listeners):
            bad = ", ".join(li.spec.name for li in listeners if not li.serving)
            accepted = _ok("Accepted", "ListenersNotValid", f"listeners not valid: {bad}")
        report = GatewayReport(
            key=self.key,
            generation=self.gateway.meta.generation,
            controller=self.gc.controller_name,
            stack_id=self.stack_id,
            accepted=accepted,
            listeners=tuple(
                ListenerStatus(
                    name=li.spec.name,
                    supported_kinds=li.kinds,
                    attached_routes=len(li.attached),
                    conditions=tuple(li.conditions),
                )
                for li in listeners
            ),
            made=frozenset(li.spec.name for li in made),
        )
        if problem is not None or load_balancer is None:
            invalid = Problem(owner=self.key, reason="InvalidParameters", message=problem or "invalid")
            return Stack(
                id=self.stack_id, kind="gateway", owners=(self.key,), finalizer=GATEWAY_FINALIZER, problems=(invalid,)
            ), report
        return Stack(
            id=self.stack_id,
            kind="gateway",
            owners=(self.key,),
            finalizer=GATEWAY_FINALIZER,
            load_balancer=load_balancer,
            listeners=tuple(stack_listeners),
            rules=tuple(rules),
            target_groups=tuple(self.target_groups[k] for k in sorted(self.target_groups)),
        ), report

    def _settings(
        self, from_class: LoadBalancerConfiguration | None, own: LoadBalancerConfiguration | None
    ) -> _Settings:
        """The class's and the Gateway's configurations merged: the class's wins unless it says prefer-gateway."""
        ordered = [c for c in (from_class, own) if c is not None]
        if from_class is not None and from_class.prefer_gateway:
            ordered.reverse()
        listeners = {}
        for config in reversed(ordered):  # the preferred one written last, so it wins
            for lc in config.listeners:
                listeners[(lc.protocol, lc.port)] = lc
        defaults: dict[str, str] = {}
        for config in reversed(ordered):
            if config.default_target_group is not None:
                tgc = self.model.target_group_configurations.get(
                    ObjectKey("TargetGroupConfiguration", config.meta.namespace, config.default_target_group)
                )
                if tgc is not None and tgc.service is None:
                    defaults.update(tgc.annotations)
        self.tg_defaults = MappingProxyType(defaults)
        merged: dict[str, str] = {}
        for config in reversed(ordered):
            for name, value in config.annotations.items():
                short = name.removeprefix(ALB)
                if short in ("tags", "load-balancer-attributes") and name in merged:
                    later = Annotations(ALB, config.annotations).string_map(short)  # (the preferred one's)
                    value = map_value({**Annotations(ALB, merged).string_map(short), **later})
                merged[name] = value
        return _Settings(ann=Annotations(ALB, merged), listeners=listeners)

    def _load_balancer(self, settings: _Settings) -> LoadBalancer:
        ann = settings.ann
        scheme = ann.string("scheme", "internal", choices=("internal", "internet-facing")) or "internal"
        address_type = ann.string(
            "ip-address-type", "ipv4", choices=("ipv4", "dualstack", "dualstack-without-public-ipv4")
        )
        if address_type == "dualstack-without-public-ipv4" and (scheme != "internet-facing" or not self.alb):
            raise AnnotationError(ALB + "ip-address-type", "dualstack-without-public-ipv4 is for internet-facing ALBs")
        kind = "alb" if self.alb else "nlb"
        return LoadBalancer(
            name=ann.string("load-balancer-name") or load_balancer_name(self.cluster, self.stack_id, scheme, kind),
            type="application" if self.alb else "network",
            scheme=scheme,
            subnets=tuple(ann.string_list("subnets")),
            tags=tuple(sorted(ann.string_map("tags").items())),
            security_groups=alb_security_groups(ann),
            attributes=load_balancer_attributes(ann, "load-balancer-attributes"),
            ip_address_type=address_type or "ipv4",
        )

    # --- listeners ------------------------------------------------------------------------------------------

    def _listeners(self) -> list[_ListenerState]:
        served = ("HTTP", "HTTPS") if self.alb else tuple(_NLB_KINDS)
        by_port: dict[int, set[str]] = {}
        for li in self.gateway.listeners:
            by_port.setdefault(li.port, set()).add(li.protocol)
        out = []
        for li in self.gateway.listeners:
            conditions = []
            if li.protocol not in served:
                what = "an ALB" if self.alb else "an NLB"
                conditions.append(
                    _bad("Accepted", "UnsupportedProtocol", f"{what} serves {', '.join(served)}, not {li.protocol}")
                )
            elif li.tls_mode == "Passthrough":
                conditions.append(_bad("Accepted", "UnsupportedValue", "the load balancer terminates TLS"))
            else:
                conditions.append(_ok("Accepted", "Accepted", "accepted"))
            default_kinds: tuple[tuple[str, str], ...] = (
                _ALB_KINDS if self.alb else ((GATEWAY_GROUP, _NLB_KINDS.get(li.protocol, "")),)
            )
            kinds = default_kinds if li.protocol in served else ()
            resolved = _ok("ResolvedRefs", "ResolvedRefs", "resolved")
            if li.allowed.kinds:
                bad = [k for k in li.allowed.kinds if k not in default_kinds]
                kinds = tuple(k for k in li.allowed.kinds if k in default_kinds)
                if bad:
                    names = ", ".join(f"{g}/{k}" for g, k in bad)
                    resolved = _bad("ResolvedRefs", "InvalidRouteKinds", f"route kinds not served: {names}")
            conditions.append(resolved)
            if len(by_port[li.port]) > 1:
                conditions.append(_ok("Conflicted", "ProtocolConflict", f"port {li.port} has several protocols"))
                conditions[0] = _bad("Accepted", "ProtocolConflict", f"port {li.port} has several protocols")
            else:
                conditions.append(_bad("Conflicted", "NoConflicts", "no conflicts"))
            out.append(_ListenerState(spec=li, conditions=conditions, kinds=kinds))
        return out

    def _certificates(self, listeners: list[_ListenerState], settings: _Settings) -> None:
        """HTTPS (ALB) and TLS (NLB) listeners take the certificates their listenerConfiguration names, else the ACM
        certificates covering their hostnames (the listener's, else its routes'), as LBC discovers them."""
        for li in listeners:
            if li.spec.protocol not in ("HTTPS", "TLS") or not li.serving:
                continue
            config = settings.listeners.get((li.spec.protocol, li.spec.port))
            if config is not None and config.certificates:
                li.certificates = config.certificates
                continue
            hosts = tuple(sorted({h for a in li.attached for h in a.hostnames if h != "*"}))
            if li.spec.hostname:
                hosts = (li.spec.hostname,)
            found: tuple[str, ...] = ()
            missing = hosts
            if hosts and self.certificates is not None:
                found, missing = self.certificates(hosts)
            if not hosts or missing or not found:
                need = f"an issued ACM certificate for {', '.join(missing)}" if missing else "hostnames to find one"
                message = (
                    f"{li.spec.protocol} port {li.spec.port} needs a certificate: listenerConfigurations "
                    f"{li.spec.protocol}:{li.spec.port} in a LoadBalancerConfiguration, or {need}"
                )
                li.conditions[1] = _bad("ResolvedRefs", "InvalidCertificateRef", message)
                continue
            li.certificates = found

    def _listener(self, li: _ListenerState, settings: _Settings) -> tuple[Listener, list[Rule]]:
        port, protocol = li.spec.port, li.spec.protocol
        config = settings.listeners.get((protocol, port))
        certificates = li.certificates
        tls = protocol in ("HTTPS", "TLS")
        policy = (config.ssl_policy if config is not None else None) or "ELBSecurityPolicy-2016-08"
        if not self.alb:
            (attached,) = li.attached
            route = attached.route
            assert isinstance(route, L4Route)
            resource_id = self._l4_target_group(li, route)
            action: Action = Forward(targets=((resource_id, 1),)) if resource_id else FixedResponse(status_code="500")
            listener = Listener(
                port=port,
                protocol=protocol,
                default_action=action,
                certificates=certificates if tls else (),
                ssl_policy=policy if tls else None,
            )
            return listener, []
        entries: list[tuple[tuple[object, ...], tuple[Condition, ...], Action]] = []
        for attached in li.attached:
            route = attached.route
            assert isinstance(route, HTTPRoute) and route.spec is not None
            for i, rule in enumerate(route.spec.rules):
                rule_config = self._rule_configuration(route, rule, f"spec.rules[{i}]")
                action = self._rule_action(route, i, rule, li, rule_config)
                sources = rule_config.source_ips if rule_config is not None else ()
                extra = (Condition(field="source-ip", values=sources),) if sources else ()
                for j, match in enumerate(rule.matches):
                    for hostname in attached.hostnames:
                        conditions = _match_conditions(hostname, match) + extra
                        order = (*_precedence(hostname, match), route.created, route.meta.namespace, route.meta.name)
                        entries.append(((*order, i, j), conditions, action))
        entries.sort(key=lambda e: e[0])
        rules = [
            Rule(listener_port=port, priority=n, conditions=conditions, action=action)
            for n, (_, conditions, action) in enumerate(entries, start=1)
        ]
        listener = Listener(
            port=port,
            protocol=protocol,
            default_action=FixedResponse(status_code="404"),
            certificates=certificates if tls else (),
            ssl_policy=policy if tls else None,
        )
        return listener, rules

    # --- routes ---------------------------------------------------------------------------------------------

    def _attach_routes(self, listeners: list[_ListenerState]) -> None:
        """Every route one of whose parentRefs names this Gateway, older first (an NLB listener serves the oldest):
        attached to the listeners it may use; a status entry per such parentRef."""
        routes: list[HTTPRoute | L4Route] = (
            [r for r in self.model.http_routes.values()] if self.alb else list(self.model.l4_routes.values())
        )
        for route in sorted(routes, key=lambda r: (r.created if isinstance(r, HTTPRoute) else "", r.key)):
            for parent in _parents(route):
                if parent.group != GATEWAY_GROUP or parent.kind != "Gateway":
                    continue
                if (parent.namespace, parent.name) != (self.key.namespace, self.key.name):
                    continue
                self.route_parents.append((route.key, self._attach(route, parent, listeners)))

    def _attach(self, route: HTTPRoute | L4Route, parent: ParentRef, listeners: list[_ListenerState]) -> ParentStatus:
        def entry(*conditions: Status) -> ParentStatus:
            return ParentStatus(parent=parent, conditions=conditions)

        resolved = _ok("ResolvedRefs", "ResolvedRefs", "resolved")
        errors = route.errors
        if (isinstance(route, HTTPRoute) and route.spec is None) or errors:
            message = "; ".join(str(e) for e in errors) or "invalid"
            return entry(_bad("Accepted", "UnsupportedValue", message), resolved)
        candidates = [li for li in listeners if names_listener(parent, li.spec)]
        if not candidates:
            return entry(no_matching_parent(parent, self.key.name), resolved)
        kind = (GATEWAY_GROUP, route.key.kind)
        allowed = [
            li
            for li in candidates
            if li.serving
            and kind in li.kinds
            and namespace_allowed(li.spec, self.gateway, route.meta.namespace, self.model)
        ]
        if not allowed:
            message = f"no listener of Gateway {self.key.name} allows {route.key.kind}s of {route.meta.namespace}"
            return entry(_bad("Accepted", "NotAllowedByListeners", message), resolved)
        route_hosts = route.spec.hostnames if isinstance(route, HTTPRoute) and route.spec else ()
        if isinstance(route, L4Route):
            route_hosts = route.hostnames
        hosts = [(li, hostname_intersection(li.spec.hostname, route_hosts)) for li in allowed]
        hosts = [(li, h) for li, h in hosts if h]
        if not hosts:
            message = f"no hostname of the route matches a listener of Gateway {self.key.name}"
            return entry(_bad("Accepted", "NoMatchingListenerHostname", message), resolved)
        try:
            problems = self._check_route(route)
        except _Unsupported as exc:
            return entry(_bad("Accepted", "UnsupportedValue", str(exc)), resolved)
        if isinstance(route, L4Route):
            taken = [li for li, _ in hosts if li.attached]
            if taken:
                other = taken[0].attached[0].route.key
                message = (
                    f"listener {taken[0].spec.name} already forwards to {other.kind} {other.namespace}/{other.name}"
                )
                return entry(
                    _bad("Accepted", "UnsupportedValue", f"an NLB listener serves one route: {message}"), resolved
                )
        for li, names in hosts:
            li.attached.append(_Attached(route=route, hostnames=names))
        if problems:
            reason, _ = problems[0]
            resolved = _bad("ResolvedRefs", reason, "; ".join(m for _, m in problems))
        return entry(_ok("Accepted", "Accepted", "accepted"), resolved)

    def _check_route(self, route: HTTPRoute | L4Route) -> list[tuple[str, str]]:
        """What the load balancer cannot serve (raises _Unsupported) and the backends that cannot be resolved."""
        problems: list[tuple[str, str]] = []
        if isinstance(route, L4Route):
            if route.rules != 1 or len(route.backends) != 1:
                raise _Unsupported("an NLB listener forwards to one backend: one rule with one backendRef")
            self._backend(route, route.backends[0], "spec.rules[0].backendRefs[0]", problems)
            return problems
        assert route.spec is not None
        for i, rule in enumerate(route.spec.rules):
            path = f"spec.rules[{i}]"
            unsupported = [
                name
                for name, present in (
                    ("filters RequestHeaderModifier", rule.request_headers),
                    ("filters ResponseHeaderModifier", rule.response_headers),
                    ("filters URLRewrite", rule.rewrite),
                    ("filters RequestMirror", rule.mirrors),
                    ("timeouts", rule.request_timeout_ms or rule.backend_timeout_ms),
                    ("retry", rule.retry),
                )
                if present
            ]
            if unsupported:
                raise _Unsupported(f"{path}.{unsupported[0]}: an ALB cannot do it")
            if rule.redirect is not None:
                if rule.redirect.prefix_path is not None:
                    raise _Unsupported(f"{path}.filters RequestRedirect: ReplacePrefixMatch is not an ALB redirect")
                if rule.redirect.status_code not in _REDIRECT_CODES:
                    raise _Unsupported(f"{path}.filters RequestRedirect: statusCode {rule.redirect.status_code}")
            if len(rule.backends) > 5:
                raise _Unsupported(f"{path}.backendRefs: an ALB forwards to at most 5 target groups")
            for j, match in enumerate(rule.matches):
                _match_conditions("*", match, f"{path}.matches[{j}]")
            config = self._rule_configuration(route, rule, path, problems)
            if config is not None and config is not _UNRESOLVED and config.problem is not None:
                where = f"ListenerRuleConfiguration {route.meta.namespace}/{config.meta.name}"
                raise _Unsupported(f"{path}.filters: {where}: {config.problem}")
            for k, backend in enumerate(rule.backends):
                self._backend(route, backend, f"{path}.backendRefs[{k}]", problems)
        return problems

    def _backend(
        self, route: HTTPRoute | L4Route, backend: BackendRef, path: str, problems: list[tuple[str, str]]
    ) -> tuple[Service, ServicePort] | None:
        ns = route.meta.namespace
        if not backend.is_service:
            problems.append(("InvalidKind", f"{path}: {backend.group or 'core'}/{backend.kind} is not a Service"))
            return None
        if backend.namespace != ns and not any(
            g.meta.namespace == backend.namespace and g.permits(route.key.kind, ns, "Service", backend.name)
            for g in self.model.reference_grants.values()
        ):
            message = (
                f"{path}: no ReferenceGrant in {backend.namespace} lets {route.key.kind}s of {ns} refer to Service "
                f"{backend.name}"
            )
            problems.append(("RefNotPermitted", message))
            return None
        service = self.model.services.get(ObjectKey("Service", backend.namespace, backend.name))
        if service is None:
            problems.append(("BackendNotFound", f"{path}: Service {backend.namespace}/{backend.name} not found"))
            return None
        port = next((p for p in service.ports if p.port == backend.port), None)
        if port is None:
            problems.append(("BackendNotFound", f"{path}: Service {backend.name} has no port {backend.port}"))
            return None
        return service, port

    def _rule_configuration(
        self, route: HTTPRoute, rule: GatewayRule, path: str, problems: list[tuple[str, str]] | None = None
    ) -> ListenerRuleConfiguration | None:
        """The ListenerRuleConfiguration a rule's ExtensionRef names (of the route's namespace); None without one. One
        that cannot be resolved is a problem (and the rule answers 500, as the spec asks of a filter not found)."""
        if not rule.extensions:
            return None
        ref = rule.extensions[0]
        if ref.group not in _CONFIG_GROUPS or ref.kind != "ListenerRuleConfiguration" or len(rule.extensions) > 1:
            if problems is not None:
                message = f"{path}.filters: ExtensionRef {ref.group}/{ref.kind} {ref.name}: one {ELBV2_GROUP} "
                problems.append(("InvalidKind", message + "ListenerRuleConfiguration is served"))
            return _UNRESOLVED
        key = ObjectKey("ListenerRuleConfiguration", route.meta.namespace, ref.name)
        config = self.model.listener_rule_configurations.get(key)
        if config is None:
            if problems is not None:
                problems.append(
                    (
                        "BackendNotFound",
                        f"{path}.filters: ListenerRuleConfiguration {key.namespace}/{ref.name} not found",
                    )
                )
            return _UNRESOLVED
        return config

    def _rule_action(
        self,
        route: HTTPRoute,
        i: int,
        rule: GatewayRule,
        li: _ListenerState,
        config: ListenerRuleConfiguration | None,
    ) -> Action:
        """``config``: the rule's ListenerRuleConfiguration (``_rule_configuration``)."""
        if config is _UNRESOLVED:
            return FixedResponse(status_code="500")
        if config is not None and config.fixed_response is not None:
            status, content_type, body = config.fixed_response
            return FixedResponse(status_code=status, content_type=content_type, message_body=body)
        if rule.redirect is not None:
            r = rule.redirect
            return Redirect(
                protocol=r.scheme.upper() if r.scheme else "#{protocol}",
                port=str(r.port)
                if r.port
                else ("#{port}" if not r.scheme else ("443" if r.scheme == "https" else "80")),
                host=r.hostname or "#{host}",
                path=r.full_path or "/#{path}",
                query=(config.redirect_query if config is not None else None) or "#{query}",
                status_code=_REDIRECT_CODES[r.status_code],
            )
        targets = []
        for k, backend in enumerate(rule.backends):
            resolved = self._backend(route, backend, f"spec.rules[{i}].backendRefs[{k}]", [])
            if resolved is None:
                return FixedResponse(status_code="500")  # LBC: a backend that cannot be resolved
            resource_id = self._target_group(route, backend, *resolved, li)
            if resource_id is None:
                return FixedResponse(status_code="500")
            targets.append((resource_id, min(backend.weight, 999)))
        if not targets or sum(w for _, w in targets) == 0:
            return FixedResponse(status_code="500")  # no backends (or all weighted 0): the spec's 500
        return Forward(targets=tuple(targets))

    def _target_group(
        self, route: HTTPRoute | L4Route, backend: BackendRef, service: Service, port: ServicePort, li: _ListenerState
    ) -> str | None:
        """One target group per route, Service and port; settings from the Service's TargetGroupConfiguration over
        the Gateway's default one (LBC's resolution order)."""
        resource_id = f"{route.key.kind}/{route.meta.namespace}/{route.meta.name}-{service.meta.name}:{port.port}"
        if resource_id in self.target_groups:
            return resource_id
        own = next(
            (
                t
                for t in self.model.target_group_configurations.values()
                if t.service == service.meta.name and t.meta.namespace == service.meta.namespace
            ),
            None,
        )
        ann = Annotations(ALB, own.annotations if own is not None else {}, self.tg_defaults)
        try:
            if own is not None and own.problem is not None:
                raise AnnotationError(ALB + "target", own.problem)
            target_type = ann.string("target-type", self.default_target_type, choices=("ip", "instance")) or "ip"
            if target_type == "instance" and port.node_port is None:
                raise AnnotationError(
                    ALB + "target-type",
                    f"instance targets need a NodePort, and Service {service.meta.name} port {port.port} has none",
                )
            if self.alb:
                grpc = route.key.kind == "GRPCRoute" and li.spec.protocol == "HTTPS"  # LBC: GRPC only behind HTTPS
                h2c = port.app_protocol == "kubernetes.io/h2c"
                version_default = "GRPC" if grpc else ("HTTP2" if h2c else "HTTP1")
                protocol = ann.string("backend-protocol", "HTTP", choices=("HTTP", "HTTPS")) or "HTTP"
                version = ann.string("backend-protocol-version", version_default, choices=("HTTP1", "HTTP2", "GRPC"))
                defaults = GRPC_HEALTH_DEFAULTS if version == "GRPC" else HEALTH_DEFAULTS
                health = health_check(ann, HEALTH_ANNOTATIONS, defaults, ("HTTP", "HTTPS"))
            else:
                protocol = "UDP" if li.spec.protocol == "UDP" else "TCP"
                version = None
                health = health_check(ann, HEALTH_ANNOTATIONS, NLB_HEALTH_DEFAULTS, ("TCP", "HTTP", "HTTPS"))
            attrs = attributes(ann, "target-group-attributes")
            tags = {**Annotations(ALB, self.tg_defaults).string_map("tags"), **ann.string_map("tags")}
        except AnnotationError as exc:
            where = f"TargetGroupConfiguration {own.meta.namespace}/{own.meta.name}" if own else "the default"
            self.config_problems.append(f"{where}: {_config_message(str(exc))}")
            return None
        self.target_groups[resource_id] = target_group(
            cluster=self.cluster,
            stack=self.stack_id,
            resource_id=resource_id,
            service=ObjectKey("Service", service.meta.namespace, service.meta.name),
            port=port,
            target_type=target_type,
            protocol=protocol,
            protocol_version=version,
            health=health,
            attrs=attrs,
            tags=tags,
            owner=self.key,
        )
        return resource_id

    def _l4_target_group(self, li: _ListenerState, route: L4Route) -> str | None:
        resolved = self._backend(route, route.backends[0], "spec.rules[0].backendRefs[0]", [])
        if resolved is None:
            return None
        return self._target_group(route, route.backends[0], *resolved, li)


# A rule's ExtensionRef that names no ListenerRuleConfiguration of ours (the rule answers 500).
_UNRESOLVED = ListenerRuleConfiguration(meta=Meta(namespace="", name=""), problem="unresolved")


@dataclass(frozen=True, slots=True)
class _Settings:
    ann: Annotations
    listeners: Mapping[tuple[str, int], ListenerConfiguration]


def _parents(route: HTTPRoute | L4Route) -> tuple[ParentRef, ...]:
    if isinstance(route, L4Route):
        return route.parents
    return route.spec.parents if route.spec is not None else route.parents_if_invalid


# The LoadBalancerConfiguration / TargetGroupConfiguration field each annotation stands for, for error messages.
_FIELDS = {
    "scheme": "spec.scheme",
    "ip-address-type": "spec.ipAddressType",
    "load-balancer-name": "spec.loadBalancerName",
    "manage-backend-security-group-rules": "spec.manageBackendSecurityGroupRules",
    "security-groups": "spec.securityGroups",
    "inbound-cidrs": "spec.sourceRanges",
    "subnets": "spec.loadBalancerSubnets",
    "load-balancer-attributes": "spec.loadBalancerAttributes",
    "tags": "tags",
    "target-type": "defaultConfiguration.targetType",
    "backend-protocol": "defaultConfiguration.protocol",
    "backend-protocol-version": "defaultConfiguration.protocolVersion",
    "target-group-attributes": "defaultConfiguration.targetGroupAttributes",
}


def _config_message(message: str) -> str:
    """An annotation error as the configuration field it came from."""
    prefix = f"annotation {ALB}"
    if message.startswith(prefix):
        name, _, rest = message[len(prefix) :].partition(": ")
        return f"{_FIELDS.get(name, 'defaultConfiguration.healthCheckConfig' if 'health' in name else name)}: {rest}"
    return message


def _precedence(hostname: str, match: HttpMatch) -> tuple[object, ...]:
    """LBC's SortAllRulesByPrecedence: an exact hostname before a wildcard, longer first; then Exact paths before
    prefixes, longer first; then a method, more headers, more query parameters."""
    exact_path = match.path_exact is not None
    path = match.path_exact or match.segment_prefix or match.prefix or ""
    return (
        hostname == "*",
        hostname.startswith("*."),
        -len(hostname),
        not exact_path,
        -len(path),
        match.method is None,
        -len(match.headers),
        -len(match.query_parameters),
    )


def _match_conditions(hostname: str, match: HttpMatch, where: str = "") -> tuple[Condition, ...]:
    """An HTTPRoute/GRPCRoute match as ALB rule conditions; raises _Unsupported for what ALB cannot match."""
    conditions: list[Condition] = []
    if hostname != "*":
        conditions.append(Condition(field="host-header", values=(hostname,)))
    if match.path_regex is not None:
        raise _Unsupported(f"{where}.path: RegularExpression is not an ALB path pattern")
    if match.path_exact is not None:
        conditions.append(Condition(field="path-pattern", values=(match.path_exact,)))
    elif match.segment_prefix is not None and match.segment_prefix.rstrip("/"):
        prefix = match.segment_prefix.rstrip("/")  # whole segments: /a matches /a and /a/..., not /ab
        conditions.append(Condition(field="path-pattern", values=(prefix, f"{prefix}/*")))
    else:  # "/", or a gRPC service's "/svc/"
        conditions.append(Condition(field="path-pattern", values=(f"{match.prefix or '/'}*",)))
    if match.method is not None:
        conditions.append(Condition(field="http-request-method", values=(match.method,)))
    for header in match.headers:
        if header.match is None or header.match.exact is None or header.invert:
            raise _Unsupported(f"{where}.headers {header.name}: an ALB matches header values exactly")
        conditions.append(Condition(field="http-header", header=header.name, values=(header.match.exact,)))
    for query in match.query_parameters:
        if query.exact is None:
            raise _Unsupported(f"{where}.queryParams {query.name}: an ALB matches query values exactly")
        conditions.append(Condition(field="query-string", pairs=((query.name, query.exact),)))
    return tuple(conditions)
