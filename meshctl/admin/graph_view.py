"""The mesh as a graph for the web view (``GET /api/v1/graph``, issue 35): caller VirtualNodes -> the Services they
declare -> the VirtualNodes their routes reach, edges labelled with the routes' weights; each VirtualNode with the
sync state of its connected proxies; the objects whose conditions are not all True.

Positions are computed here, deterministically: three columns (callers, Services, targets), rows by namespace and
name, so that a change never moves what did not change (graphs that jump on refresh are what users of other mesh
UIs complain about most). Reads immutable state only; ``version`` changes exactly when the document does."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from meshctl.model import ObjectKey
from meshctl.translate.endpoints import cluster_listener, service_of_cluster
from meshctl.translate.ir import ObjectStatus
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
        group = str(proxy.get("group", "")).split(";", 1)[0]
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
    very objects: they are replaced, never changed) and the proxies' sync states. Every open page asks each second;
    a 1,000-Service document takes ~30 ms to make and encode, on the loop that serves xDS."""

    def __init__(self) -> None:
        self._key: tuple[object, object, object] | None = None
        self._body = b""

    def body(self, mesh: MeshIR, statuses: tuple[ObjectStatus, ...], proxies: Iterable[Mapping[str, Any]]) -> bytes:
        states = _proxy_states(proxies)
        frozen = tuple(sorted((group, tuple(sorted(state.items()))) for group, state in states.items()))
        if self._key is None or self._key[0] is not mesh or self._key[1] is not statuses or self._key[2] != frozen:
            self._body = json.dumps(_document(mesh, statuses, states)).encode()
            self._key = (mesh, statuses, frozen)
        return self._body


def _document(
    mesh: MeshIR, statuses: Iterable[ObjectStatus], states: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    problems = [
        {
            "id": _id(s.key),
            "kind": s.key.kind,
            "namespace": s.key.namespace,
            "name": s.key.name,
            "conditions": [
                {"type": c.type, "reason": c.reason, "message": c.message}
                for c in s.conditions
                if c.status.value != "True" and c.type != "ProxylessCompatible"
            ],
        }
        for s in statuses
        if not s.healthy
    ]
    bad = {p["id"] for p in problems}

    edges: list[dict[str, Any]] = []
    callers: set[ObjectKey] = set()
    services: set[ObjectKey] = set()
    targets: set[ObjectKey] = set()
    for key, spec in mesh.virtual_nodes.items():
        for backend in spec.backends:
            svc = ObjectKey("Service", backend.namespace, backend.name)
            if svc in mesh.services:
                callers.add(key)
                services.add(svc)
                edges.append({"from": _id(key), "to": _id(svc), "label": ""})
    for svc, routes in mesh.routes_by_service.items():
        services.add(svc)
        shares: dict[ObjectKey, float] = {}
        for route in routes:
            total = sum(wc.weight for wc in route.clusters) or 1
            for wc in route.clusters:
                if service_of_cluster(wc.cluster) is not None or wc.cluster.count("/") != 2:
                    continue
                node = cluster_listener(wc.cluster)[0]
                shares[node] = max(shares.get(node, 0.0), 100.0 * wc.weight / total)
        for node, share in sorted(shares.items()):
            targets.add(node)
            edges.append({"from": _id(svc), "to": _id(node), "label": f"{share:.0f}%", "weight": share})
    targets -= callers  # a node both calling and called sits with the callers (one place each)

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
    body = {"nodes": nodes, "edges": edges, "problems": problems}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"version": digest, **body}
