"""Route ``spec`` -> ``RouteSpec``, collecting field errors (App Mesh v1beta2 ``httpRoute`` names)."""

from __future__ import annotations

import re
import re._parser as re_parser  # type: ignore[import-not-found]  # the stdlib's own regex parser
from typing import Any

import re2  # google-re2: the engine Envoy uses, to measure a pattern's program size as Envoy will

from meshctl.model import (
    FieldError,
    HeaderMatch,
    HttpMatch,
    HttpRoute,
    ListenerTimeout,
    QueryParameterMatch,
    RetryPolicy,
    RouteSpec,
    StringMatch,
    WeightedTarget,
)
from meshctl.parse.fields import INT64_MAX, INT64_MIN, Fields, field_warnings
from meshctl.parse.virtualnode import parse_timeout

__all__ = [
    "GRPC_RETRY_EVENTS",
    "HTTP_RETRY_EVENTS",
    "REGEX_PROGRAM_SIZE_LIMIT",
    "TCP_RETRY_EVENTS",
    "check_regex",
    "parse_route_spec",
]

HTTP_RETRY_EVENTS = ("server-error", "gateway-error", "client-error", "stream-error")
TCP_RETRY_EVENTS = ("connection-error",)
GRPC_RETRY_EVENTS = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
_STRING_MATCH_KINDS = ("exact", "prefix", "suffix", "regex", "range")
# Envoy refuses (NACKs) a safe_regex whose RE2 program is larger than its runtime's
# re2.max_program_size.error_level, 100 unless the sidecar's runtime raises it.
REGEX_PROGRAM_SIZE_LIMIT = 100


def parse_route_spec(
    spec: Any, namespace: str, warnings: list[FieldError] | None = None
) -> tuple[RouteSpec | None, list[FieldError]]:
    """The spec, or None and the errors. ``warnings`` collects the fields it does not know or implement."""
    errors: list[FieldError] = []
    f = Fields(spec, "spec", errors)
    ref = f.obj("serviceRef", required=True)
    service = ref.string("name", required=True) if ref else None
    if ref and ref.has("namespace") and ref.raw("namespace") != namespace:
        ref.error("namespace", "a Route attaches only to a Service in its own namespace")
    priority = f.integer("priority", minimum=0, maximum=1000)
    kinds = [k for k in ("httpRoute", "grpcRoute", "tcpRoute") if f.has(k)]
    if len(kinds) != 1:
        f.error("", "must set exactly one of httpRoute, grpcRoute, tcpRoute")
        return None, errors
    rf = f.obj(kinds[0])
    parse = {"httpRoute": _http_route, "grpcRoute": _grpc_route, "tcpRoute": _tcp_route}[kinds[0]]
    http = parse(rf, namespace) if rf else None
    if errors or service is None or http is None:
        return None, errors
    spec = RouteSpec(
        service=service,
        http_route=http,
        priority=priority,
        grpc=kinds[0] == "grpcRoute",
        tcp=kinds[0] == "tcpRoute",
    )
    if warnings is not None:
        warnings.extend(field_warnings(f))
    return spec, errors


def _http_route(f: Fields, namespace: str) -> HttpRoute | None:
    mf = f.obj("match", required=True)
    return _routed(f, namespace, _http_match(mf) if mf else None)


def _routed(f: Fields, namespace: str, match: HttpMatch | None) -> HttpRoute | None:
    """The parts httpRoute and grpcRoute share: action, retryPolicy, timeout."""
    af = f.obj("action", required=True)
    targets = _weighted_targets(af, namespace) if af else ()
    retry = _retry_policy(f.obj("retryPolicy"))
    tf = f.obj("timeout")
    timeout = parse_timeout(tf) if tf else None
    if match is None or not targets:
        return None
    return HttpRoute(match=match, weighted_targets=targets, retry_policy=retry, timeout=timeout)


def _tcp_route(f: Fields, namespace: str) -> HttpRoute | None:
    """A tcpRoute has no match: connections to the Service's port are split over the weighted targets."""
    af = f.obj("action", required=True)
    targets = _weighted_targets(af, namespace) if af else ()
    idle = None
    if (tf := f.obj("timeout")) is not None:
        idle = tf.duration_ms("idle")
        for unsupported in ("perRequest",):
            if tf.has(unsupported):
                tf.error(unsupported, "does not apply to a tcpRoute (only idle does)")
    mf = f.obj("match")
    port = mf.integer("port", minimum=1, maximum=65535) if mf else None
    if not targets:
        return None
    timeout = ListenerTimeout(idle_ms=idle) if idle is not None else None
    return HttpRoute(match=HttpMatch(prefix="/", port=port), weighted_targets=targets, timeout=timeout)


def _grpc_route(f: Fields, namespace: str) -> HttpRoute | None:
    """App Mesh grpcRoute -> the HTTP/2 route it is: /{serviceName}/{methodName}, metadata as headers."""
    mf = f.obj("match")
    return _routed(f, namespace, _grpc_match(mf) if mf else HttpMatch(prefix="/", grpc=True))


