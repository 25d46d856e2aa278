"""The pure half of the ingress reconciler: manifests -> desired stacks, golden-tested (``--update-golden``
rewrites the expected files), and target planning table-tested."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from meshctl.ingress.alb import build_ingress_stacks
from meshctl.ingress.nlb import build_service_stacks
from meshctl.ingress.stack import SecurityGroups, Stack
from meshctl.ingress.targets import plan_targets
from meshctl.parse.documents import parse_keyed
from meshctl.sources.base import build_model

CASES = sorted((Path(__file__).parent / "testdata" / "ingress").glob("*/input.yaml"))


def _render(input_path: Path, legacy_nlb: bool) -> str:
    docs = [d for d in yaml.safe_load_all(input_path.read_text()) if d]
    model = build_model(p for p in (parse_keyed(d) for d in docs) if p is not None)
    stacks = build_ingress_stacks(model, cluster="golden") + build_service_stacks(
        model, cluster="golden", legacy_nlb=legacy_nlb
    )

    def plain(value: object) -> object:
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # ObjectKey
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    rendered = [plain(dataclasses.asdict(s)) for s in stacks]
    return yaml.safe_dump(rendered, sort_keys=False, width=120)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.parent.name)
def test_stacks_match_golden(path: Path, request: pytest.FixtureRequest) -> None:
    legacy = "legacy" in path.parent.name
    got = _render(path, legacy_nlb=legacy)
    expected = path.parent / "expected.yaml"
    if request.config.getoption("--update-golden"):
        expected.write_text(got)
    assert got == expected.read_text()


@pytest.mark.parametrize(
    ("desired", "registered", "deregister", "register"),
    [
        ({("a", 1), ("b", 1)}, {}, [], [("a", 1), ("b", 1)]),
        ({("a", 1)}, {("a", 1): "healthy", ("b", 1): "healthy"}, [("b", 1)], []),
        # A draining target is gone already: wanted again, it is registered again (LBC #1124's "initial" gap).
        ({("a", 1)}, {("a", 1): "draining"}, [], [("a", 1)]),
        ({("a", 2)}, {("a", 1): "initial"}, [("a", 1)], [("a", 2)]),  # same IP, new port: by (id, port)
        ({("a", 1)}, {("a", 1): "unhealthy"}, [], []),
    ],
    ids=["register-new", "deregister-gone", "draining-reregistered", "port-change", "unhealthy-kept"],
)
def test_plan_targets(desired, registered, deregister, register) -> None:
    plan = plan_targets(frozenset(desired), registered)
    assert (list(plan.deregister), list(plan.register)) == (deregister, register)


def test_a_bad_backend_used_in_several_places_is_one_problem() -> None:
    """The default backend becomes every listener's default action and two paths use the same Service: the
    missing Service is still reported once (each report is an Event and part of the error text)."""
    from tests.ingress_fixtures import ingress_class, model_of, shop_ingress

    ingress = shop_ingress("arn:aws:acm:us-east-1:123456789012:certificate/x", extra={})
    ingress["spec"]["defaultBackend"] = {"service": {"name": "gone", "port": {"number": 80}}}
    ingress["spec"]["rules"] = [
        {
            "http": {
                "paths": [
                    {"path": p, "pathType": "Prefix", "backend": ingress["spec"]["defaultBackend"]}
                    for p in ("/a", "/b")
                ]
            }
        }
    ]
    (stack,) = build_ingress_stacks(model_of([ingress_class(), ingress]), cluster="golden")
    assert [p.message for p in stack.problems] == ["backend Service shop/gone does not exist"]


def _lbc_2048_stack(annotations: dict[str, str]) -> Stack:
    """LBC's 2048 example (its Service and Ingress) with these ``alb.ingress.kubernetes.io/`` annotations added."""
    from tests.ingress_fixtures import model_of

    example = Path(__file__).parent / "testdata" / "lbc" / "2048_full.yaml"
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] in ("Service", "Ingress")]
    docs[-1]["metadata"]["annotations"].update({f"alb.ingress.kubernetes.io/{k}": v for k, v in annotations.items()})
    (stack,) = build_ingress_stacks(model_of(docs), cluster="golden")
    return stack


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, SecurityGroups()),
        ({"inbound-cidrs": "10.0.0.0/8, 2001:db8::/32"}, SecurityGroups(inbound=("10.0.0.0/8", "2001:db8::/32"))),
        ({"security-groups": "sg-0123, web"}, SecurityGroups(given=("sg-0123", "web"), backend=False)),
        (
            {"security-groups": "web", "manage-backend-security-group-rules": "true"},
            SecurityGroups(given=("web",), backend=True),
        ),
        ({"inbound-cidrs": "10.0.0.1/8"}, "annotation alb.ingress.kubernetes.io/inbound-cidrs: '10.0.0.1/8' is not"),
        (
            {"manage-backend-security-group-rules": "false"},
            "annotation alb.ingress.kubernetes.io/manage-backend-security-group-rules: false needs security-groups",
        ),
    ],
)
def test_security_group_annotations(annotations: dict[str, str], expected: object) -> None:
    stack = _lbc_2048_stack(annotations)
    if isinstance(expected, str):
        assert stack.problems[0].message.startswith(expected), stack.problems
    else:
        assert stack.load_balancer is not None and stack.load_balancer.security_groups == expected, stack.problems


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (
            {"load-balancer-attributes": "idle_timeout.timeout_seconds=90"},
            ((("idle_timeout.timeout_seconds", "90"),), "ipv4"),
        ),
        ({"ip-address-type": "dualstack"}, ((), "dualstack")),
        (
            {"load-balancer-attributes": "deletion_protection.enabled=yes"},
            "deletion_protection.enabled=yes is not true",
        ),
        (
            {"load-balancer-attributes": "idle_timeout.timeout_seconds=0"},
            "idle_timeout.timeout_seconds=0 is out of range",
        ),
        ({"ip-address-type": "ipv6"}, "annotation alb.ingress.kubernetes.io/ip-address-type: 'ipv6' is not one of"),
        (
            {"ip-address-type": "dualstack-without-public-ipv4", "scheme": "internal"},
            "annotation alb.ingress.kubernetes.io/ip-address-type: dualstack-without-public-ipv4 is for internet",
        ),
    ],
)
def test_load_balancer_attribute_and_address_type_annotations(annotations: dict[str, str], expected: object) -> None:
    stack = _lbc_2048_stack(annotations)
    if isinstance(expected, str):
        assert expected in stack.problems[0].message, stack.problems
    else:
        assert stack.load_balancer is not None, stack.problems
        assert (stack.load_balancer.attributes, stack.load_balancer.ip_address_type) == expected


