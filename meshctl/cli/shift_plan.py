"""A planned weight change of one Route: what it changes, where it is written (manifest file or Kubernetes
API), and waiting until every proxy calling the Route's Service ACKed it. Used by ``meshctl shift`` and the
progressive shift."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.cli.client import AdminClient, CliError
from meshctl.cli.routes import qualified
from meshctl.cli.writers import GATEWAY_KINDS, KubernetesWriter, ManifestWriter, RouteWriter, route_targets
from meshctl.routing.table import route_from_json
from meshctl.translate.endpoints import virtual_node_of
from meshctl.translate.ir import group_node

__all__ = ["Shift", "callers", "parse_weights", "plan_shift", "served_weights", "wait_for_proxies"]

_TYPES = ("cds", "eds", "lds", "rds")


def parse_weights(text: str) -> dict[str, int]:
    """``reviews-v1=50,reviews-v2=50`` -> weights (they must sum to 100)."""
    weights: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise CliError(f"--to {text!r}: expected NODE=WEIGHT[,NODE=WEIGHT...] with whole-number weights")
        if name in weights:
            raise CliError(f"--to {text!r}: {name} is given twice")
        weights[name] = int(value)
        if weights[name] > 100:
            raise CliError(f"--to {text!r}: weight {weights[name]} for {name} is above 100")
    if sum(weights.values()) != 100:
        raise CliError(f"--to {text!r}: weights sum to {sum(weights.values())}, not 100")
    return weights


@dataclass
class Shift:
    """One Route's weights, before and after, and how to write them."""

    namespace: str
    name: str
    service: str  # namespace/name
    match: str
    before: dict[str, int]  # namespace/virtualnode (a Gateway API route's: namespace/service) -> weight
    after: dict[str, int]
    writer: RouteWriter
    kind: str = "Route"  # or HTTPRoute / GRPCRoute: ``rule``'s backendRefs are shifted
    rule: int | None = None

    @property
    def key(self) -> str:
        """The route's name as the control plane serves it (a Gateway API rule's first match)."""
        if self.rule is not None:
            return f"{self.kind}/{self.namespace}/{self.name}/rule-{self.rule}/match-0"
        return f"{self.namespace}/{self.name}"

    def describe(self) -> list[str]:
        def pct(weights: dict[str, int], node: str) -> str:
            total = sum(weights.values())
            return f"{100 * weights.get(node, 0) / total:.4g}%" if total else "0%"

        nodes = list(dict.fromkeys([*self.before, *self.after]))
        moves = [f"{n.split('/')[1]} {pct(self.before, n)} -> {pct(self.after, n)}" for n in nodes]
        what = f"{self.kind} {self.namespace}/{self.name}" + (f" rule {self.rule}" if self.rule is not None else "")
        return [f"{what} ({self.service}, {self.match}): " + ", ".join(moves)]

    def targets(self, weights: dict[str, int]) -> list[dict[str, Any]]:
        """weightedTargets for ``weights``, keeping each existing target's other fields (port)."""
        _, current = route_targets(self.writer.read(), self.rule)
        out: list[dict[str, Any]] = []
        seen = set()
        for t in current:
            node = _target_node(t, self.namespace)
            seen.add(node)
            out.append({**t, "weight": weights.get(node, 0)})
        for node, weight in weights.items():
            if node not in seen:
                ns, _, name = node.partition("/")
                ref = {"name": name} if ns == self.namespace else {"name": name, "namespace": ns}
                if self.rule is None:
                    out.append({"virtualNodeRef": ref, "weight": weight})
                else:  # a new backendRef: the port of the rule's first backend
                    out.append({**ref, "port": current[0].get("port"), "weight": weight})
        return out

    def apply(self, weights: dict[str, int]) -> str:
        return self.writer.write(self.targets(weights))


def _target_node(target: dict[str, Any], namespace: str) -> str:
    """namespace/name of a weightedTarget's VirtualNode, or of a backendRef's Service (the route's namespace unless
    it names one)."""
    ref = target.get("virtualNodeRef") if "virtualNodeRef" in target else target
    ref = ref or {}
    return f"{ref.get('namespace') or namespace}/{ref.get('name')}"


