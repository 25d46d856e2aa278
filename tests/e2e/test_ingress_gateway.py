"""Gateway API -> AWS load balancers, LBC v3's way (issue 32): a Gateway of an ALB GatewayClass with an HTTPRoute of
two weighted backends becomes one ALB with a weighted forward rule; a TCPRoute on an NLB Gateway becomes an NLB
listener; statuses carry the load balancer's DNS name; LoadBalancerConfiguration and TargetGroupConfiguration set
what LBC's do. Real boto3 over HTTP to moto_server, the test apiserver, the real kubernetes client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from meshctl.model import ObjectKey
from tests.e2e.test_ingress import _fault, _Killed, _state
from tests.ingress_fixtures import NS, endpoint_slice, service
from tests.ingress_harness import Harness
from tests.test_apiserver import kubectl

GW = "gateway.networking.k8s.io"
GATEWAY = ObjectKey("Gateway", NS, "web")


@pytest.fixture
async def harness(apiserver, moto):
    h = Harness(apiserver, moto)
    yield h
    await h.stop()


def gateway_class(name: str, controller: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def gateway(name: str, class_name: str, listeners: list[dict[str, Any]], config: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"gatewayClassName": class_name, "listeners": listeners}
    if config is not None:
        spec["infrastructure"] = {
            "parametersRef": {"group": "elbv2.meshctl.dev", "kind": "LoadBalancerConfiguration", "name": config}
        }
    return {"apiVersion": f"{GW}/v1", "kind": "Gateway", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def http_route(name: str, rules: list[dict[str, Any]], parent: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"parentRefs": [{"name": parent}], "rules": rules},
    }


def lb_config() -> dict[str, Any]:
    return {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "LoadBalancerConfiguration",
        "metadata": {"name": "public", "namespace": NS},
        "spec": {
            "scheme": "internet-facing",
            "sourceRanges": ["203.0.113.0/24"],
            "tags": {"team": "shop"},
            "defaultTargetGroupConfiguration": {"name": "defaults"},
        },
    }


def tg_configs() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "elbv2.meshctl.dev/v1beta1",
            "kind": "TargetGroupConfiguration",
            "metadata": {"name": "defaults", "namespace": NS},
            "spec": {"defaultConfiguration": {"targetType": "ip"}},
        },
        {
            "apiVersion": "elbv2.meshctl.dev/v1beta1",
            "kind": "TargetGroupConfiguration",
            "metadata": {"name": "cart", "namespace": NS},
            "spec": {
                "targetReference": {"name": "cart"},
                "defaultConfiguration": {"healthCheckConfig": {"healthCheckPath": "/healthz"}},
            },
        },
    ]


def shop() -> list[dict[str, Any]]:
    return [
        gateway_class("alb", "gateway.k8s.aws/alb"),
        lb_config(),
        *tg_configs(),
        gateway("web", "alb", [{"name": "http", "port": 80, "protocol": "HTTP"}], config="public"),
        http_route(
            "shop",
            [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/shop"}}],
                    "backendRefs": [
                        {"name": "cart", "port": 80, "weight": 80},
                        {"name": "cart-v2", "port": 80, "weight": 20},
                    ],
                },
                {
                    "matches": [{"path": {"type": "Exact", "value": "/health"}}],
                    "backendRefs": [{"name": "cart", "port": 80}],
                },
            ],
        ),
        service("cart"),
        service("cart-v2"),
        endpoint_slice("cart", ["10.0.1.10"]),
        endpoint_slice("cart-v2", ["10.0.1.20"]),
    ]


def custom(h: Harness) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(h.api)


def status_of(h: Harness, plural: str, name: str) -> dict[str, Any]:
    return custom(h).get_namespaced_custom_object(GW, "v1", NS, plural, name).get("status") or {}


def condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((c for c in conditions if c["type"] == kind), {})


async def started(h: Harness, docs: list[dict[str, Any]], *expected: ObjectKey) -> None:
    h.seed(docs)
    await h.start()
    await h.model_where(lambda m: all(k in m.gateways or k in m.http_routes or k in m.l4_routes for k in expected))


def path_values(rule: dict[str, Any]) -> list[str]:
    (c,) = [c for c in rule["Conditions"] if c["Field"] == "path-pattern"]
    return sorted(c.get("Values") or c["PathPatternConfig"]["Values"])


def rules_of(h: Harness, listener_arn: str) -> list[dict[str, Any]]:
    rules = [r for r in h.elbv2.describe_rules(ListenerArn=listener_arn)["Rules"] if not r["IsDefault"]]
    return sorted(rules, key=lambda r: int(r["Priority"]))


async def test_a_gateway_with_a_weighted_httproute_becomes_one_alb(harness: Harness):
    h = harness
    await started(h, shop(), GATEWAY, ObjectKey("HTTPRoute", NS, "shop"))
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)

    (alb,) = h.balancers()
    assert (alb["Type"], alb["Scheme"]) == ("application", "internet-facing")
    assert h.tags(alb["LoadBalancerArn"])["team"] == "shop"
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    assert listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    exact, prefix = rules_of(h, listener["ListenerArn"])  # Exact before PathPrefix: LBC's precedence
    assert exact["Priority"] == "1" and path_values(exact) == ["/health"]
    assert prefix["Priority"] == "2" and path_values(prefix) == ["/shop", "/shop/*"]
    groups = {g["TargetGroupArn"]: g for g in h.target_groups()}
    weights = {
        groups[t["TargetGroupArn"]]["HealthCheckPath"]: t["Weight"]
        for t in prefix["Actions"][0]["ForwardConfig"]["TargetGroups"]
    }
    assert weights == {"/healthz": 80, "/": 20}  # cart (its own TargetGroupConfiguration) 80, cart-v2 20
    assert {g["TargetType"] for g in groups.values()} == {"ip"}  # the Gateway's default TargetGroupConfiguration
    assert {h.targets(arn).pop()[0] for arn in groups} == {"10.0.1.10", "10.0.1.20"}
    (frontend,) = [
        g
        for g in h.moto.client("ec2").describe_security_groups()["SecurityGroups"]
        if g["GroupId"] in alb["SecurityGroups"] and any(p.get("FromPort") == 80 for p in g["IpPermissions"])
    ]
    assert [r["CidrIp"] for p in frontend["IpPermissions"] for r in p["IpRanges"]] == ["203.0.113.0/24"]

    gw = status_of(h, "gateways", "web")
    assert condition(gw["conditions"], "Accepted")["status"] == "True"
    programmed = condition(gw["conditions"], "Programmed")
    assert (programmed["status"], programmed["message"]) == ("True", alb["LoadBalancerArn"])
    assert gw["addresses"] == [{"type": "Hostname", "value": alb["DNSName"]}]
    (http,) = gw["listeners"]
    assert http["attachedRoutes"] == 1 and condition(http["conditions"], "Programmed")["status"] == "True"
    (parent,) = status_of(h, "httproutes", "shop")["parents"]
    assert parent["controllerName"] == "gateway.k8s.aws/alb"
    assert condition(parent["conditions"], "Accepted")["status"] == "True"
    klass = custom(h).get_cluster_custom_object(GW, "v1", "gatewayclasses", "alb")["status"]
    assert condition(klass["conditions"], "Accepted")["status"] == "True"
    assert (
        "gateway.elbv2.meshctl.dev/resources"
        in custom(h).get_namespaced_custom_object(GW, "v1", NS, "gateways", "web")["metadata"]["finalizers"]
    )

    # A second reconciler (as after a restart) finds everything as it should be: no mutating call.
    await h.model_where(lambda m: m.gateways[GATEWAY].lifecycle.finalizers != ())
    again, calls = h.reconciler()
    assert await h.reconcile(again)
    assert calls.mutating() == []

    # Deleting the Gateway deletes its load balancer and target groups, then lets it go.
    custom(h).delete_namespaced_custom_object(GW, "v1", NS, "gateways", "web")
    await h.model_where(lambda m: m.gateways[GATEWAY].lifecycle.deleting)
    assert await h.reconcile(again)
    assert h.balancers() == [] and h.target_groups() == []
    await h.model_where(lambda m: GATEWAY not in m.gateways)


async def test_route_problems_cost_only_that_route(harness: Harness):
    """A route an ALB cannot serve (a regex path) says so and is left out; a missing backend gets LBC's fixed 500
    and ResolvedRefs False; the Gateway and its other routes are served."""
    h = harness
    regex = http_route(
        "regex",
        [
            {
                "matches": [{"path": {"type": "RegularExpression", "value": "/a.*"}}],
                "backendRefs": [{"name": "cart", "port": 80}],
            }
        ],
    )
    missing = http_route(
        "missing",
        [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/gone"}}],
                "backendRefs": [{"name": "nope", "port": 80}],
            }
        ],
    )
    await started(
        h,
        [*shop(), regex, missing],
        GATEWAY,
        ObjectKey("HTTPRoute", NS, "regex"),
        ObjectKey("HTTPRoute", NS, "missing"),
    )
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)

    (alb,) = h.balancers()
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    rules = rules_of(h, listener["ListenerArn"])
    paths = [path_values(r) for r in rules]
    assert ["/a.*"] not in paths and ["/health"] in paths and ["/shop", "/shop/*"] in paths
    (gone,) = [r for r in rules if "/gone" in path_values(r)]
    assert gone["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "500"

    (bad,) = status_of(h, "httproutes", "regex")["parents"]
    accepted = condition(bad["conditions"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "UnsupportedValue")
    assert "RegularExpression" in accepted["message"]
    (unresolved,) = status_of(h, "httproutes", "missing")["parents"]
    resolved = condition(unresolved["conditions"], "ResolvedRefs")
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert status_of(h, "gateways", "web")["listeners"][0]["attachedRoutes"] == 2


async def test_a_tcproute_becomes_an_nlb_listener(harness: Harness):
    h = harness
    db = service("db", port=5432)
    tcp_route = {
        "apiVersion": f"{GW}/v1",
        "kind": "TCPRoute",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "tcp", "sectionName": "postgres"}],
            "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}],
        },
    }
    docs = [
        gateway_class("nlb", "meshctl.dev/nlb"),
        gateway(
            "tcp",
            "nlb",
            [{"name": "postgres", "port": 5432, "protocol": "TCP"}, {"name": "spare", "port": 6000, "protocol": "TCP"}],
        ),
        tcp_route,
        db,
        endpoint_slice("db", ["10.0.2.10"]),
    ]
    await started(h, docs, ObjectKey("Gateway", NS, "tcp"), ObjectKey("TCPRoute", NS, "db"))
    reconciler, _ = h.reconciler(default_target_type="ip")
    assert await h.reconcile(reconciler)

    (nlb,) = h.balancers()
    assert (nlb["Type"], nlb["Scheme"]) == ("network", "internal")
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=nlb["LoadBalancerArn"])["Listeners"]  # spare: no route
    assert (listener["Port"], listener["Protocol"]) == (5432, "TCP")
    (group,) = h.target_groups()
    assert listener["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]
    assert (group["Protocol"], group["TargetType"]) == ("TCP", "ip")
    assert h.targets(group["TargetGroupArn"]) == {("10.0.2.10", 8080)}

    gw = status_of(h, "gateways", "tcp")
    assert gw["addresses"] == [{"type": "Hostname", "value": nlb["DNSName"]}]
    assert condition(gw["conditions"], "Programmed")["status"] == "True"
    listeners = {li["name"]: li for li in gw["listeners"]}
    assert listeners["postgres"]["attachedRoutes"] == 1
    assert listeners["postgres"]["supportedKinds"] == [{"group": GW, "kind": "TCPRoute"}]
    spare = condition(listeners["spare"]["conditions"], "Programmed")
    assert (spare["status"], spare["reason"]) == ("False", "Pending")
    (parent,) = status_of(h, "tcproutes", "db")["parents"]
    assert (parent["controllerName"], condition(parent["conditions"], "Accepted")["status"]) == (
        "meshctl.dev/nlb",
        "True",
    )


async def test_a_bad_load_balancer_configuration_leaves_the_gateway_unprogrammed(harness: Harness):
    h = harness
    bad = lb_config()
    bad["spec"]["loadBalancerAttributes"] = [{"key": "deletion_protection.enabled", "value": "maybe"}]
    docs = [d if d.get("kind") != "LoadBalancerConfiguration" else bad for d in shop()]
    await started(h, docs, GATEWAY)
    reconciler, _ = h.reconciler()
    await h.reconcile(reconciler)
    assert h.balancers() == []
    gw = status_of(h, "gateways", "web")
    accepted = condition(gw["conditions"], "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("False", "InvalidParameters")
    assert "spec.loadBalancerAttributes" in accepted["message"]
    assert condition(gw["conditions"], "Programmed")["status"] == "False"


async def test_lbcs_2048_example_imported_and_applied_with_kubectl_gets_its_alb(harness: Harness, tmp_path: Path):
    """`meshctl import lbc` on LBC's own 2048 example, the output applied with kubectl: an internet-facing ALB on
    port 80 forwarding to the Service's pods, as the Ingress had (tests/e2e/test_ingress_lbc.py)."""
    h = harness
    example = Path(__file__).parents[1] / "testdata/lbc/2048_full.yaml"
    out = tmp_path / "imported"
    subprocess.run(
        [sys.executable, "-m", "meshctl", "import", "lbc", "-f", str(example), "-o", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d and d["kind"] in ("Namespace", "Service")]
    slice_ = endpoint_slice("service-2048", ["10.0.3.1", "10.0.3.2"])
    slice_["metadata"]["namespace"] = "game-2048"
    h.seed([*docs, slice_])
    kubectl(h.apiserver, tmp_path, "apply", "--validate=false", "-f", str(out / "cluster-scoped.yaml"))
    kubectl(h.apiserver, tmp_path, "apply", "--validate=false", "-f", str(out / "game-2048.yaml"))
    await h.start()
    key = ObjectKey("Gateway", "game-2048", "ingress-2048")
    await h.model_where(
        lambda m: key in m.gateways and ObjectKey("HTTPRoute", "game-2048", "ingress-2048") in m.http_routes
    )
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)

    (alb,) = h.balancers()
    assert (alb["Type"], alb["Scheme"]) == ("application", "internet-facing")
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    (rule,) = rules_of(h, listener["ListenerArn"])
    assert path_values(rule) == ["/*"]
    (group,) = h.target_groups()
    assert (group["TargetType"], rule["Actions"][0]["TargetGroupArn"]) == ("ip", group["TargetGroupArn"])
    assert h.targets(group["TargetGroupArn"]) == {("10.0.3.1", 80), ("10.0.3.2", 80)}  # the Service's targetPort
    gw = custom(h).get_namespaced_custom_object(GW, "v1", "game-2048", "gateways", "ingress-2048")["status"]
    assert gw["addresses"] == [{"type": "Hostname", "value": alb["DNSName"]}]


