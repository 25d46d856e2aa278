"""Ingress -> ALB and Service -> NLB with real boto3 over HTTP against moto_server, the test apiserver and the real
kubernetes client (issue 10's "must show")."""

from __future__ import annotations

import asyncio

import pytest

from meshctl.model import ObjectKey
from tests.ingress_fixtures import NS, endpoint_slice, shop_documents
from tests.ingress_harness import Harness

SHOP = ObjectKey("Ingress", NS, "shop")


@pytest.fixture
async def harness(apiserver, moto):
    h = Harness(apiserver, moto)
    yield h
    await h.stop()


def certificate(h: Harness) -> str:
    return h.moto.client("acm").request_certificate(DomainName="shop.example.com")["CertificateArn"]


async def start_shop(h: Harness) -> None:
    """The issue's Ingress and its Services in the cluster, and the source's model holding them."""
    h.seed(shop_documents(certificate(h)))
    await h.start()
    await h.model_where(lambda m: SHOP in m.ingresses)


def _rules(h: Harness, listener_arn: str) -> list[dict]:
    return [r for r in h.elbv2.describe_rules(ListenerArn=listener_arn)["Rules"] if not r["IsDefault"]]


def _values(rule: dict, field: str) -> list[str]:
    (condition,) = [c for c in rule["Conditions"] if c["Field"] == field]
    key = {"host-header": "HostHeaderConfig", "path-pattern": "PathPatternConfig"}[field]
    return condition[key]["Values"]


async def test_ingress_yields_the_alb_and_a_second_pass_changes_nothing(harness: Harness):
    h = harness
    cert = certificate(h)
    h.seed(shop_documents(cert))
    await h.start()
    await h.model_where(lambda m: SHOP in m.ingresses)
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)

    (alb,) = h.balancers()
    assert (alb["Type"], alb["Scheme"]) == ("application", "internet-facing")
    tags = h.tags(alb["LoadBalancerArn"])
    assert tags["elbv2.meshctl.dev/cluster"] == "test" and tags["elbv2.meshctl.dev/stack"] == "shop/shop"
    assert tags["team"] == "shop"
    listeners = {
        li["Port"]: li for li in h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    }
    assert sorted(listeners) == [80, 443]
    (redirect,) = listeners[80]["DefaultActions"]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Port"] == "443"
    assert _rules(h, listeners[80]["ListenerArn"]) == []  # ssl-redirect: every HTTP request is redirected
    assert listeners[443]["Protocol"] == "HTTPS" and listeners[443]["Certificates"][0]["CertificateArn"] == cert

    groups = {h.tags(g["TargetGroupArn"])["elbv2.meshctl.dev/resource"]: g for g in h.target_groups()}
    assert sorted(groups) == [f"{NS}/shop-{s}:80" for s in ("checkout-v1", "checkout-v2", "orders", "web")]
    web = groups[f"{NS}/shop-web:80"]
    assert (web["TargetType"], web["Port"], web["HealthCheckPath"]) == ("ip", 8080, "/healthz")
    attributes = h.elbv2.describe_target_group_attributes(TargetGroupArn=web["TargetGroupArn"])["Attributes"]
    assert {"Key": "deregistration_delay.timeout_seconds", "Value": "30"} in attributes
    assert h.targets(web["TargetGroupArn"]) == {("10.0.1.10", 8080), ("10.0.1.11", 8080)}

    rules = sorted(_rules(h, listeners[443]["ListenerArn"]), key=lambda r: int(r["Priority"]))
    assert [(_values(r, "host-header"), _values(r, "path-pattern")) for r in rules] == [
        (["api.example.com"], ["/v1/orders"]),
        (["shop.example.com"], ["/checkout", "/checkout/*"]),
        (["shop.example.com"], ["/*"]),  # the catch-all after the longer prefix, as the Ingress spec reads
    ]
    (split,) = rules[1]["Actions"]
    weights = {g["TargetGroupArn"]: g["Weight"] for g in split["ForwardConfig"]["TargetGroups"]}
    assert weights == {
        groups[f"{NS}/shop-checkout-v1:80"]["TargetGroupArn"]: 90,
        groups[f"{NS}/shop-checkout-v2:80"]["TargetGroupArn"]: 10,
    }

    # The cluster shows the hostname and holds the Ingress with our finalizer.
    ingress = await h.model_where(lambda m: m.ingresses[SHOP].lifecycle.hostnames == (alb["DNSName"],))
    assert "ingress.meshctl.dev/resources" in ingress.ingresses[SHOP].lifecycle.finalizers

    # Unchanged input: no mutating call, from the same reconciler and from a new one (a restart), which also
    # skips reading target health thanks to the checkpoints stored on the Ingress.
    calls.clear()
    assert await h.reconcile(reconciler)
    assert set(calls.names) == {"DescribeTargetHealth"}  # only new targets' health (initial -> healthy) is read
    calls.clear()
    assert await h.reconcile(reconciler)
    assert calls.names == []
    await h.model_where(lambda m: bool(m.ingresses[SHOP].lifecycle.hostnames))
    restarted, after_restart = h.reconciler()
    assert await h.reconcile(restarted)
    assert after_restart.mutating() == []
    assert "DescribeTargetHealth" not in after_restart.names


