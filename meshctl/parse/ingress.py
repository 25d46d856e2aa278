"""Kubernetes objects the ingress reconciler reads -> model objects (see ``meshctl.model.ingress``).

Lenient on purpose: a malformed Ingress still parses to what it says, and the ingress model builder reports what
it cannot use (as an Event naming the field), so one bad object never stops the watch."""

from __future__ import annotations

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
    Node,
    TargetGroupBinding,
)
from meshctl.model.meta import LabelSelector

__all__ = [
    "FINALIZER_PREFIXES",
    "LB_ANNOTATION_PREFIXES",
    "parse_exposure",
    "parse_ingress",
    "parse_ingress_class",
    "parse_ingress_class_params",
    "parse_node",
    "parse_pod_gates",
    "parse_target_group_binding",
]

# Annotations a Service or Ingress keeps in the model; others (kubectl's last-applied, say) are not ours to read.
LB_ANNOTATION_PREFIXES = ("alb.ingress.kubernetes.io/", "service.beta.kubernetes.io/aws-load-balancer-")
FINALIZER_PREFIXES = ("elbv2.meshctl.dev/", "ingress.meshctl.dev/", "service.meshctl.dev/")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _lifecycle(doc: dict[str, Any], *, keep_all_annotations: bool = False) -> Lifecycle:
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
    lifecycle = _lifecycle(doc)
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
        lifecycle=_lifecycle(doc),
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
    for field, name in (("inboundCIDRs", "inbound-cidrs"), ("certificateArn", "certificate-arn")):
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
        lifecycle=_lifecycle(doc, keep_all_annotations=True),
    )
