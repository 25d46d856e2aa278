"""VirtualHostIR/RouteIR -> RouteConfiguration."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3.previous_hosts_pb2 import PreviousHostsPredicate
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2, range_pb2

from meshctl.model import HeaderMatch, HttpMatch, RetryPolicy, StringMatch
from meshctl.model.gateway import HeaderModifier, Redirect, Rewrite
from meshctl.translate.ir import INVALID_BACKEND, RouteIR, VirtualHostIR
from meshctl.xds.envoy.common import duration_ms, uint32

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "RETRY_ON",
    "build_action_policies",
    "build_match",
    "build_route",
    "build_route_configuration",
    "build_routes",
    "build_virtual_host",
    "envoy_matches",
]

# App Mesh retry events -> Envoy retry_on conditions (App Mesh documents the same mapping).
RETRY_ON = {
    "server-error": "5xx",
    "gateway-error": "gateway-error",
    "client-error": "retriable-4xx",
    "stream-error": "refused-stream",
    "connection-error": "connect-failure",
}


# The retry policy of a Route that sets none: what App Mesh applied implicitly (and Istio does): 2 retries when
# the connection failed or was refused, the stream was refused, or the upstream answered 503 / gRPC UNAVAILABLE
# or CANCELLED. These are failures where the request did not reach the application (or it said "try again").
# A Route that wants no retries says so: retryPolicy: {maxRetries: 0}.
DEFAULT_RETRY_POLICY = RetryPolicy(tcp_retry_events=("connection-error",), max_retries=2)
_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
# Retries go to another host when there is one (Istio and Envoy Gateway do the same).
_PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_HOST_SELECTION_ATTEMPTS = 5


def build_route_configuration(
    name: str, virtual_hosts: Iterable[VirtualHostIR], *, default_retries: bool = True
) -> route_pb2.RouteConfiguration:
    config = route_pb2.RouteConfiguration(name=name)
    config.virtual_hosts.extend(build_virtual_host(vh, default_retries=default_retries) for vh in virtual_hosts)
    return config


def build_virtual_host(vh: VirtualHostIR, *, default_retries: bool = True) -> rc.VirtualHost:
    host = rc.VirtualHost(name=vh.name, domains=vh.domains)
    host.routes.extend(r for route in vh.routes for r in build_routes(route, default_retries=default_retries))
    return host


def envoy_matches(m: HttpMatch) -> tuple[HttpMatch, ...]:
    """The matches of the Envoy routes one match becomes. A whole-segments prefix (Gateway API PathPrefix ``/a``)
    is two: the path itself (``/a``) and the paths below it (prefix ``/a/``), which Envoy and proxyless gRPC clients
    both read; Envoy's own ``path_separated_prefix`` makes gRPC reject the whole RouteConfiguration ("invalid path
    specifier"). Same action, same name, next to each other: the first match still wins as before."""
    if m.segment_prefix is None:
        return (m,)
    return (
        replace(m, segment_prefix=None, path_exact=m.segment_prefix),
        replace(m, segment_prefix=None, prefix=m.segment_prefix + "/"),
    )


def build_routes(ir: RouteIR, *, default_retries: bool = True) -> list[rc.Route]:
    """The Envoy routes of one route (``envoy_matches``). ``default_retries``: apply DEFAULT_RETRY_POLICY when the
    Route sets none (outbound routes; the inbound route to the local app never retries)."""
    route = build_route(ir, default_retries=default_retries)
    matches = envoy_matches(ir.match)
    if len(matches) == 1:
        return [route]
    out = []
    for m in matches:
        one = rc.Route()
        one.CopyFrom(route)
        one.match.CopyFrom(build_match(m))
        out.append(one)
    return out


