"""The route engine behind explain, get routes and the shadowing check (the real-Envoy agreement is in e2e)."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from meshctl.model import HeaderMatch, HttpMatch, QueryParameterMatch, RetryPolicy, StringMatch
from meshctl.routing.adapt import from_envoy, match_from_model
from meshctl.routing.match import Request, explain
from meshctl.routing.shadow import find_shadowed
from meshctl.routing.table import (
    HeaderMatcher,
    Match,
    PathMatcher,
    QueryMatcher,
    RouteRule,
    StringMatcher,
    Target,
    VirtualHost,
    host_from_json,
    host_to_json,
)
from meshctl.translate.ir import RouteIR, VirtualHostIR, WeightedClusterIR
from meshctl.xds.envoy.route import build_route_configuration


def _rule(name: str, path: PathMatcher, *headers: HeaderMatcher, query=(), grpc=False) -> RouteRule:
    return RouteRule(name, Match(path, tuple(headers), tuple(query), grpc), (Target(f"c-{name}", 1),))


def _host(*routes: RouteRule) -> VirtualHost:
    return VirtualHost("demo/reviews", ("reviews", "reviews.demo"), routes)


def prefix(p: str) -> PathMatcher:
    return PathMatcher("prefix", p)


def exact(p: str) -> PathMatcher:
    return PathMatcher("exact", p)


def regex(p: str) -> PathMatcher:
    return PathMatcher("regex", p)


def header(name: str, kind: str | None = None, value: str = "", invert: bool = False) -> HeaderMatcher:
    return HeaderMatcher(name, StringMatcher(kind, value) if kind else None, invert=invert)


def method(m: str) -> HeaderMatcher:
    return header(":method", "exact", m)


# --- explain ---------------------------------------------------------------------------------------------------


def test_explain_names_the_first_failing_predicate_of_each_earlier_route():
    vh = _host(
        _rule("a", exact("/api/v1")),
        _rule("b", prefix("/api"), method("POST")),
        _rule("c", prefix("/api"), header("x-canary", "exact", "yes")),
        _rule("d", prefix("/api"), query=[QueryMatcher("beta", "1")]),
        _rule("e", prefix("/")),
    )
    got = explain((vh,), Request.from_url("GET", "http://reviews.demo/api/x?beta=2", [("X-Canary", "no")]))
    assert got.virtual_host is vh
    assert [v.failure for v in got.verdicts] == [
        "path '/api/x' is not '/api/v1'",
        "method 'GET': wants :method exact 'POST'",
        "header x-canary 'no': wants x-canary exact 'yes'",
        "query parameter beta '2': wants ?beta=1",
        None,
    ]
    assert got.route is not None and got.route.name == "e"


def test_explain_without_a_matching_route_or_host():
    vh = _host(_rule("a", prefix("/api")))
    assert explain((vh,), Request.from_url("GET", "reviews/other")).route is None
    nohost = explain((vh,), Request.from_url("GET", "ratings/api"))
    assert nohost.virtual_host is None and "no virtual host" in nohost.host_reason


def test_paths_are_normalized_and_compared_without_the_query():
    vh = _host(_rule("a", exact("/a/b")))
    for path in ("/a/b?x=1", "/a//b", "/a/./b", "/a/c/../b", "/a%2Fb"):
        assert explain((vh,), Request.from_url("GET", f"reviews{path}")).route is not None, path


def test_inverted_presence_takes_an_absent_header_and_repeated_headers_are_joined():
    vh = _host(_rule("inv", prefix("/"), header("x-new", invert=True)), _rule("all", prefix("/")))
    assert explain((vh,), Request.from_url("GET", "reviews/")).route.name == "inv"
    assert explain((vh,), Request.from_url("GET", "reviews/", [("x-new", "1")])).route.name == "all"
    # An inverted value matcher does not take an absent header (Envoy 1.40, test_explain's oracle found it).
    not_one = _host(_rule("not-one", prefix("/"), header("x-a", "exact", "1", invert=True)))
    assert explain((not_one,), Request.from_url("GET", "reviews/")).route is None
    assert explain((not_one,), Request.from_url("GET", "reviews/", [("x-a", "2")])).route is not None
    joined = _host(_rule("j", prefix("/"), header("x-a", "exact", "1,2")))
    assert explain((joined,), Request.from_url("GET", "reviews/", [("x-a", "1"), ("x-a", "2")])).route


def test_virtual_host_choice_exact_then_suffix_then_prefix_then_default():
    hosts = (
        VirtualHost("star", ("*",), (_rule("s", prefix("/")),)),
        VirtualHost("suffix", ("*.demo",), (_rule("x", prefix("/")),)),
        VirtualHost("longer", ("*.a.demo",), (_rule("y", prefix("/")),)),
        VirtualHost("pre", ("reviews.*",), (_rule("p", prefix("/")),)),
        VirtualHost("exact", ("Reviews.Demo",), (_rule("e", prefix("/")),)),
    )
    pick = {h: explain(hosts, Request.from_url("GET", f"{h}/")).virtual_host.name for h in hosts_cases()}
    assert pick == {"reviews.demo": "exact", "b.a.demo": "longer", "x.demo": "suffix", "reviews.x": "pre", "z": "star"}


def hosts_cases() -> list[str]:
    return ["reviews.demo", "b.a.demo", "x.demo", "reviews.x", "z"]


# --- adapters --------------------------------------------------------------------------------------------------

MATCHES = [
    HttpMatch(prefix="/"),
    HttpMatch(path_exact="/x", method="POST"),
    HttpMatch(path_regex="/items/[0-9]+"),
    HttpMatch(
        prefix="/api",
        headers=(
            HeaderMatch(name=":authority", match=StringMatch(suffix=".demo")),
            HeaderMatch(name="x-a", match=StringMatch(range_start=1, range_end=5), invert=True),
            HeaderMatch(name="x-b"),
            HeaderMatch(name="x-c", match=StringMatch(exact="")),
            HeaderMatch(name="cookie", match=StringMatch(regex="(?:.*;\\s*)?a=1(?:;.*)?")),
        ),
        query_parameters=(QueryParameterMatch(name="q"), QueryParameterMatch(name="r", exact="1")),
    ),
    HttpMatch(prefix="/pkg.Svc/", grpc=True),
]


def test_the_model_adapter_and_the_envoy_adapter_agree():
    routes = tuple(
        RouteIR(
            name=f"demo/r{i}",
            match=m,
            clusters=(WeightedClusterIR(cluster="a", weight=3), WeightedClusterIR(cluster="b", weight=1)),
            retry_policy=RetryPolicy(http_retry_events=("server-error",), max_retries=3, per_retry_timeout_ms=250),
            timeout_ms=1500,
        )
        for i, m in enumerate(MATCHES)
    )
    config = build_route_configuration("outbound", [VirtualHostIR(name="demo/reviews", domains=("r",), routes=routes)])
    for style in (True, False):  # our dump keeps proto names; Envoy's /config_dump uses lowerCamelCase
        (vh,) = from_envoy(MessageToDict(config, preserving_proto_field_name=style))
        assert [r.match for r in vh.routes] == [match_from_model(m) for m in MATCHES]
        first = vh.routes[0]
        assert first.targets == (Target("a", 3), Target("b", 1)) and first.timeout_ms == 1500
        assert first.retry is not None and first.retry.num_retries == 3 and first.retry.per_try_timeout_ms == 250
        assert host_from_json(host_to_json(vh)) == vh


# --- shadowing -------------------------------------------------------------------------------------------------


def _findings(*routes: RouteRule) -> dict[str, tuple[bool, tuple[str, ...], str | None]]:
    return {f.route: (f.certain, f.by, f.witness_route) for f in find_shadowed(_host(*routes))}


def test_catch_all_before_a_header_route_and_prefix_before_exact_are_certain():
    got = _findings(
        _rule("all", prefix("/")),
        _rule("canary", prefix("/"), header("x-canary", "exact", "1")),
    )
    assert got == {"canary": (True, ("all",), "all")}
    got = _findings(_rule("api", prefix("/api")), _rule("v1", exact("/api/v1")), _rule("other", exact("/web")))
    assert got == {"v1": (True, ("api",), "api")}


def test_union_of_a_header_and_its_inverse_covers_requests_that_send_it():
    # Envoy: an inverted value matcher needs the header (an absent one matches neither), so the pair covers a
    # later route only if that route needs the header too.
    with_, without = (
        _rule("with", prefix("/"), header("x-a", "exact", "1")),
        _rule("without", prefix("/"), header("x-a", "exact", "1", invert=True)),
    )
    assert _findings(with_, without, _rule("later", prefix("/api"), header("x-a", "prefix", "z"))) == {
        "later": (True, ("with", "without"), "without")
    }
    assert _findings(with_, without, _rule("later", prefix("/api"), method("GET"))) == {}
    # present and NOT present take everything.
    assert _findings(
        _rule("present", prefix("/"), header("x-a")),
        _rule("absent", prefix("/"), header("x-a", invert=True)),
        _rule("later", prefix("/api")),
    ) == {"later": (True, ("present", "absent"), "absent")}


def test_header_implications():
    got = _findings(
        _rule("pre", prefix("/"), header("x-v", "prefix", "v")),
        _rule("exact", prefix("/a"), header("x-v", "exact", "v2")),  # v2 starts with v
        _rule("longer", prefix("/b"), header("x-v", "prefix", "v1.")),
        _rule("other", prefix("/c"), header("x-v", "prefix", "w")),  # not shadowed
        _rule("present", prefix("/d"), header("x-p")),
        _rule("valued", prefix("/d"), header("x-p", "suffix", "z")),  # present covers it
        _rule("missing-ok", prefix("/e"), header("x-v", "exact", "v", invert=True)),  # absent: not covered
    )
    assert got == {
        "exact": (True, ("pre",), "pre"),
        "longer": (True, ("pre",), "pre"),
        "valued": (True, ("present",), "present"),
    }


def test_disjoint_and_narrower_earlier_routes_are_not_findings():
    got = _findings(
        _rule("post", prefix("/"), method("POST")),
        _rule("exact", exact("/x")),
        _rule("q", prefix("/"), query=[QueryMatcher("a", "1")]),
        _rule("grpc", prefix("/"), grpc=True),
        _rule("all", prefix("/")),
    )
    assert got == {}


def test_regex_is_decided_against_literals_and_otherwise_only_possible():
    got = _findings(_rule("re", regex("/items/[0-9]+")), _rule("one", exact("/items/42")))
    assert got == {"one": (True, ("re",), "re")}
    got = _findings(_rule("re", regex("/items/.*")), _rule("sub", prefix("/items/a")))
    assert got == {"sub": (False, ("re",), "re")}
    # Some of the regex route's requests are not taken by the earlier one: not even "possibly".
    assert _findings(_rule("a", exact("/a")), _rule("re", regex("/(a|b)"))) == {}


# --- the Reachable condition ---------------------------------------------------------------------------------


def test_shadowed_routes_get_a_reachable_condition_with_a_witness_and_lose_it_when_fixed(tmp_path):
    from meshctl.model import ObjectKey
    from meshctl.sources import load_manifests
    from meshctl.translate import translate_mesh
    from tests.manifests import route, service, virtual_node, workload, write

    def docs(canary_priority: int) -> list:
        return [
            service("reviews"),
            workload("reviews", "v1", 9001),
            workload("reviews", "v2", 9002),
            virtual_node("frontend", backends=["reviews"]),
            route("all", "reviews", {"reviews-v1": 100}, priority=10),
            route(
                "canary",
                "reviews",
                {"reviews-v2": 100},
                match={"prefix": "/", "headers": [{"name": "x-canary", "match": {"exact": "1"}}]},
                priority=canary_priority,
            ),
        ]

    write(tmp_path / "mesh.yaml", *docs(20))
    model = load_manifests(tmp_path)
    mesh = translate_mesh(model)
    canary = ObjectKey("Route", "demo", "canary")
    (cond,) = [c for c in mesh.status_by_key[canary].conditions if c.type == "Reachable"]
    assert (cond.status.value, cond.reason) == ("False", "Shadowed")
    assert (
        "shadowed by demo/all" in cond.message
        and "GET http://reviews.demo/ -H 'x-canary: 1' -> demo/all" in cond.message
    )
    assert not mesh.status_by_key[canary].healthy and mesh.status_by_key[canary].accepted
    assert all(c.type != "Reachable" for c in mesh.status_by_key[ObjectKey("Route", "demo", "all")].conditions)

    # Fixed by a priority change, through the incremental path and from scratch alike.
    write(tmp_path / "mesh.yaml", *docs(5))
    fixed_model = load_manifests(tmp_path)
    patched, _ = mesh.with_route_changes(fixed_model, {canary}, mesh.accepted)
    for m in (patched, translate_mesh(fixed_model)):
        assert m.status_by_key[canary].healthy, m.status_by_key[canary]


def test_inverted_value_matchers_need_the_header():
    got = _findings(
        _rule("present", prefix("/"), header("x-a")),
        _rule("not-one", prefix("/"), header("x-a", "exact", "1", invert=True)),  # needs x-a: covered
        _rule("absent", prefix("/"), header("x-a", invert=True)),  # absent only: not covered
        _rule("later", prefix("/api")),  # x-a present or absent: covered by present + absent
    )
    assert got == {
        "not-one": (True, ("present",), "present"),
        "later": (True, ("present", "absent"), "absent"),
    }
