"""Routes that can never match because earlier routes of the same virtual host take every request they would.

A route B is *shadowed* when one earlier route A covers it (every predicate of A is implied by B's: a prefix of
B's path, no method or the same, each header/query constraint of A implied by one of B's) or when two earlier
routes that cover it in everything but one header split that header between them (``X`` and ``NOT X``). Those
are proofs. Where a regex makes containment undecidable, B is *possibly* shadowed only when every sample request
B matches goes to an earlier route; it is never reported as certain. Every finding carries a witness request
(when one can be made) that B matches and an earlier route takes, checked with the same matcher ``explain`` uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import re2

from meshctl.routing.match import Request, first_failure, header_matches, string_matches
from meshctl.routing.table import (
    HeaderMatcher,
    Match,
    PathMatcher,
    QueryMatcher,
    RouteRule,
    StringMatcher,
    VirtualHost,
)
from meshctl.routing.witness import witnesses_for

__all__ = ["Shadowing", "find_shadowed"]


class _Covers(IntEnum):
    NO = 0
    MAYBE = 1  # undecidable here (regex)
    YES = 2


def _all(verdicts: list[_Covers]) -> _Covers:
    return min(verdicts, default=_Covers.YES)


def _any(verdicts: list[_Covers]) -> _Covers:
    return max(verdicts, default=_Covers.NO)


def _yes(condition: bool) -> _Covers:
    return _Covers.YES if condition else _Covers.NO


def _path(a: PathMatcher, b: PathMatcher) -> _Covers:
    """Does every path ``b`` matches match ``a``?"""
    if a.kind == "segment":
        if b.kind in ("exact", "segment"):
            return _yes(b.value == a.value or b.value.startswith(a.value + "/"))
        return _yes(b.value.startswith(a.value + "/")) if b.kind == "prefix" else _Covers.MAYBE
    if b.kind == "segment":
        if a.kind == "prefix":
            return _yes(b.value.startswith(a.value))
        return _Covers.NO if a.kind == "exact" else _Covers.MAYBE
    if a.kind == "prefix":
        if a.value in ("", "/"):
            return _Covers.YES  # every (normalized) path starts with /
        return _yes(b.value.startswith(a.value)) if b.kind != "regex" else _Covers.MAYBE
    if a.kind == "exact":
        if b.kind == "exact":
            return _yes(a.value == b.value)
        return _Covers.NO if b.kind == "prefix" else _Covers.MAYBE
    if b.kind == "exact":
        return _yes(re2.fullmatch(a.value, b.value) is not None)
    return _Covers.YES if b.kind == "regex" and a.value == b.value else _Covers.MAYBE


def _string_implies(b: StringMatcher, a: StringMatcher) -> _Covers:
    """Does every value ``b`` accepts satisfy ``a``?"""
    if b == a:
        return _Covers.YES
    if b.kind == "exact":
        return _yes(string_matches(a, b.value))
    if a.kind == "regex" or b.kind == "regex":
        return _Covers.MAYBE
    if a.kind == "contains":
        return _yes(a.value in b.value)
    if a.kind == b.kind == "prefix":
        return _yes(b.value.startswith(a.value))
    if a.kind == b.kind == "suffix":
        return _yes(b.value.endswith(a.value))
    return _yes(a.kind in ("prefix", "suffix") and a.value == "")


def _positive_implies(b: HeaderMatcher, a: HeaderMatcher) -> _Covers:
    """b and a not inverted: b's values are present ones."""
    if a.presence_only:
        return _Covers.YES  # a: present
    if b.presence_only:
        return _Covers.NO  # b allows any value
    if b.string is not None and b.string.kind == "exact":
        return _yes(header_matches(a, b.string.value))
    if b.string is not None and a.string is not None:
        return _string_implies(b.string, a.string)
    if b.range is not None and a.range is not None:
        return _yes(b.range[0] >= b.range[1] or (a.range[0] <= b.range[0] and b.range[1] <= a.range[1]))
    return _Covers.MAYBE if (a.string and a.string.kind == "regex") else _Covers.NO


def _header_implies(b: HeaderMatcher, a: HeaderMatcher) -> _Covers:
    """Does every request ``b`` accepts satisfy ``a`` (same header)? An absent header satisfies only NOT present;
    every other matcher, inverted or not, needs the header (see ``match.header_matches``)."""
    if b == a:
        return _Covers.YES
    if b.invert and b.presence_only:
        return _Covers.NO  # b: absent only, and a is not NOT present
    if a.invert and a.presence_only:
        return _Covers.NO  # a: absent only, b needs the header
    if not a.invert and a.presence_only:
        return _Covers.YES  # a: present; b needs the header
    if b.invert and a.invert:
        # NOT X implies NOT Y when Y's values are X's.
        return _positive_implies(HeaderMatcher(a.name, a.string, a.range), HeaderMatcher(b.name, b.string, b.range))
    if b.invert:
        return _Covers.MAYBE if a.string is not None and a.string.kind == "regex" else _Covers.NO
    if a.invert:
        if b.string is not None and b.string.kind == "exact":
            return _yes(header_matches(a, b.string.value))
        return _Covers.MAYBE if any(m and m.kind == "regex" for m in (a.string, b.string)) else _Covers.NO
    return _positive_implies(b, a)


