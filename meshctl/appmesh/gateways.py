"""App Mesh VirtualGateways and GatewayRoutes -> a Gateway of meshctl's class and its HTTPRoutes/GRPCRoutes.

- A VirtualGateway becomes a Gateway (class ``meshctl``, controllerName meshctl.dev/gateway, also written): a
  listener per ``portMapping`` (HTTP; with ``tls``, HTTPS naming a Secret ``<gateway>-tls`` the user creates from
  the certificate App Mesh took from ACM or files), taking the routes of its own namespace.
- A GatewayRoute in the gateway's namespace becomes an HTTPRoute (httpRoute, http2Route) or GRPCRoute (grpcRoute)
  attached to that Gateway (``sectionName`` when it matched a port): its hostname, path, prefix, header, query and
  method matches; its target VirtualService's Service as the backend. App Mesh's rewrites are kept as it applies
  them: a prefix match replaces the matched prefix with ``/`` unless ``rewrite.prefix.defaultPrefix`` is DISABLED
  (or with ``rewrite.prefix.value``), ``rewrite.path.exact`` replaces the path, and the Host becomes the target
  VirtualService's name unless ``rewrite.hostname.defaultTargetHostname`` is DISABLED.
"""

from __future__ import annotations

from typing import Any

from meshctl.appmesh.fields import Report
from meshctl.appmesh.gateway_api import GATEWAY_API_VERSION, grpc_match, http_match
from meshctl.appmesh.objects import AppMeshObject

__all__ = ["GATEWAY_CLASS", "GatewayConversion"]

GATEWAY_CLASS = "meshctl"  # the GatewayClass an import writes (controllerName meshctl.dev/gateway)
_ROUTE_KINDS = {"httpRoute": "HTTPRoute", "http2Route": "HTTPRoute", "grpcRoute": "GRPCRoute"}
_PROTOCOLS = ("http", "http2", "grpc")


