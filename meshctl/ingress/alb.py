"""Ingresses -> ALB stacks (pure: the model in, desired stacks out; no AWS calls).

Ingresses that are ours (meshctl/ingress/classes.py: LBC's rules) are grouped by
``alb.ingress.kubernetes.io/group.name`` (or each alone, as ``namespace/name``), ordered by ``group.order`` then
name, and merged the way LBC merges them: exclusive settings must agree across the group, listen ports and
certificates add up. A bad annotation or backend on any member becomes a Problem and the whole group is left as AWS
has it (never half-applied), as LBC does."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from meshctl.ingress.annotations import ALB, AnnotationError, Annotations, map_value
from meshctl.ingress.classes import DEFAULT_INGRESS_CLASS, classify, deciding_class
from meshctl.ingress.naming import INGRESS_FINALIZER, group_finalizer, load_balancer_name
from meshctl.ingress.stack import (
    Action,
    Condition,
    FixedResponse,
    Forward,
    HealthCheck,
    Listener,
    LoadBalancer,
    Problem,
    Redirect,
    Rule,
    SecurityGroups,
    Stack,
    TargetGroup,
    Transform,
)
from meshctl.ingress.target_groups import (
    attributes,
    health_check,
    load_balancer_attributes,
    security_groups,
    target_group,
)
from meshctl.model import Model, ObjectKey
from meshctl.model.ingress import Ingress, IngressBackend, IngressClass, IngressPath

__all__ = [
    "GRPC_HEALTH_DEFAULTS",
    "HEALTH_ANNOTATIONS",
    "HEALTH_DEFAULTS",
    "CertificateLookup",
    "alb_security_groups",
    "build_ingress_stacks",
    "ingress_finalizer_group",
]

_GROUP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
_CERT_ARN = re.compile(r"^arn:aws[\w-]*:(acm:[a-z0-9-]+:\d{12}:certificate|iam::\d{12}:server-certificate)/[\w./-]+$")
_TG_ARN = re.compile(r"^arn:aws[\w-]*:elasticloadbalancing:[a-z0-9-]+:\d{12}:targetgroup/[\w-]+/[0-9a-f]+$")
_EXCLUSIVE = (
    "scheme",
    "ssl-redirect",
    "ssl-policy",
    "load-balancer-name",
    "subnets",
    "security-groups",
    "inbound-cidrs",
    "security-group-prefix-lists",
    "manage-backend-security-group-rules",
    "load-balancer-attributes",
    "ip-address-type",
)
HEALTH_ANNOTATIONS = {
    "protocol": "healthcheck-protocol",
    "port": "healthcheck-port",
    "path": "healthcheck-path",
    "interval": "healthcheck-interval-seconds",
    "timeout": "healthcheck-timeout-seconds",
    "healthy": "healthy-threshold-count",
    "unhealthy": "unhealthy-threshold-count",
    "success_codes": "success-codes",
}
HEALTH_DEFAULTS = HealthCheck(
    protocol="HTTP",
    port="traffic-port",
    path="/",
    interval_seconds=15,
    timeout_seconds=5,
    healthy_threshold=2,
    unhealthy_threshold=2,
    success_codes="200",
)


# LBC's defaults for backend-protocol-version GRPC: the ALB's own gRPC health check, "UNIMPLEMENTED" is healthy.
GRPC_HEALTH_DEFAULTS = replace(HEALTH_DEFAULTS, path="/AWS.ALB/healthcheck", success_codes="12", matcher="GrpcCode")


class _Invalid(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def ingress_finalizer_group(finalizer: str, ingress: ObjectKey) -> str | None:
    """The stack id a finalizer of ours stands for (a group, or the Ingress alone), else None."""
    if finalizer == INGRESS_FINALIZER:
        return f"{ingress.namespace}/{ingress.name}"
    prefix = group_finalizer("")
    return finalizer[len(prefix) :] if finalizer.startswith(prefix) else None


@dataclass
class _Member:
    ingress: Ingress
    key: ObjectKey
    ann: Annotations
    order: int
    ports: dict[int, str] = field(default_factory=dict)  # listen-ports: port -> HTTP | HTTPS
    certificates: list[str] = field(default_factory=list)


def build_ingress_stacks(
    model: Model,
    *,
    cluster: str,
    default_target_type: str = "instance",
    ingress_class: str = DEFAULT_INGRESS_CLASS,
    certificates: CertificateLookup | None = None,
) -> list[Stack]:
    """One stack per IngressGroup that has members, or had them (a member leaving or deleted: its finalizer
    says which group; an empty group's stack deletes what it owns). ``ingress_class``: ``--ingress-class``.
    ``certificates``: finds ACM certificates for the hosts of an HTTPS listener no ``certificate-arn`` names."""
    classes = list(model.ingress_classes.values())
    groups: dict[str, list[Ingress]] = {}
    leaving: dict[str, list[ObjectKey]] = {}
    problems: dict[str, list[Problem]] = {}
    for key in sorted(model.ingresses):
        ingress = model.ingresses[key]
        wanted: str | None = None
        verdict = classify(ingress, classes, ingress_class)
        if verdict.error is not None and not ingress.lifecycle.deleting:
            alone = f"{key.namespace}/{key.name}"
            problems.setdefault(alone, []).append(
                Problem(owner=key, reason="InvalidIngressClass", message=verdict.error)
            )
            groups.setdefault(alone, [])
        if verdict.ours and not ingress.lifecycle.deleting:
            ingress, trouble = _with_class_params(ingress, model, classes)
            if trouble is not None:
                # LBC: a bad parameters reference fails the Ingress where it is; its group is left as it is.
                current = next(
                    (g for f in ingress.lifecycle.finalizers if (g := ingress_finalizer_group(f, key)) is not None),
                    f"{key.namespace}/{key.name}",
                )
                problems.setdefault(current, []).append(
                    Problem(owner=key, reason="InvalidIngressClass", message=trouble)
                )
                groups.setdefault(current, [])
                continue
            try:
                wanted = _stack_id(ingress, key)
            except AnnotationError as exc:
                # Without a valid group we cannot know which stack it joins: report it, change nothing.
                problems.setdefault(f"{key.namespace}/{key.name}", []).append(
                    Problem(owner=key, reason="InvalidAnnotation", message=str(exc))
                )
                wanted = f"{key.namespace}/{key.name}"
                groups.setdefault(wanted, [])
                continue
            groups.setdefault(wanted, []).append(ingress)
        for finalizer in ingress.lifecycle.finalizers:
            group = ingress_finalizer_group(finalizer, key)
            if group is not None and group != wanted:
                leaving.setdefault(group, []).append(key)
    stacks = []
    for stack_id in sorted(groups.keys() | leaving.keys()):
        members = groups.get(stack_id, [])
        builder = _GroupBuilder(model, cluster, stack_id, default_target_type, certificates)
        stack = builder.build(members) if members else Stack(id=stack_id, kind="ingress", owners=())
        stacks.append(
            replace(
                stack,
                leaving=tuple(leaving.get(stack_id, ())),
                finalizer=INGRESS_FINALIZER if "/" in stack_id else group_finalizer(stack_id),
                problems=tuple(problems.get(stack_id, ())) + stack.problems,
            )
        )
    return stacks


def _with_class_params(ingress: Ingress, model: Model, classes: list[IngressClass]) -> tuple[Ingress, str | None]:
    """The Ingress as its IngressClass's IngressClassParams make it (LBC's precedence: a field set there overrides
    the annotation; tags and load balancer attributes merge, the params' winning), or why they cannot apply."""
    chosen = deciding_class(ingress, classes)  # (None for the legacy annotation: no class, no parameters)
    if chosen is None or chosen.parameters is None:
        return ingress, None
    params = model.ingress_class_params.get(ObjectKey("IngressClassParams", "", chosen.parameters))
    if params is None:
        return ingress, f"IngressClass {chosen.meta.name}: IngressClassParams {chosen.parameters} does not exist"
    namespace = model.namespaces.get(ObjectKey("Namespace", "", ingress.meta.namespace))
    selector = params.namespace_selector
    if selector is not None and not selector.matches(namespace.meta.labels if namespace is not None else {}):
        # (LBC's rule: the class's IngressClassParams select the namespaces whose Ingresses may use it)
        return ingress, (
            f"IngressClassParams {chosen.parameters}: its namespaceSelector ({selector}) does not select namespace "
            f"{ingress.meta.namespace}: Ingresses there may not use IngressClass {chosen.meta.name}"
        )
    merged = {**ingress.lifecycle.annotations, **params.annotations}
    for name, extra in (("tags", params.tags), ("load-balancer-attributes", params.attributes)):
        if extra:
            own = Annotations(ALB, ingress.lifecycle.annotations).string_map(name)
            merged[ALB + name] = map_value({**own, **dict(extra)})
    lifecycle = replace(ingress.lifecycle, annotations=MappingProxyType(merged))
    return replace(ingress, lifecycle=lifecycle), None


def _stack_id(ingress: Ingress, key: ObjectKey) -> str:
    ann = Annotations(ALB, ingress.lifecycle.annotations)
    group = ann.string("group.name")
    if group is None:
        return f"{key.namespace}/{key.name}"
    if not _GROUP_NAME.match(group):
        raise AnnotationError(ALB + "group.name", f"{group!r}: at most 63 lower-case letters, digits, '-' or '.'")
    return group


# hosts -> (certificates covering them, hosts none covers): ACM discovery (meshctl/ingress/certificates.py).
CertificateLookup = Callable[[tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]]


class _GroupBuilder:
    def __init__(
        self,
        model: Model,
        cluster: str,
        stack_id: str,
        default_target_type: str,
        certificates: CertificateLookup | None = None,
    ) -> None:
        self.model, self.cluster, self.stack_id = model, cluster, stack_id
        self.default_target_type = default_target_type
        self.certificates = certificates
        self.problems: list[Problem] = []
        self.target_groups: dict[str, TargetGroup] = {}

    def _problem(self, key: ObjectKey, reason: str, message: str) -> None:
        """Once per problem: a backend can be reached from several paths and every listener's default action."""
        problem = Problem(owner=key, reason=reason, message=message)
        if problem not in self.problems:
            self.problems.append(problem)

    def build(self, ingresses: list[Ingress]) -> Stack:
        members = []
        for ingress in ingresses:
            key = ObjectKey("Ingress", ingress.meta.namespace, ingress.meta.name)
            ann = Annotations(ALB, ingress.lifecycle.annotations)
            try:
                order = ann.integer("group.order", 0, minimum=-1000, maximum=1000) or 0
                member = _Member(ingress=ingress, key=key, ann=ann, order=order)
                self._listen(member)
                members.append(member)
            except AnnotationError as exc:
                self._problem(key, "InvalidAnnotation", str(exc))
        members.sort(key=lambda m: (m.order, m.key.namespace, m.key.name))
        owners = tuple(m.key for m in members)
        settings = self._exclusive(members)
        listeners = self._listeners(members, settings)
        rules = self._rules(members, settings)
        if self.problems:
            return Stack(id=self.stack_id, kind="ingress", owners=owners, problems=tuple(self.problems))
        scheme = settings.get("scheme") or "internal"
        tags: dict[str, str] = {}
        for m in members:
            tags.update(m.ann.string_map("tags"))
        try:
            exclusive = Annotations(ALB, {ALB + name: value for name, value in settings.items()})
            groups = alb_security_groups(exclusive)
            attrs = load_balancer_attributes(exclusive, "load-balancer-attributes")
            address_type = exclusive.string(
                "ip-address-type", "ipv4", choices=("ipv4", "dualstack", "dualstack-without-public-ipv4")
            )
            if address_type == "dualstack-without-public-ipv4" and scheme != "internet-facing":
                raise AnnotationError(ALB + "ip-address-type", "dualstack-without-public-ipv4 is for internet-facing")
        except AnnotationError as exc:
            return Stack(
                id=self.stack_id,
                kind="ingress",
                owners=owners,
                problems=(Problem(owner=owners[0], reason="InvalidAnnotation", message=str(exc)),),
            )
        balancer = LoadBalancer(
            name=settings.get("load-balancer-name") or load_balancer_name(self.cluster, self.stack_id, scheme, "alb"),
            type="application",
            scheme=scheme,
            subnets=tuple(s.strip() for s in (settings.get("subnets") or "").split(",") if s.strip()),
            tags=tuple(sorted(tags.items())),
            security_groups=groups,
            attributes=attrs,
            ip_address_type=address_type or "ipv4",
        )
        return Stack(
            id=self.stack_id,
            kind="ingress",
            owners=owners,
            load_balancer=balancer,
            listeners=tuple(listeners.values()),
            rules=tuple(rules),
            target_groups=tuple(self.target_groups[k] for k in sorted(self.target_groups)),
        )

    def _listen(self, m: _Member) -> None:
        m.certificates = m.ann.string_list("certificate-arn")
        for arn in m.certificates:
            if not _CERT_ARN.match(arn):
                raise AnnotationError(ALB + "certificate-arn", f"{arn!r} is not an ACM or IAM certificate ARN")
        listen = m.ann.json("listen-ports")
        if listen is None:  # LBC: HTTPS when a certificate is named or the Ingress has a TLS section
            listen = [{"HTTPS": 443}] if m.certificates or m.ingress.tls_hosts else [{"HTTP": 80}]
        if not isinstance(listen, list) or not all(isinstance(e, dict) and len(e) == 1 for e in listen):
            raise AnnotationError(ALB + "listen-ports", 'expected a list like [{"HTTP": 80}, {"HTTPS": 443}]')
        for entry in listen:
            ((protocol, port),) = entry.items()
            if protocol not in ("HTTP", "HTTPS"):
                raise AnnotationError(ALB + "listen-ports", f"protocol {protocol!r} is not HTTP or HTTPS")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise AnnotationError(ALB + "listen-ports", f"port {port!r} is out of range [1, 65535]")
            if port in m.ports:
                raise AnnotationError(ALB + "listen-ports", f"port {port} is listed twice")
            m.ports[port] = protocol

    def _discovered(self, port: int, members: list[_Member]) -> tuple[str, ...]:
        """No certificate-arn for an HTTPS port: ACM certificates for its members' TLS hosts (else rule hosts), as
        LBC discovers them; every host must be covered."""
        hosts = tuple(
            sorted({h for m in members for h in (m.ingress.tls_hosts or [r.host for r in m.ingress.rules if r.host])})
        )
        found: tuple[str, ...] = ()
        missing = hosts
        if hosts and self.certificates is not None:
            found, missing = self.certificates(hosts)
        if not hosts or missing:
            need = (
                f", or an issued ACM certificate for {', '.join(missing)}" if hosts else " (or TLS hosts to find one)"
            )
            self._problem(members[0].key, "InvalidAnnotation", f"HTTPS port {port} needs {ALB}certificate-arn{need}")
            return ()
        return found

    def _exclusive(self, members: list[_Member]) -> dict[str, str]:
        """Settings only one value of which may exist in a group; a disagreement is reported on each member."""
        settings: dict[str, str] = {}
        first: dict[str, _Member] = {}
        for m in members:
            try:
                m.ann.string("scheme", choices=("internal", "internet-facing"))
                m.ann.integer("ssl-redirect", None, minimum=1, maximum=65535)
                name = m.ann.string("load-balancer-name")
                if name is not None and not re.match(r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?$", name):
                    raise AnnotationError(ALB + "load-balancer-name", f"{name!r}: at most 32 letters, digits or '-'")
            except AnnotationError as exc:
                self._problem(m.key, "InvalidAnnotation", str(exc))
                continue
            for name in _EXCLUSIVE:
                value = m.ann.raw(name)
                if value is None:
                    continue
                if name in settings and settings[name] != value:
                    other = first[name].key
                    self._problem(
                        m.key,
                        "GroupConflict",
                        f"annotation {ALB}{name}: {value!r} conflicts with {settings[name]!r} on "
                        f"{other.namespace}/{other.name} in group {self.stack_id}",
                    )
                    continue
                settings[name], first[name] = value, m
        return settings

    def _listeners(self, members: list[_Member], settings: dict[str, str]) -> dict[int, Listener]:
        protocols: dict[int, str] = {}
        certificates: dict[int, list[str]] = {}
        for m in members:
            for port, protocol in m.ports.items():
                if protocols.setdefault(port, protocol) != protocol:
                    self._problem(
                        m.key, "GroupConflict", f"port {port} is {protocol} here but {protocols[port]} in the group"
                    )
                if protocol == "HTTPS":
                    certificates.setdefault(port, []).extend(
                        c for c in m.certificates if c not in certificates.get(port, [])
                    )
        redirect = settings.get("ssl-redirect")
        if redirect is not None and protocols.get(int(redirect)) != "HTTPS":
            self._problem(
                members[0].key,
                "InvalidAnnotation",
                f"annotation {ALB}ssl-redirect: port {redirect} is not an HTTPS listen port",
            )
        listeners = {}
        for port in sorted(protocols):
            protocol = protocols[port]
            if protocol == "HTTPS" and not certificates.get(port):
                certificates[port] = list(self._discovered(port, [m for m in members if port in m.ports]))
            action: Action = FixedResponse(status_code="404")
            if protocol == "HTTP" and redirect is not None:
                action = Redirect(protocol="HTTPS", port=redirect)
            else:
                for m in members:
                    backend = m.ingress.default_backend
                    if backend is not None and port in m.ports:
                        action = self._action(m, backend)
                        break
            listeners[port] = Listener(
                port=port,
                protocol=protocol,
                default_action=action,
                certificates=tuple(certificates.get(port, ())),
                ssl_policy=(settings.get("ssl-policy") or "ELBSecurityPolicy-2016-08") if protocol == "HTTPS" else None,
            )
        return listeners

    def _rules(self, members: list[_Member], settings: dict[str, str]) -> list[Rule]:
        rules: list[Rule] = []
        priority: dict[int, int] = {}
        redirect = settings.get("ssl-redirect") is not None
        for m in members:
            for host, path in _most_specific_first(m.ingress):
                try:
                    conditions = _conditions(host, path.path, path.path_type)
                    conditions += _annotation_conditions(m.ann, path.backend.service)
                    transforms = _annotation_transforms(m.ann, path.backend.service)
                except (_Invalid, AnnotationError) as exc:
                    self._problem(m.key, getattr(exc, "reason", "InvalidAnnotation"), str(exc))
                    continue
                action = self._action(m, path.backend)
                for port in sorted(m.ports):
                    if redirect and m.ports[port] == "HTTP":
                        continue  # every HTTP request is redirected: LBC ignores rules there
                    priority[port] = priority.get(port, 0) + 1
                    rules.append(
                        Rule(
                            listener_port=port,
                            priority=priority[port],
                            conditions=conditions,
                            action=action,
                            transforms=transforms,
                        )
                    )
        return rules

    def _action(self, m: _Member, backend: IngressBackend) -> Action:
        if backend.port_name == "use-annotation":
            try:
                return self._annotation_action(m, backend.service)
            except (AnnotationError, _Invalid) as exc:
                self._problem(m.key, getattr(exc, "reason", "InvalidAnnotation"), str(exc))
                return FixedResponse(status_code="503")
        resource_id = self._service_target_group(m, backend.service, backend.port_number, backend.port_name)
        return Forward(targets=((resource_id, 1),)) if resource_id else FixedResponse(status_code="503")

    def _annotation_action(self, m: _Member, name: str) -> Action:
        annotation = f"actions.{name}"
        spec = _go_json_keys(m.ann.json(annotation))
        if not isinstance(spec, dict):
            raise AnnotationError(ALB + annotation, "missing, or not a JSON object (the backend says use-annotation)")
        kind = spec.get("type")
        if kind == "fixed-response":
            config = spec.get("fixedResponseConfig") or {}
            return FixedResponse(
                status_code=str(config.get("statusCode", "200")),
                content_type=config.get("contentType"),
                message_body=config.get("messageBody"),
            )
        if kind == "redirect":
            config = spec.get("redirectConfig") or {}
            return Redirect(
                protocol=str(config.get("protocol", "#{protocol}")),
                port=str(config.get("port", "#{port}")),
                host=str(config.get("host", "#{host}")),
                path=str(config.get("path", "/#{path}")),
                query=str(config.get("query", "#{query}")),
                status_code=str(config.get("statusCode", "HTTP_301")),
            )
        if kind != "forward":
            raise AnnotationError(ALB + annotation, f"type {kind!r} is not forward, redirect or fixed-response")
        groups: list[Any] = (spec.get("forwardConfig") or {}).get("targetGroups") or []
        if spec.get("targetGroupARN"):
            groups = [{"targetGroupARN": spec["targetGroupARN"], "weight": 1}]
        if not groups or len(groups) > 5:
            raise AnnotationError(ALB + annotation, "forward needs 1 to 5 targetGroups")
        targets = []
        for group in groups:
            weight = group.get("weight", 1)
            if not isinstance(weight, int) or not 0 <= weight <= 999:
                raise AnnotationError(ALB + annotation, f"weight {weight!r} is out of range [0, 999]")
            if group.get("targetGroupARN"):
                if not _TG_ARN.match(str(group["targetGroupARN"])):
                    raise AnnotationError(ALB + annotation, f"{group['targetGroupARN']!r} is not a target group ARN")
                targets.append((str(group["targetGroupARN"]), weight))
                continue
            port = group.get("servicePort")
            number = int(port) if isinstance(port, int) or (isinstance(port, str) and port.isdigit()) else None
            resource_id = self._service_target_group(
                m, str(group.get("serviceName") or ""), number, None if number is not None else port
            )
            if resource_id is None:
                raise _Invalid("InvalidBackend", f"annotation {ALB}{annotation}: a backend is invalid (see above)")
            targets.append((resource_id, weight))
        if sum(w for _, w in targets) == 0:
            raise AnnotationError(ALB + annotation, "the weights add up to 0")
        return Forward(targets=tuple(targets))

    def _service_target_group(self, m: _Member, name: str, number: int | None, port_name: str | None) -> str | None:
        key = ObjectKey("Service", m.key.namespace, name)
        service = self.model.services.get(key)
        if service is None:
            self._problem(m.key, "InvalidBackend", f"backend Service {key.namespace}/{name} does not exist")
            return None
        port = next(
            (
                p
                for p in service.ports
                if (number is not None and p.port == number) or (port_name and p.name == port_name)
            ),
            None,
        )
        if port is None:
            self._problem(m.key, "InvalidBackend", f"Service {key.namespace}/{name} has no port {number or port_name}")
            return None
        resource_id = f"{m.key.namespace}/{m.key.name}-{name}:{port.port}"  # by number: one group per port
        if resource_id in self.target_groups:
            return resource_id
        service_annotations = service.exposure.lifecycle.annotations if service.exposure else {}
        ann = Annotations(ALB, service_annotations, m.ingress.lifecycle.annotations)  # the Service's win
        try:
            target_type = ann.string("target-type", self.default_target_type, choices=("ip", "instance")) or "ip"
            if target_type == "instance" and port.node_port is None:
                raise AnnotationError(
                    ALB + "target-type",
                    f"instance targets need a NodePort, and Service {key.namespace}/{name} port {port.port} has none "
                    "(make it type NodePort, or use target-type ip)",
                )
            protocol = ann.string("backend-protocol", "HTTP", choices=("HTTP", "HTTPS")) or "HTTP"
            version = ann.string("backend-protocol-version", "HTTP1", choices=("HTTP1", "HTTP2", "GRPC"))
            defaults = GRPC_HEALTH_DEFAULTS if version == "GRPC" else HEALTH_DEFAULTS
            health = health_check(ann, HEALTH_ANNOTATIONS, defaults, ("HTTP", "HTTPS"))
            attrs = attributes(ann, "target-group-attributes")
            tags = {**m.ann.string_map("tags"), **Annotations(ALB, service_annotations).string_map("tags")}
        except AnnotationError as exc:
            self._problem(m.key, "InvalidAnnotation", str(exc))
            return None
        self.target_groups[resource_id] = target_group(
            cluster=self.cluster,
            stack=self.stack_id,
            resource_id=resource_id,
            service=key,
            port=port,
            target_type=target_type,
            protocol=protocol,
            protocol_version=version,
            health=health,
            attrs=attrs,
            tags=tags,
            owner=m.key,
        )
        return resource_id


def alb_security_groups(ann: Annotations) -> SecurityGroups:
    """The shared choice (``security_groups``) with ``inbound-cidrs``; ``manage-backend-security-group-rules:
    "false"`` makes sense only beside ``security-groups`` (the managed group's rules need the backend group)."""
    dualstack = (ann.raw("ip-address-type") or "").startswith("dualstack")
    groups = security_groups(ann, tuple(ann.string_list("inbound-cidrs")), ALB + "inbound-cidrs", dualstack=dualstack)
    if not groups.given and ann.boolean("manage-backend-security-group-rules") is False:
        raise AnnotationError(
            ALB + "manage-backend-security-group-rules",
            "false needs security-groups (the managed group's rules need it)",
        )
    return groups


# The fields of the actions.* and conditions.* annotations. LBC decodes them with Go's encoding/json, which matches
# field names without regard to case: its own older examples (the gRPC one) write "Type" and "RedirectConfig".
_ANNOTATION_FIELDS = {
    f.lower(): f
    for f in (
        "type", "fixedResponseConfig", "statusCode", "contentType", "messageBody", "redirectConfig", "protocol",
        "port", "host", "path", "query", "forwardConfig", "targetGroups", "targetGroupARN", "weight", "serviceName",
        "servicePort", "targetGroupStickinessConfig", "enabled", "durationSeconds", "field", "values",
        "hostHeaderConfig", "pathPatternConfig", "httpHeaderConfig", "httpHeaderName", "httpRequestMethodConfig",
        "queryStringConfig", "sourceIpConfig", "key", "value", "hostHeaderRewriteConfig", "urlRewriteConfig",
        "rewrites", "regex", "replace",
    )
}  # fmt: skip
_CONDITION_CONFIGS = {
    "host-header": "hostHeaderConfig",
    "path-pattern": "pathPatternConfig",
    "http-header": "httpHeaderConfig",
    "http-request-method": "httpRequestMethodConfig",
    "query-string": "queryStringConfig",
    "source-ip": "sourceIpConfig",
}
_METHOD = re.compile(r"^[A-Z_-]{1,40}$")


def _annotation_conditions(ann: Annotations, backend: str) -> tuple[Condition, ...]:
    """``conditions.<backend>``: LBC's extra conditions for the rules whose backend is that Service (or action),
    all holding with the rule's host and path."""
    name = f"conditions.{backend}"
    spec = _go_json_keys(ann.json(name))
    if spec is None:
        return ()
    if not isinstance(spec, list):
        raise AnnotationError(ALB + name, "expected a JSON list of conditions")
    out = []
    for item in spec:
        field_name = item.get("field") if isinstance(item, dict) else None
        if field_name not in _CONDITION_CONFIGS:
            raise AnnotationError(ALB + name, f"field {field_name!r} is not one of {', '.join(_CONDITION_CONFIGS)}")
        config = item.get(_CONDITION_CONFIGS[field_name])
        config = config if isinstance(config, dict) else {"values": item.get("values")}
        values = config.get("values")
        if not isinstance(values, list) or not values:
            raise AnnotationError(ALB + name, f"{field_name}: expected a non-empty list of values")
        if field_name == "query-string":
            pairs = []
            for v in values:
                if not isinstance(v, dict) or not isinstance(v.get("value"), str):
                    raise AnnotationError(ALB + name, f"query-string: {v!r} is not {{key, value}}")
                key = v.get("key")
                pairs.append((str(key) if key is not None else None, v["value"]))
            out.append(Condition(field=field_name, pairs=tuple(pairs)))
            continue
        if not all(isinstance(v, str) and v for v in values):
            raise AnnotationError(ALB + name, f"{field_name}: values must be strings")
        if field_name == "http-request-method" and not all(_METHOD.match(v) for v in values):
            raise AnnotationError(ALB + name, f"http-request-method: {values} are not methods like GET")
        if field_name == "source-ip":
            for v in values:
                try:
                    ipaddress.ip_network(v, strict=True)
                except ValueError:
                    raise AnnotationError(ALB + name, f"source-ip: {v!r} is not a CIDR") from None
        header = None
        if field_name == "http-header":
            header = config.get("httpHeaderName")
            if not isinstance(header, str) or not header:
                raise AnnotationError(ALB + name, "http-header: httpHeaderName is missing")
        out.append(Condition(field=field_name, values=tuple(values), header=header))
    return tuple(out)


_TRANSFORM_CONFIGS = {"host-header-rewrite": "hostHeaderRewriteConfig", "url-rewrite": "urlRewriteConfig"}


def _annotation_transforms(ann: Annotations, backend: str) -> tuple[Transform, ...]:
    """``transforms.<backend>``: LBC's rule transforms (ALB rewrites the Host header or the URL, by regex, before
    forwarding) for the rules whose backend is that Service or action."""
    name = f"transforms.{backend}"
    spec = _go_json_keys(ann.json(name))
    if spec is None:
        return ()
    if not isinstance(spec, list) or len(spec) > 2:
        raise AnnotationError(ALB + name, "expected a JSON list of at most two transforms")
    out = []
    for item in spec:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _TRANSFORM_CONFIGS:
            raise AnnotationError(ALB + name, f"type {kind!r} is not host-header-rewrite or url-rewrite")
        rewrites = (item.get(_TRANSFORM_CONFIGS[kind]) or {}).get("rewrites")
        if not isinstance(rewrites, list) or len(rewrites) != 1:
            raise AnnotationError(ALB + name, f"{kind}: expected one rewrite {{regex, replace}}")
        pairs = []
        for rewrite in rewrites:
            regex, replace_with = (
                (rewrite.get("regex"), rewrite.get("replace")) if isinstance(rewrite, dict) else (None, None)
            )
            if not isinstance(regex, str) or not regex or not isinstance(replace_with, str):
                raise AnnotationError(ALB + name, f"{kind}: a rewrite needs a regex and a replace string")
            try:
                re.compile(regex)
            except re.error as exc:
                raise AnnotationError(ALB + name, f"{kind}: regex {regex!r}: {exc}") from None
            pairs.append((regex, replace_with))
        out.append((str(kind), tuple(pairs)))
    return tuple(out)


def _go_json_keys(value: Any) -> Any:
    """``value`` with every object key spelled as our parser expects it, matched case-insensitively as Go does."""
    if isinstance(value, dict):
        return {_ANNOTATION_FIELDS.get(str(k).lower(), k): _go_json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_json_keys(v) for v in value]
    return value


def _most_specific_first(ingress: Ingress) -> list[tuple[str | None, IngressPath]]:
    """An Ingress's paths in the order ALB should try them: the Ingress spec says the longest match wins, and an
    ALB takes the first rule that matches, so rules with a host come first, then Exact paths, then longer paths."""
    entries = [(rule.host, path) for rule in ingress.rules for path in rule.paths]
    return sorted(entries, key=lambda e: (e[0] is None, e[1].path_type != "Exact", -len(e[1].path or "")))


def _conditions(host: str | None, path: str | None, path_type: str) -> tuple[Condition, ...]:
    conditions = []
    if host:
        conditions.append(Condition(field="host-header", values=(host,)))
    if path is not None and not path.startswith("/"):
        raise _Invalid("InvalidPath", f"path {path!r} must start with /")
    if path_type == "Exact":
        values: tuple[str, ...] = (path or "/",)
    elif path_type == "Prefix":
        trimmed = (path or "/").rstrip("/")
        values = ("/*",) if not trimmed else (trimmed, f"{trimmed}/*")
    elif path_type == "ImplementationSpecific":
        values = (path or "/*",)
    else:
        raise _Invalid("InvalidPath", f"pathType {path_type!r} is not Exact, Prefix or ImplementationSpecific")
    conditions.append(Condition(field="path-pattern", values=values))
    return tuple(conditions)
