"""Services of type LoadBalancer -> NLB stacks (pure).

Which Services are ours, as LBC decides it (``pkg/service/service_utils.go``): ``spec.loadBalancerClass`` naming us;
or ``aws-load-balancer-type: external`` with an ``nlb-target-type``; or the deprecated ``nlb-ip``. The legacy
``aws-load-balancer-type: nlb`` belongs to the in-tree cloud provider, so it is ours only when the operator says so
(``--ingress-legacy-nlb``): otherwise two controllers would build two NLBs for one Service."""

from __future__ import annotations

from dataclasses import replace

from meshctl.ingress.annotations import NLB, AnnotationError, Annotations
from meshctl.ingress.naming import SERVICE_FINALIZER, load_balancer_name
from meshctl.ingress.stack import (
    Forward,
    HealthCheck,
    Listener,
    LoadBalancer,
    Problem,
    SecurityGroups,
    Stack,
    TargetGroup,
)
from meshctl.ingress.target_groups import (
    attributes,
    health_check,
    load_balancer_attributes,
    security_groups,
    target_group,
)
from meshctl.model import Model, ObjectKey, Service

__all__ = ["NLB_CLASS", "NLB_HEALTH_ANNOTATIONS", "NLB_HEALTH_DEFAULTS", "build_service_stacks", "nlb_target_type"]

NLB_CLASS = "meshctl.dev/nlb"
NLB_HEALTH_ANNOTATIONS = {
    "protocol": "healthcheck-protocol",
    "port": "healthcheck-port",
    "path": "healthcheck-path",
    "interval": "healthcheck-interval",
    "timeout": "healthcheck-timeout",
    "healthy": "healthcheck-healthy-threshold",
    "unhealthy": "healthcheck-unhealthy-threshold",
    "success_codes": "healthcheck-success-codes",
}
NLB_HEALTH_DEFAULTS = HealthCheck(
    protocol="TCP",
    port="traffic-port",
    path="/",
    interval_seconds=10,
    timeout_seconds=6,  # AWS's NLB HTTP/TCP checks allow 2-10 s; LBC's default 10 s would equal the interval
    healthy_threshold=3,
    unhealthy_threshold=3,
    success_codes="200-399",
)
# externalTrafficPolicy: Local in instance mode: kube-proxy answers /healthz on healthCheckNodePort only on nodes
# with a local endpoint, so the NLB sends traffic only there (LBC: ...HealthCheckConfigForInstanceModeLocal).
_LOCAL_DEFAULTS = HealthCheck(
    protocol="HTTP",
    port="traffic-port",
    path="/healthz",
    interval_seconds=10,
    timeout_seconds=6,
    healthy_threshold=2,
    unhealthy_threshold=2,
    success_codes="200-399",
)


def nlb_target_type(service: Service, *, legacy_nlb: bool) -> tuple[str | None, bool]:
    """(target type, legacy) when the Service is ours, else (None, False)."""
    exposure = service.exposure
    if exposure is None or exposure.type != "LoadBalancer" or exposure.lifecycle.deleting:
        return None, False
    ann = Annotations(NLB, exposure.lifecycle.annotations)
    kind, target = ann.raw("type"), ann.raw("nlb-target-type")
    if exposure.load_balancer_class is not None:
        return (target or "instance", False) if exposure.load_balancer_class == NLB_CLASS else (None, False)
    if kind == "external" and target in ("ip", "instance"):
        return target, False
    if kind == "nlb-ip":
        return "ip", False
    if kind == "nlb" and legacy_nlb:
        return target or "instance", True
    return None, False


def build_service_stacks(model: Model, *, cluster: str, legacy_nlb: bool = False) -> list[Stack]:
    stacks = []
    for key in sorted(model.services):
        service = model.services[key]
        if service.exposure is None:
            continue
        stack_id = f"{key.namespace}/{key.name}"
        target_type, legacy = nlb_target_type(service, legacy_nlb=legacy_nlb)
        if target_type is None:
            if SERVICE_FINALIZER in service.exposure.lifecycle.finalizers:  # deleted, or no longer ours
                stacks.append(
                    Stack(id=stack_id, kind="service", owners=(), leaving=(key,), finalizer=SERVICE_FINALIZER)
                )
            continue
        try:
            stacks.append(_build(service, key, stack_id, cluster, target_type, legacy))
        except AnnotationError as exc:
            problem = Problem(owner=key, reason="InvalidAnnotation", message=str(exc))
            stacks.append(
                Stack(id=stack_id, kind="service", owners=(key,), finalizer=SERVICE_FINALIZER, problems=(problem,))
            )
    return stacks


