"""Gateway API documents (``gateway.networking.k8s.io/v1``) -> the model: Gateway, GatewayClass, HTTPRoute, GRPCRoute,
ReferenceGrant.

Defaults are the spec's (parentRef Gateway kind, a rule matching PathPrefix "/", backendRef weight 1); a value the
spec allows but meshctl cannot serve is an error on its field, which the status reports as UnsupportedValue.
"""

from __future__ import annotations

import re
from typing import Any

from meshctl.model.gateway import (
    GATEWAY_GROUP,
    AllowedRoutes,
    BackendRef,
    CertificateRef,
    ExtensionRef,
    Gateway,
    GatewayClass,
    GatewayListener,
    GatewayRouteSpec,
    GatewayRule,
    HeaderModifier,
    HTTPRoute,
    L4Route,
    Mirror,
    ParametersRef,
    ParentRef,
    Redirect,
    ReferenceGrant,
    Rewrite,
    RouteRetry,
)
from meshctl.model.matches import HeaderMatch, HttpMatch, QueryParameterMatch, StringMatch
from meshctl.model.meta import FieldError, LabelSelector, Meta
from meshctl.parse.fields import MAX_DURATION_MS, Fields, field_warnings
from meshctl.parse.ingress import parse_lifecycle
from meshctl.parse.route import check_regex

__all__ = [
    "label_selector",
    "parse_gateway",
    "parse_gateway_class",
    "parse_gateway_duration_ms",
    "parse_http_route",
    "parse_l4_route",
    "parse_reference_grant",
]

_METHODS = ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_HTTP_FILTERS = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
    "RequestMirror",
    "ExtensionRef",
)
_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef")
_DURATION = re.compile(r"(?:([0-9]{1,5})(h|ms|m|s))")
_DURATION_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# RFC 7230 token: what a header name may be (Envoy refuses others).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def parse_gateway_duration_ms(value: str) -> int | None:
    """GEP-2257 durations ("1h", "500ms", "1m30s"), in ms; None when malformed."""
    if not re.fullmatch(r"(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}", value):
        return None
    total = sum(int(n) * _DURATION_MS[unit] for n, unit in _DURATION.findall(value))
    return total if total <= MAX_DURATION_MS else None


def parse_http_route(meta: Meta, doc: dict[str, Any], kind: str, created: str = "") -> HTTPRoute:
    """An HTTPRoute or (``kind`` GRPCRoute) a GRPCRoute; errors on the fields meshctl cannot serve."""
    errors: list[FieldError] = []
    f = Fields(doc.get("spec"), "spec", errors)
    grpc = kind == "GRPCRoute"
    parents = tuple(p for pf in f.objects("parentRefs") if (p := _parent(pf, meta.namespace)))
    hostnames = tuple(f.string_list("hostnames"))
    rule_fields = list(f.objects("rules"))
    rules = tuple(r for rf in rule_fields if (r := _rule(rf, meta.namespace, grpc)))
    if not rule_fields:
        rules = (GatewayRule(name=None, matches=(_default_match(grpc),)),)
    warnings = field_warnings(f)
    if errors:
        return HTTPRoute(
            meta=meta,
            spec=None,
            errors=tuple(errors),
            warnings=tuple(warnings),
            kind=kind,
            created=created,
            parents_if_invalid=parents,
        )
    spec = GatewayRouteSpec(parents=parents, hostnames=hostnames, rules=rules, grpc=grpc)
    return HTTPRoute(meta=meta, spec=spec, warnings=tuple(warnings), kind=kind, created=created)


def _default_match(grpc: bool) -> HttpMatch:
    return HttpMatch(prefix="/", grpc=grpc)


def _parent(f: Fields, namespace: str) -> ParentRef | None:
    name = f.string("name", required=True)
    group = f.string("group")
    kind = f.string("kind")
    port = f.integer("port", minimum=1, maximum=65535)
    if name is None:
        return None
    return ParentRef(
        group=GATEWAY_GROUP if group is None else group,
        kind="Gateway" if kind is None else kind,
        namespace=f.string("namespace") or namespace,
        name=name,
        port=port,
        section_name=f.string("sectionName"),
    )


