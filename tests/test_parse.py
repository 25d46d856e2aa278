"""Manifest validation: every problem is reported with its field path, table-tested."""

from __future__ import annotations

import pytest

from meshctl.parse import parse_document
from meshctl.parse.fields import parse_duration_ms
from tests.manifests import route, virtual_node


def errors_of(doc: dict) -> list[str]:
    obj = parse_document(doc)
    assert obj is not None
    return [str(e) for e in obj.errors]


ROUTE_CASES = [
    (
        "weights-sum-to-zero",
        {"targets": {"a": 0, "b": 0}},
        ["spec.httpRoute.action.weightedTargets: weights sum to 0; at least one target needs a weight above 0"],
    ),
    (
        "weight-over-100",
        {"targets": {"a": 101}},
        ["spec.httpRoute.action.weightedTargets[0].weight: must be at most 100, got 101"],
    ),
    (
        "negative-weight",
        {"targets": {"a": -1}},
        ["spec.httpRoute.action.weightedTargets[0].weight: must be at least 0, got -1"],
    ),
    (
        "negative-timeout",
        {"timeout": {"perRequest": {"unit": "ms", "value": -5}}},
        ["spec.httpRoute.timeout.perRequest: must not be negative, got {'unit': 'ms', 'value': -5}"],
    ),
    (
        "string-duration",
        {"timeout": {"idle": "2s"}},
        ["spec.httpRoute.timeout.idle: must be a duration like {unit: ms, value: 500}, got '2s'"],
    ),
    (
        "bad-duration-unit",
        {"timeout": {"perRequest": {"unit": "h", "value": 1}}},
        ["spec.httpRoute.timeout.perRequest: unit must be 'ms' or 's', got 'h'"],
    ),
    (
        "empty-match",
        {"match": {}},
        ["spec.httpRoute.match: must set prefix or path; an empty match would silently catch every request"],
    ),
    (
        "prefix-and-path",
        {"match": {"prefix": "/", "path": {"exact": "/x"}}},
        ["spec.httpRoute.match: set either prefix or path, not both"],
    ),
    (
        "prefix-without-slash",
        {"match": {"prefix": "api"}},
        ["spec.httpRoute.match.prefix: must start with '/', got 'api'"],
    ),
    (
        "regex-does-not-compile",
        {"match": {"path": {"regex": "(["}}},
        ["spec.httpRoute.match.path.regex: invalid regular expression '([': unterminated character set at position 1"],
    ),
    (
        "header-two-matchers",
        {"match": {"prefix": "/", "headers": [{"name": "x", "match": {"exact": "a", "prefix": "b"}}]}},
        ["spec.httpRoute.match.headers[0].match: must set exactly one of exact, prefix, suffix, regex, range"],
    ),
    (
        "header-bad-range",
        {"match": {"prefix": "/", "headers": [{"name": "x", "match": {"range": {"start": 5, "end": 5}}}]}},
        ["spec.httpRoute.match.headers[0].match.range.end: must be greater than start (5), got 5"],
    ),
    (
        "unknown-method",
        {"match": {"prefix": "/", "method": "FETCH"}},
        [
            "spec.httpRoute.match.method: must be one of CONNECT, DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, TRACE; got 'FETCH'"
        ],
    ),
    (
        "unknown-retry-event",
        {"retryPolicy": {"httpRetryEvents": ["teapot"], "maxRetries": 1}},
        [
            "spec.httpRoute.retryPolicy.httpRetryEvents: unknown event(s) teapot; allowed: server-error, gateway-error, "
            "client-error, stream-error",
            "spec.httpRoute.retryPolicy: must set httpRetryEvents, tcpRetryEvents or grpcRetryEvents",
        ],
    ),
    (
        "retry-zero-per-try",
        {
            "retryPolicy": {
                "httpRetryEvents": ["server-error"],
                "maxRetries": 1,
                "perRetryTimeout": {"unit": "s", "value": 0},
            }
        },
        ["spec.httpRoute.retryPolicy.perRetryTimeout: must be greater than zero"],
    ),
    (
        "duplicate-target",
        {"targets": None, "raw_targets": [{"virtualNodeRef": {"name": "a"}, "weight": 1}] * 2},
        ["spec.httpRoute.action.weightedTargets: each virtualNodeRef (and port) may appear only once"],
    ),
]