@pytest.mark.parametrize(
    ("conditions", "problem"),
    [
        ('{"field": "http-header"}', "expected a JSON list of conditions"),
        ('[{"field": "cookie", "values": ["x"]}]', "field 'cookie' is not one of"),
        ('[{"field": "http-header", "httpHeaderConfig": {"values": ["v"]}}]', "httpHeaderName is missing"),
        ('[{"field": "http-request-method", "httpRequestMethodConfig": {"values": ["get"]}}]', "are not methods"),
        ('[{"field": "source-ip", "sourceIpConfig": {"values": ["10.0.0.1/8"]}}]', "'10.0.0.1/8' is not a CIDR"),
        ('[{"field": "query-string", "queryStringConfig": {"values": ["a=b"]}}]', "is not {key, value}"),
        ('[{"Field": "host-header", "Values": []}]', "host-header: expected a non-empty list of values"),
    ],
)
def test_bad_conditions_are_a_problem_naming_the_annotation(conditions: str, problem: str) -> None:
    stack = _lbc_2048_stack({"conditions.service-2048": conditions})
    (found,) = stack.problems
    assert "alb.ingress.kubernetes.io/conditions.service-2048" in found.message and problem in found.message


def test_certificate_names_cover_hosts_as_tls_says() -> None:
    from meshctl.ingress.certificates import covers

    assert covers("*.example.com", "a.example.com") and covers("Example.com", "example.com.")
    assert not covers("*.example.com", "a.b.example.com") and not covers("*.example.com", "example.com")


