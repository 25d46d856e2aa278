"""What proxyless gRPC clients (gRPC's own XdsClient, issue 34) cannot honour of a Route or a VirtualNode.

They take the very resources Envoy takes, but read only part of them (gRFCs A28 routing, A31 timeouts, A32 circuit
breaking, A44 retries, A50 outlier detection). What they skip is reported on the object, as the condition
``ProxylessCompatible=False`` (only when there is something to say), instead of being silently ignored: the object
is served all the same, and an Envoy beside them honours all of it."""

from __future__ import annotations

from dataclasses import replace

from meshctl.model import Protocol, RouteSpec, VirtualNodeSpec
from meshctl.translate.ir import Condition, ConditionStatus, ObjectStatus

__all__ = ["PROXYLESS_CONDITION", "route_notes", "virtual_node_notes", "with_proxyless_notes"]

PROXYLESS_CONDITION = "ProxylessCompatible"
_REASON = "IgnoredByGRPCClients"
_MAX_GRPC_RETRIES = 4  # gRPC caps a call at 5 attempts (gRFC A6)


def route_notes(spec: RouteSpec) -> tuple[str, ...]:
    """``path: why`` for each field of the Route a gRPC client does not honour."""
    if spec.tcp:
        return ()  # a gRPC client's routes are HTTP/2 routes: a tcpRoute is not one of them
    at = "spec.grpcRoute" if spec.grpc else "spec.httpRoute"
    http = spec.http_route
    notes: list[str] = []
    if http.match.query_parameters:
        notes.append(f"{at}.match.queryParameters: gRPC skips a route that matches query parameters (gRFC A28)")
    retry = http.retry_policy
    if retry is not None and retry.max_retries > 0:
        ignored = [*retry.http_retry_events, *retry.tcp_retry_events, *map(str, retry.status_codes)]
        if ignored:
            honoured = "; it retries nothing on this route" if not retry.grpc_retry_events else ""
            notes.append(
                f"{at}.retryPolicy: gRPC retries only on gRPC status codes (grpcRetryEvents), not on "
                f"{', '.join(ignored)} (gRFC A44){honoured}"
            )
        if retry.grpc_retry_events and retry.per_retry_timeout_ms is not None:
            notes.append(f"{at}.retryPolicy.perRetryTimeout: gRPC has no per-try timeout (gRFC A44)")
        if retry.grpc_retry_events and retry.max_retries > _MAX_GRPC_RETRIES:
            notes.append(
                f"{at}.retryPolicy.maxRetries: gRPC makes at most {_MAX_GRPC_RETRIES + 1} attempts "
                f"({_MAX_GRPC_RETRIES} retries), not {retry.max_retries + 1}"
            )
    if http.timeout is not None and http.timeout.per_request_ms is not None:
        notes.append(
            f"{at}.timeout.perRequest: not sent to gRPC clients (grpcio 1.85 fails calls at once with some route "
            "timeouts); their own call deadline applies"
        )
    if retry is not None and retry.max_retries == 0 and retry.per_retry_timeout_ms is not None:
        notes.append(
            f"{at}.retryPolicy.perRetryTimeout: with no retries it is the route's timeout, not sent to gRPC clients; "
            "their own call deadline applies"
        )
    if http.timeout is not None and http.timeout.idle_ms is not None:
        notes.append(f"{at}.timeout.idle: gRPC has no idle timeout per route (gRFC A31 reads only the deadline)")
    return tuple(notes)


def virtual_node_notes(spec: VirtualNodeSpec) -> tuple[str, ...]:
    """``path: why`` for each field of a gRPC listener that a gRPC client calling it does not honour."""
    notes: list[str] = []
    for i, listener in enumerate(spec.listeners):
        if listener.protocol is not Protocol.GRPC:
            continue  # gRPC clients call gRPC listeners
        at = f"spec.listeners[{i}]"
        pool = listener.connection_pool
        if pool is not None:
            others = [
                name
                for name, value in (
                    ("maxConnections", pool.max_connections),
                    ("maxPendingRequests", pool.max_pending_requests),
                    ("maxRetries", pool.max_retries),
                    ("retryBudget", pool.retry_budget_percent),
                    ("connectTimeout", pool.connect_timeout_ms),
                )
                if value is not None
            ]
            if others:
                notes.append(
                    f"{at}.connectionPool: gRPC clients limit only maxRequests (gRFC A32), not {', '.join(others)}"
                )
        if listener.outlier_detection is not None:
            notes.append(
                f"{at}.outlierDetection: gRPC clients eject hosts only by success rate or failure percentage "
                "(gRFC A50), not by consecutive server errors"
            )
        if listener.health_check is not None:
            notes.append(
                f"{at}.healthCheck: gRPC clients probe nothing; they skip endpoints that are not ready (EDS health)"
            )
    return tuple(notes)


def with_proxyless_notes(status: ObjectStatus, notes: tuple[str, ...]) -> ObjectStatus:
    if not notes:
        return status
    condition = Condition(
        type=PROXYLESS_CONDITION,
        status=ConditionStatus.FALSE,
        reason=_REASON,
        message="for proxyless gRPC clients: " + "; ".join(notes),
    )
    return replace(status, conditions=(*status.conditions, condition))
