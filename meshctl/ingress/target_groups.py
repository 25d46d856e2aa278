"""What ALB and NLB stacks share: health checks, attributes and security groups read from annotations, and the
target group itself."""

from __future__ import annotations

import ipaddress
import re

from meshctl.ingress.annotations import AnnotationError, Annotations
from meshctl.ingress.naming import target_group_name
from meshctl.ingress.stack import Binding, HealthCheck, SecurityGroups, TargetGroup
from meshctl.model import ObjectKey, ServicePort

__all__ = ["attributes", "health_check", "load_balancer_attributes", "security_groups", "target_group"]

_SUCCESS_CODES = re.compile(r"^\d{1,3}(-\d{1,3})?(,\d{1,3}(-\d{1,3})?)*$")
# Attributes with numeric ranges AWS enforces; checked here so the Event names the annotation, not an AWS error.
_RANGES = {
    "deregistration_delay.timeout_seconds": (0, 3600),
    "slow_start.duration_seconds": (0, 900),
    "stickiness.lb_cookie.duration_seconds": (1, 604800),
}


def health_check(
    ann: Annotations, names: dict[str, str], defaults: HealthCheck, protocols: tuple[str, ...]
) -> HealthCheck:
    """``names`` maps our field to the annotation name (ALB and NLB spell them differently). ``defaults.matcher``
    GrpcCode: the success codes are gRPC status codes, 0-99 (AWS's range; moto takes anything)."""
    protocol = ann.string(names["protocol"], defaults.protocol, choices=protocols) or defaults.protocol
    port = ann.string(names["port"], defaults.port) or defaults.port
    if port != "traffic-port" and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise AnnotationError(ann.prefix + names["port"], f"{port!r} is not traffic-port or a port 1-65535")
    http = protocol in ("HTTP", "HTTPS")
    codes = ann.string(names["success_codes"], defaults.success_codes or "200") if http else None
    if codes is not None and not _SUCCESS_CODES.match(codes):
        raise AnnotationError(ann.prefix + names["success_codes"], f"{codes!r} is not codes like 200 or 200-399,404")
    if codes is not None and defaults.matcher == "GrpcCode" and any(int(n) > 99 for n in re.findall(r"\d+", codes)):
        raise AnnotationError(
            ann.prefix + names["success_codes"], f"{codes!r}: gRPC success codes are 0-99, like 12 or 0-99"
        )
    path = ann.string(names["path"], defaults.path or "/") if http else None
    if path is not None and not path.startswith("/"):
        raise AnnotationError(ann.prefix + names["path"], f"{path!r} must start with /")
    interval = ann.integer(names["interval"], defaults.interval_seconds, minimum=5, maximum=300)
    timeout = ann.integer(names["timeout"], defaults.timeout_seconds, minimum=2, maximum=120)
    assert interval is not None and timeout is not None
    if timeout >= interval:
        raise AnnotationError(ann.prefix + names["timeout"], f"{timeout}s must be less than the interval ({interval}s)")
    healthy = ann.integer(names["healthy"], defaults.healthy_threshold, minimum=2, maximum=10)
    unhealthy = ann.integer(names["unhealthy"], defaults.unhealthy_threshold, minimum=2, maximum=10)
    assert healthy is not None and unhealthy is not None
    return HealthCheck(
        protocol=protocol,
        port=port,
        path=path,
        interval_seconds=interval,
        timeout_seconds=timeout,
        healthy_threshold=healthy,
        unhealthy_threshold=unhealthy,
        success_codes=codes,
        matcher=defaults.matcher,
    )


