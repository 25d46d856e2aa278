"""Ingress -> ALB and Service -> NLB with real boto3 over HTTP against moto_server, the test apiserver and the real
kubernetes client (issue 10's "must show")."""

from __future__ import annotations

import asyncio

import pytest

from meshctl.xds.model import ObjectKey
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
    assert calls.names == []
    await h.model_where(lambda m: bool(m.ingresses[SHOP].lifecycle.hostnames))
    restarted, after_restart = h.reconciler()
    assert await h.reconcile(restarted)
    assert after_restart.mutating() == []
    assert "DescribeTargetHealth" not in after_restart.names


async def test_scaling_registers_exactly_the_ready_endpoints_and_deregisters_first(harness: Harness):
    h = harness
    h.seed(shop_documents(certificate(h)))
    await h.start()
    await h.model_where(lambda m: SHOP in m.ingresses)
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
