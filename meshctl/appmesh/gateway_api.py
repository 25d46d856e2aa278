"""``meshctl import appmesh --as gateway-api``: the imported Routes as Gateway API routes attached to their Services.

What App Mesh routed by VirtualNode, the Gateway API routes by Service, so:
- each VirtualNode a route targets gets a Service of its own (``<node>``, selecting the node's pods, on the
  listener port), unless the input has a Service of that name; a weighted target becomes a backendRef to it;
- each httpRoute/http2Route becomes an HTTPRoute (one rule, its match) and each grpcRoute a GRPCRoute, whose
  parentRef is the route's Service (``port`` when the App Mesh route matched one);
- a tcpRoute stays a meshctl Route: TCPRoute is not part of the mesh (GAMMA) profile.

What has no Gateway API form is reported: route priorities (the Gateway API orders rules by how specific their
matches are), header prefix/suffix/range matches (written as regular expressions, or dropped), idle timeouts,
retry events other than HTTP status codes, a gRPC route's retries and timeouts (a GRPCRoute has neither). An
HTTPRoute's retries become GEP-1731 ``retry``, which needs the experimental-channel CRDs: an API server with only
the standard channel drops it.
"""

from __future__ import annotations

import re
from typing import Any

from meshctl.appmesh.fields import Report, dns_label
from meshctl.appmesh.objects import KIND_ORDER

__all__ = ["GATEWAY_API_VERSION", "as_gateway_api", "grpc_match", "http_match"]

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"

# App Mesh httpRetryEvents -> the status codes they cover (Envoy's retry_on: gateway-error is 502/503/504,
# server-error is every 5xx; the Gateway API names codes one by one).
_RETRY_CODES = {
    "gateway-error": (502, 503, 504),
    "server-error": (500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511),
    "client-error": (409,),
}
_UNITS_MS = {"ms": 1, "s": 1000}


def as_gateway_api(objects: list[dict[str, Any]], report: Report) -> list[dict[str, Any]]:
    """The import's objects with its HTTP and gRPC Routes replaced by HTTPRoutes/GRPCRoutes (module docstring)."""
    nodes = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects if o["kind"] == "VirtualNode"}
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "Service"}
    out: list[dict[str, Any]] = []
    backends: dict[tuple[str, str], dict[str, Any]] = {}  # the Services made for targeted VirtualNodes
    # A gateway's routes (from GatewayRoutes) keep their names; a Route of the same name is written as <name>-mesh.
    taken = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if "Route" in o["kind"]}
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj["kind"] != "Route" or "tcpRoute" in spec:
            out.append(obj)
            continue
        route = _route(obj, nodes, services, backends, report)
        if route is not None and (route["kind"], route["metadata"]["namespace"], route["metadata"]["name"]) in taken:
            route["metadata"]["name"] += "-mesh"
        out.append(route if route is not None else obj)
    out.extend(backends.values())
    return sorted(out, key=lambda o: (o["metadata"].get("namespace", ""), KIND_ORDER[o["kind"]], o["metadata"]["name"]))


