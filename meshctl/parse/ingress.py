"""Kubernetes objects the ingress reconciler reads -> model objects (see ``meshctl.model.ingress``).

Lenient on purpose: a malformed Ingress still parses to what it says, and the ingress model builder reports what
it cannot use (as an Event naming the field), so one bad object never stops the watch."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from meshctl.model import Meta
from meshctl.model.ingress import (
    CHECKPOINT_ANNOTATION,
    ELBV2_GROUP,
    GATE_PREFIX,
    Exposure,
    Ingress,
    IngressBackend,
    IngressClass,
    IngressClassParams,
    IngressPath,
    IngressRule,
    Lifecycle,
    ListenerConfiguration,
    ListenerRuleConfiguration,
    LoadBalancerConfiguration,
    Node,
    TargetGroupBinding,
    TargetGroupConfiguration,
)
from meshctl.model.meta import LabelSelector

__all__ = [
    "FINALIZER_PREFIXES",
    "LB_ANNOTATION_PREFIXES",
    "parse_branch_eni",
    "parse_exposure",
    "parse_ingress",
    "parse_ingress_class",
    "parse_ingress_class_params",
    "parse_lifecycle",
    "parse_listener_rule_configuration",
    "parse_load_balancer_configuration",
    "parse_node",
    "parse_pod_gates",
    "parse_target_group_binding",
    "parse_target_group_configuration",
]

# Annotations a Service or Ingress keeps in the model; others (kubectl's last-applied, say) are not ours to read.
LB_ANNOTATION_PREFIXES = ("alb.ingress.kubernetes.io/", "service.beta.kubernetes.io/aws-load-balancer-")
ALB_PREFIX = "alb.ingress.kubernetes.io/"
FINALIZER_PREFIXES = ("elbv2.meshctl.dev/", "ingress.meshctl.dev/", "service.meshctl.dev/")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def parse_lifecycle(doc: dict[str, Any], *, keep_all_annotations: bool = False) -> Lifecycle:
    md = _dict(doc.get("metadata"))
    annotations = {
        str(k): str(v)
        for k, v in _dict(md.get("annotations")).items()
        if keep_all_annotations or str(k).startswith(LB_ANNOTATION_PREFIXES) or k == "kubernetes.io/ingress.class"
    }
    lb = _dict(_dict(doc.get("status")).get("loadBalancer"))
    checkpoints = _dict(md.get("annotations")).get(CHECKPOINT_ANNOTATION)
    return Lifecycle(
        checkpoints=checkpoints if isinstance(checkpoints, str) else "",
        annotations=MappingProxyType(annotations),
        finalizers=tuple(str(f) for f in _list(md.get("finalizers"))),
        deleting=bool(md.get("deletionTimestamp")),
        uid=str(md.get("uid") or ""),
        hostnames=tuple(str(i.get("hostname")) for i in _list(lb.get("ingress")) if _dict(i).get("hostname")),
    )


def parse_exposure(doc: dict[str, Any]) -> Exposure | None:
    """A Service's exposure, or None for a plain ClusterIP Service nothing of ours acts on."""
    spec = _dict(doc.get("spec"))
    kind = str(spec.get("type") or "ClusterIP")
    lifecycle = parse_lifecycle(doc)
    ours = any(f.startswith(FINALIZER_PREFIXES) for f in lifecycle.finalizers)
    if kind == "ClusterIP" and not lifecycle.annotations and not ours:
        return None
    hc_port = spec.get("healthCheckNodePort")
    return Exposure(
        type=kind,
        load_balancer_class=spec.get("loadBalancerClass") if isinstance(spec.get("loadBalancerClass"), str) else None,
        external_traffic_policy=str(spec.get("externalTrafficPolicy") or "Cluster"),
        health_check_node_port=hc_port if isinstance(hc_port, int) else None,
        source_ranges=tuple(str(r) for r in _list(spec.get("loadBalancerSourceRanges"))),
        lifecycle=lifecycle,
    )


POD_ENI_ANNOTATION = "vpc.amazonaws.com/pod-eni"


def parse_branch_eni(doc: dict[str, Any]) -> str | None:
    """The branch interface the VPC CNI gave a pod with security groups of its own: ``eniId`` of the first entry of
    its JSON annotation ``vpc.amazonaws.com/pod-eni`` (unreadable: None, the node's interface is looked up)."""
    raw = _dict(_dict(doc.get("metadata")).get("annotations")).get(POD_ENI_ANNOTATION)
    if not isinstance(raw, str):
        return None
    try:
        entries = json.loads(raw)
    except ValueError:
        return None
    first = _dict(_list(entries)[0]) if _list(entries) else {}
    eni = first.get("eniId")
    return eni if isinstance(eni, str) and eni.startswith("eni-") else None