async def test_scaling_registers_exactly_the_ready_endpoints_and_deregisters_first(harness: Harness):
    h = harness
    await start_shop(h)
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)
    web = h.group_by_resource(f"{NS}/shop-web:80")["TargetGroupArn"]
    discovery = __import__("kubernetes").client.DiscoveryV1Api(h.api)

    async def scale(ips: list[str], terminating: tuple[str, ...] = ()) -> None:
        body = endpoint_slice("web", ips, terminating=terminating)
        await asyncio.to_thread(discovery.replace_namespaced_endpoint_slice, "web-a", NS, body)
        wanted = len(ips)
        await h.model_where(
            lambda m: (
                len(m.endpoint_slices[ObjectKey("EndpointSlice", NS, "web-a")].endpoints) == wanted
                and sum(e.terminating for e in m.endpoint_slices[ObjectKey("EndpointSlice", NS, "web-a")].endpoints)
                == len(terminating)
            )
        )
        calls.clear()
        assert await h.reconcile(reconciler)

    three = [f"10.0.2.{i}" for i in range(3)]
    await scale(three)
    assert h.targets(web) == {(ip, 8080) for ip in three}
    ten = [f"10.0.2.{i}" for i in range(10)]
    await scale(ten)
    assert h.targets(web) == {(ip, 8080) for ip in ten}
    assert calls.mutating().count("RegisterTargets") == 1  # one batch

    # Two pods terminate while one new pod starts: the terminating ones leave before the new one joins.
    await scale([*ten[:2], *ten[8:], "10.0.2.50"], terminating=(ten[8], ten[9]))
    assert h.targets(web) == {(ten[0], 8080), (ten[1], 8080), ("10.0.2.50", 8080)}
    assert calls.mutating() == ["DeregisterTargets", "RegisterTargets"]
    await scale(ten[:2])
    assert h.targets(web) == {(ip, 8080) for ip in ten[:2]}


def _foreign_resources(h: Harness) -> set[str]:
    """An untagged load balancer and target group, and another cluster's: none of them may ever change."""
    arns = set()
    subnets = h.network.private
    for name, tags in (
        ("untagged", []),
        (
            "other",
            [
                {"Key": "elbv2.meshctl.dev/cluster", "Value": "other"},
                {"Key": "elbv2.meshctl.dev/stack", "Value": "shop/shop"},
                {"Key": "elbv2.meshctl.dev/resource", "Value": "LoadBalancer"},
            ],
        ),
    ):
        lb = h.elbv2.create_load_balancer(
            Name=f"{name}-lb",
            Subnets=subnets,
            Scheme="internal",
            Type="application",
            **({"Tags": tags} if tags else {}),
        )
        tg = h.elbv2.create_target_group(
            Name=f"{name}-tg",
            Protocol="HTTP",
            Port=80,
            VpcId=h.network.vpc_id,
            TargetType="ip",
            **({"Tags": tags} if tags else {}),
        )
        arns |= {lb["LoadBalancers"][0]["LoadBalancerArn"], tg["TargetGroups"][0]["TargetGroupArn"]}
    return arns


