"""Which route Envoy picks for a request, and why every earlier one did not match.

Follows Envoy's router (``source/common/router/config_impl.cc``, ``http/header_utility.cc``) for the matchers our
translator emits: virtual host by Host (exact, then ``*.suffix``, then ``prefix*``, then ``*``), routes in order,
first match wins; the path is normalized as our listeners do (dot segments, merged slashes) and compared without
the query string; header values of a repeated header are joined with ``,``; regexes are RE2 full matches.
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import re2

from meshctl.routing.table import (
    HeaderMatcher,
    PathMatcher,
    QueryMatcher,
    RouteRule,
    StringMatcher,
    VirtualHost,
    route_to_json,
)

__all__ = [
    "Explanation",
    "Request",
    "RouteVerdict",
    "explain",
    "explanation_json",
    "first_failure",
    "header_pair",
    "pick_virtual_host",
]


def header_pair(raw: str) -> tuple[str, str]:
    """``Name: value`` as (lower-case name, value); ValueError for anything else (no colon, a blank name or one
    with spaces). How ``explain -H`` and ``/api/v1/explain``'s ``header`` read a header."""
    name, sep, value = raw.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise ValueError(f"{raw!r}: expected 'Name: value'")
    return name.strip().lower(), value.strip()


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    authority: str  # Host, port included if the client sends one
    path: str  # as sent: path and query string
    headers: tuple[tuple[str, str], ...] = ()  # names lower-case

    @classmethod
    def from_url(cls, method: str, url: str, headers: list[tuple[str, str]] | None = None) -> Request:
        """``GET http://reviews.demo:9080/api?x=1`` (the scheme is optional); a ``Host`` header overrides the URL's."""
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        given = [(k.strip().lower(), v.strip()) for k, v in headers or []]
        host = next((v for k, v in given if k == "host"), parts.netloc)
        rest = tuple((k, v) for k, v in given if k != "host")
        return cls(method.upper(), host, path, rest)

    def header(self, name: str) -> str | None:
        """The value a header matcher sees: pseudo-headers, or every value of the header joined by ','."""
        if name == ":method":
            return self.method
        if name in (":authority", "host"):
            return self.authority
        if name == ":path":
            return self.path
        if name == ":scheme":
            return "http"
        values = [v for k, v in self.headers if k == name]
        return ",".join(values) if values else None

    @property
    def normalized_path(self) -> str:
        """The path without query or fragment, normalized like our listeners (normalize_path, merge_slashes)."""
        path = self.path.split("?", 1)[0].split("#", 1)[0] or "/"
        path = path.replace("%2F", "/").replace("%2f", "/")  # path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
        while "//" in path:
            path = path.replace("//", "/")
        trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
        normalized = posixpath.normpath(path)
        if normalized.startswith("//"):
            normalized = normalized[1:]
        return normalized + "/" if trailing and normalized != "/" else normalized

    def query(self, name: str) -> str | None:
        """The first value of a query parameter, decoded ('' for a bare ``?name``); None when absent."""
        query = self.path.split("?", 1)[1].split("#", 1)[0] if "?" in self.path else ""
        for part in query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            if urllib.parse.unquote(key) == name:
                return urllib.parse.unquote(value)
        return None


def string_matches(m: StringMatcher, value: str) -> bool:
    if m.kind == "exact":
        return value == m.value
    if m.kind == "prefix":
        return value.startswith(m.value)
    if m.kind == "suffix":
        return value.endswith(m.value)
    if m.kind == "contains":
        return m.value in value
    return re2.fullmatch(m.value, value) is not None


def header_matches(h: HeaderMatcher, value: str | None) -> bool:
    """Envoy's HeaderMatcher on a header's value (None: absent). An absent header fails every matcher but an
    inverted presence check: ``invert`` negates the value test, not the header's presence (measured, Envoy 1.40)."""
    if value is None:
        return h.invert and h.presence_only
    if h.string is not None:
        result = string_matches(h.string, value)
    elif h.range is not None:
        try:
            number = int(value, 10)
        except ValueError:
            result = False
        else:
            result = h.range[0] <= number < h.range[1]
    else:
        result = True
    return result != h.invert


def path_matches(p: PathMatcher, path: str) -> bool:
    if p.kind == "prefix":
        return path.startswith(p.value)
    if p.kind == "segment":
        return path == p.value or path.startswith(p.value + "/")
    if p.kind == "exact":
        return path == p.value
    return re2.fullmatch(p.value, path) is not None


def query_matches(q: QueryMatcher, value: str | None) -> bool:
    if value is None:
        return False
    if q.regex is not None:
        return re2.fullmatch(q.regex, value) is not None
    return q.exact is None or value == q.exact


