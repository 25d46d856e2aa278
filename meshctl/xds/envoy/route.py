"""VirtualHostIR/RouteIR -> RouteConfiguration."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import range_pb2

from meshctl.xds.envoy.common import duration_ms, uint32
from meshctl.xds.model import HeaderMatch, HttpMatch, RetryPolicy, StringMatch
from meshctl.xds.translate.ir import RouteIR, VirtualHostIR

__all__ = ["RETRY_ON", "build_route_configuration", "build_virtual_host"]

# App Mesh retry events -> Envoy retry_on conditions (App Mesh documents the same mapping).
RETRY_ON = {
    "server-error": "5xx",
    "gateway-error": "gateway-error",
    "client-error": "retriable-4xx",
    "stream-error": "refused-stream",
    "connection-error": "connect-failure",
}


def build_route_configuration(name: str, virtual_hosts: Iterable[VirtualHostIR]) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=name)
    config.virtual_hosts.extend(build_virtual_host(vh) for vh in virtual_hosts)
    return config


def build_virtual_host(vh: VirtualHostIR) -> rc.VirtualHost:
    host = rc.VirtualHost(name=vh.name, domains=vh.domains)
    host.routes.extend(build_route(route) for route in vh.routes)
    return host


def build_route(ir: RouteIR) -> rc.Route:
    route = rc.Route(name=ir.name, match=_match(ir.match))
    action = route.route
    if len(ir.clusters) == 1:
        action.cluster = ir.clusters[0].cluster
    else:
        for wc in ir.clusters:
            action.weighted_clusters.clusters.add(name=wc.cluster, weight=uint32(wc.weight))
    if ir.timeout_ms is not None:
        action.timeout.CopyFrom(duration_ms(ir.timeout_ms))
    if ir.idle_timeout_ms is not None:
        action.idle_timeout.CopyFrom(duration_ms(ir.idle_timeout_ms))
    if ir.retry_policy is not None:
        action.retry_policy.CopyFrom(_retry_policy(ir.retry_policy))
    return route


def _match(m: HttpMatch) -> rc.RouteMatch:
    match = rc.RouteMatch()
    if m.prefix is not None:
        match.prefix = m.prefix
    elif m.path_exact is not None:
        match.path = m.path_exact
    elif m.path_regex is not None:
        match.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=m.path_regex))
    if m.grpc:
        match.grpc.CopyFrom(rc.RouteMatch.GrpcRouteMatchOptions())
    if m.method is not None:
        match.headers.append(rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact=m.method)))
    for header in m.headers:
        match.headers.append(_header(header))
    for query in m.query_parameters:
        qm = match.query_parameters.add(name=query.name)
        if query.exact is None:
            qm.present_match = True
        else:
            qm.string_match.exact = query.exact
    return match


def _header(h: HeaderMatch) -> rc.HeaderMatcher:
    matcher = rc.HeaderMatcher(name=h.name, invert_match=h.invert)
    sm: StringMatch | None = h.match
    if sm is None:
        matcher.present_match = True
    elif sm.range_start is not None and sm.range_end is not None:
        matcher.range_match.CopyFrom(range_pb2.Int64Range(start=sm.range_start, end=sm.range_end))
    elif sm.regex is not None:
        matcher.string_match.safe_regex.regex = sm.regex
    else:
        for field in ("exact", "prefix", "suffix"):
            if (value := getattr(sm, field)) is not None:
                setattr(matcher.string_match, field, value)
    return matcher


def _retry_policy(p: RetryPolicy) -> rc.RetryPolicy:
    # gRPC events are Envoy retry_on conditions under the same names.
    events = [RETRY_ON[e] for e in (*p.http_retry_events, *p.tcp_retry_events)] + list(p.grpc_retry_events)
    policy = rc.RetryPolicy(retry_on=",".join(events), num_retries=uint32(p.max_retries))
    if p.per_retry_timeout_ms is not None:
        policy.per_try_timeout.CopyFrom(duration_ms(p.per_retry_timeout_ms))
    if p.backoff_base_ms is not None:
        policy.retry_back_off.base_interval.CopyFrom(duration_ms(p.backoff_base_ms))
        if p.backoff_max_ms is not None:
            policy.retry_back_off.max_interval.CopyFrom(duration_ms(p.backoff_max_ms))
    return policy