def build_route(ir: RouteIR, *, default_retries: bool = True) -> rc.Route:
    """One Envoy route with ``ir``'s match as it is (``build_routes`` splits a whole-segments prefix)."""
    route = rc.Route(name=ir.name, match=build_match(ir.match))
    if ir.request_headers is not None:
        _modify(route.request_headers_to_add, route.request_headers_to_remove, ir.request_headers)
    if ir.response_headers is not None:
        _modify(route.response_headers_to_add, route.response_headers_to_remove, ir.response_headers)
    if ir.redirect is not None:
        route.redirect.CopyFrom(_redirect(ir.redirect, _matched_prefix(ir.match)))
        return route
    if ir.direct_status is not None:
        route.direct_response.status = ir.direct_status
        if ir.direct_body is not None:
            route.direct_response.body.inline_string = ir.direct_body
        return route
    action = route.route
    if len(ir.clusters) == 1 and ir.clusters[0].request_headers is None and ir.clusters[0].response_headers is None:
        action.cluster = ir.clusters[0].cluster
    else:
        for wc in ir.clusters:
            cw = action.weighted_clusters.clusters.add(name=wc.cluster, weight=uint32(wc.weight))
            if wc.request_headers is not None:
                _modify(cw.request_headers_to_add, cw.request_headers_to_remove, wc.request_headers)
            if wc.response_headers is not None:
                _modify(cw.response_headers_to_add, cw.response_headers_to_remove, wc.response_headers)
    if any(wc.cluster == INVALID_BACKEND for wc in ir.clusters):
        action.cluster_not_found_response_code = rc.RouteAction.INTERNAL_SERVER_ERROR
    if ir.rewrite is not None:
        _rewrite(action, ir.rewrite, _matched_prefix(ir.match))
    for mirror in ir.mirrors:
        policy = action.request_mirror_policies.add(cluster=mirror.cluster)
        if mirror.percent is not None:
            policy.runtime_fraction.default_value.CopyFrom(
                percent_pb2.FractionalPercent(
                    numerator=round(mirror.percent * 10_000), denominator=percent_pb2.FractionalPercent.MILLION
                )
            )
    policies = build_action_policies(ir.timeout_ms, ir.idle_timeout_ms, ir.retry_policy, ir.match.grpc, default_retries)
    if policies.ListFields():
        action.MergeFrom(policies)
    return route


def build_action_policies(
    timeout_ms: int | None, idle_timeout_ms: int | None, retry: RetryPolicy | None, grpc: bool, default_retries: bool
) -> rc.RouteAction:
    """What a RouteAction says besides where to go: timeouts and retries."""
    if retry is not None and retry.max_retries == 0:
        # No retries is said with no policy: Envoy retries nothing without one, and a proxyless gRPC client rejects
        # the whole RouteConfiguration for num_retries 0 (gRFC A44). A per-try timeout then bounds the one try:
        # it is the route's timeout.
        per_try = retry.per_retry_timeout_ms
        if per_try is not None and (not timeout_ms or per_try < timeout_ms):
            timeout_ms = per_try
        retry, default_retries = None, False
    action = rc.RouteAction()
    if timeout_ms is not None:
        action.timeout.CopyFrom(duration_ms(timeout_ms))
    elif grpc:
        # gRPC streams are long-lived: no 15 s route timeout by surprise; the client's deadline bounds each call.
        action.timeout.CopyFrom(duration_ms(0))
    if grpc and not timeout_ms:
        # No timeout of its own: the grpc-timeout header (the client's deadline) is honoured as it is. A Route's
        # timeout is Envoy's ``timeout`` alone: written here too (as gRFC A31 would have proxyless clients read it),
        # grpcio 1.85 fails every call at once with DEADLINE_EXCEEDED for some timeouts and deadlines (measured:
        # a 1.5 s route timeout under 5 s call deadlines fails every call, under 30 s none; docs/proxyless-grpc.md).
        action.max_stream_duration.grpc_timeout_header_max.CopyFrom(duration_ms(0))
    if idle_timeout_ms is not None:
        action.idle_timeout.CopyFrom(duration_ms(idle_timeout_ms))
    if retry is not None:
        action.retry_policy.CopyFrom(_retry_policy(retry))
    elif default_retries:
        action.retry_policy.CopyFrom(_default_retry_policy())
    return action


_SET = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_ADD = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def _modify(to_add: Any, to_remove: Any, m: HeaderModifier) -> None:
    """A Gateway API header modifier: ``set`` overwrites, ``add`` appends (a comma-joined value, as Envoy sends
    repeated headers upstream), ``remove`` drops."""
    for action, pairs in ((_SET, m.set), (_ADD, m.add)):
        for name, value in pairs:
            to_add.add(header=base_pb2.HeaderValue(key=name, value=value), append_action=action)
    to_remove.extend(m.remove)