def _headers(a: tuple[HeaderMatcher, ...], b: tuple[HeaderMatcher, ...], skip: str | None = None) -> _Covers:
    return _all([_any([_header_implies(hb, ha) for hb in b if hb.name == ha.name]) for ha in a if ha.name != skip])


def _query_implies(b: QueryMatcher, a: QueryMatcher) -> bool:
    return b.name == a.name and (a.exact is None or a.exact == b.exact)


def _covers(a: Match, b: Match, skip_header: str | None = None) -> _Covers:
    """Does every request ``b`` matches match ``a`` (ignoring headers named ``skip_header`` in ``a``)?"""
    if a.grpc and not b.grpc:
        return _Covers.NO
    if not all(any(_query_implies(qb, qa) for qb in b.query) for qa in a.query):
        return _Covers.NO
    return _all([_path(a.path, b.path), _headers(a.headers, b.headers, skip_header)])


def _split_on(a1: Match, a2: Match, b: Match, name: str) -> bool:
    """One route requires X on header ``name``, the other NOT Y, where every value with Y has X: a present value
    has X, or lacks X and so lacks Y. An absent header is taken too when NOT Y is NOT present, or never comes when
    ``b`` needs the header. Together they take every request ``b`` matches."""
    h1 = [h for h in a1.headers if h.name == name]
    h2 = [h for h in a2.headers if h.name == name]
    if len(h1) != 1 or len(h2) != 1 or h1[0].invert == h2[0].invert:
        return False
    x, not_y = (h1[0], h2[0]) if h2[0].invert else (h2[0], h1[0])
    y = HeaderMatcher(not_y.name, not_y.string, not_y.range)
    b_needs_header = any(h.name == name and not (h.invert and h.presence_only) for h in b.headers)
    return _positive_implies(y, x) is _Covers.YES and (not_y.presence_only or b_needs_header)


@dataclass(frozen=True, slots=True)
class Shadowing:
    index: int  # position of the shadowed route in its virtual host
    route: str
    by: tuple[str, ...]  # the earlier route(s) that take its requests
    certain: bool  # False: "possibly shadowed" (a regex made it undecidable; every sample went elsewhere)
    witness: Request | None  # a request the route matches that an earlier route takes
    witness_route: str | None  # the route Envoy sends the witness to

    def message(self) -> str:
        by = " and ".join(self.by)
        if self.certain:
            text = f"shadowed by {by}: every request it matches is taken first"
        else:
            text = (
                f"possibly shadowed by {by}: every sample request it matches is taken first "
                "(a regex keeps this from proof)"
            )
        if self.witness is not None:
            text += f"; e.g. {describe_request(self.witness)} -> {self.witness_route}"
        return text


def describe_request(r: Request) -> str:
    """As a meshctl explain command line would take it."""
    headers = "".join(f" -H '{k}: {v}'" for k, v in r.headers)
    return f"{r.method} http://{r.authority}{r.path}{headers}"


def _authority(vh: VirtualHost) -> str:
    return next((d for d in vh.domains if "*" not in d), vh.name.replace("/", "."))


def _routed_to(routes: tuple[RouteRule, ...], request: Request) -> str | None:
    """The route among ``routes`` (the earlier ones) that takes this request first, if any."""
    return next((r.name for r in routes if first_failure(r, request) is None), None)


def find_shadowed(vh: VirtualHost) -> list[Shadowing]:
    findings: list[Shadowing] = []
    authority = _authority(vh)
    for j, b in enumerate(vh.routes):
        earlier = vh.routes[:j]
        verdicts = [_covers(a.match, b.match) for a in earlier]
        by: tuple[str, ...] | None = next(
            ((a.name,) for a, v in zip(earlier, verdicts, strict=True) if v is _Covers.YES), None
        )
        certain = True
        if by is None:
            by = _union_cover(earlier, b.match)
        samples: list[Request] = []
        if by is None:
            maybe = tuple(a.name for a, v in zip(earlier, verdicts, strict=True) if v is _Covers.MAYBE)
            samples = witnesses_for(b, authority) if maybe else []
            if not samples or not all(_routed_to(earlier, w) for w in samples):
                continue
            by, certain = maybe, False
        routed = ((w, _routed_to(earlier, w)) for w in samples or witnesses_for(b, authority))
        witness, to = next(((w, to) for w, to in routed if to is not None), (None, None))
        findings.append(Shadowing(j, b.name, by, certain, witness, to))
    return findings


def _union_cover(earlier: tuple[RouteRule, ...], b: Match) -> tuple[str, str] | None:
    """Two earlier routes that each cover ``b`` but for one header, on which they take X and NOT X."""
    names = {h.name for a in earlier for h in a.match.headers}
    for name in sorted(names):
        covering = [a for a in earlier if _covers(a.match, b, skip_header=name) is _Covers.YES]
        for i, a1 in enumerate(covering):
            for a2 in covering[i + 1 :]:
                if _split_on(a1.match, a2.match, b, name):
                    return a1.name, a2.name
    return None