def _rule(f: Fields, namespace: str, grpc: bool) -> GatewayRule | None:
    before = len(f.errors)
    match_fields = list(f.objects("matches"))
    parse_match = _grpc_match if grpc else _http_match
    matches = tuple(m for mf in match_fields if (m := parse_match(mf)))
    if not match_fields:
        matches = (_default_match(grpc),)
    backends = tuple(b for bf in f.objects("backendRefs") if (b := _backend(bf, namespace, weighted=True)))
    request_headers = response_headers = None
    redirect = rewrite = None
    mirrors: list[Mirror] = []
    extensions: list[ExtensionRef] = []
    allowed = _GRPC_FILTERS if grpc else _HTTP_FILTERS
    seen: set[str] = set()
    for ff in f.objects("filters"):
        kind = ff.string("type", required=True)
        if kind is None:
            continue
        if kind not in allowed:
            ff.error("type", f"{kind!r} is not supported by meshctl; supported: {', '.join(allowed)}")
            continue
        if kind == "ExtensionRef":
            ef = ff.obj("extensionRef", required=True)
            ref = (
                (ef.string("group"), ef.string("kind", required=True), ef.string("name", required=True)) if ef else None
            )
            if ref is not None and ref[1] is not None and ref[2] is not None:
                extensions.append(ExtensionRef(group=ref[0] or "", kind=ref[1], name=ref[2]))
            continue
        if kind != "RequestMirror" and kind in seen:
            ff.error("type", f"{kind} may appear only once in a rule")
            continue
        seen.add(kind)
        if kind == "RequestHeaderModifier":
            request_headers = _headers(ff.obj("requestHeaderModifier", required=True))
        elif kind == "ResponseHeaderModifier":
            response_headers = _headers(ff.obj("responseHeaderModifier", required=True))
        elif kind == "RequestRedirect":
            redirect = _redirect(ff.obj("requestRedirect", required=True), matches)
        elif kind == "URLRewrite":
            rewrite = _rewrite(ff.obj("urlRewrite", required=True), matches)
        elif (mirror := _mirror(ff.obj("requestMirror", required=True), namespace)) is not None:
            mirrors.append(mirror)
    if redirect is not None and backends:
        f.error("filters", "a RequestRedirect rule must not have backendRefs (the redirect answers the request)")
    if redirect is not None and rewrite is not None:
        f.error("filters", "RequestRedirect and URLRewrite cannot be used together")
    request_timeout = backend_timeout = None
    if (tf := f.obj("timeouts")) is not None:
        request_timeout = _duration(tf, "request")
        backend_timeout = _duration(tf, "backendRequest")
        if request_timeout and backend_timeout and backend_timeout > request_timeout:
            tf.error("backendRequest", "must not be longer than request")
    retry = _retry(f.obj("retry"))
    if len(f.errors) > before:
        return None
    return GatewayRule(
        name=f.string("name"),
        matches=matches,
        backends=backends,
        request_headers=request_headers,
        response_headers=response_headers,
        redirect=redirect,
        rewrite=rewrite,
        mirrors=tuple(mirrors),
        request_timeout_ms=request_timeout,
        backend_timeout_ms=backend_timeout,
        retry=retry,
        extensions=tuple(extensions),
    )


def _duration(f: Fields, key: str) -> int | None:
    raw = f.string(key)
    if raw is None:
        return None
    ms = parse_gateway_duration_ms(raw)
    if ms is None:
        f.error(key, f"must be a duration like 10s, 500ms or 1m30s (at most a year), got {raw!r}")
    return ms