@pytest.mark.parametrize(("case", "change", "expected"), ROUTE_CASES, ids=[c[0] for c in ROUTE_CASES])
def test_route_validation(case: str, change: dict, expected: list[str]) -> None:
    change = dict(change)
    targets = change.pop("targets", None) or {"a": 100}
    raw_targets = change.pop("raw_targets", None)
    doc = route("r", "svc", targets, **change)
    if raw_targets:
        doc["spec"]["httpRoute"]["action"]["weightedTargets"] = raw_targets
    assert errors_of(doc) == expected


GRPC_CASES = [
    (
        "method-without-service",
        {"match": {"methodName": "Say"}},
        ["spec.grpcRoute.match.methodName: requires serviceName"],
    ),
    (
        "service-with-slash",
        {"match": {"serviceName": "a/b"}},
        ["spec.grpcRoute.match.serviceName: must be a non-empty name without '/', got 'a/b'"],
    ),
    (
        "unknown-grpc-event",
        {"retryPolicy": {"grpcRetryEvents": ["aborted"], "maxRetries": 1}},
        [
            "spec.grpcRoute.retryPolicy.grpcRetryEvents: unknown event(s) aborted; allowed: cancelled, deadline-exceeded, internal, resource-exhausted, unavailable",
            "spec.grpcRoute.retryPolicy: must set httpRetryEvents, tcpRetryEvents or grpcRetryEvents",
        ],
    ),
]