_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def _prefix_rewrite(prefix: str, replacement: str) -> regex_pb2.RegexMatchAndSubstitute:
    """ReplacePrefixMatch: the matched path prefix (whole segments) becomes ``replacement``; "/" as the replacement
    leaves no double slash (/strip/x -> /x)."""
    base = re.escape(prefix.rstrip("/"))
    if replacement.rstrip("/") == "":
        return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex=f"^{base}/*"), substitution="/")
    return regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=f"^{base}"), substitution=replacement.rstrip("/")
    )


def _matched_prefix(m: HttpMatch) -> str | None:
    """The PathPrefix a ReplacePrefixMatch replaces: the route's own (the parser allows it only on one)."""
    return m.segment_prefix if m.segment_prefix is not None else m.prefix


def _full_rewrite(path: str) -> regex_pb2.RegexMatchAndSubstitute:
    return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex="^.*$"), substitution=path)


def _redirect(r: Redirect, prefix: str | None) -> rc.RedirectAction:
    action = rc.RedirectAction(response_code=_REDIRECT_CODES[r.status_code])
    if r.scheme is not None:
        action.scheme_redirect = r.scheme
    if r.hostname is not None:
        action.host_redirect = r.hostname
    if r.port is not None:
        action.port_redirect = r.port
    if r.full_path is not None:
        action.path_redirect = r.full_path
    elif r.prefix_path is not None and prefix is not None:
        action.regex_rewrite.CopyFrom(_prefix_rewrite(prefix, r.prefix_path))
    return action


def _rewrite(action: rc.RouteAction, r: Rewrite, prefix: str | None) -> None:
    if r.hostname is not None:
        action.host_rewrite_literal = r.hostname
    if r.full_path is not None:
        action.regex_rewrite.CopyFrom(_full_rewrite(r.full_path))
    elif r.prefix_path is not None and prefix is not None:
        action.regex_rewrite.CopyFrom(_prefix_rewrite(prefix, r.prefix_path))


def build_match(m: HttpMatch) -> rc.RouteMatch:
    match = rc.RouteMatch()
    if m.prefix is not None:
        match.prefix = m.prefix
    elif m.segment_prefix is not None:
        match.path_separated_prefix = m.segment_prefix
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
        if query.regex is not None:
            qm.string_match.safe_regex.regex = query.regex
        elif query.exact is None:
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


def _default_retry_policy() -> rc.RetryPolicy:
    policy = rc.RetryPolicy(
        retry_on=_DEFAULT_RETRY_ON,
        num_retries=uint32(DEFAULT_RETRY_POLICY.max_retries),
        retriable_status_codes=[503],
    )
    _to_other_hosts(policy)
    return policy


def _to_other_hosts(policy: rc.RetryPolicy) -> None:
    policy.retry_host_predicate.add(name=_PREVIOUS_HOSTS).typed_config.Pack(PreviousHostsPredicate())
    policy.host_selection_retry_max_attempts = _HOST_SELECTION_ATTEMPTS


def _retry_policy(p: RetryPolicy) -> rc.RetryPolicy:
    # gRPC events are Envoy retry_on conditions under the same names.
    events = [RETRY_ON[e] for e in (*p.http_retry_events, *p.tcp_retry_events)] + list(p.grpc_retry_events)
    if p.status_codes:
        events.append("retriable-status-codes")
    policy = rc.RetryPolicy(
        retry_on=",".join(events), num_retries=uint32(p.max_retries), retriable_status_codes=p.status_codes
    )
    _to_other_hosts(policy)  # (a policy of no retries is never written: build_action_policies)
    if p.per_retry_timeout_ms is not None:
        policy.per_try_timeout.CopyFrom(duration_ms(p.per_retry_timeout_ms))
    if p.backoff_base_ms is not None:
        policy.retry_back_off.base_interval.CopyFrom(duration_ms(p.backoff_base_ms))
        if p.backoff_max_ms is not None:
            policy.retry_back_off.max_interval.CopyFrom(duration_ms(p.backoff_max_ms))
    return policy