def _grpc_match(f: Fields) -> HttpMatch | None:
    service = f.string("serviceName")
    method = f.string("methodName")
    if method is not None and service is None:
        f.error("methodName", "requires serviceName")
        return None
    for key, value in (("serviceName", service), ("methodName", method)):
        if value is not None and (not value or "/" in value):
            f.error(key, f"must be a non-empty name without '/', got {value!r}")
            return None
    headers = tuple(h for hf in f.objects("metadata") if (h := _header(hf)))
    port = f.integer("port", minimum=1, maximum=65535)
    if service is None:
        return HttpMatch(prefix="/", headers=headers, grpc=True, port=port)
    if method is None:
        return HttpMatch(prefix=f"/{service}/", headers=headers, grpc=True, port=port)
    return HttpMatch(path_exact=f"/{service}/{method}", headers=headers, grpc=True, port=port)


def _http_match(f: Fields) -> HttpMatch | None:
    prefix = f.string("prefix")
    if prefix is not None and not prefix.startswith("/"):
        f.error("prefix", f"must start with '/', got {prefix!r}")
    exact = regex = None
    if (pf := f.obj("path")) is not None:
        exact = pf.string("exact")
        regex = pf.string("regex")
        if (exact is None) == (regex is None):
            pf.error("", "must set exactly one of exact, regex")
        if regex is not None:
            check_regex(pf, "regex", regex)
    if prefix is None and exact is None and regex is None:
        f.error("", "must set prefix or path; an empty match would silently catch every request")
    elif prefix is not None and (exact is not None or regex is not None):
        f.error("", "set either prefix or path, not both")
    method = f.string("method", choices=_METHODS)
    headers = tuple(h for hf in f.objects("headers") if (h := _header(hf)))
    hf = f.obj("hostname")
    host = _hostname(hf) if hf else None
    cookies = tuple(c for cf in f.objects("cookies") if (c := _cookie(cf)))
    headers = (*((host,) if host else ()), *headers, *cookies)
    query = tuple(q for qf in f.objects("queryParameters") if (q := _query(qf)))
    return HttpMatch(
        prefix=prefix,
        path_exact=exact,
        path_regex=regex,
        method=method,
        headers=headers,
        query_parameters=query,
        port=f.integer("port", minimum=1, maximum=65535),
    )


def _hostname(f: Fields) -> HeaderMatch | None:
    """App Mesh's hostname match (exact or suffix) on the request's authority (Host), port included if sent."""
    exact, suffix = f.string("exact"), f.string("suffix")
    if (exact is None) == (suffix is None):
        f.error("", "must set exactly one of exact, suffix")
        return None
    return HeaderMatch(
        name=":authority", match=StringMatch(exact=exact.lower()) if exact else StringMatch(suffix=suffix)
    )


def _cookie(f: Fields) -> HeaderMatch | None:
    """A named cookie's value, as a regex over the whole Cookie header (Envoy matches header regexes in full)."""
    name = f.string("name", required=True)
    if name is None:
        return None
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
        f.error("name", f"is not a valid cookie name: {name!r}")
        return None
    value = "[^;]*"
    if (mf := f.obj("match")) is not None:
        kinds = [k for k in ("exact", "prefix", "regex") if mf.has(k)]
        if len(kinds) != 1:
            mf.error("", "must set exactly one of exact, prefix, regex")
            return None
        given = mf.string(kinds[0], required=True)
        if given is None:
            return None
        if kinds[0] == "regex" and not check_regex(mf, "regex", given):
            return None
        value = {"exact": re.escape(given), "prefix": re.escape(given) + "[^;]*", "regex": f"(?:{given})"}[kinds[0]]
    pattern = rf"(?:.*;\s*)?{re.escape(name)}={value}(?:;.*)?"
    if not _fits_envoy(f, "name", pattern, "the cookie match"):
        return None
    return HeaderMatch(name="cookie", match=StringMatch(regex=pattern), invert=f.boolean("invert"))


def _header(f: Fields) -> HeaderMatch | None:
    name = f.string("name", required=True)
    invert = f.boolean("invert")
    mf = f.obj("match")
    match = _string_match(mf) if mf else None
    return HeaderMatch(name=name.lower(), match=match, invert=invert) if name else None


def _string_match(f: Fields) -> StringMatch | None:
    present = [k for k in _STRING_MATCH_KINDS if f.has(k)]
    if len(present) != 1:
        f.error("", f"must set exactly one of {', '.join(_STRING_MATCH_KINDS)}")
        return None
    kind = present[0]
    if kind == "range":
        rf = f.obj("range")
        start = rf.integer("start", required=True, minimum=INT64_MIN, maximum=INT64_MAX) if rf else None
        end = rf.integer("end", required=True, minimum=INT64_MIN, maximum=INT64_MAX) if rf else None
        if start is None or end is None or rf is None:
            return None
        if end <= start:
            rf.error("end", f"must be greater than start ({start}), got {end}")
            return None
        return StringMatch(range_start=start, range_end=end)
    value = f.string(kind, required=True)
    if value is None:
        return None
    if kind == "regex" and not check_regex(f, kind, value):
        return None
    return StringMatch(exact=value) if kind == "exact" else StringMatch(**{kind: value})  # type: ignore[arg-type]