async def test_deleting_the_ingress_removes_only_what_we_own_then_releases_it(harness: Harness):
    h = harness
    foreign = _foreign_resources(h)
    h.moto.client("ec2").create_security_group(GroupName="foreign", Description="not ours", VpcId=h.network.vpc_id)
    await start_shop(h)
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)
    await h.model_where(lambda m: "ingress.meshctl.dev/resources" in m.ingresses[SHOP].lifecycle.finalizers)
    assert len(h.balancers()) == 3 and len(h.target_groups()) == 6

    await asyncio.to_thread(h.networking().delete_namespaced_ingress, "shop", NS)
    await h.model_where(lambda m: m.ingresses[SHOP].lifecycle.deleting)
    calls.clear()
    assert await h.reconcile(reconciler)
    remaining = {b["LoadBalancerArn"] for b in h.balancers()} | {g["TargetGroupArn"] for g in h.target_groups()}
    assert remaining == foreign
    # The load balancer goes first (its listeners and rules with it), then the target groups, then its security
    # group and, no load balancer of ours left, the cluster's backend group.
    assert calls.mutating() == ["DeleteLoadBalancer"] + ["DeleteTargetGroup"] * 4 + ["DeleteSecurityGroup"] * 2
    groups = {g["GroupName"] for g in h.moto.client("ec2").describe_security_groups()["SecurityGroups"]}
    assert "foreign" in groups and not any(g.startswith("k8s-") for g in groups)  # a group not ours is left
    await h.model_where(lambda m: SHOP not in m.ingresses)  # the finalizer was released: Kubernetes deleted it


class _Killed(BaseException):
    """Stops a reconcile pass mid-way, as a kill -9 would: nothing after the call runs, nothing is cleaned up."""


def _fault(reconciler, operation: str, responses: list[tuple[int, str]], service: str = "elbv2"):
    """The next attempts of ``operation`` (of ``service``: elbv2 or ec2) get these (status, error code) answers
    instead of reaching moto."""
    from botocore.awsrequest import AWSResponse

    pending = list(responses)

    class Raw:
        def __init__(self, body: bytes) -> None:
            self.body = body

        def stream(self, **_):
            yield self.body

    def before_send(request, **_):
        if not pending:
            return None
        status, code = pending.pop(0)
        error = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
        body = (
            f"<Response><Errors>{error}</Errors><RequestID>x</RequestID></Response>"
            if service == "ec2"
            else f"<ErrorResponse>{error}</ErrorResponse>"
        )
        return AWSResponse(request.url, status, {"Content-Type": "text/xml"}, Raw(body.encode()))

    client, event = {
        "elbv2": (reconciler.clients.elbv2, "elastic-load-balancing-v2"),
        "ec2": (reconciler.clients.ec2, "ec2"),
    }[service]
    client.meta.events.register(f"before-send.{event}.{operation}", before_send)
    return pending


def _state(h: Harness) -> dict:
    """Everything we own, by resource tag, with counts (a duplicate shows as a count of 2)."""
    state: dict = {"balancers": [], "groups": {}, "rules": {}, "security_groups": []}
    owned = [{"Name": "tag:elbv2.meshctl.dev/cluster", "Values": ["test"]}]
    for group in h.moto.client("ec2").describe_security_groups(Filters=owned)["SecurityGroups"]:
        tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        state["security_groups"].append(tags["elbv2.meshctl.dev/resource"])
    state["security_groups"].sort()
    for lb in h.balancers():
        if h.tags(lb["LoadBalancerArn"]).get("elbv2.meshctl.dev/cluster") != "test":
            continue
        state["balancers"].append(lb["Type"])
        for li in h.elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
            state["rules"][li["Port"]] = sorted(int(r["Priority"]) for r in _rules(h, li["ListenerArn"]))
    for g in h.target_groups():
        tags = h.tags(g["TargetGroupArn"])
        if tags.get("elbv2.meshctl.dev/cluster") == "test":
            entry = state["groups"].setdefault(tags["elbv2.meshctl.dev/resource"], [])
            entry.append(sorted(h.targets(g["TargetGroupArn"])))
    return state


EXPECTED = {
    "balancers": ["application"],
    "security_groups": ["ManagedLBSecurityGroup", "backend-sg"],  # a duplicate would show twice
    "rules": {80: [], 443: [1, 2, 3]},
    "groups": {
        f"{NS}/shop-checkout-v1:80": [[("10.0.1.30", 8080)]],
        f"{NS}/shop-checkout-v2:80": [[("10.0.1.40", 8080)]],
        f"{NS}/shop-orders:80": [[("10.0.1.20", 8080)]],
        f"{NS}/shop-web:80": [[("10.0.1.10", 8080), ("10.0.1.11", 8080)]],
    },
}