def first_failure(route: RouteRule, request: Request) -> str | None:
    """Why ``route`` does not match ``request`` (the first predicate that fails), or None when it matches."""
    m = route.match
    path = request.normalized_path
    if not path_matches(m.path, path):
        verbs = {
            "prefix": "does not start with",
            "segment": "is not (or does not start with the segments of)",
            "exact": "is not",
            "regex": "does not fully match",
        }
        verb = verbs[m.path.kind]
        return f"path {path!r} {verb} {m.path.value!r}"
    if m.grpc and not (request.header("content-type") or "").startswith("application/grpc"):
        return "not a gRPC request (content-type is not application/grpc)"
    for h in m.headers:
        value = request.header(h.name)
        if not header_matches(h, value):
            seen = "absent" if value is None else repr(value)
            name = {":method": "method", ":authority": "host"}.get(h.name, f"header {h.name}")
            return f"{name} {seen}: wants {h.describe()}"
    for q in m.query:
        value = request.query(q.name)
        if not query_matches(q, value):
            seen = "absent" if value is None else repr(value)
            return f"query parameter {q.name} {seen}: wants {q.describe()}"
    return None


def _wildcard_matches(domain: str, host: str) -> bool:
    if domain.startswith("*"):
        return len(host) > len(domain) - 1 and host.endswith(domain[1:])
    return len(host) > len(domain) - 1 and host.startswith(domain[:-1])


def pick_virtual_host(hosts: tuple[VirtualHost, ...], authority: str) -> tuple[VirtualHost | None, str]:
    """Envoy's choice: an exact domain, else the longest ``*.suffix``, else the longest ``prefix*``, else ``*``."""
    host = authority.lower()
    for vh in hosts:
        if host in (d.lower() for d in vh.domains):
            return vh, f"Host {authority!r} is a domain of {vh.name}"
    for kind in ("suffix", "prefix"):
        best: tuple[int, VirtualHost, str] | None = None
        for vh in hosts:
            for d in vh.domains:
                if d == "*" or not (d.startswith("*") if kind == "suffix" else d.endswith("*")):
                    continue
                if _wildcard_matches(d.lower(), host) and (best is None or len(d) > best[0]):
                    best = (len(d), vh, d)
        if best is not None:
            return best[1], f"Host {authority!r} matches the wildcard domain {best[2]!r} of {best[1].name}"
    for vh in hosts:
        if "*" in vh.domains:
            return vh, f"no domain matches Host {authority!r}; {vh.name} takes every host ('*')"
    return None, f"no virtual host has the domain {authority!r}"


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    index: int
    route: RouteRule
    failure: str | None  # None: this route matches


@dataclass(frozen=True, slots=True)
class Explanation:
    request: Request
    virtual_host: VirtualHost | None
    host_reason: str
    verdicts: tuple[RouteVerdict, ...] = field(default=())  # up to and including the matching route

    @property
    def route(self) -> RouteRule | None:
        return self.verdicts[-1].route if self.verdicts and self.verdicts[-1].failure is None else None


def explain(hosts: tuple[VirtualHost, ...], request: Request) -> Explanation:
    vh, reason = pick_virtual_host(hosts, request.authority)
    if vh is None:
        return Explanation(request, None, reason)
    verdicts = []
    for i, route in enumerate(vh.routes):
        failure = first_failure(route, request)
        verdicts.append(RouteVerdict(i, route, failure))
        if failure is None:
            break
    return Explanation(request, vh, reason, tuple(verdicts))


def explanation_json(e: Explanation, clusters: dict[str, Any]) -> dict[str, Any]:
    """What ``meshctl explain -o json`` prints and ``/api/v1/explain`` answers (the web view's explain form)."""
    route = e.route
    return {
        "request": {
            "method": e.request.method,
            "authority": e.request.authority,
            "path": e.request.path,
            "headers": [[k, v] for k, v in e.request.headers],
        },
        "virtualHost": e.virtual_host.name if e.virtual_host else None,
        "virtualHostReason": e.host_reason,
        "routes": [
            {"index": v.index, "name": v.route.name, "match": v.route.match.describe(), "failure": v.failure}
            for v in e.verdicts
        ],
        "matched": route.name if route else None,
        "response": None if route else "404 NR (no route)",
        "targets": [
            {"cluster": c, "probability": p, **clusters.get(c, {})} for c, p in (route.probabilities() if route else [])
        ],
        "retry": route_to_json(route)["retry"] if route else None,
        "timeoutMs": route.timeout_ms if route else None,
    }