def parse_pod_gates(doc: dict[str, Any]) -> tuple[tuple[tuple[str, bool | None], ...], bool]:
    """Our readiness gates with their current status, and ContainersReady; ((), False) for ungated pods."""
    gates = [
        str(g.get("conditionType"))
        for g in _list(_dict(doc.get("spec")).get("readinessGates"))
        if str(_dict(g).get("conditionType") or "").startswith(GATE_PREFIX)
    ]
    if not gates:
        return (), False
    conditions: dict[str, bool | None] = {
        str(c.get("type")): c.get("status") == "True" for c in _list(_dict(doc.get("status")).get("conditions"))
    }
    return tuple((g, conditions.get(g)) for g in sorted(gates)), bool(conditions.get("ContainersReady"))


def _backend(value: Any) -> IngressBackend | None:
    service = _dict(_dict(value).get("service"))
    if not service.get("name"):
        return None
    port = _dict(service.get("port"))
    number = port.get("number")
    return IngressBackend(
        service=str(service["name"]),
        port_number=number if isinstance(number, int) else None,
        port_name=str(port["name"]) if port.get("name") else None,
    )


def parse_ingress(meta: Meta, doc: dict[str, Any]) -> Ingress:
    spec = _dict(doc.get("spec"))
    rules = []
    for rule in _list(spec.get("rules")):
        paths = []
        for p in _list(_dict(_dict(rule).get("http")).get("paths")):
            backend = _backend(_dict(p).get("backend"))
            if backend is not None:
                path = p.get("path")
                paths.append(
                    IngressPath(
                        path=str(path) if path else None,
                        path_type=str(p.get("pathType") or "ImplementationSpecific"),
                        backend=backend,
                    )
                )
        host = _dict(rule).get("host")
        rules.append(IngressRule(host=str(host) if host else None, paths=tuple(paths)))
    class_name = spec.get("ingressClassName")
    return Ingress(
        meta=meta,
        class_name=str(class_name) if class_name else None,
        rules=tuple(rules),
        default_backend=_backend(spec.get("defaultBackend")),
        tls_hosts=tuple(str(h) for t in _list(spec.get("tls")) for h in _list(_dict(t).get("hosts"))),
        lifecycle=parse_lifecycle(doc),
    )


def parse_ingress_class(meta: Meta, doc: dict[str, Any]) -> IngressClass:
    annotations = _dict(_dict(doc.get("metadata")).get("annotations"))
    spec = _dict(doc.get("spec"))
    parameters = _dict(spec.get("parameters"))
    ours = parameters.get("apiGroup") == ELBV2_GROUP and parameters.get("kind") == "IngressClassParams"
    return IngressClass(
        meta=meta,
        controller=str(spec.get("controller") or ""),
        default=str(annotations.get("ingressclass.kubernetes.io/is-default-class", "")).lower() == "true",
        parameters=str(parameters["name"]) if ours and parameters.get("name") else None,
    )


# IngressClassParams spec fields -> the ALB annotation each stands for (LBC's mapping).
_PARAMS_AS_ANNOTATIONS = {
    "scheme": "scheme",
    "ipAddressType": "ip-address-type",
    "sslPolicy": "ssl-policy",
    "targetType": "target-type",
    "loadBalancerName": "load-balancer-name",
}


def parse_ingress_class_params(meta: Meta, doc: dict[str, Any]) -> IngressClassParams:
    spec = _dict(doc.get("spec"))
    annotations = {
        f"alb.ingress.kubernetes.io/{name}": str(spec[field])
        for field, name in _PARAMS_AS_ANNOTATIONS.items()
        if spec.get(field) not in (None, "")
    }
    group = _dict(spec.get("group")).get("name")
    if group:
        annotations["alb.ingress.kubernetes.io/group.name"] = str(group)
    for field, name in (
        ("inboundCIDRs", "inbound-cidrs"),
        ("certificateArn", "certificate-arn"),
        ("PrefixListsIDs", "security-group-prefix-lists"),
    ):
        if _list(spec.get(field)):
            annotations[f"alb.ingress.kubernetes.io/{name}"] = ",".join(str(v) for v in _list(spec[field]))
    subnets = _list(_dict(spec.get("subnets")).get("ids"))
    if subnets:
        annotations["alb.ingress.kubernetes.io/subnets"] = ",".join(str(v) for v in subnets)

    def pairs(field: str) -> tuple[tuple[str, str], ...]:
        return tuple(
            (str(_dict(p).get("key")), str(_dict(p).get("value")))
            for p in _list(spec.get(field))
            if _dict(p).get("key")
        )

    selector = spec.get("namespaceSelector")
    return IngressClassParams(
        meta=meta,
        annotations=MappingProxyType(annotations),
        tags=pairs("tags"),
        attributes=pairs("loadBalancerAttributes"),
        namespace_selector=_label_selector(selector) if isinstance(selector, dict) else None,
    )


