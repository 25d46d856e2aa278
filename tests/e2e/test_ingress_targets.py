"""Readiness gates, NLB instance targets, TargetGroupBindings and bad input, end to end (moto over HTTP, the test
apiserver, the real kubernetes client). moto reports every target healthy at once, so target health comes from a
scripted fake behind the same interface as boto3 (describe_target_health)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client

from meshctl.model import ObjectKey
from tests.ingress_fixtures import NS, ec2_node, endpoint_slice, ingress_class, nlb_service, service, shop_ingress
from tests.ingress_harness import Harness

GATE = "target-health.elbv2.meshctl.dev/web"


class ScriptedHealth:
    """ELBv2's describe_target_health with states the test decides: a target is "initial" until made healthy."""

    def __init__(self, elbv2: Any) -> None:
        self.elbv2 = elbv2
        self.healthy: set[tuple[str, int]] = set()

    def describe_target_health(self, **kwargs: Any) -> dict:
        answer = self.elbv2.describe_target_health(**kwargs)
        for d in answer["TargetHealthDescriptions"]:
            target = (d["Target"]["Id"], d["Target"]["Port"])
            d["TargetHealth"] = {"State": "healthy" if target in self.healthy else "initial"}
        return answer


@pytest.fixture
async def harness(apiserver, moto):
    h = Harness(apiserver, moto)
    yield h
    await h.stop()


def gated_pod(name: str, ip: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web"}], "readinessGates": [{"conditionType": GATE}]},
        "status": {"podIP": ip, "conditions": [{"type": "ContainersReady", "status": "True"}]},
    }


def _gate(h: Harness, pod: str) -> str | None:
    obj = client.CoreV1Api(h.api).read_namespaced_pod(pod, NS)
    return next((c.status for c in obj.status.conditions or [] if c.type == GATE), None)


async def test_a_gated_pod_turns_ready_only_once_its_target_is_healthy(harness: Harness):
    h = harness
    # The pod is not Ready (its gate is not True yet), so the EndpointSlice says ready: false; it is registered
    # anyway because its containers are ready, and only its target's health opens the gate.
    slice_ = endpoint_slice("web", ["10.0.3.1"], suffix="a")
    slice_["endpoints"][0]["conditions"]["ready"] = False
    slice_["endpoints"][0]["targetRef"]["name"] = "web-1"
    ingress = shop_ingress("", name="web")
    ingress["metadata"]["annotations"] = {"alb.ingress.kubernetes.io/target-type": "ip"}
    ingress["spec"]["rules"] = [ingress["spec"]["rules"][0]]
    ingress["spec"]["rules"][0]["http"]["paths"] = ingress["spec"]["rules"][0]["http"]["paths"][:1]
    h.seed([ingress_class(), service("web"), slice_, gated_pod("web-1", "10.0.3.1"), ingress])
    await h.start()
    await h.model_where(lambda m: ObjectKey("Pod", NS, "web-1") in m.pods)
    reconciler, _ = h.reconciler(health=ScriptedHealth)
    health: ScriptedHealth = reconciler.clients.health

    await h.reconcile(reconciler)
    web = h.group_by_resource(f"{NS}/web-web:80")["TargetGroupArn"]
    assert h.targets(web) == {("10.0.3.1", 8080)}  # registered although not Ready
    assert _gate(h, "web-1") == "False"

    await h.model_where(lambda m: m.pods[ObjectKey("Pod", NS, "web-1")].gates == ((GATE, False),))
    await h.reconcile(reconciler)  # still initial: the gate stays shut
    assert _gate(h, "web-1") == "False"

    health.healthy.add(("10.0.3.1", 8080))
    await h.reconcile(reconciler)
    assert _gate(h, "web-1") == "True"
    await h.model_where(lambda m: m.pods[ObjectKey("Pod", NS, "web-1")].gates == ((GATE, True),))


async def test_nlb_instance_targets_are_the_nodes_and_local_traffic_checks_health_on_the_node_port(harness: Harness):
    h = harness
    ec2 = h.moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    instances = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, SubnetId=h.network.private[0])["Instances"]
    ]
    nodes = [
        ec2_node(f"node-{n}", instance, f"10.0.10.{n}", ready=n < 2)
        for n, instance in enumerate([*instances, "i-0notready"])
    ]
    nlb = nlb_service(externalTrafficPolicy="Local", healthCheckNodePort=32000)
    legacy = service("legacy")
    legacy["spec"].update(type="LoadBalancer")
    legacy["spec"]["ports"][0]["nodePort"] = 30800
    legacy["metadata"]["annotations"] = {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    h.seed([*nodes, nlb, legacy])
    await h.start()
    await h.model_where(lambda m: len(m.nodes) == 3 and ObjectKey("Service", NS, "game") in m.services)
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)

    (balancer,) = h.balancers()  # the legacy Service is the in-tree provider's: not ours without the flag
    assert h.tags(balancer["LoadBalancerArn"])["elbv2.meshctl.dev/stack"] == f"{NS}/game"
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (7000, "TCP")
    (group,) = h.target_groups()
    assert (group["TargetType"], group["Protocol"], group["Port"]) == ("instance", "TCP", 30700)
    assert (group["HealthCheckProtocol"], group["HealthCheckPort"], group["HealthCheckPath"]) == (
        "HTTP",
        "32000",
        "/healthz",
    )
    assert h.targets(group["TargetGroupArn"]) == {(i, 30700) for i in instances}
    service_status = client.CoreV1Api(h.api).read_namespaced_service_status("game", NS).status.load_balancer.ingress
    assert [i.hostname for i in service_status] == [balancer["DNSName"]]


