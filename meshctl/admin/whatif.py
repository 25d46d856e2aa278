"""What applying some manifests would change at the proxy level (``meshctl diff``), computed without applying them.

The documents are laid over the control plane's current model (same kind and name replace, new ones are added,
as ``kubectl apply`` would), translated from scratch, and compared with what is served: which node groups get a
different config (and which parts), which routes appear, disappear or move, which become shadowed, and how
traffic moves per target. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from meshctl.model import Model, ObjectKey
from meshctl.parse.documents import UnsupportedDocument, parse_keyed
from meshctl.routing.adapt import match_from_model
from meshctl.sources.base import MODEL_FIELDS
from meshctl.translate.endpoints import virtual_node_of
from meshctl.translate.ir import RouteIR, SidecarIR, SidecarParams
from meshctl.translate.mesh import MeshIR, shadowed_routes, translate_mesh
from meshctl.translate.sidecar import translate_sidecar

__all__ = ["what_if"]


def _overlay(model: Model, documents: list[Any]) -> tuple[Model, list[ObjectKey], list[str]]:
    buckets = {name: dict(getattr(model, name)) for name in MODEL_FIELDS.values()}
    keys, errors = [], []
    for i, doc in enumerate(documents):
        try:
            parsed = parse_keyed(doc, origin=f"document {i}")
        except UnsupportedDocument as exc:
            errors.append(f"document {i}: {exc}")
            continue
        if parsed is None:
            continue
        key, obj, _ = parsed
        buckets[MODEL_FIELDS[type(obj)]][key] = obj
        keys.append(key)
    return replace(model, **buckets, delta=None, load_errors=()), keys, errors  # type: ignore[arg-type]


def _parts(before: SidecarIR, after: SidecarIR) -> list[str]:
    """Which xDS types of a node group change."""
    changed = []
    if before.listeners != after.listeners:
        changed.append("LDS")
    if before.virtual_hosts != after.virtual_hosts:
        changed.append("RDS")
    if before.clusters != after.clusters:
        changed.append("CDS")
    if before.endpoints != after.endpoints:
        changed.append("EDS")
    return changed


def _shares(route: RouteIR) -> dict[str, float]:
    """Traffic share per target VirtualNode (clusters are namespace/virtualnode/port)."""
    total = sum(c.weight for c in route.clusters)
    shares: dict[str, float] = {}
    for c in route.clusters:
        node = virtual_node_of(c.cluster)
        shares[node] = shares.get(node, 0.0) + (c.weight / total if total else 0.0)
    return shares


def _service_changes(svc: ObjectKey, old: tuple[RouteIR, ...], new: tuple[RouteIR, ...]) -> dict[str, Any] | None:
    old_http = [r for r in old if not r.tcp]
    new_http = [r for r in new if not r.tcp]
    before = {r.name: (i, r) for i, r in enumerate(old_http)}
    after = {r.name: (i, r) for i, r in enumerate(new_http)}
    routes: list[dict[str, Any]] = []
    traffic: list[dict[str, Any]] = []
    for name in [*after, *(n for n in before if n not in after)]:
        if name not in before:
            i, r = after[name]
            routes.append(
                {"route": name, "change": "added", "to": i + 1, "match": match_from_model(r.match).describe()}
            )
        elif name not in after:
            i, r = before[name]
            routes.append(
                {"route": name, "change": "removed", "from": i + 1, "match": match_from_model(r.match).describe()}
            )
        else:
            (i, r0), (j, r1) = before[name], after[name]
            if i != j:
                routes.append({"route": name, "change": "moved", "from": i + 1, "to": j + 1})
            if r0.match != r1.match:
                routes.append(
                    {
                        "route": name,
                        "change": "match",
                        "before": match_from_model(r0.match).describe(),
                        "after": match_from_model(r1.match).describe(),
                    }
                )
            s0, s1 = _shares(r0), _shares(r1)
            if s0 != s1:
                moves = [
                    {
                        "target": node,
                        "before": round(100 * s0.get(node, 0), 2),
                        "after": round(100 * s1.get(node, 0), 2),
                    }
                    for node in dict.fromkeys([*s0, *s1])
                    if s0.get(node, 0) != s1.get(node, 0)
                ]
                traffic.append({"route": name, "match": match_from_model(r1.match).describe(), "moves": moves})
    was = {f.route for f in shadowed_routes(svc, old_http)} if len(old_http) > 1 else set()
    shadowed = [
        {
            "route": f.route,
            "certain": f.certain,
            "by": list(f.by),
            "witness": f.message(),
        }
        for f in (shadowed_routes(svc, new_http) if len(new_http) > 1 else [])
        if f.route not in was
    ]
    if not (routes or traffic or shadowed):
        return None
    return {"service": f"{svc.namespace}/{svc.name}", "routes": routes, "traffic": traffic, "newlyShadowed": shadowed}


def what_if(model: Model, current: MeshIR, documents: list[Any]) -> dict[str, Any]:
    """``documents``: parsed YAML (dicts). ``current``: the mesh being served (from ``model``)."""
    overlaid, keys, errors = _overlay(model, documents)
    new = translate_mesh(
        overlaid,
        last_accepted=current.accepted,
        default_tls_mode=current.default_tls_mode,
        default_authz=current.default_authz,
    )
    problems = [
        {"object": f"{k.kind} {k.namespace}/{k.name}", "message": st.summary()}
        for k in keys
        if (st := new.status_by_key.get(k)) is not None and not st.accepted
    ]
    groups = []
    for node in sorted(set(current.virtual_nodes) | set(new.virtual_nodes)):
        params = SidecarParams(virtual_node=node)
        parts = _parts(translate_sidecar(current, params), translate_sidecar(new, params))
        if parts:
            groups.append({"group": params.group, "changes": parts})
    services = []
    for svc in sorted(set(current.routes_by_service) | set(new.routes_by_service)):
        change = _service_changes(svc, current.routes_by_service.get(svc, ()), new.routes_by_service.get(svc, ()))
        if change is not None:
            services.append(change)
    return {"errors": errors, "problems": problems, "groups": groups, "services": services}