def _retry(f: Fields | None) -> RouteRetry | None:
    if f is None:
        return None
    attempts = f.integer("attempts", minimum=0, maximum=10)
    codes = f.integer_list("codes", minimum=400, maximum=599)
    backoff = _duration(f, "backoff")
    return RouteRetry(attempts=attempts if attempts is not None else 1, codes=tuple(codes), backoff_ms=backoff)


def _string_value(f: Fields, kind: str) -> StringMatch | None:
    value = f.string("value", required=True)
    if value is None:
        return None
    if kind == "RegularExpression":
        return StringMatch(regex=value) if check_regex(f, "value", value) else None
    return StringMatch(exact=value)


def _match_type(f: Fields) -> str:
    """Exact unless RegularExpression (an unknown type is an error on the field, read as Exact)."""
    return f.string("type", choices=("Exact", "RegularExpression")) or "Exact"


def _header_matches(f: Fields, key: str) -> tuple[HeaderMatch, ...]:
    found: list[HeaderMatch] = []
    names: set[str] = set()
    for hf in f.objects(key):
        kind = _match_type(hf)
        name = hf.string("name", required=True)
        if name is None:
            continue
        if not _HEADER_NAME.fullmatch(name):
            hf.error("name", f"is not a valid header name: {name!r}")
            continue
        if name.lower() in names:
            continue  # the spec: later matches of the same (case-insensitive) name are ignored
        names.add(name.lower())
        if (sm := _string_value(hf, kind)) is not None:
            found.append(HeaderMatch(name=name.lower(), match=sm))
    return tuple(found)


def _http_match(f: Fields) -> HttpMatch | None:
    before = len(f.errors)
    prefix = segment = exact = regex = None
    pf = f.obj("path")
    kind = (pf.string("type", choices=("Exact", "PathPrefix", "RegularExpression")) if pf else None) or "PathPrefix"
    value = (pf.string("value") if pf else None) or "/"
    if kind == "RegularExpression":
        assert pf is not None
        regex = value if check_regex(pf, "value", value) else None
    elif not value.startswith("/"):
        if pf is not None:
            pf.error("value", f"must start with '/', got {value!r}")
    elif kind == "Exact":
        exact = value
    elif value.rstrip("/") == "":
        prefix = "/"
    else:
        segment = value.rstrip("/")  # the spec: a trailing slash is ignored
    headers = _header_matches(f, "headers")
    query: list[QueryParameterMatch] = []
    for qf in f.objects("queryParams"):
        kind_q = _match_type(qf)
        name = qf.string("name", required=True)
        sm = _string_value(qf, kind_q) if name else None
        if name and sm is not None and all(q.name != name for q in query):
            query.append(QueryParameterMatch(name=name, exact=sm.exact, regex=sm.regex))
    method = f.string("method", choices=_METHODS)
    if len(f.errors) > before:
        return None
    return HttpMatch(
        prefix=prefix,
        segment_prefix=segment,
        path_exact=exact,
        path_regex=regex,
        method=method,
        headers=headers,
        query_parameters=tuple(query),
    )


def _grpc_match(f: Fields) -> HttpMatch | None:
    """GRPCRoute's method match -> the HTTP/2 path: /service/method (Exact), or a regex over both parts."""
    before = len(f.errors)
    headers = _header_matches(f, "headers")
    mf = f.obj("method")
    if mf is None:
        return HttpMatch(prefix="/", headers=headers, grpc=True) if len(f.errors) == before else None
    kind = _match_type(mf)
    service, method = mf.string("service"), mf.string("method")
    if service is None and method is None:
        mf.error("", "must set service or method (or both)")
        return None
    for key, value in (("service", service), ("method", method)):
        if value is not None and kind == "Exact" and (not value or "/" in value):
            mf.error(key, f"must be a name without '/', got {value!r}")
        if value is not None and kind == "RegularExpression":
            check_regex(mf, key, value)
    if len(f.errors) > before:
        return None
    if kind == "Exact":
        if service is not None and method is not None:
            return HttpMatch(path_exact=f"/{service}/{method}", headers=headers, grpc=True)
        if service is not None:
            return HttpMatch(prefix=f"/{service}/", headers=headers, grpc=True)
        return HttpMatch(path_regex=f"/[^/]+/{re.escape(method or '')}", headers=headers, grpc=True)
    return HttpMatch(path_regex=f"/(?:{service or '[^/]+'})/(?:{method or '[^/]+'})", headers=headers, grpc=True)