GATEWAY_STATE = {
    "balancers": ["application"],
    "security_groups": ["ManagedLBSecurityGroup", "backend-sg"],
    "rules": {80: [1, 2]},
    "groups": {
        f"HTTPRoute/{NS}/shop-cart:80": [[("10.0.1.10", 8080)]],
        f"HTTPRoute/{NS}/shop-cart-v2:80": [[("10.0.1.20", 8080)]],
    },
}


async def test_faults_end_in_the_same_state_and_a_failed_pass_shows_in_the_gateways_status(harness: Harness):
    """Throttling and 5xx are retried; a failure boto3 does not retry is Programmed False (Pending, the AWS error)
    until the next pass; deleting survives a DependencyViolation on the managed group."""
    h = harness
    await started(h, shop(), GATEWAY, ObjectKey("HTTPRoute", NS, "shop"))
    reconciler, _ = h.reconciler()
    throttled = _fault(reconciler, "RegisterTargets", [(400, "Throttling")])
    failed = _fault(reconciler, "CreateLoadBalancer", [(500, "InternalFailure")])
    _fault(reconciler, "CreateRule", [(400, "ValidationError")])  # not retried
    assert not await h.reconcile(reconciler)
    assert failed == []
    programmed = condition(status_of(h, "gateways", "web")["conditions"], "Programmed")
    assert (programmed["status"], programmed["reason"]) == ("False", "Pending")
    assert "CreateRule: ValidationError" in programmed["message"]
    assert await h.reconcile(reconciler)
    assert throttled == []  # met (the targets are registered after the rules), and retried past
    assert _state(h) == GATEWAY_STATE
    assert condition(status_of(h, "gateways", "web")["conditions"], "Programmed")["status"] == "True"

    custom(h).delete_namespaced_custom_object(GW, "v1", NS, "gateways", "web")
    await h.model_where(lambda m: m.gateways[GATEWAY].lifecycle.deleting)
    _fault(reconciler, "DeleteSecurityGroup", [(400, "DependencyViolation")], service="ec2")
    await h.reconcile(reconciler)
    for _ in range(3):
        if await h.reconcile(reconciler):
            break
    assert h.balancers() == [] and h.target_groups() == []
    owned = [{"Name": "tag:elbv2.meshctl.dev/cluster", "Values": ["test"]}]
    assert h.moto.client("ec2").describe_security_groups(Filters=owned)["SecurityGroups"] == []
    await h.model_where(lambda m: GATEWAY not in m.gateways)


@pytest.mark.parametrize(
    ("operation", "nth"),
    [("CreateTargetGroup", 2), ("CreateLoadBalancer", 1), ("CreateRule", 2), ("CreateSecurityGroup", 1)],
    ids=lambda v: str(v),
)
async def test_killed_mid_reconcile_a_restarted_reconciler_ends_in_the_same_state(
    harness: Harness, operation: str, nth: int
):
    h = harness
    await started(h, shop(), GATEWAY, ObjectKey("HTTPRoute", NS, "shop"))
    doomed, _ = h.reconciler()
    seen = []

    def kill(**_: Any) -> None:
        seen.append(operation)
        if len(seen) == nth:
            raise _Killed

    if operation.endswith("SecurityGroup"):
        doomed.clients.ec2.meta.events.register(f"before-call.ec2.{operation}", kill)
    else:
        doomed.clients.elbv2.meta.events.register(f"before-call.elastic-load-balancing-v2.{operation}", kill)
    with pytest.raises(_Killed):
        await h.reconcile(doomed)
    restarted, _ = h.reconciler()
    assert await h.reconcile(restarted)
    assert _state(h) == GATEWAY_STATE  # no duplicate, nothing orphaned