async def test_throttling_and_server_errors_are_retried_to_the_same_end_state(harness: Harness):
    h = harness
    await start_shop(h)
    reconciler, _calls = h.reconciler()
    # Few enough that standard retries (jittered back-off, up to 1 s, 2 s, ...) keep the test short.
    throttled = _fault(reconciler, "RegisterTargets", [(400, "Throttling")] * 2)
    throttled_ec2 = _fault(reconciler, "CreateSecurityGroup", [(503, "RequestLimitExceeded")], service="ec2")
    throttled_rules = _fault(reconciler, "CreateRule", [(400, "Throttling")])
    failed = _fault(reconciler, "CreateLoadBalancer", [(500, "InternalFailure")])
    assert await h.reconcile(reconciler)
    assert throttled == throttled_rules == failed == throttled_ec2 == []  # every fault was met, and retried past
    assert _state(h) == EXPECTED
    metrics = reconciler.metrics
    assert metrics.throttles.labels("RegisterTargets")._value.get() == 2
    assert metrics.errors.labels("CreateLoadBalancer", "InternalFailure")._value.get() == 1


async def test_a_failed_pass_is_reported_and_the_next_one_finishes(harness: Harness):
    h = harness
    await start_shop(h)
    reconciler, _ = h.reconciler()
    _fault(reconciler, "CreateListener", [(400, "ValidationError")])  # not retried by boto3
    assert not await h.reconcile(reconciler)
    assert "CreateListener: ValidationError: injected" in reconciler.errors["shop/shop"]
    assert await h.reconcile(reconciler)
    assert _state(h) == EXPECTED and "shop/shop" not in reconciler.errors


@pytest.mark.parametrize(
    ("operation", "nth"),
    [
        ("CreateTargetGroup", 2),
        ("CreateLoadBalancer", 1),
        ("CreateRule", 2),
        ("RegisterTargets", 2),
        ("CreateSecurityGroup", 2),  # the frontend group made, not the backend group
        ("AuthorizeSecurityGroupIngress", 1),
    ],
    ids=lambda v: str(v),
)
async def test_killed_mid_reconcile_a_restart_ends_in_the_same_state(harness: Harness, operation: str, nth: int):
    h = harness
    await start_shop(h)
    doomed, _ = h.reconciler()
    seen = []

    def kill(**_):
        seen.append(operation)
        if len(seen) == nth:
            raise _Killed  # after nth - 1 calls went through

    if operation.endswith(("SecurityGroup", "SecurityGroupIngress")):
        doomed.clients.ec2.meta.events.register(f"before-call.ec2.{operation}", kill)
    else:
        doomed.clients.elbv2.meta.events.register(f"before-call.elastic-load-balancing-v2.{operation}", kill)
    with pytest.raises(_Killed):
        await h.reconcile(doomed)
    restarted, _ = h.reconciler()
    assert await h.reconcile(restarted)
    assert _state(h) == EXPECTED  # no duplicate, nothing orphaned


async def test_a_scheme_change_creates_the_new_alb_then_deletes_the_old(harness: Harness):
    h = harness
    await start_shop(h)
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)
    (old,) = h.balancers()
    patch = {"metadata": {"annotations": {"alb.ingress.kubernetes.io/scheme": "internal"}}}
    await asyncio.to_thread(h.networking().patch_namespaced_ingress, "shop", NS, patch)
    await h.model_where(
        lambda m: m.ingresses[SHOP].lifecycle.annotations["alb.ingress.kubernetes.io/scheme"] == "internal"
    )
    calls.clear()
    assert await h.reconcile(reconciler)
    (new,) = h.balancers()
    assert new["Scheme"] == "internal" and new["LoadBalancerArn"] != old["LoadBalancerArn"]
    mutating = calls.mutating()
    assert mutating.index("CreateLoadBalancer") < mutating.index("DeleteLoadBalancer")  # create, then delete
    assert "DeleteTargetGroup" not in mutating and _state(h) == EXPECTED  # target groups kept, with their targets
    await h.model_where(lambda m: m.ingresses[SHOP].lifecycle.hostnames == (new["DNSName"],))
