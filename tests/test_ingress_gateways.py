"""Gateways of our ALB/NLB classes -> stacks and statuses (meshctl/ingress/gateways.py), pure: LBC's rule precedence,
hostname intersection, GRPC target groups behind HTTPS, redirects, configuration merging, and bad input costing only
its own object."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.ingress.gateways import GatewayPlan, build_gateway_stacks
from meshctl.ingress.stack import FixedResponse, Forward, Redirect, Stack
from meshctl.model import ObjectKey
from meshctl.parse.documents import UnsupportedDocument, parse_keyed
from meshctl.sources.base import build_model
from meshctl.translate.ir import ConditionStatus
from tests.ingress_fixtures import NS, model_of, service
from tests.test_parse_fuzz import JUNK, _paths, _replace

GW = "gateway.networking.k8s.io/v1"


def klass(name: str = "alb", controller: str = "gateway.k8s.aws/alb", config: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"controllerName": controller}
    if config:
        spec["parametersRef"] = {
            "group": "elbv2.meshctl.dev",
            "kind": "LoadBalancerConfiguration",
            "name": config,
            "namespace": NS,
        }
    return {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": name}, "spec": spec}


def gateway(listeners: list[dict[str, Any]], class_name: str = "alb", config: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gatewayClassName": class_name, "listeners": listeners}
    if config:
        spec["infrastructure"] = {
            "parametersRef": {"group": "elbv2.meshctl.dev", "kind": "LoadBalancerConfiguration", "name": config}
        }
    return {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "web", "namespace": NS}, "spec": spec}


def route(name: str, rules: list[dict[str, Any]], kind: str = "HTTPRoute", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": kind,
        "metadata": {"name": name, "namespace": NS, "creationTimestamp": f"2026-01-01T00:00:0{len(name) % 10}Z"},
        "spec": {"parentRefs": [{"name": "web"}], "rules": rules, **spec},
    }


def backend(name: str = "app", port: int = 80, **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, **extra}


HTTP = [{"name": "http", "port": 80, "protocol": "HTTP"}]


def plan(*docs: dict[str, Any], cert: tuple[str, ...] = ("arn:cert",)) -> GatewayPlan:
    def lookup(hosts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return cert, ()

    return build_gateway_stacks(
        model_of([*docs, service("app", node_port=30080), service("other", node_port=30081)]),
        cluster="c1",
        certificates=lookup,
    )


def only_stack(p: GatewayPlan) -> Stack:
    (stack,) = p.stacks
    assert stack.valid, stack.problems
    return stack


def route_accepted(p: GatewayPlan, name: str) -> tuple[str, str]:
    (report,) = [r for r in p.routes if r.key.name == name]
    ((_, parent),) = report.parents
    (accepted,) = [c for c in parent.conditions if c.type == "Accepted"]
    return accepted.status.value, accepted.reason


def test_rules_follow_lbcs_precedence_and_are_numbered_per_listener():
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [backend()]},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": [backend()]},
        {"matches": [{"path": {"type": "Exact", "value": "/api/health"}}], "backendRefs": [backend()]},
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}, "method": "POST"}],
            "backendRefs": [backend()],
        },
    ]
    stack = only_stack(plan(klass(), gateway(HTTP), route("r", rules, hostnames=["shop.example.com"])))
    patterns = [next(c.values for c in r.conditions if c.field == "path-pattern") for r in stack.rules]
    assert patterns == [("/api/health",), ("/api", "/api/*"), ("/api", "/api/*"), ("/*",)]
    assert [r.priority for r in stack.rules] == [1, 2, 3, 4]
    assert any(c.field == "http-request-method" for c in stack.rules[1].conditions)  # with a method first
    assert all(r.conditions[0].values == ("shop.example.com",) for r in stack.rules)


def test_an_exact_hostname_comes_before_a_wildcard_and_listener_hostnames_intersect():
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"}]
    docs = [
        klass(),
        gateway(listeners),
        route("wild", [{"backendRefs": [backend()]}], hostnames=["*.example.com", "other.org"]),
        route("exact", [{"backendRefs": [backend("other")]}], hostnames=["a.example.com"]),
    ]
    stack = only_stack(plan(*docs))
    assert [r.conditions[0].values for r in stack.rules] == [("a.example.com",), ("*.example.com",)]


def test_a_weighted_rule_forwards_to_one_target_group_per_backend():
    rule = {"backendRefs": [backend(weight=3), backend("other", weight=1)]}
    stack = only_stack(plan(klass(), gateway(HTTP), route("split", [rule])))
    (only,) = stack.rules
    assert isinstance(only.action, Forward)
    assert [w for _, w in only.action.targets] == [3, 1]
    assert {g.binding.service.name for g in stack.target_groups} == {"app", "other"}
    assert {g.target_type for g in stack.target_groups} == {"instance"}  # LBC's default


def test_grpcroute_behind_https_gets_a_grpc_target_group_and_behind_http_an_http1_one():
    https = [{"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "grpc.example.com"}]
    rule = {"matches": [{"method": {"service": "shop.Cart", "method": "Add"}}], "backendRefs": [backend()]}
    stack = only_stack(plan(klass(), gateway(https), route("g", [rule], kind="GRPCRoute")))
    (group,) = stack.target_groups
    assert group.protocol_version == "GRPC" and group.health_check.matcher == "GrpcCode"
    (listener,) = stack.listeners
    assert listener.certificates == ("arn:cert",)  # found for the listener's hostname
    assert stack.rules[0].conditions[1].values == ("/shop.Cart/Add",)
    stack = only_stack(plan(klass(), gateway(HTTP), route("g", [rule], kind="GRPCRoute")))
    assert stack.target_groups[0].protocol_version == "HTTP1"


def test_a_request_redirect_is_an_alb_redirect():
    rule = {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}
    stack = only_stack(plan(klass(), gateway(HTTP), route("up", [rule])))
    action = stack.rules[0].action
    assert isinstance(action, Redirect)
    assert (action.protocol, action.port, action.status_code) == ("HTTPS", "443", "HTTP_301")


def test_no_listener_until_a_route_attaches():
    stack = only_stack(plan(klass(), gateway(HTTP)))
    assert stack.listeners == () and stack.load_balancer is not None


def test_what_an_alb_cannot_do_rejects_that_route_only():
    regex = route("regex", [{"matches": [{"headers": [{"type": "RegularExpression", "name": "x", "value": "a.*"}]}]}])
    mirror = route(
        "mirror",
        [
            {
                "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": backend()}}],
                "backendRefs": [backend()],
            }
        ],
    )
    p = plan(klass(), gateway(HTTP), regex, mirror, route("fine", [{"backendRefs": [backend()]}]))
    assert route_accepted(p, "regex") == ("False", "UnsupportedValue")
    assert route_accepted(p, "mirror") == ("False", "UnsupportedValue")
    assert route_accepted(p, "fine") == ("True", "Accepted")
    assert len(only_stack(p).rules) == 1


def test_a_backend_in_another_namespace_needs_a_reference_grant():
    rule = {"backendRefs": [backend(namespace="elsewhere")]}
    p = plan(klass(), gateway(HTTP), route("far", [rule]))
    ((_, parent),) = p.routes[0].parents
    resolved = next(c for c in parent.conditions if c.type == "ResolvedRefs")
    assert (resolved.status, resolved.reason) == (ConditionStatus.FALSE, "RefNotPermitted")
    assert only_stack(p).rules[0].action == FixedResponse(status_code="500")


def lb_config(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "LoadBalancerConfiguration",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def test_the_classs_configuration_wins_unless_it_prefers_the_gateways():
    docs = [gateway(HTTP, config="mine"), lb_config("mine", scheme="internet-facing", tags={"a": "1", "b": "2"})]
    stack = only_stack(plan(klass(config="org"), lb_config("org", scheme="internal", tags={"b": "org"}), *docs))
    assert stack.load_balancer is not None
    assert stack.load_balancer.scheme == "internal"
    assert dict(stack.load_balancer.tags) == {"a": "1", "b": "org"}
    preferring = lb_config("org", scheme="internal", mergingMode="prefer-gateway")
    stack = only_stack(plan(klass(config="org"), preferring, *docs))
    assert stack.load_balancer is not None and stack.load_balancer.scheme == "internet-facing"


def test_tags_the_two_configurations_cannot_merge_fail_the_gateway_not_the_pass():
    """A tag key the annotation form cannot carry ("a,b") on the class's configuration, tags on the Gateway's too:
    merging them raised out of the builder (every stack's pass failed); now only that Gateway waits, saying why."""
    docs = [gateway(HTTP, config="mine"), lb_config("mine", tags={"x": "1"})]
    p = plan(klass(config="org"), lb_config("org", tags={"a,b": "1"}), *docs)
    (stack,) = p.stacks
    assert not stack.valid and "tags" in stack.problems[0].message
    (report,) = p.gateways
    assert (report.accepted.status, report.accepted.reason) == (ConditionStatus.FALSE, "InvalidParameters")


def test_a_class_naming_a_missing_configuration_is_not_accepted_and_its_gateways_wait():
    p = plan(klass(config="nowhere"), gateway(HTTP), route("r", [{"backendRefs": [backend()]}]))
    ((_, _, accepted),) = p.classes  # (class, generation, Accepted)
    assert (accepted.status, accepted.reason) == (ConditionStatus.FALSE, "InvalidParameters")
    (stack,) = p.stacks
    assert not stack.valid and "nowhere" in stack.problems[0].message
    (report,) = p.gateways
    assert report.accepted.status is ConditionStatus.FALSE


def test_an_alb_listener_of_another_protocol_is_not_accepted():
    listeners = [*HTTP, {"name": "tcp", "port": 9000, "protocol": "TCP"}]
    (report,) = plan(klass(), gateway(listeners)).gateways
    tcp = next(li for li in report.listeners if li.name == "tcp")
    assert tcp.conditions[0].reason == "UnsupportedProtocol"
    assert (report.accepted.status, report.accepted.reason) == (ConditionStatus.TRUE, "ListenersNotValid")


def test_an_nlb_listener_serves_the_oldest_of_two_tcproutes():
    nlb = klass("nlb", "meshctl.dev/nlb")
    listeners = [{"name": "pg", "port": 5432, "protocol": "TCP"}]
    first = route("a", [{"backendRefs": [backend()]}], kind="TCPRoute")
    second = route("bb", [{"backendRefs": [backend("other")]}], kind="TCPRoute")
    p = plan(nlb, gateway(listeners, class_name="nlb"), first, second)
    stack = only_stack(p)
    (listener,) = stack.listeners
    assert (listener.port, listener.protocol) == (5432, "TCP")
    assert isinstance(listener.default_action, Forward)
    (group,) = stack.target_groups
    assert group.binding.service == ObjectKey("Service", NS, "app") and group.protocol == "TCP"
    assert route_accepted(p, "a") == ("True", "Accepted")
    assert route_accepted(p, "bb") == ("False", "UnsupportedValue")


def test_gateways_of_other_classes_are_not_ours():
    p = plan(klass("mesh", "meshctl.dev/gateway"), gateway(HTTP, class_name="mesh"))
    assert p.stacks == () and p.gateways == () and p.classes == ()


def _world() -> list[dict[str, Any]]:
    """Every kind the Gateway builder reads, wired together: what a mutation then breaks one piece of."""
    https = {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com"}
    tgc = {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "TargetGroupConfiguration",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {"targetReference": {"name": "app"}, "defaultConfiguration": {"targetType": "ip"}},
    }
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/a"}, "headers": [{"name": "x", "value": "1"}]}],
            "backendRefs": [backend(weight=2), backend("other")],
        },
        {"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]},
    ]
    return [
        klass(config="org"),
        lb_config(
            "org", scheme="internet-facing", listenerConfigurations=[{"protocolPort": "HTTPS:443"}], tags={"o": "1"}
        ),
        lb_config("mine", tags={"a": "b"}),
        gateway([*HTTP, https], config="mine"),
        tgc,
        route("r", rules, hostnames=["a.example.com"]),
        route(
            "g", [{"matches": [{"method": {"service": "s", "method": "m"}}], "backendRefs": [backend()]}], "GRPCRoute"
        ),
        klass("nlb", "meshctl.dev/nlb"),
        {
            **gateway([{"name": "pg", "port": 5432, "protocol": "TCP"}], "nlb"),
            "metadata": {"name": "l4", "namespace": NS},
        },
        {
            **route("t", [{"backendRefs": [backend()]}], "TCPRoute"),
            "spec": {"parentRefs": [{"name": "l4"}], "rules": [{"backendRefs": [backend()]}]},
        },
    ]


@settings(
    max_examples=int(os.environ.get("MESHCTL_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=bool(os.environ.get("CI")),
)
@given(data=st.data())
def test_one_broken_object_never_stops_the_gateway_builder(data: st.DataObject) -> None:
    world = _world()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(world) - 1))
        paths = _paths(world[i])[1:]
        world[i] = _replace(world[i], data.draw(st.sampled_from(paths)), data.draw(JUNK))
    parsed = []
    for doc in [*world, service("app", node_port=30080), service("other", node_port=30081)]:
        try:
            found = parse_keyed(doc)
        except UnsupportedDocument:
            continue
        if found is not None:
            parsed.append(found)
    result = build_gateway_stacks(build_model(parsed), cluster="c1", certificates=lambda hosts: (("arn:c",), ()))
    for stack in result.stacks:
        assert stack.valid or stack.problems


def rule_config(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "ListenerRuleConfiguration",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def extension(name: str, group: str = "elbv2.meshctl.dev") -> dict[str, Any]:
    return {"type": "ExtensionRef", "extensionRef": {"group": group, "kind": "ListenerRuleConfiguration", "name": name}}


def test_a_listener_rule_configuration_adds_its_fixed_response_and_source_ip_conditions():
    maintenance = rule_config(
        "maintenance",
        actions=[{"type": "fixed-response", "fixedResponseConfig": {"statusCode": 503, "messageBody": "back soon"}}],
        conditions=[{"field": "source-ip", "sourceIPConfig": {"values": ["10.0.0.0/8"]}}],
    )
    rule = {"filters": [extension("maintenance", group="gateway.k8s.aws")], "backendRefs": [backend()]}
    stack = only_stack(plan(klass(), gateway(HTTP), maintenance, route("r", [rule])))
    (only,) = stack.rules
    assert only.action == FixedResponse(status_code="503", message_body="back soon")
    assert [c.values for c in only.conditions if c.field == "source-ip"] == [("10.0.0.0/8",)]


def test_a_missing_listener_rule_configuration_answers_500_and_one_it_cannot_serve_rejects_the_route():
    rule = {"filters": [extension("nowhere")], "backendRefs": [backend()]}
    p = plan(klass(), gateway(HTTP), route("r", [rule]))
    assert only_stack(p).rules[0].action == FixedResponse(status_code="500")
    ((_, parent),) = p.routes[0].parents
    resolved = next(c for c in parent.conditions if c.type == "ResolvedRefs")
    assert resolved.status is ConditionStatus.FALSE and "nowhere" in resolved.message
    oidc = rule_config("login", actions=[{"type": "authenticate-oidc", "authenticateOIDCConfig": {}}])
    p = plan(klass(), gateway(HTTP), oidc, route("r", [{"filters": [extension("login")], "backendRefs": [backend()]}]))
    assert route_accepted(p, "r") == ("False", "UnsupportedValue")


def test_the_mesh_answers_a_rule_with_an_extension_ref_with_a_500():
    """An ExtensionRef filter must not be skipped: on a Service parent (GAMMA), whose proxies serve none, the rule's
    requests get a 500 and the route says why."""
    from meshctl.translate.gamma import BackendResolver, rule_targets
    from meshctl.translate.ir import INVALID_BACKEND

    doc = route("mesh", [{"filters": [extension("x")], "backendRefs": [backend()]}])
    doc["spec"]["parentRefs"] = [{"kind": "Service", "group": "", "name": "app"}]
    model = model_of([doc, service("app")])
    (parsed,) = model.http_routes.values()
    assert parsed.spec is not None
    problems: list[tuple[str, str]] = []
    weighted, _ = rule_targets(parsed, 0, parsed.spec.rules[0], BackendResolver(model, ()), problems, {})
    assert [w.cluster for w in weighted] == [INVALID_BACKEND]
    assert problems and "ExtensionRef" in problems[0][1]