def _headers(f: Fields | None) -> HeaderModifier | None:
    if f is None:
        return None

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for hf in f.objects(key):
            name, value = hf.string("name", required=True), hf.string("value")
            if name is not None and not _HEADER_NAME.fullmatch(name):
                hf.error("name", f"is not a valid header name: {name!r}")
            elif name is not None:
                out.append((name, value or ""))
        return tuple(out)

    set_, add = pairs("set"), pairs("add")
    remove = tuple(f.string_list("remove"))
    return HeaderModifier(set=set_, add=add, remove=remove)


def _path_modifier(f: Fields, matches: tuple[HttpMatch, ...]) -> tuple[str | None, str | None]:
    kind = f.string("type", required=True, choices=("ReplaceFullPath", "ReplacePrefixMatch"))
    if kind == "ReplaceFullPath":
        return f.string("replaceFullPath", required=True), None
    if kind == "ReplacePrefixMatch":
        prefix = f.string("replacePrefixMatch", required=True)
        if any(m.segment_prefix is None and m.prefix is None for m in matches):
            f.error("type", "ReplacePrefixMatch needs every match of the rule to be a PathPrefix")
        return None, prefix
    return None, None


def _redirect(f: Fields | None, matches: tuple[HttpMatch, ...]) -> Redirect | None:
    if f is None:
        return None
    full = prefix = None
    if (pf := f.obj("path")) is not None:
        full, prefix = _path_modifier(pf, matches)
    code = f.integer("statusCode", minimum=300, maximum=399)
    if code is not None and code not in _REDIRECT_CODES:
        f.error("statusCode", f"must be one of {', '.join(map(str, _REDIRECT_CODES))}, got {code}")
    return Redirect(
        scheme=f.string("scheme", choices=("http", "https")),
        hostname=f.string("hostname"),
        port=f.integer("port", minimum=1, maximum=65535),
        full_path=full,
        prefix_path=prefix,
        status_code=code if code in _REDIRECT_CODES else 302,
    )


def _rewrite(f: Fields | None, matches: tuple[HttpMatch, ...]) -> Rewrite | None:
    if f is None:
        return None
    full = prefix = None
    if (pf := f.obj("path")) is not None:
        full, prefix = _path_modifier(pf, matches)
    return Rewrite(hostname=f.string("hostname"), full_path=full, prefix_path=prefix)


def _mirror(f: Fields | None, namespace: str) -> Mirror | None:
    if f is None:
        return None
    bf = f.obj("backendRef", required=True)
    backend = _backend(bf, namespace, weighted=False) if bf else None
    percent: float | None = f.integer("percent", minimum=0, maximum=100)
    if (ff := f.obj("fraction")) is not None:
        numerator = ff.integer("numerator", required=True, minimum=0, maximum=2**31 - 1)
        denominator = ff.integer("denominator", minimum=1, maximum=2**31 - 1) or 100
        if numerator is not None:
            if numerator > denominator:
                ff.error("numerator", "must not be greater than denominator")
            percent = 100.0 * numerator / denominator
    return Mirror(backend=backend, percent=percent) if backend else None


