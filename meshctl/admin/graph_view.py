"""The mesh as a graph for the web view (``GET /api/v1/graph``, issue 35): caller VirtualNodes -> the Services they
declare -> the VirtualNodes their routes reach, edges labelled with the routes' weights; each VirtualNode with the
sync state of its connected proxies; the objects whose conditions are not all True.

Positions are computed here, deterministically: three columns (callers, Services, targets), rows by namespace and
name, so that a change never moves what did not change (graphs that jump on refresh are what users of other mesh
UIs complain about most). Reads immutable state only; ``version`` changes exactly when the document does."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from meshctl.admin.traffic import EdgeFigures, edge_health, merge_figures
from meshctl.model import ObjectKey
from meshctl.translate.endpoints import cluster_listener, service_cluster_name, service_of_cluster
from meshctl.translate.ir import ObjectStatus, group_node
from meshctl.translate.mesh import MeshIR

__all__ = ["GraphView"]

_WORST = {"NACKED": 3, "STALE": 2, "NOT SENT": 1, "IGNORED": 0, "SYNCED": 0}


def _id(key: ObjectKey) -> str:
    return f"{key.kind}/{key.namespace}/{key.name}"


def _proxy_states(proxies: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """By VirtualNode (``namespace/name``): how many proxies, the worst sync state over their types, and Envoy's
    message of a rejection."""
    out: dict[str, dict[str, Any]] = {}
    for proxy in proxies:
        group = group_node(str(proxy.get("group", "")))
        entry = out.setdefault(group, {"proxies": 0, "sync": "SYNCED", "rejected": None})
        entry["proxies"] += 1
        for type_state in (proxy.get("types") or {}).values():
            state = (type_state.get("sync") or {}).get("state", "SYNCED")
            if _WORST.get(state, 0) > _WORST.get(entry["sync"], 0):
                entry["sync"] = state
            rejected = type_state.get("rejected")
            if rejected and entry["rejected"] is None:
                entry["rejected"] = rejected.get("error")
    return out


class GraphView:
    """The document as JSON bytes, made again only when what it is made of changed: the mesh and its statuses (the
    very objects: they are replaced, never changed), the proxies' sync states and the traffic figures (a new
    round of the collector). Every open page asks each second; a 1,000-Service document takes ~30 ms to make and
    encode, on the loop that serves xDS."""

    def __init__(self) -> None:
        self._key: tuple[object, object, object, object] | None = None
        self._body = b""

    async def body(
        self,
        mesh: MeshIR,
        statuses: tuple[ObjectStatus, ...],
        proxies: Iterable[Mapping[str, Any]],
        traffic: Mapping[tuple[str, str], EdgeFigures] | None = None,
        balancers: Iterable[Mapping[str, Any]] = (),
    ) -> bytes:
        """``balancers``: the ingress reconciler's load balancers (``/api/v1/ingresses`` items), drawn as entries."""
        states = _proxy_states(proxies)
        entries = tuple(_entry(view) for view in balancers if view.get("loadBalancer"))
        frozen = (
            tuple(sorted((group, tuple(sorted(state.items()))) for group, state in states.items())),
            json.dumps(entries, sort_keys=True),
        )
        old = self._key
        if old is None or old[0] is not mesh or old[1] is not statuses or old[2] != frozen or old[3] is not traffic:
            # ~0.25 s at 1,000 Services with 1,000 callers' traffic on 12,000 edges: off the serving loop.
            self._body = await asyncio.to_thread(_encoded, mesh, statuses, states, traffic or {}, entries)
            self._key = (mesh, statuses, frozen, traffic)
        return self._body


def _entry(view: Mapping[str, Any]) -> dict[str, Any]:
    """A load balancer as the graph draws it: what it is, where it sends (Service, port, targets healthy)."""
    balancer = view["loadBalancer"]
    owner = (view.get("owners") or ["//"])[0].split("/", 2)
    return {
        "id": f"LoadBalancer/{view['stack']}",
        "namespace": owner[1] if len(owner) == 3 else "",
        "name": balancer.get("name") or view["stack"],
        "detail": " ".join(
            str(x) for x in (balancer.get("type"), balancer.get("scheme"), balancer.get("dnsName")) if x
        ),
        "error": view.get("error"),
        "to": [
            {"service": g["service"], "registered": g.get("registered"), "healthy": g.get("healthy")}
            for g in view.get("targetGroups", [])
        ],
    }