def _served_route(
    client: AdminClient, route_key: str, service: str, source: str | None = None
) -> dict[str, Any] | None:
    """The Route as the control plane serves it (to ``source``'s proxies, if given); None where it is not served."""
    table = client.get("/api/v1/routes", service=service, **{"from": source})
    return next((r for vh in table["virtualHosts"] for r in vh["routes"] if r["name"] == route_key), None)


def _writer(args: argparse.Namespace, summary: dict[str, Any], route: dict[str, Any]) -> RouteWriter:
    source = summary["source"]
    if source["kind"] == "manifests":
        origin = route["origin"]
        return ManifestWriter(Path(source["directory"]), origin, route["namespace"], route["name"])
    if source["kind"] == "kubernetes":
        return KubernetesWriter(args.kubeconfig, route["namespace"], route["name"])
    raise CliError(f"cannot write Routes to a {source['kind']} source")


def _plan_gateway_shift(args: argparse.Namespace, client: AdminClient, to: dict[str, int], kind: str) -> Shift:
    """``httproute/NAME``: the weights of one rule's backendRefs (``--rule``, else the only rule with any)."""
    route_key = qualified(args.route.split("/", 1)[1], args.namespace, kind.lower())
    namespace, _, name = route_key.partition("/")
    summary = client.get("/api/v1/summary")
    objects = client.get("/api/v1/status")["objects"]
    route = next((o for o in objects if o["kind"] == kind and f"{o['namespace']}/{o['name']}" == route_key), None)
    if route is None:
        raise CliError(f"{kind} {route_key} not found", code=1)
    after = {qualified(n, namespace, "service"): w for n, w in to.items()}
    for svc in after:  # (the routes view answers 404 for a Service the mesh does not know)
        try:
            client.get("/api/v1/routes", service=svc)
        except CliError:
            raise CliError(f"Service {svc} not found", code=1) from None
    source = summary["source"]
    rule = args.rule
    if source["kind"] == "manifests":
        probe: RouteWriter = ManifestWriter(Path(source["directory"]), route["origin"], namespace, name, kind, 0)
    elif source["kind"] == "kubernetes":
        probe = KubernetesWriter(args.kubeconfig, namespace, name, kind, 0)
    else:
        raise CliError(f"cannot write routes to a {source['kind']} source")
    spec = probe.read()
    rules: list[Any] = spec["rules"] if isinstance(spec.get("rules"), list) else []
    if rule is None:
        with_backends = [i for i, r in enumerate(rules) if isinstance(r, dict) and r.get("backendRefs")]
        if len(with_backends) != 1:
            raise CliError(
                f"{kind} {route_key} has {len(with_backends)} rules with backendRefs: say which with --rule N"
            )
        rule = with_backends[0]
    probe.rule = rule  # type: ignore[attr-defined]  # (both writers have it: the rule whose backendRefs change)
    _, targets = route_targets(spec, rule)
    before = {_target_node(t, namespace): int(t.get("weight", 1)) for t in targets}
    parents = [p for p in route.get("parents", []) if p["parentRef"].get("kind") == "Service"]
    if not parents:
        raise CliError(f"{kind} {route_key} is attached to no Service of the mesh")
    parent = parents[0]["parentRef"]
    service = f"{parent['namespace']}/{parent['name']}"
    shift = Shift(namespace, name, service, "", before, after, probe, kind=kind, rule=rule)
    served = _served_route(client, shift.key, service)
    shift.match = route_from_json(served).match.describe() if served is not None else "not served"
    return shift


