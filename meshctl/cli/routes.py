"""``meshctl get routes`` (the effective route table, in evaluation order) and ``meshctl explain`` (which route a
request takes, and why each earlier one did not)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Group
from rich.text import Text

from meshctl.cli.client import AdminClient, CliError
from meshctl.cli.inspect import add_read_flags
from meshctl.cli.output import emit, table
from meshctl.routing.match import Request, explain, explanation_json, header_pair
from meshctl.routing.shadow import Shadowing, describe_request, find_shadowed
from meshctl.routing.table import RouteRule, VirtualHost, host_from_json, route_to_json

__all__ = ["add_commands", "parse_headers", "qualified"]


def qualified(name: str, namespace: str | None, what: str) -> str:
    """``ns/name``, or ``name`` in ``-n``'s namespace (default: default)."""
    if "/" in name:
        ns, _, rest = name.partition("/")
        if not ns or not rest or "/" in rest:
            raise CliError(f"{what} {name!r}: expected NAME or NAMESPACE/NAME")
        return name
    return f"{namespace or 'default'}/{name}"


def parse_headers(values: list[str]) -> list[tuple[str, str]]:
    try:
        return [header_pair(raw) for raw in values]
    except ValueError as exc:
        raise CliError(f"-H {exc}") from None


def _fetch(
    args: argparse.Namespace, service: str | None = None, request: Request | None = None
) -> tuple[dict[str, Any], tuple[VirtualHost, ...]]:
    source = qualified(args.source, args.namespace, "--from") if args.source else None
    query = {"from": source, "service": service}
    if request is not None:  # the callee's authorization is judged for this request
        query |= {"method": request.method, "path": request.path}
    data = AdminClient(args.admin).get("/api/v1/routes", **query)
    return data, tuple(host_from_json(h) for h in data["virtualHosts"])


# --- get routes ------------------------------------------------------------------------------------------------


def _percent(p: float) -> str:
    return f"{p * 100:.4g}%"


def targets_text(route: RouteRule, clusters: dict[str, Any]) -> str:
    parts = []
    for cluster, p in route.probabilities():
        eps = clusters.get(cluster, {}).get("endpoints")
        health = f" ({eps['healthy']}/{eps['total']} healthy)" if eps else ""
        parts.append(f"{cluster} {_percent(p)}{health}")
    return ", ".join(parts)


def retry_text(route: RouteRule) -> str:
    r = route.retry
    if r is None or r.num_retries == 0:
        return "none"
    per_try = f", {r.per_try_timeout_ms}ms per try" if r.per_try_timeout_ms else ""
    return f"{r.num_retries}x on {r.retry_on}{per_try}"


def timeout_text(route: RouteRule) -> str:
    if route.timeout_ms is None:
        return "15s (Envoy default)"
    return "none" if route.timeout_ms == 0 else f"{route.timeout_ms}ms"


def _shadow_text(finding: Shadowing | None) -> str | Text:
    if finding is None:
        return ""
    label = "SHADOWED" if finding.certain else "POSSIBLY SHADOWED"
    return Text(f"{label} by {', '.join(finding.by)}", style="bold red" if finding.certain else "yellow")


def _route_json(route: RouteRule, finding: Shadowing | None, clusters: dict[str, Any]) -> dict[str, Any]:
    doc = route_to_json(route)
    doc["targets"] = [
        {"cluster": c, "weight": t.weight, "probability": p, "endpoints": clusters.get(c, {}).get("endpoints")}
        for (c, p), t in zip(route.probabilities(), route.targets, strict=True)
    ]
    doc["shadowed"] = None
    if finding is not None:
        doc["shadowed"] = {
            "certain": finding.certain,
            "by": list(finding.by),
            "witness": describe_request(finding.witness) if finding.witness else None,
            "witnessRoute": finding.witness_route,
        }
    return doc


def _get_routes(args: argparse.Namespace) -> int:
    service = qualified(args.service, args.namespace, "service") if args.service else None
    data, hosts = _fetch(args, service)
    clusters = data["clusters"]
    document: dict[str, Any] = {"from": data["from"], "virtualHosts": [], "clusters": clusters}
    sections: list[Any] = []
    for vh in hosts:
        findings = {f.route: f for f in find_shadowed(vh)}
        document["virtualHosts"].append(
            {
                "name": vh.name,
                "domains": list(vh.domains),
                "routes": [_route_json(r, findings.get(r.name), clusters) for r in vh.routes],
            }
        )
        rows: list[list[str | Text]] = [
            [
                str(i + 1),
                r.name,
                r.match.describe(),
                targets_text(r, clusters),
                retry_text(r),
                timeout_text(r),
                _shadow_text(findings.get(r.name)),
            ]
            for i, r in enumerate(vh.routes)
        ]
        sections.append(Text(f"{vh.name}  (Host: {', '.join(d for d in vh.domains if ':' not in d)})", style="bold"))
        sections.append(table(["#", "ROUTE", "MATCH", "TARGETS", "RETRIES", "TIMEOUT", "SHADOWED"], rows))
        sections.append(Text(""))
    if clusters:
        rows = [[name, *_cluster_cells(c)] for name, c in sorted(clusters.items())]
        sections.append(table(["CLUSTER", "ENDPOINTS", "CIRCUIT BREAKER", "OUTLIER DETECTION"], rows))
    if not hosts:
        sections = [Text("no HTTP routes" + (f" for {service}" if service else ""))]
    emit(document, args.output, Group(*sections))
    return 0


_UINT32_MAX = 4294967295  # Envoy's "no limit"


