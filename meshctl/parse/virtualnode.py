"""VirtualNode ``spec`` -> ``VirtualNodeSpec``, collecting field errors (App Mesh v1beta2 field names)."""

from __future__ import annotations

import re
from typing import Any

from meshctl.model import (
    Backend,
    ClientPolicy,
    CloudMapDiscovery,
    ConnectionPool,
    DnsDiscovery,
    DnsResponseType,
    FieldError,
    HealthCheck,
    IpPreference,
    Listener,
    ListenerTimeout,
    ListenerTls,
    Logging,
    OutlierDetection,
    Protocol,
    TlsMode,
    Tracing,
    VirtualNodeSpec,
)
from meshctl.parse.fields import UINT32_MAX, Fields, field_warnings
from meshctl.parse.shared import shared, shared_labels

__all__ = ["parse_virtual_node_spec"]

_PROTOCOLS = tuple(p.value for p in Protocol)
_POOL_FIELDS = ("maxConnections", "maxPendingRequests", "maxRequests", "maxRetries")


def parse_virtual_node_spec(
    spec: Any, namespace: str, warnings: list[FieldError] | None = None
) -> tuple[VirtualNodeSpec | None, list[FieldError]]:
    """The spec, or None and the errors. ``warnings`` collects the fields it does not know or implement."""
    errors: list[FieldError] = []
    f = Fields(spec, "spec", errors)
    discovery = f.obj("serviceDiscovery")
    dns = _dns_discovery(discovery.obj("dns")) if discovery else None
    cloud_map = _cloud_map_discovery(discovery.obj("awsCloudMap")) if discovery else None
    if dns is not None and cloud_map is not None and discovery is not None:
        discovery.error("", "set one of dns, awsCloudMap")
    # A node found by DNS or Cloud Map may select no pods (an external host, ECS tasks); every other node must.
    selector = f.obj("podSelector", required=dns is None and cloud_map is None)
    match_labels = selector.string_map("matchLabels") if selector else {}
    if selector and not match_labels:
        selector.error("matchLabels", "must select at least one label")
    listeners = tuple(_listener(lf) for lf in f.objects("listeners"))
    ports = [li.port for li in listeners if li]
    if len(ports) != len(set(ports)):
        f.error("listeners", "ports must be unique")
    backends = tuple(b for bf in f.objects("backends") if (b := _backend(bf, namespace)))
    logging = _logging(f.obj("logging"))
    tracing = _tracing(f.obj("tracing"))
    defaults = f.obj("backendDefaults")
    backend_defaults = _client_policy(defaults.obj("clientPolicy")) if defaults else None
    if errors:
        return None, errors
    if warnings is not None:
        warnings.extend(field_warnings(f))
    return VirtualNodeSpec(
        pod_selector=shared_labels(match_labels),
        listeners=shared(tuple(li for li in listeners if li)),  # most nodes of a mesh listen alike
        backends=backends,
        logging=logging,
        tracing=tracing,
        backend_defaults=backend_defaults,
        dns=dns,
        cloud_map=cloud_map,
    ), errors


def _cloud_map_discovery(f: Fields | None) -> CloudMapDiscovery | None:
    """App Mesh's ``serviceDiscovery.awsCloudMap``: ``namespaceName``, ``serviceName``, ``attributes`` (instances
    must have each), ``ipPreference``."""
    if f is None:
        return None
    namespace = f.string("namespaceName", required=True)
    service = f.string("serviceName", required=True)
    attributes: dict[str, str] = {}
    for af in f.objects("attributes"):
        key, value = af.string("key", required=True), af.string("value", required=True)
        if key is not None and value is not None:
            if key in attributes:
                af.error("key", f"{key!r} is given twice")
            attributes[key] = value
    preference = f.string("ipPreference", choices=_IP_PREFERENCES)
    for name, value, limit in (("namespaceName", namespace, 1024), ("serviceName", service, 1024)):
        if value is not None and not 0 < len(value) <= limit:
            f.error(name, f"must be 1 to {limit} characters")
            return None
    if namespace is None or service is None:
        return None
    return CloudMapDiscovery(
        namespace_name=namespace,
        service_name=service,
        attributes=tuple(sorted(attributes.items())),
        ip_preference=IpPreference(preference) if preference else None,
    )


