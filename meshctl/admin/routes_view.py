"""The route tables behind ``GET /api/v1/routes``: what ``meshctl get routes`` and ``meshctl explain`` read.

With ``from`` (a VirtualNode), the outbound RouteConfiguration that node's proxies are sent (read from the group's
snapshot when one exists, else translated for it now); without, each Service's routes as a caller in its own
namespace sees them. Either way the clusters they name come with their healthy endpoint counts and the
circuit-breaker, outlier-detection and health-check settings Envoy gets. Reads immutable state only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.json_format import MessageToDict

from meshctl.model import ObjectKey
from meshctl.routing.adapt import from_envoy
from meshctl.routing.table import VirtualHost, host_to_json
from meshctl.translate.authz import decide
from meshctl.translate.endpoints import cluster_listener, is_service_cluster, service_of_cluster
from meshctl.translate.ir import ClusterIR, SidecarParams, VirtualHostIR
from meshctl.translate.mesh import MeshIR
from meshctl.translate.proxyless import PROXYLESS_CONDITION
from meshctl.translate.sidecar import OUTBOUND_ROUTE_CONFIG, service_virtual_hosts, translate_sidecar
from meshctl.xds.cache import Snapshot
from meshctl.xds.envoy.cluster import build_cluster
from meshctl.xds.envoy.route import build_route_configuration
from meshctl.xds.envoy.types import ROUTE

__all__ = ["NotFound", "routes_document"]


class NotFound(Exception):
    """An unknown VirtualNode or Service was asked for."""


def _key(kind: str, text: str) -> ObjectKey:
    namespace, _, name = text.partition("/")
    if not name:
        raise NotFound(f"{kind} must be namespace/name, got {text!r}")
    return ObjectKey(kind, namespace, name)


def _hosts_from_ir(hosts: list[VirtualHostIR]) -> tuple[VirtualHost, ...]:
    config = build_route_configuration(OUTBOUND_ROUTE_CONFIG, hosts)
    return from_envoy(MessageToDict(config, preserving_proto_field_name=True))


IdentitiesOf = Callable[[ObjectKey], list[str]]


def _mtls_view(ir: ClusterIR, source: ObjectKey | None, identities: IdentitiesOf, trust_domain: str) -> Any:
    """Whether calls over this cluster are mTLS, and which identity each side presents (those of the connected
    proxies; the pattern an identity must match when none is connected), as the caller's client policy has it."""
    tls = ir.tls
    if tls is None:
        return None
    service = service_of_cluster(ir.name)  # a Service port (HTTPRoute backend): its pods' identities are not known
    callee_key = service[0] if service is not None else cluster_listener(ir.name)[0]
    callee_ns = callee_key.namespace
    callee = identities(callee_key) if service is None else []
    caller_ns = source.namespace if source else "<caller namespace>"
    if tls.certificate_files is not None:
        caller = [f"the certificate in {tls.certificate_files[0]}"]
    elif tls.certificate_sds is not None:
        caller = [f"{tls.certificate_sds} (from the node's SDS agent)"]
    else:
        caller = (identities(source) if source is not None else []) or [
            f"spiffe://{trust_domain}/ns/{caller_ns}/sa/<its service account>"
        ]
    if tls.trust_file is not None:
        roots = f"the roots in {tls.trust_file}"
    elif tls.trust_sds is not None:
        roots = f"the roots of {tls.trust_sds} (from the node's SDS agent)"
    else:
        roots = "the mesh roots"
    names = " or ".join(tls.subject_alt_names) if tls.subject_alt_names else f"spiffe://*/ns/{tls.namespace}/sa/*"
    return {
        "mode": "mTLS",
        "callerPresents": caller,
        "calleePresents": callee or [f"spiffe://{trust_domain}/ns/{callee_ns}/sa/<its service account>"],
        "calleeMustMatch": f"{names}, signed by {roots}",
    }


def _authorization_view(
    ir: ClusterIR, mesh: MeshIR, callers: list[str], method: str, path: str
) -> list[dict[str, Any]]:
    """What the callee's listener does with this request from each identity the caller may present (over plaintext,
    a caller that proves nothing)."""
    authz = None if is_service_cluster(ir.name) else mesh.authz.get(cluster_listener(ir.name))
    out = []
    presented: list[str | None] = list(callers) if ir.tls is not None else []
    for caller in presented or [None]:
        d = decide(authz, caller, method, path.split("?", 1)[0])
        out.append({"caller": caller, "allowed": d.allowed, "by": d.by, "why": d.why, "audit": d.audit})
    return out


def _cluster_view(ir: ClusterIR, mesh: MeshIR, mtls: Any = None) -> dict[str, Any]:
    built = build_cluster(ir)
    endpoints = mesh.endpoints.get(ir.name, ())
    return {
        "mtls": mtls,
        "protocol": str(ir.protocol),
        "endpoints": {"healthy": sum(e.healthy for e in endpoints), "total": len(endpoints)},
        "circuitBreakers": MessageToDict(built.circuit_breakers) if built.HasField("circuit_breakers") else None,
        "outlierDetection": MessageToDict(built.outlier_detection) if built.HasField("outlier_detection") else None,
        "healthChecks": [MessageToDict(h) for h in built.health_checks],
        "connectTimeout": MessageToDict(built.connect_timeout) if built.HasField("connect_timeout") else None,
    }