class GatewayConversion:
    """The gateway half of the conversion; ``convert._Converter`` holds the state it reads and writes."""

    report: Report
    by_kind: dict[str, dict[tuple[str, str], AppMeshObject]]
    input_services: dict[tuple[str, str], dict[str, Any]]
    service_ports: dict[tuple[str, str], set[tuple[int, str]]]
    vs_service: dict[tuple[str, str], tuple[str, str]]
    vs_hostname: dict[tuple[str, str], str]

    def _all(self, kind: str) -> list[AppMeshObject]:
        raise NotImplementedError

    def _emit_document(self, doc: dict[str, Any], source: AppMeshObject | None) -> None:
        raise NotImplementedError

    def _virtual_gateway(self, gw: AppMeshObject) -> None:
        dropped = {
            "gatewayRouteSelector": "all GatewayRoutes in the gateway's namespace are attached",
            "backendDefaults": "a client policy to the backends is the mesh's (VirtualNode backendDefaults)",
            "meshRef": "not needed",
            "logging": "the gateway's Envoy logs as meshctl's gateway Deployment configures it",
        }
        known = ("podSelector", "listeners", "namespaceSelector")
        src = self.report.copy_known(gw.spec, known, gw.subject, "spec", dropped)
        # The GatewayRoutes converted are those of the gateway's namespace: its listeners take that namespace's.
        allowed: dict[str, Any] = {"namespaces": {"from": "Same"}}
        if src.get("namespaceSelector"):
            self.report.lossy(
                gw.subject,
                "spec.namespaceSelector",
                "the namespaces whose GatewayRoutes attach",
                "the GatewayRoutes of the gateway's namespace are converted, attached from there (allowedRoutes: "
                "Same); widen allowedRoutes to take other namespaces' HTTPRoutes",
            )
        listeners = []
        for i, listener in enumerate(src.get("listeners") or []):
            pm = (listener or {}).get("portMapping") or {}
            port, protocol = pm.get("port"), str(pm.get("protocol", "http"))
            if not isinstance(port, int) or protocol not in _PROTOCOLS:
                self.report.error(gw.subject, f"spec.listeners[{i}].portMapping", f"{port}/{protocol} is not served")
                continue
            out: dict[str, Any] = {"name": f"{protocol}-{port}", "port": port, "protocol": "HTTP"}
            if listener.get("tls"):
                secret = f"{gw.name}-tls"
                out["protocol"] = "HTTPS"
                out["tls"] = {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]}
                self.report.lossy(
                    gw.subject,
                    f"spec.listeners[{i}].tls",
                    "the listener's certificate (ACM, file or SDS)",
                    f"an HTTPS listener naming Secret {gw.namespace}/{secret}: create it (kubernetes.io/tls)",
                )
            for field in ("healthCheck", "connectionPool"):
                if listener.get(field):
                    self.report.lossy(gw.subject, f"spec.listeners[{i}].{field}", field, "not converted")
            out["allowedRoutes"] = allowed
            listeners.append(out)
        self._emit_document(
            {
                "apiVersion": GATEWAY_API_VERSION,
                "kind": "GatewayClass",
                "metadata": {"name": GATEWAY_CLASS},
                "spec": {"controllerName": "meshctl.dev/gateway"},
            },
            None,
        )
        self._emit_document(
            {
                "apiVersion": GATEWAY_API_VERSION,
                "kind": "Gateway",
                "metadata": {"name": gw.name, "namespace": gw.namespace},
                "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": listeners},
            },
            gw,
        )
        for route in self._all("GatewayRoute"):
            if route.namespace == gw.namespace:
                self._gateway_route(route, gw, listeners)
        labels = ",".join(
            f"{k}={v}" for k, v in sorted(((src.get("podSelector") or {}).get("matchLabels") or {}).items())
        )
        self.report.note(
            gw.subject,
            "",
            f"became Gateway {gw.namespace}/{gw.name} (class {GATEWAY_CLASS}): run its Envoys with "
            f"meshctl install --gateway {gw.namespace}/{gw.name}"
            + (f" (App Mesh ran them as the pods labelled {labels})" if labels else ""),
        )

    def _gateway_route(self, route: AppMeshObject, gw: AppMeshObject, listeners: list[dict[str, Any]]) -> None:
        kinds = [k for k in _ROUTE_KINDS if k in route.spec]
        if not kinds:
            what = "a tcpRoute" if "tcpRoute" in route.spec else "no httpRoute, http2Route or grpcRoute"
            self.report.error(route.subject, "spec", f"has {what}: a Gateway serves HTTP and gRPC")
            return
        key = kinds[0]
        body: dict[str, Any] = route.spec[key] if isinstance(route.spec[key], dict) else {}
        subject, path = route.subject, f"spec.{key}"
        action = self.report.copy_known(body.get("action"), ("target", "rewrite"), subject, f"{path}.action")
        target = action.get("target") or {}
        ref = (target.get("virtualService") or {}).get("virtualServiceRef") or {}
        vs_key = (ref.get("namespace") or route.namespace, str(ref.get("name")))
        svc = self.vs_service.get(vs_key)
        if svc is None:
            self.report.error(subject, f"{path}.action.target", f"VirtualService {ref.get('name')} not in the input")
            return
        port = target.get("port") or self._service_port(svc, subject, f"{path}.action.target")
        if port is None:
            return
        match = body.get("match") or {}
        grpc = key == "grpcRoute"
        rewrite = action.get("rewrite") or {}
        if grpc:
            converted = grpc_match(match, self.report, subject)
        elif _rewrites_prefix(match, rewrite):  # (read as a PathPrefix below: no string-prefix note)
            converted = http_match({k: v for k, v in match.items() if k != "prefix"}, self.report, subject)
        else:
            converted = http_match(match, self.report, subject)
        parent: dict[str, Any] = {"name": gw.name}
        if match.get("port") is not None:
            names = [li["name"] for li in listeners if li["port"] == match["port"]]
            if names:
                parent["sectionName"] = names[0]
        rule: dict[str, Any] = {"matches": [converted]}  # (filled in further by the rewrite: one dict)
        backend: dict[str, Any] = {"name": svc[1], "port": port}
        if svc[0] != route.namespace:
            backend["namespace"] = svc[0]
            self.report.note(
                subject, f"{path}.action.target", f"a cross-namespace backend needs a ReferenceGrant in {svc[0]}"
            )
        rule["backendRefs"] = [backend]
        if not grpc:
            url_rewrite = self._rewrite(match, rewrite, converted, vs_key, subject, path)
            if url_rewrite:
                rule["filters"] = [{"type": "URLRewrite", "urlRewrite": url_rewrite}]
        elif (rewrite.get("hostname") or {}).get("defaultTargetHostname") != "DISABLED":
            self.report.note(
                subject, f"{path}.action", "a GRPCRoute keeps the caller's authority (App Mesh set the target's)"
            )
        spec: dict[str, Any] = {"parentRefs": [parent]}
        hostname = match.get("hostname") or {}
        if hostname.get("exact"):
            spec["hostnames"] = [hostname["exact"]]
        elif hostname.get("suffix"):
            suffix = str(hostname["suffix"]).lstrip("*").lstrip(".")
            spec["hostnames"] = [f"*.{suffix}"]
            self.report.note(
                subject, f"{path}.match.hostname.suffix", f"matches the subdomains of {suffix} (*.{suffix})"
            )
        spec["rules"] = [rule]
        if route.spec.get("priority") is not None:
            self.report.lossy(
                subject,
                "spec.priority",
                "the Gateway API has no route priority",
                "rules are ordered by how specific their matches are",
            )
        self._emit_document(
            {
                "apiVersion": GATEWAY_API_VERSION,
                "kind": _ROUTE_KINDS[key],
                "metadata": {"name": route.name, "namespace": route.namespace},
                "spec": spec,
            },
            route,
        )

    def _rewrite(
        self,
        match: dict[str, Any],
        rewrite: dict[str, Any],
        converted: dict[str, Any],
        vs_key: tuple[str, str],
        subject: str,
        path: str,
    ) -> dict[str, Any]:
        """App Mesh's rewrite (its defaults included) as a Gateway API URLRewrite."""
        out: dict[str, Any] = {}
        prefix_rule = rewrite.get("prefix") or {}
        if (rewrite.get("path") or {}).get("exact"):
            out["path"] = {"type": "ReplaceFullPath", "replaceFullPath": rewrite["path"]["exact"]}
        elif _rewrites_prefix(match, rewrite):
            value = prefix_rule.get("value") or "/"
            prefix = str(match["prefix"]).rstrip("/") or "/"
            converted["path"] = {"type": "PathPrefix", "value": prefix}  # (ReplacePrefixMatch needs a PathPrefix)
            out["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": value}
            how = "its rewrite" if prefix_rule.get("value") else "App Mesh's default rewrite"
            self.report.note(
                subject,
                f"{path}.action.rewrite.prefix",
                f"{prefix} is replaced by {value} ({how}); the prefix matches whole path segments",
            )
        if (rewrite.get("hostname") or {}).get("defaultTargetHostname") != "DISABLED":
            out["hostname"] = self.vs_hostname.get(vs_key) or f"{vs_key[1]}.{vs_key[0]}.svc.cluster.local"
        return out

    def _service_port(self, svc: tuple[str, str], subject: str, path: str) -> int | None:
        ports = sorted(p for p, _ in self.service_ports.get(svc, set()))
        if not ports and svc in self.input_services:
            ports = sorted(p["port"] for p in (self.input_services[svc].get("spec") or {}).get("ports", []))
        if not ports:
            self.report.error(subject, path, f"Service {svc[0]}/{svc[1]} has no port to send to: set target.port")
            return None
        if len(ports) > 1:
            self.report.lossy(subject, path, f"Service {svc[1]} has ports {ports}", f"port {ports[0]} is used")
        return ports[0]


def _rewrites_prefix(match: dict[str, Any], rewrite: dict[str, Any]) -> bool:
    """App Mesh replaces a matched prefix (other than "/") unless told not to; a path rewrite takes precedence."""
    prefix_rule = rewrite.get("prefix") or {}
    return (
        match.get("prefix") not in (None, "/")
        and prefix_rule.get("defaultPrefix") != "DISABLED"
        and not (rewrite.get("path") or {}).get("exact")
    )
