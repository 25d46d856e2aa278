"""App Mesh objects -> our VirtualNodes, Routes and Services, with a finding for whatever does not map cleanly.

How the App Mesh model maps onto ours:
- A VirtualService is a Kubernetes Service: the one its ``awsName`` names when that is a cluster DNS name
  (``color.demo.svc.cluster.local`` -> Service ``demo/color``), else one named after the VirtualService. Services not
  in the input are generated (ports from the router's or node's listeners, no selector).
- Its provider's routes become our Routes on that Service: each VirtualRouter route one Route (priority kept), or a
  single catch-all Route to the provider VirtualNode.
- VirtualNodes keep their names; backends name the Services of their VirtualServices; BackendGroups are expanded.
  A node discovered by DNS hostname or Cloud Map gets a Service selecting its pods when the input has none, so its
  endpoints exist.
- A VirtualGateway becomes a Gateway of meshctl's class, its GatewayRoutes HTTPRoutes/GRPCRoutes attached to it,
  with their matches and App Mesh's rewrites (``gateways.py``).
Pure: documents in, documents and findings out; deterministic (sorted), so importing twice gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from meshctl.appmesh.fields import Report, dns_label
from meshctl.appmesh.findings import Finding
from meshctl.appmesh.gateways import GatewayConversion
from meshctl.appmesh.load import SourceDoc
from meshctl.appmesh.nodes import NodeConversion
from meshctl.appmesh.objects import CLUSTER_DNS, KIND_ORDER, AppMeshObject
from meshctl.appmesh.routes import ROUTE_KINDS, convert_route_body
from meshctl.model import API_VERSION

__all__ = ["APPMESH_GROUP", "ImportResult", "convert"]

APPMESH_GROUP = "appmesh.k8s.aws"
_KINDS = ("Mesh", "VirtualNode", "VirtualService", "VirtualRouter", "VirtualGateway", "GatewayRoute", "BackendGroup")
_LABELS = {"app.kubernetes.io/managed-by": "meshctl-import"}


@dataclass
class ImportResult:
    objects: list[dict[str, Any]] = field(default_factory=list)  # sorted: namespace, kind, name
    findings: list[Finding] = field(default_factory=list)
    generated_services: set[tuple[str, str]] = field(default_factory=set)  # (namespace, name) not in the input


def convert(docs: Iterable[SourceDoc], *, default_namespace: str = "default") -> ImportResult:
    report = Report()
    by_kind: dict[str, dict[tuple[str, str], AppMeshObject]] = {k: {} for k in _KINDS}
    services: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        _index(doc, default_namespace, by_kind, services, report)
    return _Converter(by_kind, services, report).run()


def _index(
    doc: SourceDoc,
    default_ns: str,
    by_kind: dict[str, dict[tuple[str, str], AppMeshObject]],
    services: dict[tuple[str, str], dict[str, Any]],
    report: Report,
) -> None:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        report.error(doc.origin, "", "not a Kubernetes object (no kind)")
        return
    kind, api = data["kind"], str(data.get("apiVersion", ""))
    meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace") or ("" if kind == "Mesh" else default_ns)
    if kind == "Service" and api == "v1" and isinstance(name, str):
        services[(namespace, name)] = data
        return
    if not api.startswith(APPMESH_GROUP + "/"):
        return  # Deployments, Namespaces, ...: not ours to convert, and nothing is lost
    subject = f"{kind} {namespace}/{name}"
    if kind not in _KINDS:
        report.error(f"{doc.origin}: {subject}", "", f"unknown App Mesh kind {kind!r}")
        return
    if not api.endswith("/v1beta2"):
        report.error(f"{doc.origin}: {subject}", "apiVersion", f"{api}: only appmesh.k8s.aws/v1beta2 is read")
        return
    if not isinstance(name, str) or not name:
        report.error(doc.origin, "metadata.name", "is required")
        return
    spec: dict[str, Any] = data["spec"] if isinstance(data.get("spec"), dict) else {}
    by_kind[kind][(namespace, name)] = AppMeshObject(kind, namespace, name, spec, doc.origin)


class _Converter(NodeConversion, GatewayConversion):
    def __init__(
        self,
        by_kind: dict[str, dict[tuple[str, str], AppMeshObject]],
        services: dict[tuple[str, str], dict[str, Any]],
        report: Report,
    ) -> None:
        self.by_kind, self.input_services, self.report = by_kind, services, report
        self.out: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, kind, name) -> document
        self.service_ports: dict[tuple[str, str], set[tuple[int, str]]] = {}
        self.generated: set[tuple[str, str]] = set()
        self.vs_service: dict[tuple[str, str], tuple[str, str]] = {}
        self.vs_hostname: dict[tuple[str, str], str] = {}  # a VirtualService's awsName (what App Mesh's Host became)
        self.node_selector: dict[tuple[str, str], dict[str, str]] = {}  # generated Service -> the pods it selects

    def run(self) -> ImportResult:
        for obj in self._all("Mesh"):
            self._mesh(obj)
        for obj in self._all("VirtualService"):
            self.vs_service[(obj.namespace, obj.name)] = self._service_of(obj)
            if isinstance(aws := obj.spec.get("awsName"), str):
                self.vs_hostname[(obj.namespace, obj.name)] = aws
        for obj in self._all("VirtualService"):
            self._virtual_service(obj)
        for obj in self._all("VirtualNode"):
            self._virtual_node(obj)
        for obj in self._all("VirtualGateway"):
            self._virtual_gateway(obj)
        self._services()
        ordered = [self.out[k] for k in sorted(self.out, key=lambda k: (k[0], KIND_ORDER[k[1]], k[2]))]
        return ImportResult(ordered, self.report.findings, self.generated)

    def _emit_document(self, doc: dict[str, Any], source: AppMeshObject | None) -> None:
        """A Gateway API object, labelled and annotated as the import's others are."""
        meta = doc["metadata"]
        meta["labels"] = dict(_LABELS)
        if source is not None:
            meta["annotations"] = {"meshctl.dev/imported-from": f"appmesh.k8s.aws/v1beta2 {source.subject}"}
        self.out[(meta.get("namespace", ""), doc["kind"], meta["name"])] = doc

    def _emit(self, kind: str, namespace: str, name: str, spec: dict[str, Any], source: AppMeshObject | None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(_LABELS)}
        if source is not None:
            meta["annotations"] = {"meshctl.dev/imported-from": f"appmesh.k8s.aws/v1beta2 {source.subject}"}
        api = "v1" if kind == "Service" else API_VERSION
        self.out[(namespace, kind, name)] = {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}

    # --- Mesh ---------------------------------------------------------------------------------------------

    def _mesh(self, mesh: AppMeshObject) -> None:
        egress = (mesh.spec.get("egressFilter") or {}).get("type") or "DROP_ALL"  # App Mesh's default
        if egress in ("ALLOW_ALL", "DROP_ALL"):
            selector = ((mesh.spec.get("namespaceSelector") or {}).get("matchLabels")) or {}
            which = f"-l {','.join(f'{k}={v}' for k, v in sorted(selector.items()))}" if selector else "NAMESPACE"
            self.report.note(
                mesh.subject,
                "spec.egressFilter.type",
                f"{egress}: a Namespace label in meshctl (serve --egress-filter for the rest): "
                f"kubectl label namespace {which} mesh.meshctl.dev/egress-filter={egress}",
            )
        other = {k: v for k, v in mesh.spec.items() if k not in ("egressFilter", "namespaceSelector", "meshOwner")}
        self.report.copy_known(other, (), mesh.subject, "spec", {"serviceDiscovery": "cluster DNS is used"})
        self.report.note(mesh.subject, "", "a Mesh has no meshctl object: every namespace's objects form one mesh")

    # --- VirtualServices and their routes -----------------------------------------------------------------

    def _service_of(self, vs: AppMeshObject) -> tuple[str, str]:
        aws = vs.spec.get("awsName")
        if isinstance(aws, str) and (m := CLUSTER_DNS.fullmatch(aws)):
            return (m.group(2) or vs.namespace, m.group(1))
        if aws is not None:
            self.report.lossy(
                vs.subject,
                "spec.awsName",
                f"{aws!r} is not a cluster DNS name",
                f"callers reach it as {vs.name}.{vs.namespace}.svc.cluster.local (Service {vs.namespace}/{vs.name})",
            )
        return (vs.namespace, vs.name)

    def _virtual_service(self, vs: AppMeshObject) -> None:
        svc_ns, svc_name = self.vs_service[(vs.namespace, vs.name)]
        provider = vs.spec.get("provider") or {}
        self.service_ports.setdefault((svc_ns, svc_name), set())
        if isinstance(provider, dict) and "virtualRouter" in provider:
            ref = (provider["virtualRouter"] or {}).get("virtualRouterRef") or {}
            router = self.by_kind["VirtualRouter"].get((ref.get("namespace") or vs.namespace, str(ref.get("name"))))
            if router is None:
                self.report.error(
                    vs.subject, "spec.provider.virtualRouter", f"VirtualRouter {ref.get('name')} not in the input"
                )
                return
            self._router_routes(vs, router, svc_ns, svc_name)
        elif isinstance(provider, dict) and "virtualNode" in provider:
            ref = (provider["virtualNode"] or {}).get("virtualNodeRef") or {}
            self._node_provider(vs, ref, svc_ns, svc_name)
        else:
            self.report.error(
                vs.subject, "spec.provider", "has no virtualRouter or virtualNode provider", "no Route written"
            )

    def _router_routes(self, vs: AppMeshObject, router: AppMeshObject, svc_ns: str, svc_name: str) -> None:
        for i, listener in enumerate(router.spec.get("listeners") or []):
            pm = (listener or {}).get("portMapping") or {}
            if isinstance(pm.get("port"), int):
                self.service_ports[(svc_ns, svc_name)].add((pm["port"], str(pm.get("protocol", "http"))))
            self.report.copy_known(listener, ("portMapping",), router.subject, f"spec.listeners[{i}]")
        for i, route in enumerate(router.spec.get("routes") or []):
            route = route if isinstance(route, dict) else {}
            path = f"spec.routes[{i}]"
            kinds = [k for k in ROUTE_KINDS if k in route]
            if len(kinds) != 1:
                self.report.error(
                    router.subject, path, "must set exactly one of httpRoute, http2Route, grpcRoute, tcpRoute"
                )
                continue
            self.report.copy_known(route, ("name", "priority", *kinds), router.subject, path)
            converted = convert_route_body(
                kinds[0],
                route[kinds[0]],
                self.report,
                router.subject,
                f"{path}.{kinds[0]}",
                partial(self._target, router),
            )
            if converted is None:
                continue
            ours, body = converted
            spec: dict[str, Any] = {"serviceRef": {"name": svc_name}, ours: body}
            if isinstance(route.get("priority"), int):
                spec["priority"] = route["priority"]
            route_name = dns_label(str(route.get("name") or f"route-{i}"))
            name = route_name if route_name.startswith(f"{svc_name}-") else dns_label(svc_name, route_name)
            self._emit("Route", svc_ns, name, spec, router)

    def _node_provider(self, vs: AppMeshObject, ref: dict[str, Any], svc_ns: str, svc_name: str) -> None:
        key = (ref.get("namespace") or vs.namespace, str(ref.get("name")))
        node = self.by_kind["VirtualNode"].get(key)
        if node is None:
            self.report.error(
                vs.subject, "spec.provider.virtualNode", f"VirtualNode {key[0]}/{key[1]} not in the input"
            )
            return
        listeners = [(li or {}).get("portMapping") or {} for li in node.spec.get("listeners") or []]
        protocol = str(listeners[0].get("protocol", "http")) if listeners else "http"
        for pm in listeners:
            if isinstance(pm.get("port"), int):
                self.service_ports[(svc_ns, svc_name)].add((pm["port"], str(pm.get("protocol", "http"))))
        target: dict[str, Any] = {"virtualNodeRef": {"name": node.name}, "weight": 100}
        if node.namespace != svc_ns:
            target["virtualNodeRef"]["namespace"] = node.namespace
        if len(listeners) > 1:
            target["port"] = listeners[0].get("port")
        action = {"action": {"weightedTargets": [target]}}
        kind, body = {
            "tcp": ("tcpRoute", action),
            "grpc": ("grpcRoute", action),
        }.get(protocol, ("httpRoute", {"match": {"prefix": "/"}, **action}))
        self._emit("Route", svc_ns, dns_label(svc_name), {"serviceRef": {"name": svc_name}, kind: body}, vs)
        self.report.note(
            vs.subject, "spec.provider.virtualNode", f"became a catch-all {kind} to VirtualNode {node.name}"
        )

    def _target(self, router: AppMeshObject, target: dict[str, Any], path: str) -> dict[str, Any] | None:
        if "virtualNodeARN" in target:
            self.report.error(
                router.subject,
                f"{path}.virtualNodeARN",
                "a target given by ARN cannot be resolved",
                "route not converted",
            )
            return None
        ref = target.get("virtualNodeRef") or {}
        ns, name = ref.get("namespace") or router.namespace, ref.get("name")
        if (ns, name) not in self.by_kind["VirtualNode"]:
            self.report.error(
                router.subject,
                f"{path}.virtualNodeRef",
                f"VirtualNode {ns}/{name} not in the input",
                "route not converted",
            )
            return None
        out: dict[str, Any] = {"virtualNodeRef": {"name": name, "namespace": ns}, "weight": target.get("weight")}
        if target.get("port") is not None:
            out["port"] = target["port"]
        return out

    # --- Services -------------------------------------------------------------------------------------------

    def _services(self) -> None:
        for (ns, name), ports in sorted(self.service_ports.items()):
            if (ns, name) in self.input_services:
                svc = self.input_services[(ns, name)]
                spec: dict[str, Any] = {k: v for k, v in (svc.get("spec") or {}).items() if k in ("ports", "selector")}
                self._emit("Service", ns, name, spec, None)
                self.out[(ns, "Service", name)]["metadata"]["labels"] = dict(
                    (svc.get("metadata") or {}).get("labels") or {}
                )
                continue
            spec = {"ports": [{"name": f"{proto}-{port}", "port": port} for port, proto in sorted(ports)]}
            if (ns, name) in self.node_selector:
                spec["selector"] = dict(self.node_selector[(ns, name)])
            self._emit("Service", ns, name, spec, None)
            self.generated.add((ns, name))