def _snapshot_for(snapshots: dict[str, Snapshot], key: ObjectKey) -> Snapshot | None:
    """The snapshot of the node's default group (the one ``meshctl bootstrap`` proxies join)."""
    return snapshots.get(SidecarParams(virtual_node=key).group)


def routes_document(
    mesh: MeshIR,
    snapshots: dict[str, Snapshot],
    *,
    source: str | None = None,
    service: str | None = None,
    identities: IdentitiesOf = lambda _: [],
    trust_domain: str = "meshctl.local",
    method: str | None = None,
    path: str | None = None,
    service_accounts: Callable[[ObjectKey], list[str]] = lambda _: [],
) -> dict[str, Any]:
    """``source``: ``namespace/virtualnode`` whose proxies' view to show; ``service``: only this Service;
    ``identities``: the connected proxies' identities of a VirtualNode (who presents what over mTLS)."""
    wanted = _key("Service", service) if service else None
    if wanted is not None and wanted not in mesh.services:
        raise NotFound(f"Service {service} not found")
    clusters: dict[str, ClusterIR]
    if source:
        node = _key("VirtualNode", source)
        if node not in mesh.virtual_nodes:
            raise NotFound(f"VirtualNode {source} not found (or not accepted)")
        snap = _snapshot_for(snapshots, node)
        sidecar = snap.ir if snap is not None and snap.ir is not None else None
        if sidecar is None:
            sidecar = translate_sidecar(mesh, SidecarParams(virtual_node=node))
        clusters = {c.name: c for c in sidecar.clusters}
        if snap is not None and OUTBOUND_ROUTE_CONFIG in snap.resources[ROUTE]:
            message = snap.resources[ROUTE][OUTBOUND_ROUTE_CONFIG].message
            hosts = from_envoy(MessageToDict(message, preserving_proto_field_name=True))
        else:
            hosts = _hosts_from_ir(list(sidecar.virtual_hosts))
        origin = "snapshot" if snap is not None else "translated"
    else:
        # As a caller in the Service's namespace that declares it sees it: Routes, Gateway API routes, per port.
        services = [wanted] if wanted else sorted(mesh.routes_by_service.keys() | mesh.gamma.routed_services)
        irs = [vh for svc in services for vh in service_virtual_hosts(mesh, svc, svc.namespace, declared=True)]
        hosts = _hosts_from_ir(irs)
        clusters = dict(mesh.clusters)
        origin = "mesh"
    if wanted is not None:  # its one virtual host, or one per port (``ns/name:port``)
        own = f"{wanted.namespace}/{wanted.name}"
        hosts = tuple(h for h in hosts if h.name == own or h.name.startswith(own + ":"))
    used = sorted({t.cluster for h in hosts for r in h.routes for t in r.targets})
    source_key = _key("VirtualNode", source) if source else None
    callers: list[str] = []
    if source_key is not None:
        callers = identities(source_key) or [
            f"spiffe://{trust_domain}/ns/{source_key.namespace}/sa/{sa}" for sa in service_accounts(source_key)
        ]
    views = {
        name: _cluster_view(clusters[name], mesh, _mtls_view(clusters[name], source_key, identities, trust_domain))
        for name in used
        if name in clusters
    }
    if method is not None and path is not None:
        for name, view in views.items():
            view["authorization"] = _authorization_view(clusters[name], mesh, callers, method, path)
    return {
        "from": source,
        # What a captured proxy of the caller's namespace does with a host no Service has (App Mesh's egressFilter)
        "egressFilter": (
            mesh.egress_filters.get(source_key.namespace, mesh.default_egress) if source_key else mesh.default_egress
        ).value,
        "origin": origin,
        "virtualHosts": [host_to_json(h) for h in hosts],
        "clusters": views,
        "proxylessNotes": _proxyless_notes(mesh, hosts, used),
    }


def _proxyless_notes(mesh: MeshIR, hosts: tuple[VirtualHost, ...], clusters: list[str]) -> dict[str, dict[str, str]]:
    """What proxyless gRPC callers would not honour (ProxylessCompatible=False) of the Routes these hosts hold and
    of the VirtualNodes their clusters reach: ``{"routes": {ns/name: message}, "virtualNodes": {...}}``."""
    statuses = mesh.status_by_key

    def note(key: ObjectKey) -> str | None:
        status = statuses.get(key)
        found = [c for c in status.conditions if c.type == PROXYLESS_CONDITION] if status is not None else []
        return found[0].message if found else None

    routes: dict[str, str] = {}
    for name in sorted({r.name for h in hosts for r in h.routes}):
        namespace, _, route = name.partition("/")
        if route and (message := note(ObjectKey("Route", namespace, route))) is not None:
            routes[name] = message
    nodes: dict[str, str] = {}
    for cluster in clusters:
        if is_service_cluster(cluster) or cluster.count("/") != 2:
            continue
        key = cluster_listener(cluster)[0]
        if (message := note(key)) is not None:
            nodes[f"{key.namespace}/{key.name}"] = message
    return {"routes": routes, "virtualNodes": nodes}