def _backend(f: Fields, namespace: str, *, weighted: bool) -> BackendRef | None:
    name = f.string("name", required=True)
    group = f.string("group") or ""
    kind = f.string("kind") or "Service"
    port = f.integer("port", minimum=1, maximum=65535)
    weight = f.integer("weight", minimum=0, maximum=1_000_000) if weighted else None
    request_headers = response_headers = None
    for ff in f.objects("filters") if weighted else ():
        kind_f = ff.string("type", required=True)
        if kind_f == "RequestHeaderModifier":
            request_headers = _headers(ff.obj("requestHeaderModifier", required=True))
        elif kind_f == "ResponseHeaderModifier":
            response_headers = _headers(ff.obj("responseHeaderModifier", required=True))
        elif kind_f is not None:
            ff.error(
                "type",
                f"{kind_f!r} is not supported on a backendRef; supported: RequestHeaderModifier, "
                "ResponseHeaderModifier",
            )
    if name is None:
        return None
    if port is None and group in ("", "core") and kind == "Service":
        f.error("port", "is required for a Service backend")
        return None
    return BackendRef(
        group=group,
        kind=kind,
        namespace=f.string("namespace") or namespace,
        name=name,
        port=port,
        weight=1 if weight is None else weight,
        request_headers=request_headers,
        response_headers=response_headers,
    )


def parse_reference_grant(meta: Meta, doc: dict[str, Any]) -> ReferenceGrant:
    """Malformed entries are left out: a grant that cannot be read grants nothing (the safe reading)."""
    errors: list[FieldError] = []
    f = Fields(doc.get("spec"), "spec", errors)
    from_: list[tuple[str, str, str]] = []
    for ff in f.objects("from"):
        group, kind, ns = ff.string("group"), ff.string("kind"), ff.string("namespace")
        if group is not None and kind and ns:
            from_.append((group, kind, ns))
    to: list[tuple[str, str, str | None]] = []
    for tf in f.objects("to"):
        group, kind = tf.string("group"), tf.string("kind")
        if group is not None and kind:
            to.append((group, kind, tf.string("name") or None))
    return ReferenceGrant(meta=meta, from_=tuple(from_), to=tuple(to))


_LISTENER_PROTOCOLS = ("HTTP", "HTTPS", "TLS", "TCP", "UDP")
_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_gateway_class(meta: Meta, doc: dict[str, Any]) -> GatewayClass:
    """Only the controller matters to meshctl: a class without one is nobody's (and so not ours)."""
    errors: list[FieldError] = []
    f = Fields(doc.get("spec"), "spec", errors)
    controller = f.string("controllerName") or ""
    pf = f.obj("parametersRef")
    return GatewayClass(meta=meta, controller_name=controller, parameters=_parameters(pf) if pf else None)


def _parameters(f: Fields) -> ParametersRef | None:
    group, kind, name = f.string("group"), f.string("kind"), f.string("name")
    if kind is None or name is None:
        return None
    return ParametersRef(group=group or "", kind=kind, name=name, namespace=f.string("namespace"))


def parse_l4_route(meta: Meta, doc: dict[str, Any], kind: str) -> L4Route:
    """A TCPRoute, UDPRoute or TLSRoute: parents, each rule's backendRefs and (TLSRoute) hostnames."""
    errors: list[FieldError] = []
    f = Fields(doc.get("spec"), "spec", errors)
    parents = tuple(p for pf in f.objects("parentRefs") if (p := _parent(pf, meta.namespace)))
    hostnames = tuple(h.lower() for h in f.string_list("hostnames"))
    backends: list[BackendRef] = []
    rules = list(f.objects("rules", required=True))
    for rf in rules:
        backends.extend(b for bf in rf.objects("backendRefs") if (b := _backend(bf, meta.namespace, weighted=True)))
    return L4Route(
        meta=meta,
        kind=kind,
        parents=parents,
        backends=tuple(backends),
        hostnames=hostnames,
        rules=len(rules),
        errors=tuple(errors),
    )


