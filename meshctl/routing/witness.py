"""Concrete requests that satisfy a route's match: the proof attached to every shadowing finding.

A string for a regex comes from walking its parse tree (Python's ``re`` syntax covers what RE2 accepts here)
and is kept only if RE2 itself fully matches it, so a witness is never wrong, only sometimes missing.
"""

from __future__ import annotations

import re._parser as sre_parse  # type: ignore[import-not-found]  # the stdlib regex parser: a tree to walk
from re._constants import (  # type: ignore[import-not-found]
    ANY,
    AT,
    BRANCH,
    CATEGORY,
    CATEGORY_DIGIT,
    CATEGORY_SPACE,
    CATEGORY_WORD,
    IN,
    LITERAL,
    MAX_REPEAT,
    MIN_REPEAT,
    NEGATE,
    NOT_LITERAL,
    RANGE,
    SUBPATTERN,
)
from typing import Any

import re2

from meshctl.routing.match import Request, first_failure, header_matches
from meshctl.routing.table import HeaderMatcher, QueryMatcher, RouteRule, StringMatcher

__all__ = ["regex_samples", "witnesses_for"]

_CATEGORY_CHAR = {CATEGORY_DIGIT: "0", CATEGORY_WORD: "a", CATEGORY_SPACE: " "}


def _one(item: tuple[Any, Any], branch: int) -> str | None:
    op, arg = item
    if op is LITERAL:
        return chr(arg)
    if op is NOT_LITERAL:
        return "a" if chr(arg) != "a" else "b"
    if op is ANY:
        return "a"
    if op is AT:
        return ""
    if op is IN:
        negate = any(o is NEGATE for o, _ in arg)
        if negate:
            excluded = {chr(a) for o, a in arg if o is LITERAL}
            return next(c for c in "axb0_" if c not in excluded)
        options = []
        for o, a in arg:
            if o is LITERAL:
                options.append(chr(a))
            elif o is RANGE:
                options += [chr(a[0]), chr(a[1])]
            elif o is CATEGORY:
                options.append(_CATEGORY_CHAR.get(a, "a"))
        return options[branch % len(options)] if options else None
    if op is CATEGORY:
        return _CATEGORY_CHAR.get(arg, "a")
    if op in (MAX_REPEAT, MIN_REPEAT):
        low, _high, sub = arg
        count = max(low, 1 if branch % 2 else low)  # vary: the minimum, or at least once
        part = _walk(sub, branch)
        return None if part is None else part * count
    if op is SUBPATTERN:
        return _walk(arg[-1], branch)
    if op is BRANCH:
        alternatives = arg[1]
        return _walk(alternatives[branch % len(alternatives)], branch // len(alternatives))
    return None


def _walk(pattern: Any, branch: int) -> str | None:
    out = []
    for item in pattern:
        part = _one(item, branch)
        if part is None:
            return None
        out.append(part)
    return "".join(out)


def regex_samples(pattern: str, count: int = 6) -> list[str]:
    """Up to ``count`` distinct strings RE2 fully matches (different alternatives and repeat counts)."""
    try:
        tree = sre_parse.parse(pattern)
    except Exception:  # a pattern Python cannot parse (RE2-only syntax): no witness
        return []
    samples: list[str] = []
    for branch in range(count * 4):
        text = _walk(tree, branch)
        if text is not None and text not in samples and re2.fullmatch(pattern, text) is not None:
            samples.append(text)
        if len(samples) >= count:
            break
    return samples


def string_sample(m: StringMatcher) -> str | None:
    if m.kind == "regex":
        samples = regex_samples(m.value, 1)
        return samples[0] if samples else None
    return m.value


def _header_value(h: HeaderMatcher) -> str | None:
    """A value that satisfies ``h``; None means: leave the header out."""
    if h.invert:
        if h.presence_only:
            return None  # NOT present: leave it out
        literal = h.string.value if h.string is not None else ""
        return next((c for c in ("x", "0", literal + "x", "x" + literal) if header_matches(h, c)), None)
    if h.string is not None:
        return string_sample(h.string)
    if h.range is not None:
        return str(h.range[0])
    return "1"


def witnesses_for(route: RouteRule, authority: str, count: int = 6) -> list[Request]:
    """Up to ``count`` distinct requests ``route`` matches (different strings for a regex path)."""
    m = route.match
    if m.path.kind == "regex":
        paths = regex_samples(m.path.value, count)
    elif m.path.kind == "segment":
        paths = [m.path.value, m.path.value + "/z"]
    elif m.path.kind == "prefix":
        paths = [m.path.value or "/", (m.path.value or "/") + "0", (m.path.value or "/").rstrip("/") + "/z/y"]
    else:
        paths = [m.path.value]
    found = []
    for path in paths:
        request = _request(route, authority, path)
        if request is not None and request not in found:
            found.append(request)
    return found


def _request(route: RouteRule, authority: str, path: str) -> Request | None:
    m = route.match
    if not path.startswith("/"):
        return None
    method = "POST" if m.grpc else "GET"
    headers: list[tuple[str, str]] = []
    if m.grpc:
        headers.append(("content-type", "application/grpc"))
    for h in m.headers:
        if h.name == ":method":
            if h.string is not None and h.string.kind == "exact" and not h.invert:
                method = h.string.value
            continue
        if h.name == ":authority":
            if h.string is not None and not h.invert:
                sample = string_sample(h.string)
                if sample is None:
                    return None
                authority = sample if h.string.kind != "suffix" else "host" + sample
            continue
        value = _header_value(h)
        if value is not None:
            headers.append((h.name, value))
    query = "&".join(f"{q.name}={_query_value(q)}" for q in m.query)
    request = Request(method, authority, path + (f"?{query}" if query else ""), tuple(headers))
    return request if first_failure(route, request) is None else None


def _query_value(q: QueryMatcher) -> str:
    if q.regex is not None:
        samples = regex_samples(q.regex, 1)
        return samples[0] if samples else ""
    return q.exact if q.exact is not None else "1"