def attributes(ann: Annotations, name: str, extra: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    values = {**ann.string_map(name), **(extra or {})}
    for key, (low, high) in _RANGES.items():
        if key in values:
            value = values[key]
            if not value.isdigit() or not low <= int(value) <= high:
                raise AnnotationError(ann.prefix + name, f"{key}={value} is out of range [{low}, {high}]")
    return tuple(sorted(values.items()))


_BOOLEAN_ATTRIBUTES = ("deletion_protection.enabled", "routing.http2.enabled", "access_logs.s3.enabled")


def load_balancer_attributes(ann: Annotations, name: str) -> tuple[tuple[str, str], ...]:
    """``key=value,...`` as LBC reads it; boolean attributes must be true or false (AWS would refuse the call)."""
    values = ann.string_map(name)
    for key in _BOOLEAN_ATTRIBUTES:
        if key in values and values[key] not in ("true", "false"):
            raise AnnotationError(ann.prefix + name, f"{key}={values[key]} is not true or false")
    if "idle_timeout.timeout_seconds" in values:
        value = values["idle_timeout.timeout_seconds"]
        if not value.isdigit() or not 1 <= int(value) <= 4000:
            raise AnnotationError(ann.prefix + name, f"idle_timeout.timeout_seconds={value} is out of range [1, 4000]")
    return tuple(sorted(values.items()))


def security_groups(
    ann: Annotations, inbound: tuple[str, ...], inbound_from: str, *, dualstack: bool = False
) -> SecurityGroups:
    """LBC's choice, the same for ALBs and NLBs: the ``security-groups`` annotation's groups, and the backend group
    only with ``manage-backend-security-group-rules: "true"``; without it a managed frontend group opening the
    listen ports to ``inbound`` and the ``security-group-prefix-lists`` (neither given: 0.0.0.0/0, and ::/0 too for
    a dualstack load balancer, as LBC) and the backend group. ``inbound_from`` names where ``inbound`` was written,
    for its errors."""
    prefix_lists = tuple(ann.string_list("security-group-prefix-lists"))
    for prefix_list in prefix_lists:
        if not re.fullmatch(r"pl-[0-9a-f]{8,17}", prefix_list):
            raise AnnotationError(
                ann.prefix + "security-group-prefix-lists", f"{prefix_list!r} is not a prefix list ID"
            )
    for cidr in inbound:
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise AnnotationError(inbound_from, f"{cidr!r} is not a CIDR like 10.0.0.0/8") from None
    given = tuple(ann.string_list("security-groups"))
    manage = ann.boolean("manage-backend-security-group-rules")
    default = () if prefix_lists else (("0.0.0.0/0", "::/0") if dualstack else ("0.0.0.0/0",))
    return SecurityGroups(
        given=given, inbound=inbound or default, prefix_lists=prefix_lists, backend=bool(manage) if given else True
    )


def target_group(
    *,
    cluster: str,
    stack: str,
    resource_id: str,
    service: ObjectKey,
    port: ServicePort,
    target_type: str,
    protocol: str,
    protocol_version: str | None = None,
    health: HealthCheck,
    attrs: tuple[tuple[str, str], ...],
    tags: dict[str, str],
    owner: ObjectKey,
) -> TargetGroup:
    """One target group; its port is the node port (instance) or the numeric target port (ip: each target also
    carries its own port, resolved from the EndpointSlice, so a named targetPort works too)."""
    if target_type == "instance":
        assert port.node_port is not None
        tg_port = port.node_port
    else:
        tg_port = port.target_port if isinstance(port.target_port, int) else port.port
    return TargetGroup(
        resource_id=resource_id,
        # (HTTP1, the default, is not in the hash: the names of groups made before the annotation was read stay)
        name=target_group_name(
            cluster,
            stack,
            resource_id,
            service.namespace,
            service.name,
            protocol,
            target_type,
            tg_port,
            *([protocol_version] if protocol_version not in (None, "HTTP1") else []),
        ),
        protocol=protocol,
        protocol_version=protocol_version,
        port=tg_port,
        target_type=target_type,
        health_check=health,
        attributes=attrs,
        tags=tuple(sorted(tags.items())),
        binding=Binding(service=service, port=port, target_type=target_type, gate=service.name),
        owner=owner,
    )