def _encoded(
    mesh: MeshIR,
    statuses: Iterable[ObjectStatus],
    states: Mapping[str, Mapping[str, Any]],
    traffic: Mapping[tuple[str, str], EdgeFigures],
    entries: tuple[dict[str, Any], ...] = (),
) -> bytes:
    """The document with its ``version`` (a digest of the rest), encoded an element at a time: one json.dumps of
    it all is one C call that holds the GIL throughout (~100 ms with 12,000 edges), stalling the serving loop even
    from this worker thread."""
    document = _document(mesh, statuses, states, traffic, entries)
    parts = []
    for name, items in document.items():
        parts.append(f'"{name}": [' + ", ".join(json.dumps(item) for item in items) + "]")
    rest = ", ".join(parts)
    digest = hashlib.sha256(rest.encode()).hexdigest()[:16]
    return f'{{"version": "{digest}", {rest}}}'.encode()


def _traffic_index(
    traffic: Mapping[tuple[str, str], EdgeFigures],
) -> tuple[dict[tuple[str, str], list[EdgeFigures]], dict[str, list[EdgeFigures]]]:
    """By (caller VirtualNode ``namespace/name``, cluster), and by cluster over every caller."""
    by_caller: dict[tuple[str, str], list[EdgeFigures]] = {}
    by_cluster: dict[str, list[EdgeFigures]] = {}
    for (group, cluster), figures in traffic.items():
        by_caller.setdefault((group_node(group), cluster), []).append(figures)
        by_cluster.setdefault(cluster, []).append(figures)
    return by_caller, by_cluster


def _with_traffic(edge: dict[str, Any], figures: list[EdgeFigures]) -> dict[str, Any]:
    merged = merge_figures(figures) if figures else None
    return {**edge, "traffic": merged, "health": edge_health(merged)}