def plan_shift(args: argparse.Namespace, client: AdminClient, to: dict[str, int]) -> Shift:
    """Checks the Route and the nodes exist and reads the current weights from where the Route is defined."""
    kind = GATEWAY_KINDS.get(args.route.split("/", 1)[0].lower()) if args.route.count("/") >= 1 else None
    if kind is not None:
        return _plan_gateway_shift(args, client, to, kind)
    route_key = qualified(args.route, args.namespace, "route")
    namespace, _, name = route_key.partition("/")
    summary = client.get("/api/v1/summary")
    objects = client.get("/api/v1/status")["objects"]
    routes = {f"{o['namespace']}/{o['name']}": o for o in objects if o["kind"] == "Route"}
    nodes = {f"{o['namespace']}/{o['name']}" for o in objects if o["kind"] == "VirtualNode"}
    route = routes.get(route_key)
    if route is None:
        raise CliError(f"Route {route_key} not found", code=1)
    after = {qualified(n, namespace, "node"): w for n, w in to.items()}
    unknown = sorted(set(after) - nodes)
    if unknown:
        raise CliError(f"VirtualNode {', '.join(unknown)} not found", code=1)
    writer = _writer(args, summary, route)
    spec = writer.read()
    _, targets = route_targets(spec)
    before = {_target_node(t, namespace): int(t.get("weight", 0)) for t in targets}
    service = f"{namespace}/{(spec.get('serviceRef') or {}).get('name', '?')}"
    served = _served_route(client, route_key, service) if "tcpRoute" not in spec else None
    match = route_from_json(served).match.describe() if served is not None else "tcp"
    return Shift(namespace, name, service, match, before, after, writer)


def served_weights(client: AdminClient, shift: Shift, source: str | None = None) -> dict[str, int] | None:
    """The weights the control plane serves for the Route (to ``source``'s proxies, if given), per VirtualNode;
    None if it does not serve the Route there."""
    try:
        route = _served_route(client, shift.key, shift.service, source)
    except CliError:
        return None
    if route is None:
        return None
    weights: dict[str, int] = {}
    for t in route["targets"]:
        node = virtual_node_of(t["cluster"])
        weights[node] = weights.get(node, 0) + int(t["weight"])
    return weights


def callers(client: AdminClient, shift: Shift, proxies: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The VirtualNodes among ``proxies``' groups whose proxies get the Route, with the weights served to them."""
    served = {node: served_weights(client, shift, node) for node in {group_node(p["group"]) for p in proxies}}
    return {node: weights for node, weights in served.items() if weights is not None}


def _shares(weights: dict[str, int]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: round(v / total, 6) for k, v in weights.items() if v} if total else {}


def _same(served: dict[str, int] | None, wanted: dict[str, int]) -> bool:
    """Served and wanted split traffic alike (a single target is served as one cluster of weight 1)."""
    return served is not None and _shares(served) == _shares(wanted)


def wait_for_proxies(client: AdminClient, shift: Shift, wanted: dict[str, int], timeout: float) -> tuple[bool, str]:
    """Waits until every proxy whose node group calls the Route's Service has ACKed (SYNCED, every type) a
    snapshot serving ``wanted``. Returns (done, a one-paragraph report naming laggards and NACKs)."""
    start = time.monotonic()
    deadline = start + timeout
    while not _same(served_weights(client, shift), wanted):
        if time.monotonic() > deadline:
            return False, f"the control plane does not serve the new weights of {shift.key} after {timeout:g}s"
        time.sleep(0.05)
    while True:
        proxies = client.get("/api/v1/proxies")["proxies"]
        served = callers(client, shift, proxies)
        laggards = []
        count = 0
        for p in proxies:
            node = group_node(p["group"])
            if node not in served:
                continue  # this node does not call the Service
            count += 1
            states = {t: p["types"][t].get("sync", {}) for t in _TYPES}
            bad = {t: s for t, s in states.items() if s.get("state") not in ("SYNCED", "IGNORED")}
            if not _same(served[node], wanted) or bad:
                detail = ", ".join(
                    f"{t.upper()} {s.get('state')}" + (f": {s['message']}" if s.get("message") else "")
                    for t, s in bad.items()
                )
                laggards.append(f"{p['node_id']} ({detail or 'snapshot not updated yet'})")
        if not laggards:
            return True, f"{count} proxies ACKed the change in {time.monotonic() - start:.2f}s"
        if time.monotonic() > deadline:
            return False, f"timed out after {timeout:g}s; not ACKed by: " + "; ".join(laggards)
        time.sleep(0.05)