def _cluster_cells(c: dict[str, Any]) -> list[str | Text]:
    eps = c["endpoints"]
    healthy = Text(f"{eps['healthy']}/{eps['total']} healthy", style="" if eps["healthy"] else "red")
    thresholds = (c.get("circuitBreakers") or {}).get("thresholds", [{}])[0]
    breaker = ", ".join(
        f"{label} {'max' if thresholds[key] == _UINT32_MAX else thresholds[key]}"
        for key, label in (
            ("maxConnections", "conn"),
            ("maxPendingRequests", "pending"),
            ("maxRequests", "req"),
            ("maxRetries", "retries"),
        )
        if key in thresholds
    )
    od = c.get("outlierDetection")
    outlier = f"{od.get('consecutive5xx', '?')} x 5xx -> eject {od.get('baseEjectionTime', '?')}" if od else "none"
    return [healthy, breaker or "Envoy defaults", outlier]


# --- explain ---------------------------------------------------------------------------------------------------


def mtls_text(mtls: dict[str, Any] | None) -> str:
    if not mtls:
        return "plaintext (the listener takes no TLS)"
    return (
        f"mTLS: the caller presents {', '.join(mtls['callerPresents'])}; "
        f"the callee presents {', '.join(mtls['calleePresents'])}"
    )


def authorization_text(v: dict[str, Any]) -> Text:
    who = v["caller"] or "a plaintext caller (no identity)"
    verdict = "allowed" if v["allowed"] else "DENIED (403; TCP: closed)"
    line = f"  authorization for {who}: {verdict}: {v['why']}"
    if v.get("audit"):
        line += f"; audit: {v['audit']}"
    return Text(line, style="" if v["allowed"] else "bold red")


def _egress_text(egress: str | None) -> str:
    """What a captured proxy (traffic capture) does with a host no Service has, by the caller's egress filter."""
    if egress == "DROP_ALL":
        return "with traffic capture: egress filter DROP_ALL, answered 404 (not declared in the mesh)"
    return "with traffic capture: egress filter ALLOW_ALL, passed through to where it was going"


def _explain(args: argparse.Namespace) -> int:
    try:
        request = Request.from_url(args.method, args.url, parse_headers(args.header))
    except ValueError as exc:  # urllib's: "Invalid IPv6 URL", a port that is not a number
        raise CliError(f"{args.url!r} is not a URL: {exc}") from None
    data, hosts = _fetch(args, request=request)
    result = explain(hosts, request)
    clusters = data["clusters"]
    notes = data.get("proxylessNotes") or {"routes": {}, "virtualNodes": {}}
    shadowed = {f.route: f for vh in ([result.virtual_host] if result.virtual_host else []) for f in find_shadowed(vh)}

    def render() -> Group:
        lines: list[Any] = [Text(f"request: {describe_request(request)}")]
        if result.virtual_host is None:
            lines.append(Text(f"virtual host: none ({result.host_reason})"))
            lines.append(Text("no route: Envoy answers 404 NR", style="bold red"))
            lines.append(Text(_egress_text(data.get("egressFilter")), style="yellow"))
            return Group(*lines)
        lines.append(Text(f"virtual host: {result.virtual_host.name} ({result.host_reason})"))
        rows: list[list[str | Text]] = []
        for v in result.verdicts:
            note = shadowed.get(v.route.name)
            verdict = Text("match", style="bold green") if v.failure is None else Text("no", style="dim")
            why = v.failure or "every predicate holds"
            if note is not None:
                why += f"  [{'shadowed' if note.certain else 'possibly shadowed'} by {', '.join(note.by)}]"
            rows.append([str(v.index + 1), v.route.name, v.route.match.describe(), verdict, why])
        lines.append(table(["#", "ROUTE", "MATCH", "RESULT", "WHY"], rows))
        route = result.route
        if route is None:
            lines.append(Text("no route: Envoy answers 404 NR", style="bold red"))
            return Group(*lines)
        lines.append(Text(f"\nroute {route.name}: targets {targets_text(route, clusters)}"))
        lines.append(Text(f"retries: {retry_text(route)}; timeout: {timeout_text(route)}"))
        if (said := notes["routes"].get(route.name)) is not None:
            lines.append(Text(f"route {route.name}: {said}", style="yellow"))
        for cluster, _ in route.probabilities():
            lines.append(Text(f"{cluster}: {mtls_text(clusters.get(cluster, {}).get('mtls'))}"))
            for verdict in clusters.get(cluster, {}).get("authorization") or []:
                lines.append(authorization_text(verdict))
            node = "/".join(cluster.split("/")[:2])
            if (said := notes["virtualNodes"].get(node)) is not None:
                lines.append(Text(f"VirtualNode {node}: {said}", style="yellow"))
        return Group(*lines)

    extra = {"proxylessNotes": notes, "egressFilter": data.get("egressFilter")}
    emit(explanation_json(result, clusters) | extra, args.output, render)
    return 0 if result.route is not None else 1


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    get: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        add_read_flags(p, "namespace of unqualified names (default: default)")
        p.add_argument(
            "--from",
            dest="source",
            metavar="VIRTUALNODE",
            help="as this VirtualNode's proxies see it (default: each Service from its own namespace)",
        )

    p = get.add_parser(
        "routes", help="the effective route table in evaluation order, with targets, retries, timeouts, shadowing"
    )
    p.add_argument("service", nargs="?", help="only this Service (NAME or NAMESPACE/NAME)")
    common(p)
    p.set_defaults(run=_get_routes)

    e = sub.add_parser(
        "explain",
        help="which route a request takes and why the earlier ones did not (exit 1: no route, 404 NR)",
    )
    e.add_argument("method", help="HTTP method, e.g. GET")
    e.add_argument("url", help="e.g. http://reviews.demo/api?x=1 (the scheme is optional)")
    e.add_argument("-H", "--header", action="append", default=[], help="a request header, 'Name: value'")
    common(e)
    e.set_defaults(run=_explain)