def _document(
    mesh: MeshIR,
    statuses: Iterable[ObjectStatus],
    states: Mapping[str, Mapping[str, Any]],
    traffic: Mapping[tuple[str, str], EdgeFigures],
    entries: tuple[dict[str, Any], ...] = (),
) -> dict[str, list[dict[str, Any]]]:
    problems = [
        {
            "id": _id(s.key),
            "kind": s.key.kind,
            "namespace": s.key.namespace,
            "name": s.key.name,
            "conditions": [
                {"type": c.type, "reason": c.reason, "message": c.message}
                for c in (*s.conditions, *s.listener_problems)  # (a Gateway's listeners' problems too)
                if c.status.value != "True" and c.type != "ProxylessCompatible"
            ],
        }
        for s in statuses
        if not s.healthy
    ]
    bad = {p["id"] for p in problems}

    # Traffic is counted per cluster, by the caller's Envoy: a caller -> Service edge sums what the caller sent to
    # the clusters of the Service's routes, a Service -> VirtualNode edge what every caller sent to the node's
    # clusters among them.
    by_caller, by_cluster = _traffic_index(traffic)
    clusters_of = {
        svc: {wc.cluster for route in routes for wc in route.clusters} for svc, routes in mesh.routes_by_service.items()
    }
    edges: list[dict[str, Any]] = []
    callers: set[ObjectKey] = set()
    services: set[ObjectKey] = set()
    targets: set[ObjectKey] = set()
    for key, spec in mesh.virtual_nodes.items():
        caller = f"{key.namespace}/{key.name}"
        for backend in spec.backends:
            svc = ObjectKey("Service", backend.namespace, backend.name)
            if svc in mesh.services:
                callers.add(key)
                services.add(svc)
                sent = [f for c in sorted(clusters_of.get(svc, ())) for f in by_caller.get((caller, c), ())]
                edges.append(_with_traffic({"from": _id(key), "to": _id(svc), "label": ""}, sent))
    for svc, routes in mesh.routes_by_service.items():
        services.add(svc)
        shares: dict[ObjectKey, float] = {}
        reached: dict[ObjectKey, set[str]] = {}
        for route in routes:
            total = sum(wc.weight for wc in route.clusters) or 1
            for wc in route.clusters:
                if service_of_cluster(wc.cluster) is not None or wc.cluster.count("/") != 2:
                    continue
                node = cluster_listener(wc.cluster)[0]
                shares[node] = max(shares.get(node, 0.0), 100.0 * wc.weight / total)
                reached.setdefault(node, set()).add(wc.cluster)
        for node, share in sorted(shares.items()):
            targets.add(node)
            sent = [f for c in sorted(reached[node]) for f in by_cluster.get(c, ())]
            edge = {"from": _id(svc), "to": _id(node), "label": f"{share:.0f}%", "weight": share}
            edges.append(_with_traffic(edge, sent))
    targets -= callers  # a node both calling and called sits with the callers (one place each)
    # Load balancers of the ingress reconciler enter the mesh beside the callers: an edge per target group, to its
    # Service, labelled with its port and how many of its targets are healthy.
    for entry in entries:
        for group in entry["to"]:
            ref, _, port = group["service"].rpartition(":")
            namespace, _, name = ref.partition("/")
            svc = ObjectKey("Service", namespace, name)
            services.add(svc)
            registered, healthy = group["registered"], group["healthy"]
            label = f":{port}" + (f" {healthy}/{registered} healthy" if registered is not None else "")
            health = "idle" if not registered else "healthy" if healthy == registered else "degraded"
            edges.append({"from": entry["id"], "to": _id(svc), "label": label, "traffic": None, "health": health})

    gateways = _gateway_edges(mesh, by_caller, clusters_of, edges, services)

    nodes: list[dict[str, Any]] = []
    for column, keys in enumerate((sorted(callers), sorted(services), sorted(targets))):
        for row, key in enumerate(keys):
            state = states.get(f"{key.namespace}/{key.name}", {}) if key.kind == "VirtualNode" else {}
            nodes.append(
                {
                    "id": _id(key),
                    "kind": key.kind,
                    "namespace": key.namespace,
                    "name": key.name,
                    "column": column,
                    "row": row,
                    "proxies": state.get("proxies", 0),
                    "sync": state.get("sync"),
                    "rejected": state.get("rejected"),
                    "problem": _id(key) in bad,
                }
            )
    for row, entry in enumerate(entries, start=len(callers)):
        nodes.append(
            {
                "id": entry["id"],
                "kind": "LoadBalancer",
                "namespace": entry["namespace"],
                "name": entry["name"],
                "column": 0,
                "row": row,
                "detail": entry["detail"],
                "rejected": entry["error"],
                "problem": entry["error"] is not None,
            }
        )
        if entry["error"] is not None:
            problems.append(
                {
                    "id": entry["id"],
                    "kind": "LoadBalancer",
                    "namespace": entry["namespace"],
                    "name": entry["name"],
                    "conditions": [{"type": "Reconciled", "reason": "AWSError", "message": entry["error"]}],
                }
            )
    # Edge gateways enter the mesh beside the callers and load balancers, their proxies' sync state shown.
    for row, gk in enumerate(gateways, start=len(callers) + len(entries)):
        state = states.get(f"gateway:{gk.namespace}/{gk.name}", {})
        nodes.append(
            {
                "id": _id(gk),
                "kind": "Gateway",
                "namespace": gk.namespace,
                "name": gk.name,
                "column": 0,
                "row": row,
                "proxies": state.get("proxies", 0),
                "sync": state.get("sync"),
                "rejected": state.get("rejected"),
                "problem": _id(gk) in bad,
            }
        )
    return {"nodes": nodes, "edges": edges, "problems": problems}


def _gateway_edges(
    mesh: MeshIR,
    by_caller: Mapping[tuple[str, str], list[EdgeFigures]],
    clusters_of: Mapping[ObjectKey, set[str]],
    edges: list[dict[str, Any]],
    services: set[ObjectKey],
) -> list[ObjectKey]:
    """Appends an edge from each served Gateway to each Service its routes send to (labelled with the ports, with
    the traffic its proxies sent there: to the Service's port clusters, or its meshctl Routes' when the gateway
    takes them); returns the Gateways, in order."""
    ports: dict[ObjectKey, dict[ObjectKey, set[int]]] = {gk: {} for gk in mesh.gateways.proxies}
    for share in mesh.gateways.shares.values():
        for gk in {w[0] for w, _, _ in share.placed}:
            for name in share.reached:
                if gk in ports and (found := service_of_cluster(name)) is not None:
                    ports[gk].setdefault(found[0], set()).add(found[1])
    for gk in sorted(ports):
        caller = f"gateway:{gk.namespace}/{gk.name}"
        for svc, svc_ports in sorted(ports[gk].items()):
            services.add(svc)
            clusters = clusters_of.get(svc) or {service_cluster_name(svc.namespace, svc.name, p) for p in svc_ports}
            sent = [f for c in sorted(clusters) for f in by_caller.get((caller, c), ())]
            label = ",".join(f":{p}" for p in sorted(svc_ports))
            edges.append(_with_traffic({"from": _id(gk), "to": _id(svc), "label": label}, sent))
    return sorted(ports)
