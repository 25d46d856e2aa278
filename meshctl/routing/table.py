"""A route table as Envoy evaluates it: virtual hosts, then routes in order, each with its match and targets.

Plain frozen values with a JSON form, so the control plane can serve a table and the CLI can explain requests,
find shadowed routes and diff tables without importing the control plane. Built from an Envoy
RouteConfiguration in its JSON form (``adapt.from_envoy``); a Route's match alone from the model
(``adapt.match_from_model``); both say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "HeaderMatcher",
    "Match",
    "PathMatcher",
    "QueryMatcher",
    "RetrySettings",
    "RouteRule",
    "StringMatcher",
    "Target",
    "VirtualHost",
]


@dataclass(frozen=True, slots=True)
class StringMatcher:
    kind: str  # exact | prefix | suffix | contains | regex
    value: str

    def describe(self) -> str:
        return f"{self.kind} {self.value!r}"


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """Exactly one of ``string``, ``range`` or presence (both None). Pseudo-headers: ``:method``, ``:authority``."""

    name: str
    string: StringMatcher | None = None
    range: tuple[int, int] | None = None  # [start, end) on the header's integer value
    invert: bool = False

    @property
    def presence_only(self) -> bool:
        """A presence check (inverted: an absence check), not a test of the value."""
        return self.string is None and self.range is None

    def describe(self) -> str:
        if self.string is not None:
            what = self.string.describe()
        elif self.range is not None:
            what = f"in [{self.range[0]}, {self.range[1]})"
        else:
            what = "present"
        return f"{'NOT ' if self.invert else ''}{self.name} {what}"


@dataclass(frozen=True, slots=True)
class QueryMatcher:
    name: str
    exact: str | None = None  # None (and no regex): the parameter must be present
    regex: str | None = None

    def describe(self) -> str:
        if self.regex is not None:
            return f"?{self.name}=~{self.regex}"
        return f"?{self.name}" + ("" if self.exact is None else f"={self.exact}")


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: str  # prefix | segment (whole path segments: /a matches /a and /a/b, not /ab) | exact | regex
    value: str

    def describe(self) -> str:
        kinds = {
            "prefix": f"{self.value}*",
            "segment": f"{self.value}[/*]",
            "exact": self.value,
            "regex": f"~{self.value}",
        }
        return kinds[self.kind]


@dataclass(frozen=True, slots=True)
class Match:
    path: PathMatcher
    headers: tuple[HeaderMatcher, ...] = ()
    query: tuple[QueryMatcher, ...] = ()
    grpc: bool = False  # only requests whose content-type starts with application/grpc

    @property
    def method(self) -> str | None:
        for h in self.headers:
            if h.name == ":method" and h.string is not None and h.string.kind == "exact" and not h.invert:
                return h.string.value
        return None

    def describe(self) -> str:
        parts = [self.path.describe()]
        parts += [h.describe() for h in self.headers]
        parts += [q.describe() for q in self.query]
        if self.grpc:
            parts.append("gRPC")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Target:
    cluster: str
    weight: int


@dataclass(frozen=True, slots=True)
class RetrySettings:
    retry_on: str
    num_retries: int
    per_try_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str  # namespace/route for our Routes
    match: Match
    targets: tuple[Target, ...]
    timeout_ms: int | None = None  # None: Envoy's default 15 s; 0: none
    idle_timeout_ms: int | None = None
    retry: RetrySettings | None = None

    def probabilities(self) -> list[tuple[str, float]]:
        total = sum(t.weight for t in self.targets)
        return [(t.cluster, t.weight / total if total else 0.0) for t in self.targets]


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str  # namespace/service
    domains: tuple[str, ...]
    routes: tuple[RouteRule, ...]


# --- JSON ----------------------------------------------------------------------------------------------------


def _string_to_json(s: StringMatcher | None) -> dict[str, str] | None:
    return None if s is None else {"kind": s.kind, "value": s.value}


def host_to_json(vh: VirtualHost) -> dict[str, Any]:
    return {"name": vh.name, "domains": list(vh.domains), "routes": [route_to_json(r) for r in vh.routes]}


def route_to_json(r: RouteRule) -> dict[str, Any]:
    m = r.match
    return {
        "name": r.name,
        "match": {
            "path": {"kind": m.path.kind, "value": m.path.value},
            "headers": [
                {
                    "name": h.name,
                    "string": _string_to_json(h.string),
                    "range": list(h.range) if h.range else None,
                    "invert": h.invert,
                }
                for h in m.headers
            ],
            "query": [{"name": q.name, "exact": q.exact} for q in m.query],
            "grpc": m.grpc,
        },
        "targets": [{"cluster": t.cluster, "weight": t.weight} for t in r.targets],
        "timeoutMs": r.timeout_ms,
        "idleTimeoutMs": r.idle_timeout_ms,
        "retry": None
        if r.retry is None
        else {
            "retryOn": r.retry.retry_on,
            "numRetries": r.retry.num_retries,
            "perTryTimeoutMs": r.retry.per_try_timeout_ms,
        },
    }


def host_from_json(d: dict[str, Any]) -> VirtualHost:
    return VirtualHost(d["name"], tuple(d["domains"]), tuple(route_from_json(r) for r in d["routes"]))


def route_from_json(d: dict[str, Any]) -> RouteRule:
    m = d["match"]
    headers = tuple(
        HeaderMatcher(
            name=h["name"],
            string=StringMatcher(h["string"]["kind"], h["string"]["value"]) if h.get("string") else None,
            range=(h["range"][0], h["range"][1]) if h.get("range") else None,
            invert=bool(h.get("invert")),
        )
        for h in m.get("headers", ())
    )
    retry = d.get("retry")
    return RouteRule(
        name=d["name"],
        match=Match(
            path=PathMatcher(m["path"]["kind"], m["path"]["value"]),
            headers=headers,
            query=tuple(QueryMatcher(q["name"], q.get("exact"), q.get("regex")) for q in m.get("query", ())),
            grpc=bool(m.get("grpc")),
        ),
        targets=tuple(Target(t["cluster"], int(t["weight"])) for t in d["targets"]),
        timeout_ms=d.get("timeoutMs"),
        idle_timeout_ms=d.get("idleTimeoutMs"),
        retry=None
        if not retry
        else RetrySettings(retry["retryOn"], int(retry["numRetries"]), retry.get("perTryTimeoutMs")),
    )