_RESPONSE_TYPES = tuple(t.value for t in DnsResponseType)
_IP_PREFERENCES = tuple(p.value for p in IpPreference)
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _dns_discovery(f: Fields | None) -> DnsDiscovery | None:
    """App Mesh's ``serviceDiscovery.dns``: ``hostname``, ``responseType`` (LOADBALANCER by default, as App Mesh),
    ``ipPreference``."""
    if f is None:
        return None
    hostname = f.string("hostname", required=True)
    response_type = f.string("responseType", choices=_RESPONSE_TYPES) or DnsResponseType.LOADBALANCER.value
    preference = f.string("ipPreference", choices=_IP_PREFERENCES)
    if hostname is None:
        return None
    name = hostname.lower().rstrip(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
        f.error("hostname", f"must be a DNS name (labels of letters, digits and '-'), got {hostname!r}")
        return None
    return DnsDiscovery(
        hostname=name,
        response_type=DnsResponseType(response_type),
        ip_preference=IpPreference(preference) if preference else None,
    )


def _listener(f: Fields) -> Listener | None:
    mapping = f.obj("portMapping", required=True)
    if mapping is None:
        return None
    port = mapping.integer("port", required=True, minimum=1, maximum=65535)
    protocol = mapping.string("protocol", required=True, choices=_PROTOCOLS)
    pool = _connection_pool(f.obj("connectionPool"))
    outlier = _outlier_detection(f.obj("outlierDetection"))
    health = _health_check(f.obj("healthCheck"))
    timeout = _protocol_timeout(f.obj("timeout"))
    tls = _listener_tls(f.obj("tls"))
    if port is None or protocol is None:
        return None
    return Listener(
        port=port,
        protocol=Protocol(protocol),
        connection_pool=pool,
        outlier_detection=outlier,
        health_check=health,
        timeout=timeout,
        tls=tls,
    )


_TLS_MODES = tuple(m.value for m in TlsMode)


def _listener_tls(f: Fields | None) -> ListenerTls | None:
    """App Mesh's ``listeners[].tls``: ``mode``; ``certificate`` (``file`` or ``sds``; else the mesh CA issues
    it); ``validation.trust`` (``file`` or ``sds``; else the mesh roots) and
    ``validation.subjectAlternativeNames.match.exact``. ``acm`` sources are left unread: a warning names them."""
    if f is None:
        return None
    mode = f.string("mode", required=True, choices=_TLS_MODES)
    sources = _tls_sources(f)
    if mode is None:
        return None
    return ListenerTls(mode=TlsMode(mode), **sources)


def _client_policy(f: Fields | None) -> ClientPolicy | None:
    """App Mesh's ``clientPolicy.tls`` (on a backend or in ``backendDefaults``): ``enforce`` (default true),
    ``ports``, ``certificate`` and ``validation`` as on a listener."""
    tls = f.obj("tls", required=True) if f is not None else None
    if tls is None:
        return None
    enforce = tls.boolean("enforce", default=True)
    ports = tuple(tls.integer_list("ports", minimum=1, maximum=65535))
    return ClientPolicy(enforce=enforce, ports=ports, **_tls_sources(tls))


def _tls_sources(f: Fields) -> dict[str, Any]:
    """``certificate`` and ``validation``, shared by listener TLS and client policies."""
    values: dict[str, Any] = {}
    if (cert := f.obj("certificate")) is not None:
        if (file := cert.obj("file")) is not None:
            values["certificate_chain_file"] = file.string("certificateChain", required=True)
            values["private_key_file"] = file.string("privateKey", required=True)
        if (sds := cert.obj("sds")) is not None:
            values["certificate_sds"] = sds.string("secretName", required=True)
        if file is not None and sds is not None:
            cert.error("sds", "give one certificate source: file or sds")
    if (validation := f.obj("validation")) is not None:
        if (trust := validation.obj("trust")) is not None:
            if (tfile := trust.obj("file")) is not None:
                values["trust_file"] = tfile.string("certificateChain", required=True)
            if (tsds := trust.obj("sds")) is not None:
                values["trust_sds"] = tsds.string("secretName", required=True)
            if tfile is not None and tsds is not None:
                trust.error("sds", "give one trust source: file or sds")
        if (sans := validation.obj("subjectAlternativeNames")) is not None and (
            match := sans.obj("match", required=True)
        ) is not None:
            values["subject_alt_names"] = tuple(match.string_list("exact", required=True))
    return values


def _connection_pool(f: Fields | None) -> ConnectionPool | None:
    """App Mesh nests the pool under the protocol (``http``, ``http2``, ``grpc``, ``tcp``)."""
    if f is None:
        return None
    values: dict[str, int | None] = {}
    for proto in f.field_names():
        if proto not in _PROTOCOLS:
            f.error(proto, f"unknown protocol; expected one of {', '.join(_PROTOCOLS)}")
            continue
        pf = f.obj(proto)
        if pf is None:
            continue
        for name in _POOL_FIELDS:
            if (value := pf.integer(name, minimum=1, maximum=UINT32_MAX)) is not None:
                values[name] = value
        if (bf := pf.obj("retryBudget")) is not None:
            values["budgetPercent"] = bf.integer("budgetPercent", required=True, minimum=0, maximum=100)
            values["minRetryConcurrency"] = bf.integer("minRetryConcurrency", minimum=0, maximum=UINT32_MAX)
        if (ms := pf.duration_ms("connectTimeout", positive=True)) is not None:
            values["connectTimeout"] = ms
    return ConnectionPool(
        max_connections=values.get("maxConnections"),
        max_pending_requests=values.get("maxPendingRequests"),
        max_requests=values.get("maxRequests"),
        max_retries=values.get("maxRetries"),
        retry_budget_percent=values.get("budgetPercent"),
        retry_budget_min_concurrency=values.get("minRetryConcurrency"),
        connect_timeout_ms=values.get("connectTimeout"),
    )


def _outlier_detection(f: Fields | None) -> OutlierDetection | None:
    if f is None:
        return None
    errors = f.integer("maxServerErrors", required=True, minimum=1, maximum=UINT32_MAX)
    interval = f.duration_ms("interval", required=True, positive=True)
    ejection = f.duration_ms("baseEjectionDuration", required=True, positive=True)
    percent = f.integer("maxEjectionPercent", required=True, minimum=0, maximum=100)
    if None in (errors, interval, ejection, percent):
        return None
    return OutlierDetection(
        max_server_errors=errors,  # type: ignore[arg-type]
        interval_ms=interval,  # type: ignore[arg-type]
        base_ejection_duration_ms=ejection,  # type: ignore[arg-type]
        max_ejection_percent=percent,  # type: ignore[arg-type]
    )


def _health_check(f: Fields | None) -> HealthCheck | None:
    if f is None:
        return None
    protocol = f.string("protocol", required=True, choices=_PROTOCOLS)
    path = f.string("path")
    if protocol in ("http", "http2") and not path:
        f.error("path", "is required for an http health check")
    port = f.integer("port", minimum=1, maximum=65535)
    interval = f.integer("intervalMillis", required=True, minimum=5000, maximum=300000)
    timeout = f.integer("timeoutMillis", required=True, minimum=2000, maximum=60000)
    healthy = f.integer("healthyThreshold", required=True, minimum=2, maximum=10)
    unhealthy = f.integer("unhealthyThreshold", required=True, minimum=2, maximum=10)
    if protocol is None or None in (interval, timeout, healthy, unhealthy):
        return None
    return HealthCheck(
        protocol=Protocol(protocol),
        path=path,
        port=port,
        interval_ms=interval,  # type: ignore[arg-type]
        timeout_ms=timeout,  # type: ignore[arg-type]
        healthy_threshold=healthy,  # type: ignore[arg-type]
        unhealthy_threshold=unhealthy,  # type: ignore[arg-type]
    )


def _protocol_timeout(f: Fields | None) -> ListenerTimeout | None:
    """App Mesh listener timeouts sit under the protocol: ``timeout: {http: {perRequest, idle}}``."""
    if f is None:
        return None
    found: ListenerTimeout | None = None
    for proto in f.field_names():
        if proto not in _PROTOCOLS:
            f.error(proto, f"unknown protocol; expected one of {', '.join(_PROTOCOLS)}")
            continue
        if (pf := f.obj(proto)) is not None:
            found = parse_timeout(pf)
    return found


def parse_timeout(f: Fields) -> ListenerTimeout:
    return ListenerTimeout(per_request_ms=f.duration_ms("perRequest"), idle_ms=f.duration_ms("idle"))


def _backend(f: Fields, namespace: str) -> Backend | None:
    vs = f.obj("virtualService", required=True)
    ref = vs.obj("virtualServiceRef", required=True) if vs else None
    if ref is None:
        return None
    name = ref.string("name", required=True)
    ns = ref.string("namespace") or namespace
    policy = _client_policy(vs.obj("clientPolicy")) if vs else None
    return Backend(namespace=ns, name=name, client_policy=policy) if name else None


def _logging(f: Fields | None) -> Logging | None:
    if f is None:
        return None
    access = f.obj("accessLog", required=True)
    file = access.obj("file", required=True) if access else None
    if file is None:
        return None
    path = file.string("path", required=True)
    text: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    if (ff := file.obj("format")) is not None:
        if ff.has("text") == ff.has("json"):
            ff.error("", "must set exactly one of text, json")
        text = ff.string("text")
        if text is not None and not text.endswith("\n"):
            text += "\n"  # one line per request
        fields = tuple(
            (k, v)
            for jf in ff.objects("json")
            if (k := jf.string("key", required=True)) and (v := jf.string("value", required=True))
        )
    return Logging(access_log_path=path, text_format=text, json_format=fields) if path else None


_TRACING_PATHS = {"zipkin": "/api/v2/spans", "opentelemetry": "/v1/traces", "xray": ""}


def _tracing(f: Fields | None) -> Tracing | None:
    if f is None:
        return None
    providers = [p for p in _TRACING_PATHS if f.has(p)]
    if len(providers) != 1:
        f.error("", f"must set exactly one of {', '.join(_TRACING_PATHS)}")
        return None
    provider = providers[0]
    pf = f.obj(provider)
    address = pf.string("address", required=True) if pf else None
    path = (pf.string("path") if pf and provider != "xray" else None) or _TRACING_PATHS[provider]
    raw_percent = f.raw("samplingPercent")
    percent = 100.0
    if raw_percent is not None:
        if isinstance(raw_percent, bool) or not isinstance(raw_percent, int | float) or not 0 <= raw_percent <= 100:
            f.error("samplingPercent", f"must be a number from 0 to 100, got {raw_percent!r}")
        else:
            percent = float(raw_percent)
    if address is None or pf is None:
        return None
    host, _, port_text = address.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        pf.error("address", f"must be host:port, got {address!r}")
        return None
    return Tracing(provider=provider, host=host, port=int(port_text), path=path, sampling_percent=percent)