def _route(
    obj: dict[str, Any],
    nodes: dict[tuple[str, str], dict[str, Any]],
    services: set[tuple[str, str]],
    backends: dict[tuple[str, str], dict[str, Any]],
    report: Report,
) -> dict[str, Any] | None:
    """One Route as an HTTPRoute or GRPCRoute; None (the Route is kept) when a target cannot be a Service."""
    meta, spec = obj["metadata"], obj["spec"]
    ns = meta["namespace"]
    grpc = "grpcRoute" in spec
    kind = "GRPCRoute" if grpc else "HTTPRoute"
    body = spec["grpcRoute" if grpc else "httpRoute"]
    subject = f"Route {ns}/{meta['name']}"
    refs = []
    for i, target in enumerate(body["action"]["weightedTargets"]):
        ref = target["virtualNodeRef"]
        node = nodes.get((ref.get("namespace") or ns, ref["name"]))
        service = _backend_service(node, target.get("port"), ns, services, backends)
        if service is None:
            report.lossy(
                subject,
                f"action.weightedTargets[{i}]",
                f"VirtualNode {ref['name']} has no single listener and pod selector to make a Service of",
                "kept as a meshctl Route",
            )
            return None
        name, port = service
        backend: dict[str, Any] = {"name": name, "port": port, "weight": target.get("weight", 1)}
        if (ref.get("namespace") or ns) != ns:
            backend["namespace"] = ref["namespace"]
            report.note(
                subject,
                f"action.weightedTargets[{i}]",
                f"a cross-namespace backend needs a ReferenceGrant in {ref['namespace']}",
            )
        refs.append(backend)
    match = body.get("match") or {}
    parent: dict[str, Any] = {"group": "", "kind": "Service", "name": spec["serviceRef"]["name"]}
    if match.get("port") is not None:
        parent["port"] = match["port"]
    rule: dict[str, Any] = {
        "matches": [grpc_match(match, report, subject) if grpc else http_match(match, report, subject)]
    }
    rule["backendRefs"] = refs
    if not grpc:
        _timeouts_and_retry(rule, body, report, subject)
    for field in ("retryPolicy", "timeout"):
        if grpc and body.get(field):
            report.lossy(subject, field, "a GRPCRoute has no retries or timeouts in the Gateway API", "dropped")
    if spec.get("priority") is not None:
        report.lossy(
            subject,
            "spec.priority",
            "the Gateway API has no route priority",
            "rules are ordered by how specific their matches are (docs/gateway-api.md); check overlapping routes",
        )
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": kind,
        "metadata": dict(meta),
        "spec": {"parentRefs": [parent], "rules": [rule]},
    }


def _backend_service(
    node: dict[str, Any] | None,
    port: int | None,
    namespace: str,
    services: set[tuple[str, str]],
    backends: dict[tuple[str, str], dict[str, Any]],
) -> tuple[str, int] | None:
    """(Service name, port) reaching a VirtualNode's listener: a Service named after the node, made here unless the
    input has one of that name."""
    if node is None:
        return None
    spec = node["spec"]
    listeners = spec.get("listeners") or []
    listener = next((li for li in listeners if li["portMapping"]["port"] == port), None) if port else None
    if listener is None and len(listeners) == 1:
        listener = listeners[0]
    selector = (spec.get("podSelector") or {}).get("matchLabels")
    if listener is None or not selector:
        return None
    ns = node["metadata"]["namespace"]
    name = dns_label(node["metadata"]["name"])
    if (ns, name) in services:  # (a VirtualService's Service may select every version: never reuse one)
        name = dns_label(name, "node")
    port_number = listener["portMapping"]["port"]
    ports = backends.setdefault((ns, name), _service(ns, name, selector))["spec"]["ports"]
    if all(p["port"] != port_number for p in ports):
        protocol = listener["portMapping"].get("protocol", "http")
        entry: dict[str, Any] = {"name": f"{protocol}-{port_number}", "port": port_number}
        if protocol in ("grpc", "http2"):
            entry["appProtocol"] = "kubernetes.io/h2c"
        ports.append(entry)
        ports.sort(key=lambda p: p["port"])
    return name, port_number


def _service(namespace: str, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "meshctl-import"},
        },
        "spec": {"selector": dict(selector), "ports": []},
    }


