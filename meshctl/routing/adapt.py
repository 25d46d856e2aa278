"""Route tables from what Envoy is sent (a RouteConfiguration as JSON) and matches from the model's ``HttpMatch``.

``from_envoy`` reads proto3 JSON with either field-name style (our config dump keeps proto names, Envoy's own
``/config_dump`` uses lowerCamelCase), so the same code explains the control plane's view and a proxy's.
"""

from __future__ import annotations

import re
from typing import Any

from meshctl.model import HeaderMatch, HttpMatch
from meshctl.routing.table import (
    HeaderMatcher,
    Match,
    PathMatcher,
    QueryMatcher,
    RetrySettings,
    RouteRule,
    StringMatcher,
    Target,
    VirtualHost,
)

__all__ = ["from_envoy", "match_from_model"]


def _snake(d: Any) -> Any:
    """lowerCamelCase keys -> snake_case, recursively (values untouched)."""
    if isinstance(d, dict):
        return {re.sub(r"(?<!^)([A-Z])", r"_\1", k).lower(): _snake(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_snake(v) for v in d]
    return d


def _ms(duration: str | None) -> int | None:
    """proto3 JSON Duration ("1.500s") -> milliseconds."""
    if duration is None:
        return None
    return round(float(duration.rstrip("s")) * 1000)


def _string(d: dict[str, Any]) -> StringMatcher:
    if "safe_regex" in d:
        return StringMatcher("regex", d["safe_regex"]["regex"])
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in d:
            return StringMatcher(kind, d[kind])
    return StringMatcher("exact", "")  # proto3 JSON omits an empty exact value


def _header(d: dict[str, Any]) -> HeaderMatcher:
    invert = bool(d.get("invert_match"))
    if "string_match" in d:
        return HeaderMatcher(d["name"], string=_string(d["string_match"]), invert=invert)
    if "range_match" in d:
        r = d["range_match"]
        return HeaderMatcher(d["name"], range=(int(r.get("start", 0)), int(r.get("end", 0))), invert=invert)
    return HeaderMatcher(d["name"], invert=invert)  # present_match


def _query(q: dict[str, Any]) -> QueryMatcher:
    if q.get("present_match"):
        return QueryMatcher(q["name"])
    sm = _string(q.get("string_match", {}))
    return QueryMatcher(q["name"], regex=sm.value) if sm.kind == "regex" else QueryMatcher(q["name"], sm.value)


def _match(d: dict[str, Any]) -> Match:
    if "prefix" in d:
        path = PathMatcher("prefix", d["prefix"])
    elif "path_separated_prefix" in d:
        path = PathMatcher("segment", d["path_separated_prefix"])
    elif "path" in d:
        path = PathMatcher("exact", d["path"])
    elif "safe_regex" in d:
        path = PathMatcher("regex", d["safe_regex"]["regex"])
    else:
        path = PathMatcher("prefix", "")
    query = tuple(_query(q) for q in d.get("query_parameters", ()))
    return Match(path, tuple(_header(h) for h in d.get("headers", ())), query, "grpc" in d)


def _route(d: dict[str, Any]) -> RouteRule:
    action = d.get("route", {})
    if "weighted_clusters" in action:
        targets = tuple(Target(c["name"], int(c.get("weight", 0))) for c in action["weighted_clusters"]["clusters"])
    else:
        targets = (Target(action.get("cluster", ""), 1),)
    retry = None
    if (rp := action.get("retry_policy")) is not None:
        retry = RetrySettings(rp.get("retry_on", ""), int(rp.get("num_retries", 1)), _ms(rp.get("per_try_timeout")))
    return RouteRule(
        name=d.get("name", ""),
        match=_match(d.get("match", {})),
        targets=targets,
        timeout_ms=_ms(action.get("timeout")),
        idle_timeout_ms=_ms(action.get("idle_timeout")),
        retry=retry,
    )


def from_envoy(route_configuration: dict[str, Any]) -> tuple[VirtualHost, ...]:
    """The virtual hosts of a RouteConfiguration in proto3 JSON (either key style)."""
    rc = _snake(route_configuration)
    return tuple(
        VirtualHost(vh["name"], tuple(vh.get("domains", ())), tuple(_route(r) for r in vh.get("routes", ())))
        for vh in rc.get("virtual_hosts", ())
    )


def _model_header(h: HeaderMatch) -> HeaderMatcher:
    sm = h.match
    if sm is None:
        return HeaderMatcher(h.name, invert=h.invert)
    if sm.range_start is not None and sm.range_end is not None:
        return HeaderMatcher(h.name, range=(sm.range_start, sm.range_end), invert=h.invert)
    for kind in ("exact", "prefix", "suffix", "regex"):
        if (value := getattr(sm, kind)) is not None:
            return HeaderMatcher(h.name, string=StringMatcher(kind, value), invert=h.invert)
    raise ValueError(f"header match {h.name!r} sets nothing")


def match_from_model(m: HttpMatch) -> Match:
    """The Match Envoy gets for a Route's ``HttpMatch`` (the same mapping as ``envoy.route.build_route``)."""
    if m.prefix is not None:
        path = PathMatcher("prefix", m.prefix)
    elif m.segment_prefix is not None:
        path = PathMatcher("segment", m.segment_prefix)
    elif m.path_exact is not None:
        path = PathMatcher("exact", m.path_exact)
    else:
        path = PathMatcher("regex", m.path_regex or "")
    method = (HeaderMatcher(":method", string=StringMatcher("exact", m.method)),) if m.method is not None else ()
    return Match(
        path,
        (*method, *(_model_header(h) for h in m.headers)),
        tuple(QueryMatcher(q.name, q.exact, q.regex) for q in m.query_parameters),
        m.grpc,
    )