def _label_selector(selector: dict[str, Any]) -> LabelSelector:
    """``matchLabels`` and ``matchExpressions`` (an expression without a key or a known operator is left out; the
    CRD's schema refuses those before they get here)."""
    expressions = tuple(
        (str(e["key"]), str(e["operator"]), tuple(str(v) for v in _list(e.get("values"))))
        for e in map(_dict, _list(selector.get("matchExpressions")))
        if e.get("key") and e.get("operator") in ("In", "NotIn", "Exists", "DoesNotExist")
    )
    labels = {str(k): str(v) for k, v in _dict(selector.get("matchLabels")).items()}
    return LabelSelector(match_labels=MappingProxyType(labels), expressions=expressions)


def parse_node(meta: Meta, doc: dict[str, Any]) -> Node:
    status = _dict(doc.get("status"))
    addresses = {str(_dict(a).get("type")): str(_dict(a).get("address")) for a in _list(status.get("addresses"))}
    ready = {str(_dict(c).get("type")): _dict(c).get("status") for c in _list(status.get("conditions"))}
    provider = str(_dict(doc.get("spec")).get("providerID") or "")
    instance = provider.rsplit("/", 1)[-1] if provider.startswith("aws://") else None
    return Node(
        meta=meta,
        internal_ip=addresses.get("InternalIP"),
        instance_id=instance or None,
        ready=ready.get("Ready", "True") == "True",
    )


def parse_target_group_binding(meta: Meta, doc: dict[str, Any]) -> TargetGroupBinding:
    spec = _dict(doc.get("spec"))
    ref = _dict(spec.get("serviceRef"))
    port = ref.get("port")
    return TargetGroupBinding(
        meta=meta,
        target_group_arn=str(spec["targetGroupARN"]) if spec.get("targetGroupARN") else None,
        target_group_name=str(spec["targetGroupName"]) if spec.get("targetGroupName") else None,
        service_name=str(ref.get("name") or ""),
        service_port=port if isinstance(port, int) else str(port or ""),
        target_type=str(spec["targetType"]) if spec.get("targetType") else None,
        lifecycle=parse_lifecycle(doc, keep_all_annotations=True),
    )


# LoadBalancerConfiguration spec fields -> the ALB annotation each stands for (LBC's meaning).
_LB_CONFIG_AS_ANNOTATIONS = {
    "scheme": "scheme",
    "ipAddressType": "ip-address-type",
    "loadBalancerName": "load-balancer-name",
    "manageBackendSecurityGroupRules": "manage-backend-security-group-rules",
}
_LB_CONFIG_LISTS = {
    "securityGroups": "security-groups",
    "sourceRanges": "inbound-cidrs",
    "securityGroupPrefixes": "security-group-prefix-lists",
}
_LISTENER_PROTOCOLS = ("HTTP", "HTTPS", "TCP", "UDP", "TLS", "TCP_UDP")


def _pairs(value: Any) -> str:
    """``[{key, value}]`` or ``{key: value}`` -> ``k=v,...`` (the annotations' form)."""
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = [
            (str(_dict(p).get("key")), str(_dict(p).get("value", ""))) for p in _list(value) if _dict(p).get("key")
        ]
    return ",".join(f"{k}={v}" for k, v in items)


def parse_load_balancer_configuration(meta: Meta, doc: dict[str, Any]) -> LoadBalancerConfiguration:
    spec = _dict(doc.get("spec"))
    annotations: dict[str, str] = {}
    problem = None
    for field_name, name in _LB_CONFIG_AS_ANNOTATIONS.items():
        value = spec.get(field_name)
        if value not in (None, ""):
            annotations[ALB_PREFIX + name] = str(value).lower() if isinstance(value, bool) else str(value)
    for field_name, name in _LB_CONFIG_LISTS.items():
        if _list(spec.get(field_name)):
            annotations[ALB_PREFIX + name] = ",".join(str(v) for v in _list(spec[field_name]))
    subnets = [
        str(_dict(s).get("identifier")) for s in _list(spec.get("loadBalancerSubnets")) if _dict(s).get("identifier")
    ]
    if subnets:
        annotations[ALB_PREFIX + "subnets"] = ",".join(subnets)
    for field_name, name in (("loadBalancerAttributes", "load-balancer-attributes"), ("tags", "tags")):
        if spec.get(field_name):
            annotations[ALB_PREFIX + name] = _pairs(spec[field_name])
    listeners = []
    for i, entry in enumerate(map(_dict, _list(spec.get("listenerConfigurations")))):
        protocol, _, port = str(entry.get("protocolPort") or "").partition(":")
        if protocol not in _LISTENER_PROTOCOLS or not port.isdigit() or not 1 <= int(port) <= 65535:
            problem = (
                f"spec.listenerConfigurations[{i}].protocolPort: {entry.get('protocolPort')!r} is not PROTOCOL:PORT"
            )
            continue
        certificates = [str(entry["defaultCertificate"])] if entry.get("defaultCertificate") else []
        certificates += [str(c) for c in _list(entry.get("certificates")) if str(c) not in certificates]
        policy = entry.get("sslPolicy")
        listeners.append(
            ListenerConfiguration(
                protocol=protocol,
                port=int(port),
                certificates=tuple(certificates),
                ssl_policy=str(policy) if policy else None,
            )
        )
    mode = spec.get("mergingMode") or "prefer-gateway-class"
    if mode not in ("prefer-gateway-class", "prefer-gateway"):
        problem = f"spec.mergingMode: {mode!r} is not prefer-gateway-class or prefer-gateway"
    default_tg = _dict(spec.get("defaultTargetGroupConfiguration")).get("name")
    return LoadBalancerConfiguration(
        meta=meta,
        annotations=MappingProxyType(annotations),
        listeners=tuple(listeners),
        prefer_gateway=mode == "prefer-gateway",
        default_target_group=str(default_tg) if default_tg else None,
        problem=problem,
    )