def http_match(match: dict[str, Any], report: Report, subject: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    path = match.get("path") or {}
    if "exact" in path:
        out["path"] = {"type": "Exact", "value": path["exact"]}
    elif "regex" in path:
        out["path"] = {"type": "RegularExpression", "value": path["regex"]}
    elif (prefix := match.get("prefix")) is not None:
        if prefix == "/" or prefix.endswith("/"):
            out["path"] = {"type": "PathPrefix", "value": prefix.rstrip("/") or "/"}
        else:  # App Mesh's prefix is a string prefix; PathPrefix matches whole segments
            out["path"] = {"type": "RegularExpression", "value": f"{re.escape(prefix)}.*"}
            report.note(
                subject, "match.prefix", f"{prefix!r} matches as a string prefix: written as a regular expression"
            )
    if match.get("method"):
        out["method"] = match["method"]
    headers = [
        h
        for i, m in enumerate(match.get("headers") or [])
        if (h := _value_match(m, report, subject, f"match.headers[{i}]"))
    ]
    if headers:
        out["headers"] = headers
    params = []
    for i, q in enumerate(match.get("queryParameters") or []):
        exact = (q.get("match") or {}).get("exact")
        if exact is None:
            report.lossy(
                subject, f"match.queryParameters[{i}]", "only an exact value has a Gateway API form", "dropped"
            )
            continue
        params.append({"name": q["name"], "value": exact})
    if params:
        out["queryParams"] = params
    return out


def grpc_match(match: dict[str, Any], report: Report, subject: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    method = {k: v for k, v in (("service", match.get("serviceName")), ("method", match.get("methodName"))) if v}
    if method:
        out["method"] = method
    headers = [
        h
        for i, m in enumerate(match.get("metadata") or [])
        if (h := _value_match(m, report, subject, f"match.metadata[{i}]"))
    ]
    if headers:
        out["headers"] = headers
    return out


def _value_matches(matches: Any, report: Report, subject: str, path: str) -> list[dict[str, Any]]:
    found = (_value_match(m, report, subject, f"{path}[{i}]") for i, m in enumerate(matches or []))
    return [m for m in found if m is not None]


def _value_match(m: dict[str, Any], report: Report, subject: str, path: str) -> dict[str, Any] | None:
    """An App Mesh header (or metadata) match as a Gateway API one: exact and regex as they are, prefix and suffix
    as regular expressions; ranges and inverted matches have no form."""
    spec = m.get("match") or {}
    if m.get("invert"):
        report.lossy(subject, f"{path}.invert", "the Gateway API has no inverted match", "dropped")
        return None
    if "exact" in spec:
        return {"name": m["name"], "value": spec["exact"]}
    regex = (
        spec.get("regex")
        if "regex" in spec
        else f"{re.escape(spec['prefix'])}.*"
        if "prefix" in spec
        else f".*{re.escape(spec['suffix'])}"
        if "suffix" in spec
        else None
    )
    if regex is None:
        report.lossy(
            subject, f"{path}.match", "only exact, regex, prefix and suffix have a Gateway API form", "dropped"
        )
        return None
    if "regex" not in spec:
        report.note(subject, f"{path}.match", "written as a regular expression")
    return {"type": "RegularExpression", "name": m["name"], "value": regex}


def _timeouts_and_retry(rule: dict[str, Any], body: dict[str, Any], report: Report, subject: str) -> None:
    timeout = body.get("timeout") or {}
    timeouts: dict[str, str] = {}
    if (per_request := _duration(timeout.get("perRequest"))) is not None:
        timeouts["request"] = per_request
    if timeout.get("idle") is not None:
        report.lossy(subject, "timeout.idle", "the Gateway API has no idle timeout", "dropped")
    retry = body.get("retryPolicy")
    if retry:
        codes = sorted({c for e in retry.get("httpRetryEvents") or [] for c in _RETRY_CODES.get(e, ())})
        for e in retry.get("httpRetryEvents") or []:
            if e not in _RETRY_CODES:
                report.lossy(subject, "retryPolicy.httpRetryEvents", f"{e!r} is not a status code", "not retried on")
        for e in retry.get("grpcRetryEvents") or []:
            report.lossy(subject, "retryPolicy.grpcRetryEvents", f"{e!r} is not an HTTP status code", "not retried on")
        attempts = retry.get("maxRetries", 0)
        rule["retry"] = {"attempts": attempts, **({"codes": codes} if codes else {})}
        per_retry = _duration(retry.get("perRetryTimeout"))
        if per_retry is not None:
            timeouts["backendRequest"] = per_retry
        report.note(
            subject,
            "retryPolicy",
            "written as retry (GEP-1731), in the experimental-channel CRDs: a cluster with only the standard "
            "channel drops it (connection errors are retried either way)",
        )
    if (
        "backendRequest" in timeouts
        and "request" in timeouts
        and _ms(timeouts["backendRequest"]) > _ms(timeouts["request"])
    ):
        timeouts["backendRequest"] = timeouts["request"]  # the Gateway API's rule: no longer than request
    if timeouts:
        rule["timeouts"] = timeouts


def _duration(value: Any) -> str | None:
    """App Mesh's ``{unit: ms|s, value: N}`` as a Gateway API duration (``500ms``, ``15s``)."""
    if not isinstance(value, dict) or value.get("unit") not in _UNITS_MS or not isinstance(value.get("value"), int):
        return None
    return f"{value['value']}{value['unit']}"


def _ms(duration: str) -> int:
    unit = "ms" if duration.endswith("ms") else "s"
    return int(duration[: -len(unit)]) * _UNITS_MS[unit]