def _build(service: Service, key: ObjectKey, stack_id: str, cluster: str, target_type: str, legacy: bool) -> Stack:
    assert service.exposure is not None
    exposure = service.exposure
    ann = Annotations(NLB, exposure.lifecycle.annotations)
    if target_type not in ("ip", "instance"):
        raise AnnotationError(NLB + "nlb-target-type", f"{target_type!r} is not ip or instance")
    scheme = ann.string("scheme", choices=("internal", "internet-facing"))
    if scheme is None:
        if legacy:
            # As the in-tree provider reads it: any value but "false" is internal, the EKS documentation's own
            # example "0.0.0.0/0" too; unset, internet-facing.
            raw = ann.raw("internal")
            scheme = "internal" if raw not in (None, "", "false") else "internet-facing"
        else:
            scheme = "internet-facing" if ann.boolean("internal") is False else "internal"  # LBC: internal by default
    certificates = tuple(ann.string_list("ssl-cert"))
    ssl_ports = ann.string_list("ssl-ports") or (["*"] if certificates else [])
    local = exposure.external_traffic_policy == "Local" and target_type == "instance"
    defaults = NLB_HEALTH_DEFAULTS
    if local and exposure.health_check_node_port:
        defaults = replace(_LOCAL_DEFAULTS, port=str(exposure.health_check_node_port))
    health = health_check(ann, NLB_HEALTH_ANNOTATIONS, defaults, ("TCP", "HTTP", "HTTPS"))
    extra = {"proxy_protocol_v2.enabled": "true"} if ann.raw("proxy-protocol") == "*" else {}
    attrs = attributes(ann, "target-group-attributes", extra)
    tags = ann.string_map("additional-resource-tags")
    listeners, groups = [], []
    for port in service.ports:
        if port.protocol not in ("TCP", "UDP"):
            raise AnnotationError(NLB + "type", f"port {port.port}: protocol {port.protocol} is not TCP or UDP")
        if target_type == "instance" and port.node_port is None:
            raise AnnotationError(
                NLB + "nlb-target-type",
                f"instance targets need node ports; port {port.port} has none (allocateLoadBalancerNodePorts: false?)",
            )
        tls = port.protocol == "TCP" and ("*" in ssl_ports or str(port.port) in ssl_ports or port.name in ssl_ports)
        if tls and not certificates:
            raise AnnotationError(NLB + "ssl-ports", f"port {port.port} is TLS but {NLB}ssl-cert is not set")
        resource_id = f"{stack_id}:{port.port}"
        group: TargetGroup = target_group(
            cluster=cluster,
            stack=stack_id,
            resource_id=resource_id,
            service=key,
            port=port,
            target_type=target_type,
            protocol=port.protocol,
            health=health,
            attrs=attrs,
            tags=tags,
            owner=key,
        )
        groups.append(group)
        listeners.append(
            Listener(
                port=port.port,
                protocol="TLS" if tls else port.protocol,
                default_action=Forward(targets=((resource_id, 1),)),
                certificates=certificates if tls else (),
                ssl_policy=(ann.string("ssl-negotiation-policy") or "ELBSecurityPolicy-2016-08") if tls else None,
            )
        )
    name = ann.string("name") or load_balancer_name(cluster, stack_id, scheme, "nlb")
    groups_wanted = _security_groups(ann, exposure.source_ranges, legacy)
    return Stack(
        id=stack_id,
        kind="service",
        owners=(key,),
        finalizer=SERVICE_FINALIZER,
        load_balancer=LoadBalancer(
            name=name,
            type="network",
            scheme=scheme,
            subnets=tuple(ann.string_list("subnets")),
            tags=tuple(sorted(tags.items())),
            security_groups=groups_wanted,
            attributes=load_balancer_attributes(ann, "attributes"),
        ),
        listeners=tuple(listeners),
        target_groups=tuple(groups),
    )


def _security_groups(ann: Annotations, source_ranges: tuple[str, ...], legacy: bool) -> SecurityGroups | None:
    """LBC (since v2.6) gives a new NLB security groups as an ALB's: a managed frontend group opening the listen
    ports to ``spec.loadBalancerSourceRanges`` (default 0.0.0.0/0) and the backend group; none with
    ``aws-load-balancer-disable-nlb-sg: "true"``, and none for the in-tree provider's legacy NLBs. (An NLB made
    without groups cannot get any later: it keeps none.)"""
    if legacy or ann.boolean("disable-nlb-sg"):
        return None
    return security_groups(ann, source_ranges, "spec.loadBalancerSourceRanges")