# TargetGroupProps fields -> the ALB target-group annotation each stands for.
_TG_PROPS = {"targetType": "target-type", "protocol": "backend-protocol", "protocolVersion": "backend-protocol-version"}
_HEALTH_PROPS = {
    "healthCheckPath": "healthcheck-path",
    "healthCheckPort": "healthcheck-port",
    "healthCheckProtocol": "healthcheck-protocol",
    "healthCheckInterval": "healthcheck-interval-seconds",
    "healthCheckTimeout": "healthcheck-timeout-seconds",
    "healthyThresholdCount": "healthy-threshold-count",
    "unhealthyThresholdCount": "unhealthy-threshold-count",
}


def parse_target_group_configuration(meta: Meta, doc: dict[str, Any]) -> TargetGroupConfiguration:
    spec = _dict(doc.get("spec"))
    ref = _dict(spec.get("targetReference"))
    problem = None
    if ref and (ref.get("kind") or "Service") != "Service":
        problem = f"spec.targetReference.kind: {ref.get('kind')!r} is not Service"
    props = _dict(spec.get("defaultConfiguration"))
    annotations = {ALB_PREFIX + name: str(props[f]) for f, name in _TG_PROPS.items() if props.get(f) not in (None, "")}
    health = _dict(props.get("healthCheckConfig"))
    annotations.update(
        {ALB_PREFIX + name: str(health[f]) for f, name in _HEALTH_PROPS.items() if health.get(f) not in (None, "")}
    )
    matcher = _dict(health.get("matcher"))
    codes = matcher.get("grpcCode") or matcher.get("httpCode")
    if codes:
        annotations[ALB_PREFIX + "success-codes"] = str(codes)
    for field_name, name in (("targetGroupAttributes", "target-group-attributes"), ("tags", "tags")):
        if props.get(field_name):
            annotations[ALB_PREFIX + name] = _pairs(props[field_name])
    return TargetGroupConfiguration(
        meta=meta,
        service=str(ref["name"]) if ref.get("name") else None,
        annotations=MappingProxyType(annotations),
        problem=problem,
    )


def parse_listener_rule_configuration(meta: Meta, doc: dict[str, Any]) -> ListenerRuleConfiguration:
    spec = _dict(doc.get("spec"))
    fixed: tuple[str, str | None, str | None] | None = None
    query = None
    problems = []
    for i, action in enumerate(map(_dict, _list(spec.get("actions")))):
        kind = action.get("type")
        if kind == "fixed-response":
            config = _dict(action.get("fixedResponseConfig"))
            content, body = config.get("contentType"), config.get("messageBody")
            fixed = (
                str(config.get("statusCode", "200")),
                str(content) if content else None,
                str(body) if body else None,
            )
        elif kind == "redirect":
            q = _dict(action.get("redirectConfig")).get("query")
            query = str(q) if q else None
        else:
            problems.append(f"spec.actions[{i}].type: {kind!r} is not served yet (fixed-response, redirect)")
    sources: list[str] = []
    for i, condition in enumerate(map(_dict, _list(spec.get("conditions")))):
        if condition.get("field") != "source-ip":
            problems.append(f"spec.conditions[{i}].field: {condition.get('field')!r} is not served yet (source-ip)")
            continue
        sources += [str(v) for v in _list(_dict(condition.get("sourceIPConfig")).get("values"))]
    return ListenerRuleConfiguration(
        meta=meta,
        fixed_response=fixed,
        redirect_query=query,
        source_ips=tuple(sources),
        problem="; ".join(problems) or None,
    )