def _query(f: Fields) -> QueryParameterMatch | None:
    name = f.string("name", required=True)
    mf = f.obj("match")
    exact = mf.string("exact", required=True) if mf else None
    return QueryParameterMatch(name=name, exact=exact) if name else None


def _weighted_targets(f: Fields, namespace: str) -> tuple[WeightedTarget, ...]:
    targets: list[WeightedTarget] = []
    for tf in f.objects("weightedTargets", required=True):
        ref = tf.obj("virtualNodeRef", required=True)
        name = ref.string("name", required=True) if ref else None
        ns = (ref.string("namespace") if ref else None) or namespace
        weight = tf.integer("weight", required=True, minimum=0, maximum=100)
        port = tf.integer("port", minimum=1, maximum=65535)
        if name is not None and weight is not None:
            targets.append(WeightedTarget(namespace=ns, virtual_node=name, weight=weight, port=port))
    if targets and sum(t.weight for t in targets) == 0:
        f.error("weightedTargets", "weights sum to 0; at least one target needs a weight above 0")
        return ()
    if len({(t.namespace, t.virtual_node, t.port) for t in targets}) != len(targets):
        f.error("weightedTargets", "each virtualNodeRef (and port) may appear only once")
        return ()
    return tuple(targets)


def _retry_policy(f: Fields | None) -> RetryPolicy | None:
    if f is None:
        return None
    http = _events(f, "httpRetryEvents", HTTP_RETRY_EVENTS)
    tcp = _events(f, "tcpRetryEvents", TCP_RETRY_EVENTS)
    grpc = _events(f, "grpcRetryEvents", GRPC_RETRY_EVENTS)
    max_retries = f.integer("maxRetries", required=True, minimum=0, maximum=10)
    if not http and not tcp and not grpc and max_retries != 0:  # {maxRetries: 0} turns the default retries off
        f.error("", "must set httpRetryEvents, tcpRetryEvents or grpcRetryEvents")
    per_retry = f.duration_ms("perRetryTimeout", positive=True)
    base = cap = None
    if (bf := f.obj("backoff")) is not None:
        base = bf.duration_ms("baseInterval", required=True, positive=True)
        cap = bf.duration_ms("maxInterval", positive=True)
        if base is not None and cap is not None and cap < base:
            bf.error("maxInterval", "must not be less than baseInterval")
    return RetryPolicy(
        backoff_base_ms=base,
        backoff_max_ms=cap,
        http_retry_events=http,
        tcp_retry_events=tcp,
        grpc_retry_events=grpc,
        max_retries=max_retries if max_retries is not None else 1,
        per_retry_timeout_ms=per_retry,
    )


def _events(f: Fields, key: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    raw = f.raw(key)
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(e, str) for e in raw):
        f.error(key, "must be a list of strings")
        return ()
    bad = [e for e in raw if e not in allowed]
    if bad:
        f.error(key, f"unknown event(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
        return ()
    return tuple(dict.fromkeys(raw))


def check_regex(f: Fields, key: str, pattern: str) -> bool:
    """Envoy uses RE2. A pattern must compile, and must not use what Python accepts but RE2 does not."""
    try:
        re.compile(pattern)
        unsupported = _not_in_re2(re_parser.parse(pattern))
    except re.error as exc:
        f.error(key, f"invalid regular expression {pattern!r}: {exc}")
        return False
    if unsupported:
        f.error(key, f"{pattern!r} uses {unsupported}, which Envoy's regex engine (RE2) does not support")
        return False
    return _fits_envoy(f, key, pattern, repr(pattern))


def _fits_envoy(f: Fields, key: str, pattern: str, what: str) -> bool:
    """RE2 compiles it and its program is within Envoy's size limit (else Envoy would NACK the whole update)."""
    try:
        size = re2.compile(pattern).programsize
    except re2.error as exc:
        f.error(key, f"{what} is not a valid RE2 regular expression: {exc}")
        return False
    if size > REGEX_PROGRAM_SIZE_LIMIT:
        f.error(
            key,
            f"{what} compiles to an RE2 program of size {size}, over Envoy's limit of {REGEX_PROGRAM_SIZE_LIMIT}: "
            "simplify it (fewer alternatives or repetitions)",
        )
        return False
    return True


_RE2_UNSUPPORTED = {
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "ATOMIC_GROUP": "an atomic group",
    "POSSESSIVE_REPEAT": "a possessive quantifier",
}


def _not_in_re2(parsed: Any) -> str | None:
    """Walks Python's parse tree of a pattern for constructs RE2 lacks; returns the first one's description."""
    for op, arg in parsed:
        if (found := _RE2_UNSUPPORTED.get(str(op))) is not None:
            return found
        for item in arg if isinstance(arg, list | tuple) else ():
            if isinstance(item, re_parser.SubPattern) and (found := _not_in_re2(item)):
                return found
            if isinstance(item, list | tuple):
                for sub in item:
                    if isinstance(sub, re_parser.SubPattern) and (found := _not_in_re2(sub)):
                        return found
    return None