def test_an_ingress_with_tls_hosts_and_no_certificate_arn_gets_https_with_the_certificates_found() -> None:
    from tests.ingress_fixtures import model_of

    example = Path(__file__).parent / "testdata" / "lbc" / "2048_full.yaml"
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] in ("Service", "Ingress")]
    docs[-1]["spec"]["tls"] = [{"hosts": ["game.example.com"]}]
    asked: list[tuple[str, ...]] = []

    def found(hosts: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        asked.append(hosts)
        return ("arn:aws:acm:us-east-1:123456789012:certificate/game",), ()

    (stack,) = build_ingress_stacks(model_of(docs), cluster="golden", certificates=found)
    assert asked == [("game.example.com",)] and not stack.problems
    (listener,) = stack.listeners
    assert (listener.port, listener.protocol, listener.certificates) == (
        443,
        "HTTPS",
        ("arn:aws:acm:us-east-1:123456789012:certificate/game",),
    )
    (stack,) = build_ingress_stacks(model_of(docs), cluster="golden", certificates=lambda hosts: ((), hosts))
    assert [p.message for p in stack.problems] == [
        "HTTPS port 443 needs alb.ingress.kubernetes.io/certificate-arn, or an issued ACM certificate for "
        "game.example.com"
    ]


def _classed_2048(params: dict | None, namespace_labels: dict | None = None, **ingress_annotations: str) -> Stack:
    """LBC's 2048 Ingress through IngressClass "alb" (LBC's controller) whose parameters are ``params``; its
    Namespace (game-2048) labelled ``namespace_labels``."""
    from tests.ingress_fixtures import model_of

    example = Path(__file__).parent / "testdata" / "lbc" / "2048_full.yaml"
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] in ("Service", "Ingress")]
    docs[-1]["metadata"]["annotations"] = {f"alb.ingress.kubernetes.io/{k}": v for k, v in ingress_annotations.items()}
    docs[-1]["spec"]["ingressClassName"] = "alb"
    klass = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "alb"},
        "spec": {
            "controller": "ingress.k8s.aws/alb",
            "parameters": {"apiGroup": "elbv2.meshctl.dev", "kind": "IngressClassParams", "name": "public"},
        },
    }
    docs.append(klass)
    if namespace_labels is not None:
        docs.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "game-2048", "labels": namespace_labels}}
        )
    if params is not None:
        meta = {"name": "public"}
        docs.append(
            {"apiVersion": "elbv2.meshctl.dev/v1beta1", "kind": "IngressClassParams", "metadata": meta, "spec": params}
        )
    (stack,) = build_ingress_stacks(model_of(docs), cluster="golden")
    return stack


def test_ingress_class_params_override_the_annotations_and_merge_tags_and_attributes() -> None:
    params = {
        "scheme": "internet-facing",
        "group": {"name": "public"},
        "inboundCIDRs": ["10.0.0.0/8"],
        "tags": [{"key": "team", "value": "platform"}],
        "loadBalancerAttributes": [{"key": "idle_timeout.timeout_seconds", "value": "120"}],
    }
    stack = _classed_2048(
        params,
        **{"scheme": "internal", "target-type": "ip", "tags": "team=game,env=prod",
           "load-balancer-attributes": "idle_timeout.timeout_seconds=30,routing.http2.enabled=false"},
    )  # fmt: skip
    assert not stack.problems and stack.id == "public" and stack.load_balancer is not None
    assert stack.load_balancer.scheme == "internet-facing"  # the params' scheme wins over the annotation's
    assert dict(stack.load_balancer.tags) == {"team": "platform", "env": "prod"}
    assert dict(stack.load_balancer.attributes) == {
        "idle_timeout.timeout_seconds": "120",
        "routing.http2.enabled": "false",
    }
    assert stack.load_balancer.security_groups is not None
    assert stack.load_balancer.security_groups.inbound == ("10.0.0.0/8",)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        (None, "IngressClass alb: IngressClassParams public does not exist"),
        (
            {"namespaceSelector": {"matchLabels": {"team": "a"}}},
            "its namespaceSelector (team=a) does not select namespace game-2048",
        ),
    ],
)
def test_ingress_class_params_that_cannot_apply_fail_the_ingress(params: dict | None, problem: str) -> None:
    stack = _classed_2048(params, **{"target-type": "ip"})
    (found,) = stack.problems
    assert (found.reason, problem in found.message) == ("InvalidIngressClass", True), found
    assert stack.load_balancer is None


def test_an_ingress_class_params_namespace_selector_admits_the_namespaces_it_selects() -> None:
    """LBC's namespaceSelector: the Ingresses of a namespace it selects (by the Namespace's labels) use the class;
    those of others fail (above)."""
    params = {"namespaceSelector": {"matchLabels": {"team": "a"}}, "scheme": "internet-facing"}
    stack = _classed_2048(params, {"team": "a", "other": "x"}, **{"target-type": "ip"})
    assert not stack.problems and stack.load_balancer is not None
    assert stack.load_balancer.scheme == "internet-facing"
    refused = _classed_2048(params, {"team": "b"}, **{"target-type": "ip"})
    assert refused.load_balancer is None and "does not select namespace game-2048" in refused.problems[0].message
    everyone = _classed_2048({"namespaceSelector": {}}, None, **{"target-type": "ip"})  # (empty: every namespace)
    assert not everyone.problems
    expressions = {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}
    assert not _classed_2048({"namespaceSelector": expressions}, {"team": "b"}, **{"target-type": "ip"}).problems
    refused = _classed_2048({"namespaceSelector": expressions}, {"team": "c"}, **{"target-type": "ip"})
    assert "(team In (a,b)) does not select namespace game-2048" in refused.problems[0].message