async def test_target_group_binding_fills_an_existing_group_and_leaves_it_on_delete(harness: Harness):
    h = harness
    mine = h.elbv2.create_target_group(
        Name="hand-made", Protocol="HTTP", Port=8080, VpcId=h.network.vpc_id, TargetType="ip"
    )
    arn = mine["TargetGroups"][0]["TargetGroupArn"]
    binding = {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"targetGroupName": "hand-made", "serviceRef": {"name": "web", "port": 80}},
    }
    h.seed([service("web"), endpoint_slice("web", ["10.0.4.1", "10.0.4.2"]), binding])
    await h.start()
    key = ObjectKey("TargetGroupBinding", NS, "web")
    await h.model_where(lambda m: key in m.target_group_bindings)
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)
    assert h.targets(arn) == {("10.0.4.1", 8080), ("10.0.4.2", 8080)}
    await h.model_where(lambda m: "elbv2.meshctl.dev/resources" in m.target_group_bindings[key].lifecycle.finalizers)

    custom = client.CustomObjectsApi(h.api)
    await asyncio.to_thread(
        custom.delete_namespaced_custom_object, "elbv2.meshctl.dev", "v1beta1", NS, "targetgroupbindings", "web"
    )
    await h.model_where(lambda m: m.target_group_bindings[key].lifecycle.deleting)
    assert await h.reconcile(reconciler)
    assert h.targets(arn) == set()
    assert [g["TargetGroupName"] for g in h.target_groups()] == ["hand-made"]  # never ours to delete
    await h.model_where(lambda m: key not in m.target_group_bindings)


async def test_a_bad_annotation_is_an_event_and_other_ingresses_keep_reconciling(harness: Harness):
    h = harness
    good = shop_ingress("", name="good")
    good["metadata"]["annotations"] = {"alb.ingress.kubernetes.io/target-type": "ip"}
    bad = shop_ingress("", name="bad")
    bad["metadata"]["annotations"] = {
        "alb.ingress.kubernetes.io/scheme": "public",
        "alb.ingress.kubernetes.io/target-type": "ip",
    }
    docs = [ingress_class(), *(service(s) for s in ("web", "orders", "checkout-split")), good, bad]
    for d in (good, bad):
        d["spec"]["rules"][0]["http"]["paths"] = d["spec"]["rules"][0]["http"]["paths"][:1]
    h.seed(docs)
    await h.start()
    await h.model_where(lambda m: len(m.ingresses) == 2)
    reconciler, _ = h.reconciler()
    await h.reconcile(reconciler)
    (balancer,) = h.balancers()
    assert h.tags(balancer["LoadBalancerArn"])["elbv2.meshctl.dev/stack"] == f"{NS}/good"
    events = client.CoreV1Api(h.api).list_namespaced_event(NS).items
    (event,) = [e for e in events if e.involved_object.name == "bad"]
    assert (event.type, event.reason) == ("Warning", "InvalidAnnotation")
    assert "alb.ingress.kubernetes.io/scheme" in event.message and "'public'" in event.message
    assert "alb.ingress.kubernetes.io/scheme" in reconciler.errors[f"{NS}/bad"]
    await h.reconcile(reconciler)  # reported once, not on every pass
    assert (
        len([e for e in client.CoreV1Api(h.api).list_namespaced_event(NS).items if e.involved_object.name == "bad"])
        == 1
    )


async def test_without_the_binding_crd_the_rest_is_still_served(apiserver):
    """--ingress on a cluster without our TargetGroupBinding CRD: that kind counts as empty, not as 'never synced'
    (which would keep the whole mesh from being built)."""
    from meshctl.sources.kubernetes import KubernetesSource

    apiserver.seed([ingress_class(), service("web")])
    models = []

    async def sink(model):
        models.append(model)

    task = asyncio.create_task(KubernetesSource(apiserver.controller_client(), ingress=True).run(sink))
    try:
        from tests.conftest import eventually

        await eventually(lambda: bool(models), timeout=10)
        assert ObjectKey("Service", NS, "web") in models[-1].services and models[-1].target_group_bindings == {}
    finally:
        task.cancel()