@pytest.mark.parametrize(("case", "grpc_route", "expected"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_grpc_route_validation(case: str, grpc_route: dict, expected: list[str]) -> None:
    doc = route("r", "svc", {"a": 100})
    doc["spec"]["grpcRoute"] = {"action": doc["spec"].pop("httpRoute")["action"], **grpc_route}
    assert errors_of(doc) == expected


def test_tcp_route_takes_only_an_idle_timeout() -> None:
    doc = route("r", "svc", {"a": 100})
    doc["spec"]["tcpRoute"] = {
        "action": doc["spec"].pop("httpRoute")["action"],
        "timeout": {"perRequest": {"unit": "s", "value": 1}},
    }
    assert errors_of(doc) == ["spec.tcpRoute.timeout.perRequest: does not apply to a tcpRoute (only idle does)"]


def test_route_needs_exactly_one_of_http_and_grpc() -> None:
    doc = route("r", "svc", {"a": 100})
    doc["spec"]["grpcRoute"] = {"action": doc["spec"]["httpRoute"]["action"]}
    assert errors_of(doc) == ["spec: must set exactly one of httpRoute, grpcRoute, tcpRoute"]


def test_grpc_route_becomes_an_http2_route() -> None:
    doc = route("r", "svc", {"a": 100})
    action = doc["spec"].pop("httpRoute")["action"]
    doc["spec"]["grpcRoute"] = {
        "match": {
            "serviceName": "demo.Echo",
            "methodName": "Say",
            "metadata": [{"name": "X-Tenant", "match": {"exact": "beta"}}],
        },
        "action": action,
    }
    spec = parse_document(doc).spec
    assert spec.grpc
    match = spec.http_route.match
    assert (match.path_exact, match.grpc, match.headers[0].name) == ("/demo.Echo/Say", True, "x-tenant")


@pytest.mark.parametrize(
    ("pattern", "construct"),
    [
        ("/(?=v2).*", "a lookahead or lookbehind"),
        (r"/(a)\1", "a backreference"),
        ("/(?>a+)", "an atomic group"),
        ("/a++", "a possessive quantifier"),
        ("/x(?<!y)", "a negative lookahead or lookbehind"),
    ],
)
def test_regexes_re2_cannot_run_are_rejected(pattern: str, construct: str) -> None:
    doc = route("r", "svc", {"a": 100}, match={"path": {"regex": pattern}})
    assert errors_of(doc) == [
        f"spec.httpRoute.match.path.regex: {pattern!r} uses {construct}, which Envoy's regex engine (RE2) does not support"
    ]


def test_valid_route_has_no_errors() -> None:
    doc = route("r", "svc", {"a": 80, "b": 20}, retryPolicy={"httpRetryEvents": ["server-error"], "maxRetries": 2})
    obj = parse_document(doc)
    assert obj.errors == () and obj.spec is not None
    assert [t.weight for t in obj.spec.http_route.weighted_targets] == [80, 20]


VN_CASES = [
    ("no-selector", {"podSelector": None}, ["spec.podSelector: is required"]),
    (
        "bad-port-and-protocol",
        {"listeners": [{"portMapping": {"port": 0, "protocol": "udp"}}]},
        [
            "spec.listeners[0].portMapping.port: must be at least 1, got 0",
            "spec.listeners[0].portMapping.protocol: must be one of http, http2, grpc, tcp; got 'udp'",
        ],
    ),
    (
        "duplicate-ports",
        {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}] * 2},
        ["spec.listeners: ports must be unique"],
    ),
    (
        "pool-zero",
        {
            "listeners": [
                {"portMapping": {"port": 80, "protocol": "http"}, "connectionPool": {"http": {"maxConnections": 0}}}
            ]
        },
        ["spec.listeners[0].connectionPool.http.maxConnections: must be at least 1, got 0"],
    ),
    (
        "outlier-negative",
        {
            "listeners": [
                {
                    "portMapping": {"port": 80, "protocol": "http"},
                    "outlierDetection": {
                        "maxServerErrors": 1,
                        "interval": {"unit": "s", "value": -1},
                        "baseEjectionDuration": {"unit": "s", "value": 1},
                        "maxEjectionPercent": 10,
                    },
                }
            ]
        },
        ["spec.listeners[0].outlierDetection.interval: must not be negative, got {'unit': 's', 'value': -1}"],
    ),
    (
        "health-check-no-path",
        {
            "listeners": [
                {
                    "portMapping": {"port": 80, "protocol": "http"},
                    "healthCheck": {
                        "protocol": "http",
                        "intervalMillis": 5000,
                        "timeoutMillis": 2000,
                        "healthyThreshold": 2,
                        "unhealthyThreshold": 2,
                    },
                }
            ]
        },
        ["spec.listeners[0].healthCheck.path: is required for an http health check"],
    ),
]


VN_CASES += [
    (
        # Issue 9, poison pill: this parsed (only a minimum was checked) and then raised in the snapshot builder.
        "pool-over-uint32",
        {
            "listeners": [
                {
                    "portMapping": {"port": 80, "protocol": "http"},
                    "connectionPool": {"http": {"maxConnections": 5000000000, "maxRetries": 4294967296}},
                }
            ]
        },
        [
            "spec.listeners[0].connectionPool.http.maxConnections: must be at most 4294967295, got 5000000000",
            "spec.listeners[0].connectionPool.http.maxRetries: must be at most 4294967295, got 4294967296",
        ],
    ),
    (
        "outlier-over-limits",
        {
            "listeners": [
                {
                    "portMapping": {"port": 80, "protocol": "http"},
                    "outlierDetection": {
                        "maxServerErrors": 2**32,
                        "interval": {"unit": "s", "value": 10**12},
                        "baseEjectionDuration": {"unit": "s", "value": 1},
                        "maxEjectionPercent": 10,
                    },
                }
            ]
        },
        [
            "spec.listeners[0].outlierDetection.maxServerErrors: must be at most 4294967295, got 4294967296",
            "spec.listeners[0].outlierDetection.interval: must be at most 365 days (31536000000 ms), got {'unit': 's', 'value': 1000000000000}",
        ],
    ),
    (
        "tracing-two-providers",
        {"tracing": {"zipkin": {"address": "z:9411"}, "xray": {"address": "x:2000"}}},
        ["spec.tracing: must set exactly one of zipkin, opentelemetry, xray"],
    ),
    (
        "tracing-bad-address",
        {"tracing": {"zipkin": {"address": "zipkin"}}},
        ["spec.tracing.zipkin.address: must be host:port, got 'zipkin'"],
    ),
    (
        "tracing-bad-sampling",
        {"tracing": {"xray": {"address": "x:2000"}, "samplingPercent": 150}},
        ["spec.tracing.samplingPercent: must be a number from 0 to 100, got 150"],
    ),
]


