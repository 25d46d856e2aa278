"""App Mesh route bodies (httpRoute, http2Route, grpcRoute, tcpRoute) -> ours.

Matches, weighted targets, retry policies and timeouts have the same field names and meaning in both; what
differs is reported: ``scheme`` matches, targets given by ARN, and App Mesh's implicit retry policy. A ``port``
match is kept: our Routes match the Service port too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meshctl.appmesh.fields import Report

__all__ = ["ROUTE_KINDS", "convert_route_body"]

# App Mesh route kind -> ours. http2Route is an httpRoute to HTTP/2 targets (our httpRoute reaches http2 listeners).
ROUTE_KINDS = {"httpRoute": "httpRoute", "http2Route": "httpRoute", "grpcRoute": "grpcRoute", "tcpRoute": "tcpRoute"}
_HTTP_MATCH = ("prefix", "path", "headers", "method", "queryParameters", "port")
_GRPC_MATCH = ("serviceName", "methodName", "metadata", "port")
_MATCH_DROPPED = {"scheme": "the route matches any scheme"}
_RETRY = ("httpRetryEvents", "tcpRetryEvents", "grpcRetryEvents", "maxRetries", "perRetryTimeout")
_TIMEOUT = ("perRequest", "idle")

# Resolves one weightedTargets entry (App Mesh form) to ours; None when it names nothing in the input.
TargetResolver = Callable[[dict[str, Any], str], dict[str, Any] | None]


def convert_route_body(
    kind: str, body: Any, report: Report, subject: str, path: str, resolve: TargetResolver
) -> tuple[str, dict[str, Any]] | None:
    """(our route kind, its body), or None when a target is dangling (reported by ``resolve``)."""
    ours = ROUTE_KINDS[kind]
    known = ("match", "action", "retryPolicy", "timeout")
    src = report.copy_known(body, known, subject, path)
    out: dict[str, Any] = {}
    if ours == "tcpRoute":
        if src.get("match"):
            match = report.copy_known(src["match"], ("port",), subject, f"{path}.match", _MATCH_DROPPED)
            if match:
                out["match"] = match
    elif ours == "grpcRoute":
        if src.get("match") is not None:
            out["match"] = report.copy_known(src["match"], _GRPC_MATCH, subject, f"{path}.match", _MATCH_DROPPED)
    else:
        out["match"] = report.copy_known(src.get("match"), _HTTP_MATCH, subject, f"{path}.match", _MATCH_DROPPED)
    action = report.copy_known(src.get("action"), ("weightedTargets",), subject, f"{path}.action")
    targets = []
    for i, target in enumerate(action.get("weightedTargets") or []):
        resolved = resolve(target if isinstance(target, dict) else {}, f"{path}.action.weightedTargets[{i}]")
        if resolved is None:
            return None
        targets.append(resolved)
    out["action"] = {"weightedTargets": targets}
    if ours != "tcpRoute":
        if src.get("retryPolicy") is not None:
            out["retryPolicy"] = report.copy_known(src["retryPolicy"], _RETRY, subject, f"{path}.retryPolicy")
        else:
            report.note(
                subject,
                f"{path}.retryPolicy",
                "unset: App Mesh applied its implicit default (2 retries, 15 s per try, on gateway errors and "
                "connection errors); meshctl's default applies instead (2 retries on connection failure, refused "
                "stream, HTTP 503, gRPC UNAVAILABLE and CANCELLED; docs/api.md, Defaults)",
            )
    if src.get("timeout") is not None:
        allowed = ("idle",) if ours == "tcpRoute" else _TIMEOUT
        dropped = {"perRequest": "a tcpRoute has only an idle timeout"} if ours == "tcpRoute" else None
        out["timeout"] = report.copy_known(src["timeout"], allowed, subject, f"{path}.timeout", dropped)
    return ours, out
