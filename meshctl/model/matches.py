"""Request matches: what a Route (and an HTTPRoute rule) selects requests by, as Envoy's RouteMatch sees them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HeaderMatch", "HttpMatch", "QueryParameterMatch", "StringMatch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatch:
    """Exactly one of the fields is set (the parser guarantees it)."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None
    range_start: int | None = None  # header range: [start, end)
    range_end: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    name: str
    match: StringMatch | None = None  # None: the header must be present
    invert: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryParameterMatch:
    name: str
    exact: str | None = None  # None (and no regex): the parameter must be present
    regex: str | None = None  # HTTPRoute's RegularExpression query match


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpMatch:
    prefix: str | None = None
    # HTTPRoute's PathPrefix: whole segments ("/v2" matches /v2 and /v2/x, not /v2x); Envoy's path_separated_prefix
    segment_prefix: str | None = None
    path_exact: str | None = None
    path_regex: str | None = None
    method: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_parameters: tuple[QueryParameterMatch, ...] = ()
    grpc: bool = False  # only gRPC requests (content-type application/grpc): set for every grpcRoute
    # App Mesh's match.port: only calls to this port of the Service (a virtual host per port); not an Envoy match
    port: int | None = None