@pytest.mark.parametrize(("case", "change", "expected"), VN_CASES, ids=[c[0] for c in VN_CASES])
def test_virtual_node_validation(case: str, change: dict, expected: list[str]) -> None:
    doc = virtual_node("vn", listeners=[{"portMapping": {"port": 80, "protocol": "http"}}])
    doc["spec"].update(change)
    if change.get("podSelector", 1) is None:
        del doc["spec"]["podSelector"]
    assert errors_of(doc) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [({"unit": "ms", "value": 250}, 250), ({"unit": "s", "value": 2}, 2000)]
)
def test_durations(value, expected) -> None:
    assert parse_duration_ms(value) == (expected, None)


def test_header_range_must_fit_int64() -> None:
    doc = route(
        "r",
        "svc",
        {"vn": 100},
        match={"prefix": "/", "headers": [{"name": "x", "match": {"range": {"start": 0, "end": 2**63}}}]},
    )
    assert errors_of(doc) == [
        "spec.httpRoute.match.headers[0].match.range.end: must be at most 9223372036854775807, got 9223372036854775808"
    ]


BIG_REGEX = "/(alpha|bravo|charlie|delta|echo|foxtrot|golf|hotel|india|juliet){1,30}"


def test_a_regex_over_envoys_program_size_limit_is_rejected_before_envoy_sees_it() -> None:
    """Issue 9: valid RE2, but Envoy would NACK it (and with it every other route of the update)."""
    doc = route("r", "svc", {"a": 100}, match={"path": {"regex": BIG_REGEX}})
    [error] = errors_of(doc)
    assert error.startswith(f"spec.httpRoute.match.path.regex: {BIG_REGEX!r} compiles to an RE2 program of size 1684")
    assert "over Envoy's limit of 100" in error
    ok = route("r", "svc", {"a": 100}, match={"path": {"regex": "/api/v[0-9]+/.*"}})
    assert errors_of(ok) == []


def test_equal_labels_and_listeners_are_shared_between_parsed_objects(monkeypatch) -> None:
    """Issue 14: 100,000 Pods of a few Deployments hold a few label maps, not 100,000 copies."""
    from meshctl.parse import shared
    from meshctl.parse.documents import parse_document

    def pod(name: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "a", "version": "v1"}}}

    first, second = parse_document(pod("a-1")), parse_document(pod("a-2"))
    assert first.labels is second.labels and dict(first.labels) == {"app": "a", "version": "v1"}
    assert first is second  # Pods alike are one object: the model's key names each

    monkeypatch.setattr(shared, "_LIMIT", 3)
    for i in range(10):  # a full table is emptied, never grows past its limit
        shared.shared_labels({"pod": str(i)})
    assert len(shared._labels) <= 3


def test_an_endpoint_is_routed_to_its_first_address_and_one_without_any_is_left_out() -> None:
    """Kubernetes: an endpoint's addresses are fungible and consumers may use the first only (kube-proxy does)."""
    from meshctl.parse.documents import parse_document

    es = parse_document(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "svc"}},
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.2"], "targetRef": {"kind": "Pod", "name": "p-1"}},
                {"addresses": [], "targetRef": {"kind": "Pod", "name": "p-2"}},
                {"targetRef": {"kind": "Pod", "name": "p-3"}},
            ],
        }
    )
    assert [(e.address, e.pod_name) for e in es.endpoints] == [("10.0.0.1", "p-1")]