def parse_gateway(meta: Meta, doc: dict[str, Any]) -> Gateway:
    """A Gateway; a listener that cannot be read is an error on its field (the Gateway is then not Accepted)."""
    errors: list[FieldError] = []
    f = Fields(doc.get("spec"), "spec", errors)
    class_name = f.string("gatewayClassName", required=True) or ""
    listeners = tuple(li for lf in f.objects("listeners", required=True) if (li := _listener(lf, meta.namespace)))
    addresses: list[tuple[str, str]] = []
    for af in f.objects("addresses"):
        kind = af.string("type") or "IPAddress"
        value = af.string("value", required=True)
        if value is not None:
            addresses.append((kind, value))
    parameters = None
    if (inf := f.obj("infrastructure")) is not None:
        inf.obj("labels")
        inf.obj("annotations")  # (read: known fields; they label what an in-cluster gateway deploys)
        pf = inf.obj("parametersRef")
        parameters = _parameters(pf) if pf is not None else None
    names = [li.name for li in listeners]
    for i, name in enumerate(names):
        if name in names[:i]:
            errors.append(FieldError(path=f"spec.listeners[{i}].name", message=f"{name!r} is used by another listener"))
    warnings = field_warnings(f)
    return Gateway(
        meta=meta,
        class_name=class_name,
        listeners=listeners,
        addresses=tuple(addresses),
        parameters=parameters,
        errors=tuple(errors),
        warnings=tuple(warnings),
        lifecycle=parse_lifecycle(doc),
    )


def _listener(f: Fields, namespace: str) -> GatewayListener | None:
    name = f.string("name", required=True)
    port = f.integer("port", minimum=1, maximum=65535, required=True)
    protocol = f.string("protocol", required=True)
    hostname = f.string("hostname")
    if hostname is not None and not _HOSTNAME.fullmatch(hostname):
        f.error("hostname", f"{hostname!r} is not a DNS name (a leading '*.' is allowed)")
        hostname = None
    tls_mode = None
    certificates: list[CertificateRef] = []
    if (tf := f.obj("tls")) is not None:
        tls_mode = tf.string("mode", choices=("Terminate", "Passthrough")) or "Terminate"
        for cf in tf.objects("certificateRefs"):
            cert_name = cf.string("name", required=True)
            if cert_name is not None:
                certificates.append(
                    CertificateRef(
                        group=cf.string("group") or "",
                        kind=cf.string("kind") or "Secret",
                        namespace=cf.string("namespace") or namespace,
                        name=cert_name,
                    )
                )
    allowed = AllowedRoutes()
    if (rf := f.obj("allowedRoutes")) is not None:
        allowed = _allowed_routes(rf)
    if name is None or port is None or protocol is None:
        return None
    return GatewayListener(
        name=name,
        port=port,
        protocol=protocol,
        hostname=hostname.lower() if hostname else None,
        tls_mode=tls_mode,
        certificates=tuple(certificates),
        allowed=allowed,
    )


def _allowed_routes(f: Fields) -> AllowedRoutes:
    namespaces_from, selector = "Same", None
    if (nf := f.obj("namespaces")) is not None:
        namespaces_from = nf.string("from", choices=("All", "Same", "Selector", "None")) or "Same"
        if (sf := nf.obj("selector")) is not None:
            selector = label_selector(sf)
        elif namespaces_from == "Selector":
            nf.error("selector", "is required when from is Selector")
    kinds = tuple(
        ((kf.string("group") if kf.has("group") else GATEWAY_GROUP) or "", kind)
        for kf in f.objects("kinds")
        if (kind := kf.string("kind", required=True))
    )
    return AllowedRoutes(namespaces_from=namespaces_from, selector=selector, kinds=kinds)


def label_selector(f: Fields) -> LabelSelector:
    """A Kubernetes label selector (``matchLabels``, ``matchExpressions``); a malformed expression is an error on its
    field."""
    expressions = []
    for ef in f.objects("matchExpressions"):
        key = ef.string("key", required=True)
        operator = ef.string("operator", required=True, choices=_SELECTOR_OPERATORS)
        values = tuple(ef.string_list("values"))
        if key is not None and operator is not None:
            expressions.append((key, operator, values))
    return LabelSelector(match_labels=f.string_map("matchLabels"), expressions=tuple(expressions))


_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", re.IGNORECASE)
