"""Ingresses with AWS Load Balancer Controller annotations -> Gateway API for ALB Gateways (``meshctl import lbc``),
as LBC's own ``lbc-migrate`` does: per IngressGroup (or Ingress) a Gateway of the ALB class, a
LoadBalancerConfiguration with the load balancer settings, TargetGroupConfigurations with the target group settings
and HTTPRoutes with the rules. Pure: documents in, objects and notes out.

Each note is ``(level, object, field, message, action)``; level ``error`` (not converted), ``lossy`` (converted, a
field has no equivalent: ``action`` says what was done), ``note`` (converted; worth knowing)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from meshctl.ingress.annotations import ALB, AnnotationError, Annotations
from meshctl.model import ObjectKey, Service
from meshctl.model.ingress import ELBV2_GROUP, Ingress, IngressBackend, IngressPath
from meshctl.parse.documents import InvalidObject, UnsupportedDocument, parse_keyed

__all__ = ["GATEWAY_CLASS", "Note", "convert_ingresses"]

GATEWAY_CLASS = "meshctl-alb"
GW = "gateway.networking.k8s.io/v1"
CONFIG = f"{ELBV2_GROUP}/v1beta1"
Note = tuple[str, str, str, str, str]

# Annotations and the LoadBalancerConfiguration field each becomes.
_LB_FIELDS = {
    "scheme": "scheme",
    "ip-address-type": "ipAddressType",
    "load-balancer-name": "loadBalancerName",
}
_LB_LISTS = {
    "security-groups": "securityGroups",
    "inbound-cidrs": "sourceRanges",
    "security-group-prefix-lists": "securityGroupPrefixes",
}
# Annotations and the TargetGroupConfiguration defaultConfiguration field each becomes.
_TG_FIELDS = {
    "target-type": "targetType",
    "backend-protocol": "protocol",
    "backend-protocol-version": "protocolVersion",
}
_HEALTH_FIELDS = {
    "healthcheck-path": ("healthCheckPath", str),
    "healthcheck-port": ("healthCheckPort", str),
    "healthcheck-protocol": ("healthCheckProtocol", str),
    "healthcheck-interval-seconds": ("healthCheckInterval", int),
    "healthcheck-timeout-seconds": ("healthCheckTimeout", int),
    "healthy-threshold-count": ("healthyThresholdCount", int),
    "unhealthy-threshold-count": ("unhealthyThresholdCount", int),
}
# Read by the conversion (the rest are reported as not converted).
_KNOWN = {
    *_LB_FIELDS,
    *_LB_LISTS,
    *_TG_FIELDS,
    *_HEALTH_FIELDS,
    "success-codes",
    "target-group-attributes",
    "load-balancer-attributes",
    "tags",
    "subnets",
    "manage-backend-security-group-rules",
    "listen-ports",
    "certificate-arn",
    "ssl-policy",
    "ssl-redirect",
    "group.name",
    "group.order",
}


@dataclass
class _Group:
    name: str
    namespace: str
    members: list[Ingress] = field(default_factory=list)


def convert_ingresses(
    docs: Iterable[dict[str, Any]], *, ingress_class: str = "alb"
) -> tuple[list[dict[str, Any]], list[Note]]:
    notes: list[Note] = []
    ingresses: list[Ingress] = []
    services: dict[ObjectKey, Service] = {}
    for doc in docs:
        try:
            parsed = parse_keyed(doc)
        except (UnsupportedDocument, InvalidObject) as exc:
            notes.append(("error", str(doc.get("kind", "?")) if isinstance(doc, dict) else "?", "", str(exc), ""))
            continue
        if parsed is None:
            continue
        if isinstance(parsed.obj, Ingress):
            ingresses.append(parsed.obj)
        elif isinstance(parsed.obj, Service):
            services[parsed.key] = parsed.obj
    groups: dict[str, _Group] = {}
    for ingress in sorted(ingresses, key=lambda i: (i.meta.namespace, i.meta.name)):
        subject = f"Ingress {ingress.meta.namespace}/{ingress.meta.name}"
        legacy = ingress.lifecycle.annotations.get("kubernetes.io/ingress.class")
        if legacy is not None and legacy != ingress_class:
            notes.append(("note", subject, "", f"class {legacy!r} is another controller's", "left out"))
            continue
        ann = Annotations(ALB, ingress.lifecycle.annotations)
        group = ann.raw("group.name") or f"{ingress.meta.namespace}/{ingress.meta.name}"
        name = group if "/" not in group else ingress.meta.name  # the Gateway's: the group's, else the Ingress's
        groups.setdefault(group, _Group(name=name, namespace=ingress.meta.namespace))
        groups[group].members.append(ingress)
    objects: list[dict[str, Any]] = []
    if groups:
        objects.append(
            {
                "apiVersion": GW,
                "kind": "GatewayClass",
                "metadata": {"name": GATEWAY_CLASS},
                "spec": {"controllerName": "meshctl.dev/alb"},
            }
        )
    tg_configs: dict[tuple[str, str], dict[str, Any]] = {}
    for key in sorted(groups):
        objects.extend(_Converter(groups[key], services, notes, tg_configs).convert())
    objects.extend(tg_configs[k] for k in sorted(tg_configs))
    return objects, notes


class _Converter:
    def __init__(
        self,
        group: _Group,
        services: dict[ObjectKey, Service],
        notes: list[Note],
        tg_configs: dict[tuple[str, str], dict[str, Any]],
    ) -> None:
        self.group, self.services, self.notes, self.tg_configs = group, services, notes, tg_configs

    def _note(self, level: str, ingress: Ingress, path: str, message: str, action: str = "") -> None:
        self.notes.append((level, f"Ingress {ingress.meta.namespace}/{ingress.meta.name}", path, message, action))

    def convert(self) -> list[dict[str, Any]]:
        g = self.group
        listeners: dict[tuple[str, int], dict[str, Any]] = {}
        spec: dict[str, Any] = {}
        certificates: list[str] = []
        redirect: int | None = None
        ssl_policy: str | None = None
        for ingress in g.members:
            ann = Annotations(ALB, ingress.lifecycle.annotations)
            for name in sorted(ingress.lifecycle.annotations):
                short = name[len(ALB) :] if name.startswith(ALB) else None
                if short is None or short in _KNOWN or short.startswith(("actions.", "conditions.")):
                    continue
                self._note("lossy", ingress, f"metadata.annotations[{name}]", "no Gateway equivalent", "left out")
            if ann.raw("group.order") is not None:
                self._note(
                    "note",
                    ingress,
                    f"metadata.annotations[{ALB}group.order]",
                    "rules are ordered by the Gateway API's precedence (LBC's), not by group.order",
                    "left out",
                )
            try:
                ports = ann.json("listen-ports")
                certificates += [c for c in ann.string_list("certificate-arn") if c not in certificates]
                redirect = ann.integer("ssl-redirect", redirect, minimum=1, maximum=65535)
            except AnnotationError as exc:
                self._note("error", ingress, "metadata.annotations", str(exc), "left out")
                continue
            ssl_policy = ann.raw("ssl-policy") or ssl_policy
            if ports is None:
                ports = [{"HTTPS": 443}] if ann.raw("certificate-arn") or ingress.tls_hosts else [{"HTTP": 80}]
            for entry in ports if isinstance(ports, list) else []:
                for protocol, port in entry.items() if isinstance(entry, dict) else ():
                    if protocol in ("HTTP", "HTTPS") and isinstance(port, int):
                        listeners[(protocol, port)] = {
                            "name": f"{protocol.lower()}-{port}",
                            "port": port,
                            "protocol": protocol,
                        }
            for short, target in _LB_FIELDS.items():
                if (value := ann.raw(short)) is not None:
                    spec[target] = value
            for short, target in _LB_LISTS.items():
                if values := ann.string_list(short):
                    spec[target] = values
            if subnets := ann.string_list("subnets"):
                spec["loadBalancerSubnets"] = [{"identifier": s} for s in subnets]
            if (manage := ann.raw("manage-backend-security-group-rules")) is not None:
                spec["manageBackendSecurityGroupRules"] = manage == "true"
            try:
                if attributes := ann.string_map("load-balancer-attributes"):
                    spec["loadBalancerAttributes"] = [{"key": k, "value": v} for k, v in sorted(attributes.items())]
                if tags := ann.string_map("tags"):
                    spec["tags"] = {**spec.get("tags", {}), **tags}
            except AnnotationError as exc:
                self._note("error", ingress, "metadata.annotations", str(exc), "left out")
        https = sorted(port for protocol, port in listeners if protocol == "HTTPS")
        configurations = [
            {
                "protocolPort": f"HTTPS:{port}",
                **({"defaultCertificate": certificates[0]} if certificates else {}),
                **({"certificates": certificates[1:]} if len(certificates) > 1 else {}),
                **({"sslPolicy": ssl_policy} if ssl_policy else {}),
            }
            for port in https
        ]
        if configurations:
            spec["listenerConfigurations"] = configurations
        if https and not certificates:
            self._note(
                "note",
                g.members[0],
                "",
                "no certificate-arn: the ALB finds ACM certificates for the routes' hostnames, as LBC does",
            )
        meta = {"name": g.name, "namespace": g.namespace}
        gateway_spec: dict[str, Any] = {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [
                {**li, "allowedRoutes": {"namespaces": {"from": "All"}}}
                if len({m.meta.namespace for m in g.members}) > 1
                else li
                for _, li in sorted(listeners.items(), key=lambda kv: kv[0][1])
            ],
        }
        out: list[dict[str, Any]] = []
        if spec:
            out.append(
                {"apiVersion": CONFIG, "kind": "LoadBalancerConfiguration", "metadata": dict(meta), "spec": spec}
            )
            gateway_spec["infrastructure"] = {
                "parametersRef": {"group": ELBV2_GROUP, "kind": "LoadBalancerConfiguration", "name": g.name}
            }
        out.insert(0, {"apiVersion": GW, "kind": "Gateway", "metadata": dict(meta), "spec": gateway_spec})
        http_sections = [li["name"] for (protocol, _), li in listeners.items() if protocol == "HTTP"]
        serving = [
            li["name"] for (protocol, _), li in sorted(listeners.items()) if not (redirect and protocol == "HTTP")
        ]
        if redirect and http_sections:
            out.append(self._redirect_route(http_sections, redirect))
        for ingress in g.members:
            out.extend(self._routes(ingress, serving))
        return out

    def _parent(self, section: str) -> dict[str, Any]:
        return {"name": self.group.name, "namespace": self.group.namespace, "sectionName": section}

    def _redirect_route(self, sections: list[str], port: int) -> dict[str, Any]:
        redirect = {"scheme": "https", "statusCode": 301, **({"port": port} if port != 443 else {})}
        return {
            "apiVersion": GW,
            "kind": "HTTPRoute",
            "metadata": {"name": f"{self.group.name}-ssl-redirect", "namespace": self.group.namespace},
            "spec": {
                "parentRefs": [self._parent(s) for s in sections],
                "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": redirect}]}],
            },
        }

    def _routes(self, ingress: Ingress, sections: list[str]) -> list[dict[str, Any]]:
        by_host: dict[str | None, list[dict[str, Any]]] = {}
        for i, rule in enumerate(ingress.rules):
            for j, path in enumerate(rule.paths):
                converted = self._rule(ingress, path, f"spec.rules[{i}].http.paths[{j}]")
                if converted is not None:
                    by_host.setdefault(rule.host, []).append(converted)
        if ingress.default_backend is not None:
            fallback = self._rule(
                ingress,
                IngressPath(path="/", path_type="Prefix", backend=ingress.default_backend),
                "spec.defaultBackend",
            )
            if fallback is not None:
                by_host.setdefault(None, []).append(fallback)
        routes = []
        for host, rules in sorted(by_host.items(), key=lambda kv: kv[0] or ""):
            suffix = "" if len(by_host) == 1 else f"-{(host or 'default').replace('*', 'wildcard').replace('.', '-')}"
            spec: dict[str, Any] = {"parentRefs": [self._parent(s) for s in sections], "rules": rules[:16]}
            if host:
                spec["hostnames"] = [host]
            if len(rules) > 16:
                self._note(
                    "lossy",
                    ingress,
                    "spec.rules",
                    f"{len(rules)} paths for {host or 'any host'}: an HTTPRoute holds 16 rules",
                    "the rest left out; split the Ingress",
                )
            routes.append(
                {
                    "apiVersion": GW,
                    "kind": "HTTPRoute",
                    "metadata": {"name": f"{ingress.meta.name}{suffix}", "namespace": ingress.meta.namespace},
                    "spec": spec,
                }
            )
        return routes

    def _rule(self, ingress: Ingress, path: IngressPath, where: str) -> dict[str, Any] | None:
        ann = Annotations(ALB, ingress.lifecycle.annotations)
        value = path.path or "/"
        if path.path_type == "Exact":
            match: dict[str, Any] = {"path": {"type": "Exact", "value": value}}
        elif path.path_type == "Prefix" or "*" not in value:
            match = {"path": {"type": "PathPrefix", "value": value}}
            if path.path_type == "ImplementationSpecific":
                self._note("note", ingress, f"{where}.pathType", "ImplementationSpecific read as PathPrefix")
        else:
            self._note(
                "lossy",
                ingress,
                f"{where}.path",
                f"{value!r}: ALB wildcards have no Gateway API match",
                "matched as a RegularExpression the ALB Gateway rejects; rewrite it",
            )
            match = {"path": {"type": "RegularExpression", "value": value.replace("*", ".*")}}
        rule: dict[str, Any] = {"matches": [match]}
        backend = path.backend
        try:
            extra = ann.json(f"conditions.{backend.service}")
        except AnnotationError as exc:
            self._note(
                "error", ingress, f"metadata.annotations[{ALB}conditions.{backend.service}]", str(exc), "left out"
            )
            extra = None
        for c in extra if isinstance(extra, list) else []:
            self._condition(ingress, match, c, backend.service)
        if backend.port_name == "use-annotation":
            return self._action(ingress, backend.service, rule, where)
        ref = self._backend_ref(ingress, backend, where)
        if ref is None:
            return None
        rule["backendRefs"] = [ref]
        return rule

    def _condition(self, ingress: Ingress, match: dict[str, Any], c: Any, service: str) -> None:
        where = f"metadata.annotations[{ALB}conditions.{service}]"
        lowered = _lower_keys(c)
        kind = str(lowered.get("field"))
        config = _lower_keys(lowered.get(_CONFIG_KEYS.get(kind, "")))
        values = config.get("values") or lowered.get("values") or []
        if kind == "http-header" and len(values) == 1:
            match.setdefault("headers", []).append({"name": str(config.get("httpheadername")), "value": str(values[0])})
        elif kind == "http-request-method" and len(values) == 1:
            match["method"] = str(values[0])
        elif kind == "query-string" and all(isinstance(v, dict) and v.get("key") for v in values):
            for v in values:
                match.setdefault("queryParams", []).append({"name": str(v["key"]), "value": str(v.get("value", ""))})
        else:
            self._note(
                "lossy",
                ingress,
                where,
                f"{kind} {values!r} has no Gateway API match of one value",
                "left out: the route matches more than the Ingress did",
            )

    def _action(self, ingress: Ingress, name: str, rule: dict[str, Any], where: str) -> dict[str, Any] | None:
        ann = Annotations(ALB, ingress.lifecycle.annotations)
        annotation = f"metadata.annotations[{ALB}actions.{name}]"
        try:
            raw = ann.json(f"actions.{name}")
        except AnnotationError as exc:
            self._note("error", ingress, annotation, str(exc), "rule left out")
            return None
        spec = _lower_keys(raw)  # (LBC reads the keys in any case, as Go's encoding/json does)
        kind = spec.get("type")
        if kind == "redirect":
            config = _lower_keys(spec.get("redirectconfig"))
            redirect: dict[str, Any] = {
                "statusCode": 301 if str(config.get("statuscode", "HTTP_301")) == "HTTP_301" else 302
            }
            if config.get("protocol") and "#{" not in str(config["protocol"]):
                redirect["scheme"] = str(config["protocol"]).lower()
            if config.get("host") and "#{" not in str(config["host"]):
                redirect["hostname"] = str(config["host"])
            if config.get("port") and str(config["port"]).isdigit():
                redirect["port"] = int(config["port"])
            rule["filters"] = [{"type": "RequestRedirect", "requestRedirect": redirect}]
            return rule
        if kind == "forward":
            groups = _lower_keys(spec.get("forwardconfig")).get("targetgroups")
            refs = []
            for tg in groups if isinstance(groups, list) else []:
                lowered = _lower_keys(tg)
                if lowered.get("targetgrouparn"):
                    self._note(
                        "lossy",
                        ingress,
                        annotation,
                        "a forward to a target group ARN has no Gateway API backend",
                        "left out; bind it with a TargetGroupBinding to a Service instead",
                    )
                    continue
                port = str(lowered.get("serviceport"))
                backend = IngressBackend(
                    service=str(lowered.get("servicename") or ""),
                    port_number=int(port) if port.isdigit() else None,
                    port_name=None if port.isdigit() else port,
                )
                ref = self._backend_ref(ingress, backend, annotation)
                if ref is not None:
                    refs.append({**ref, "weight": int(lowered.get("weight", 1))})
            if not refs:
                return None
            rule["backendRefs"] = refs
            return rule
        self._note(
            "lossy",
            ingress,
            annotation,
            f"action {kind!r} has no Gateway API filter",
            "rule left out (fixed responses: a ListenerRuleConfiguration, not converted yet)",
        )
        return None

    def _backend_ref(self, ingress: Ingress, backend: IngressBackend, where: str) -> dict[str, Any] | None:
        port = backend.port_number
        service = self.services.get(ObjectKey("Service", ingress.meta.namespace, backend.service))
        if port is None and service is not None:
            port = next((p.port for p in service.ports if p.name == backend.port_name), None)
        if port is None:
            self._note(
                "error",
                ingress,
                f"{where}.backend",
                f"Service {backend.service} port {backend.port_name!r}: "
                "a backendRef needs the port number (give the Service's manifest too)",
                "rule left out",
            )
            return None
        self._target_group_configuration(ingress, backend.service, service)
        return {"name": backend.service, "port": port}

    def _target_group_configuration(self, ingress: Ingress, name: str, service: Service | None) -> None:
        service_annotations = service.exposure.lifecycle.annotations if service and service.exposure else {}
        ann = Annotations(ALB, service_annotations, ingress.lifecycle.annotations)
        props: dict[str, Any] = {t: v for short, t in _TG_FIELDS.items() if (v := ann.raw(short)) is not None}
        health: dict[str, Any] = {}
        for short, (target, kind) in _HEALTH_FIELDS.items():
            if (value := ann.raw(short)) is not None:
                health[target] = int(value) if kind is int and value.isdigit() else value
        if (codes := ann.raw("success-codes")) is not None:
            health["matcher"] = {"grpcCode" if props.get("protocolVersion") == "GRPC" else "httpCode": codes}
        if health:
            props["healthCheckConfig"] = health
        try:
            if attrs := ann.string_map("target-group-attributes"):
                props["targetGroupAttributes"] = [{"key": k, "value": v} for k, v in sorted(attrs.items())]
        except AnnotationError as exc:
            self._note("error", ingress, "metadata.annotations", str(exc), "left out")
        if not props:
            return
        key = (ingress.meta.namespace, name)
        doc = {
            "apiVersion": CONFIG,
            "kind": "TargetGroupConfiguration",
            "metadata": {"name": name, "namespace": ingress.meta.namespace},
            "spec": {"targetReference": {"name": name}, "defaultConfiguration": props},
        }
        previous = self.tg_configs.setdefault(key, doc)
        if previous is not doc and previous != doc:
            self._note(
                "lossy",
                ingress,
                "metadata.annotations",
                f"Service {name}'s target group settings differ from another Ingress's",
                "the first Ingress's kept (a TargetGroupConfiguration is per Service)",
            )


_CONFIG_KEYS = {
    "http-header": "httpheaderconfig",
    "http-request-method": "httprequestmethodconfig",
    "query-string": "querystringconfig",
    "host-header": "hostheaderconfig",
    "path-pattern": "pathpatternconfig",
    "source-ip": "sourceipconfig",
}


def _lower_keys(value: Any) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in value.items()} if isinstance(value, dict) else {}
