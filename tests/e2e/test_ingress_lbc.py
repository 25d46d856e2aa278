"""The AWS Load Balancer Controller's users' manifests, unchanged (issue 32): its 2048 example with the legacy
``kubernetes.io/ingress.class: alb`` annotation, the same Ingress through an IngressClass of LBC's controller or the
cluster's default IngressClass, and another controller's Ingress left alone. moto over HTTP, the test apiserver, the
real kubernetes client."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from meshctl.model import ObjectKey
from tests.aws import RuleTransforms
from tests.ingress_fixtures import import_acm_certificate
from tests.ingress_harness import Harness

NS = "game-2048"
EXAMPLE = [d for d in yaml.safe_load_all((Path(__file__).parents[1] / "testdata/lbc/2048_full.yaml").read_text()) if d]
INGRESS = ObjectKey("Ingress", NS, "ingress-2048")


@pytest.fixture
async def harness(apiserver, moto):
    h = Harness(apiserver, moto)
    yield h
    await h.stop()


def pods_of_the_deployment() -> dict[str, Any]:
    """What the example's Deployment would make (the test apiserver runs no controllers): its pods' endpoints."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "service-2048-a",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": "service-2048"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"10.0.3.{i}"], "conditions": {"ready": True}} for i in (1, 2)],
    }


def example(**change: Any) -> list[dict[str, Any]]:
    """The example as shipped (its Deployment as its endpoints); ``annotations``/``spec`` change its Ingress."""
    docs = [copy.deepcopy(d) for d in EXAMPLE if d["kind"] != "Deployment"]
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    if "annotations" in change:
        ingress["metadata"]["annotations"] = change["annotations"]
    ingress["spec"].update(change.get("spec", {}))
    return [*docs, pods_of_the_deployment()]


def ingress_class(name: str, controller: str, *, default: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if default:
        meta["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": meta,
        "spec": {"controller": controller},
    }


WITHOUT_CLASS = {"alb.ingress.kubernetes.io/scheme": "internet-facing", "alb.ingress.kubernetes.io/target-type": "ip"}


async def reconciled(h: Harness, docs: list[dict[str, Any]], **settings: Any) -> None:
    h.seed(docs)
    await h.start()
    await h.model_where(
        lambda m: INGRESS in m.ingresses and any(s.meta.name == "service-2048-a" for s in m.endpoint_slices.values())
    )
    reconciler, _ = h.reconciler(**settings)
    assert await h.reconcile(reconciler)


def assert_the_2048_alb(h: Harness) -> None:
    (alb,) = h.balancers()
    assert (alb["Type"], alb["Scheme"]) == ("application", "internet-facing")
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    (group,) = h.target_groups()
    assert (group["TargetType"], group["Port"]) == ("ip", 80)
    assert h.targets(group["TargetGroupArn"]) == {("10.0.3.1", 80), ("10.0.3.2", 80)}


async def test_lbcs_2048_example_unchanged_gets_its_alb(harness: Harness):
    await reconciled(harness, example())
    assert_the_2048_alb(harness)


async def test_the_same_ingress_through_an_ingressclass_of_lbcs_controller(harness: Harness):
    docs = [
        ingress_class("alb", "ingress.k8s.aws/alb"),
        *example(annotations=WITHOUT_CLASS, spec={"ingressClassName": "alb"}),
    ]
    await reconciled(harness, docs)
    assert_the_2048_alb(harness)


async def test_an_ingress_without_a_class_takes_the_clusters_default_ingressclass(harness: Harness):
    docs = [ingress_class("meshctl", "meshctl.dev/ingress", default=True), *example(annotations=WITHOUT_CLASS)]
    await reconciled(harness, docs)
    assert_the_2048_alb(harness)


async def test_another_controllers_ingress_is_left_alone(harness: Harness):
    other = {**WITHOUT_CLASS, "kubernetes.io/ingress.class": "nginx"}
    # The annotation wins over a default IngressClass of ours, as in LBC.
    docs = [ingress_class("meshctl", "meshctl.dev/ingress", default=True), *example(annotations=other)]
    await reconciled(harness, docs)
    assert harness.balancers() == [] and harness.target_groups() == []


async def test_ingress_class_flag_names_the_annotation_value_that_is_ours(harness: Harness):
    mine = {**WITHOUT_CLASS, "kubernetes.io/ingress.class": "meshctl"}
    await reconciled(harness, example(annotations=mine), ingress_class="meshctl")
    assert_the_2048_alb(harness)


async def test_the_in_tree_nlb_with_internal_set_to_a_cidr_is_internal(harness: Harness):
    """The EKS documentation's in-tree example: ``aws-load-balancer-internal: 0.0.0.0/0`` (any value but "false" is
    internal to the in-tree provider). It was rejected ("is not 'true' or 'false'") and got no load balancer."""
    h = harness
    nlb = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "nginx",
            "namespace": NS,
            "annotations": {
                "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
                "service.beta.kubernetes.io/aws-load-balancer-internal": "0.0.0.0/0",
            },
        },
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "nginx"},
            "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP", "nodePort": 30080}],
        },
    }
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    h.seed([namespace, nlb])
    await h.start()
    await h.model_where(lambda m: ObjectKey("Service", NS, "nginx") in m.services)
    reconciler, _ = h.reconciler(legacy_nlb=True)
    assert await h.reconcile(reconciler)
    (balancer,) = h.balancers()
    assert (balancer["Type"], balancer["Scheme"]) == ("network", "internal")
    assert not balancer.get("SecurityGroups")  # the in-tree provider's NLBs have none (LBC's rule too)


async def test_an_nlb_gets_security_groups_open_to_its_source_ranges_and_its_instances_allow_the_backend(
    harness: Harness,
):
    """LBC (v2.6+) gives a new NLB a managed frontend group (listen ports open to spec.loadBalancerSourceRanges)
    and the backend group; the nodes' group allows the backend group on the node port."""
    from tests.ingress_fixtures import NS as SHOP
    from tests.ingress_fixtures import ec2_node, nlb_service

    h = harness
    ec2 = h.moto.client("ec2")
    node_sg = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=h.network.vpc_id)["GroupId"]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (instance,) = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, SubnetId=h.network.private[0], SecurityGroupIds=[node_sg]
    )["Instances"]
    node = ec2_node("node-0", instance["InstanceId"], "10.0.10.5")
    service = nlb_service(loadBalancerSourceRanges=["192.0.2.0/24", "198.51.100.0/24"])
    service["metadata"]["annotations"] = {"service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "instance"}
    h.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SHOP}}, node, service])
    await h.start()
    await h.model_where(lambda m: len(m.nodes) == 1 and ObjectKey("Service", SHOP, "game") in m.services)
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)
    (nlb,) = h.balancers()
    names = {_group(h, g)["GroupName"]: _group(h, g) for g in nlb["SecurityGroups"]}
    (frontend,) = [g for n, g in names.items() if not n.startswith("k8s-traffic-")]
    (backend,) = [g["GroupId"] for n, g in names.items() if n.startswith("k8s-traffic-")]
    assert _inbound(frontend) == {("tcp", 7000, 7000, "192.0.2.0/24"), ("tcp", 7000, 7000, "198.51.100.0/24")}
    assert _inbound(_group(h, node_sg)) == {("tcp", 30700, 30700, backend)}


def grpc_example() -> list[dict[str, Any]]:
    """LBC's gRPC example (docs/examples/grpc: its namespace, headless Service and Ingress, the Ingress in
    networking.k8s.io/v1 form, which the v1beta1 original becomes). No certificate-arn: the HTTPS listener's
    certificate is found in ACM by the rule's host, as LBC does."""
    annotations = {
        "alb.ingress.kubernetes.io/actions.ssl-redirect": '{"Type": "redirect", "RedirectConfig":'
        ' { "Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}',
        "alb.ingress.kubernetes.io/backend-protocol-version": "GRPC",
        "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}, {"HTTPS":443}]',
        "alb.ingress.kubernetes.io/scheme": "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "kubernetes.io/ingress.class": "alb",
    }
    path = lambda p, backend: {"path": p, "pathType": "ImplementationSpecific", "backend": {"service": backend}}  # noqa: E731
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "grpcserver"}},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "grpcserver", "namespace": "grpcserver"},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": "grpcserver"},
                "ports": [{"port": 50051, "targetPort": 50051}],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "grpcserver-a",
                "namespace": "grpcserver",
                "labels": {"kubernetes.io/service-name": "grpcserver"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 50051, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.5.1"], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "grpcserver", "namespace": "grpcserver", "annotations": annotations},
            "spec": {
                "rules": [
                    {
                        "host": "grpcserver.example.com",
                        "http": {
                            "paths": [
                                path("/*", {"name": "ssl-redirect", "port": {"name": "use-annotation"}}),
                                path("/helloworld.Greeter/*", {"name": "grpcserver", "port": {"number": 50051}}),
                            ]
                        },
                    }
                ]
            },
        },
    ]


async def test_lbcs_grpc_example_gets_a_grpc_target_group_with_grpc_success_codes(harness: Harness):
    h = harness
    import_acm_certificate(h.moto.client("acm"), "other.example.com")
    arn = import_acm_certificate(h.moto.client("acm"), "grpcserver.example.com")
    h.seed(grpc_example())
    await h.start()
    key = ObjectKey("Ingress", "grpcserver", "grpcserver")
    await h.model_where(lambda m: key in m.ingresses and ObjectKey("Service", "grpcserver", "grpcserver") in m.services)
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)
    (group,) = h.target_groups()
    assert (group["Protocol"], group["ProtocolVersion"], group["TargetType"], group["Port"]) == (
        "HTTP",
        "GRPC",
        "ip",
        50051,
    )
    assert (group["HealthCheckPath"], group["Matcher"]) == ("/AWS.ALB/healthcheck", {"GrpcCode": "12"})
    assert h.targets(group["TargetGroupArn"]) == {("10.0.5.1", 50051)}
    (alb,) = h.balancers()
    listeners = {
        li["Port"]: li for li in h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    }
    assert sorted(listeners) == [80, 443]
    assert [c["CertificateArn"] for c in listeners[443]["Certificates"]] == [arn]  # discovered by host
    rules = h.elbv2.describe_rules(ListenerArn=listeners[443]["ListenerArn"])["Rules"]
    forwards = [r for r in rules if any(a["Type"] == "forward" for a in r["Actions"])]
    assert any(
        c.get("PathPatternConfig", {}).get("Values") == ["/helloworld.Greeter/*"]
        for r in forwards
        for c in r["Conditions"]
    ), rules


async def test_grpc_success_codes_out_of_range_are_refused_on_the_ingress(harness: Harness):
    """gRPC status codes are 0-99 (moto would take 200): the Ingress gets an error naming the annotation."""
    h = harness
    import_acm_certificate(h.moto.client("acm"), "grpcserver.example.com")
    docs = grpc_example()
    docs[-1]["metadata"]["annotations"]["alb.ingress.kubernetes.io/success-codes"] = "200"
    h.seed(docs)
    await h.start()
    await h.model_where(lambda m: ObjectKey("Ingress", "grpcserver", "grpcserver") in m.ingresses)
    reconciler, _ = h.reconciler()
    await h.reconcile(reconciler)
    assert h.target_groups() == [] and h.balancers() == []
    events = client.CoreV1Api(h.api).list_namespaced_event("grpcserver").items
    (event,) = [e for e in events if e.involved_object.name == "grpcserver"]
    assert (event.type, event.reason) == ("Warning", "InvalidAnnotation")
    assert "alb.ingress.kubernetes.io/success-codes" in event.message and "0-99" in event.message


def _group(h: Harness, group_id: str) -> dict[str, Any]:
    (group,) = h.moto.client("ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return group


def _inbound(group: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {
        (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r.get("CidrIp") or r.get("GroupId"))
        for p in group["IpPermissions"]
        for r in [*p.get("IpRanges", []), *p.get("UserIdGroupPairs", [])]
    }


async def test_the_2048_alb_gets_lbcs_frontend_and_backend_security_groups(harness: Harness):
    """The managed frontend group opens the listen port to 0.0.0.0/0 (an internet-facing ALB with AWS's default
    group would accept nothing from the internet), the cluster's backend group beside it; a rule added by hand to
    the managed group is revoked; an unchanged stack costs no changing call after a restart; inbound-cidrs changes
    only the rules that differ."""
    h = harness
    await reconciled(h, example())
    (alb,) = h.balancers()
    groups = {_group(h, g)["GroupName"]: _group(h, g) for g in alb["SecurityGroups"]}
    assert len(groups) == 2
    (frontend,) = [g for n, g in groups.items() if not n.startswith("k8s-traffic-")]
    (backend,) = [g for n, g in groups.items() if n.startswith("k8s-traffic-")]
    assert _inbound(frontend) == {("tcp", 80, 80, "0.0.0.0/0")}
    tags = {t["Key"]: t["Value"] for t in frontend["Tags"]}
    assert tags["elbv2.meshctl.dev/stack"] == f"{NS}/ingress-2048" and tags["elbv2.meshctl.dev/cluster"] == "test"
    assert {t["Key"]: t["Value"] for t in backend["Tags"]}["elbv2.meshctl.dev/resource"] == "backend-sg"

    ec2 = h.moto.client("ec2")
    ec2.authorize_security_group_ingress(
        GroupId=frontend["GroupId"], IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.9.0.0/16"
    )
    reconciler, _ = h.reconciler()  # a restart: compares everything with AWS
    assert await h.reconcile(reconciler)
    assert _inbound(_group(h, frontend["GroupId"])) == {("tcp", 80, 80, "0.0.0.0/0")}

    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)
    assert calls.mutating() == []  # nothing changed, nothing changing called (EC2 or ELBv2)

    annotated = {**EXAMPLE[-1]["metadata"]["annotations"], "alb.ingress.kubernetes.io/inbound-cidrs": "10.0.0.0/8"}
    await asyncio.to_thread(
        client.NetworkingV1Api(h.api).patch_namespaced_ingress,
        "ingress-2048",
        NS,
        {"metadata": {"annotations": annotated}},
    )
    await h.model_where(lambda m: "10.0.0.0/8" in str(m.ingresses[INGRESS].lifecycle.annotations))
    calls.clear()
    assert await h.reconcile(reconciler)
    assert _inbound(_group(h, frontend["GroupId"])) == {("tcp", 80, 80, "10.0.0.0/8")}
    assert sorted(c for c in calls.mutating() if "SecurityGroup" in c) == [
        "AuthorizeSecurityGroupIngress",
        "RevokeSecurityGroupIngress",
    ]


async def test_a_group_still_in_use_is_deleted_on_a_later_pass_and_the_ingress_waits_for_it(harness: Harness):
    """AWS releases a deleted load balancer's network interfaces some seconds later: DeleteSecurityGroup says
    DependencyViolation meanwhile (moto never does: injected). The Ingress keeps its finalizer until the group is
    gone; nothing is orphaned."""
    from tests.e2e.test_ingress import _fault

    h = harness
    await reconciled(h, example())
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)
    await asyncio.to_thread(client.NetworkingV1Api(h.api).delete_namespaced_ingress, "ingress-2048", NS)
    await h.model_where(lambda m: m.ingresses[INGRESS].lifecycle.deleting)
    _fault(reconciler, "DeleteSecurityGroup", [(400, "DependencyViolation")], service="ec2")
    assert not await h.reconcile(reconciler)  # not settled: tried again soon
    assert h.balancers() == [] and INGRESS in h.model.ingresses  # the finalizer is kept
    assert "still in use" in reconciler.errors[f"{NS}/ingress-2048"]
    assert await h.reconcile(reconciler)
    names = {g["GroupName"] for g in h.moto.client("ec2").describe_security_groups()["SecurityGroups"]}
    assert not any(n.startswith("k8s-") for n in names), names
    await h.model_where(lambda m: INGRESS not in m.ingresses)


async def test_the_targets_group_allows_the_backend_group_and_only_our_rule_goes_on_delete(harness: Harness):
    """LBC's rule: the targets' network interfaces carry two groups, one tagged kubernetes.io/cluster/<cluster>;
    that one gets a rule from the backend group on the target port, described as ours. Deleting the Ingress removes
    that rule and our groups; the user's rule and groups stay."""
    h = harness
    ec2 = h.moto.client("ec2")
    vpc = h.network.vpc_id
    node_sg = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    ec2.create_tags(Resources=[node_sg], Tags=[{"Key": "kubernetes.io/cluster/test", "Value": "owned"}])
    other_sg = ec2.create_security_group(GroupName="other", Description="other", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=node_sg, IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="10.0.0.0/8")
    pods = ["10.0.10.21", "10.0.10.22"]
    for ip in pods:  # (moto finds an interface by its primary address only; AWS by any of its addresses)
        ec2.create_network_interface(SubnetId=h.network.private[0], PrivateIpAddress=ip, Groups=[node_sg, other_sg])
    docs = example()
    docs[-1]["endpoints"] = [{"addresses": [ip], "conditions": {"ready": True}} for ip in pods]
    await reconciled(h, docs)
    (alb,) = h.balancers()
    backend = next(g for g in alb["SecurityGroups"] if _group(h, g)["GroupName"].startswith("k8s-traffic-"))
    rules = _group(h, node_sg)["IpPermissions"]
    ours = [p for p in rules if p.get("UserIdGroupPairs")]
    assert [(p["FromPort"], p["ToPort"], p["UserIdGroupPairs"][0]["GroupId"]) for p in ours] == [(80, 80, backend)]
    assert ours[0]["UserIdGroupPairs"][0]["Description"] == "elbv2.meshctl.dev/targetGroupBinding=shared"
    assert _group(h, other_sg)["IpPermissions"] == []  # the untagged group is not touched

    reconciler, calls = h.reconciler()  # a restart: nothing to change
    assert await h.reconcile(reconciler)
    assert calls.mutating() == []

    await asyncio.to_thread(client.NetworkingV1Api(h.api).delete_namespaced_ingress, "ingress-2048", NS)
    await h.model_where(lambda m: m.ingresses[INGRESS].lifecycle.deleting)
    assert await h.reconcile(reconciler)
    assert _inbound(_group(h, node_sg)) == {("tcp", 22, 22, "10.0.0.0/8")}  # the user's rule stays, ours went
    names = {g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    assert {"nodes", "other"} <= names and not any(n.startswith("k8s-") for n in names), names


async def test_an_interface_with_two_cluster_tagged_groups_is_an_error_on_the_ingress(harness: Harness):
    h = harness
    ec2 = h.moto.client("ec2")
    tagged = []
    for name in ("eks-cluster-sg", "nodes"):
        group = ec2.create_security_group(GroupName=name, Description=name, VpcId=h.network.vpc_id)["GroupId"]
        ec2.create_tags(Resources=[group], Tags=[{"Key": "kubernetes.io/cluster/test", "Value": "owned"}])
        tagged.append(group)
    pods = ["10.0.10.31", "10.0.10.32"]
    for ip in pods:
        ec2.create_network_interface(SubnetId=h.network.private[0], PrivateIpAddress=ip, Groups=tagged)
    docs = example()
    docs[-1]["endpoints"] = [{"addresses": [ip], "conditions": {"ready": True}} for ip in pods]
    await reconciled(h, docs)
    assert len(h.balancers()) == 1  # the load balancer is made; that target's group gets no rule
    events = client.CoreV1Api(h.api).list_namespaced_event(NS).items
    (event,) = [e for e in events if e.reason == "TargetSecurityGroup"]  # one Event for both targets
    assert event.message.startswith("targets 10.0.10.31, 10.0.10.32: expected exactly one of its security groups")
    assert "found 2" in event.message
    assert all(not g["IpPermissions"] for g in ec2.describe_security_groups(GroupIds=tagged)["SecurityGroups"])


async def test_deletion_protection_is_honoured_by_meshctl_itself(harness: Harness):
    """load-balancer-attributes sets only the keys it names, once (a restart changes nothing); with
    deletion_protection.enabled=true the ALB is not deleted with its Ingress (moto ignores the attribute: meshctl
    checks it), the Ingress waits, and once protection is turned off in AWS both go."""
    h = harness
    annotations = {
        **EXAMPLE[-1]["metadata"]["annotations"],
        "alb.ingress.kubernetes.io/load-balancer-attributes": "deletion_protection.enabled=true,idle_timeout.timeout_seconds=90",
    }
    await reconciled(h, example(annotations=annotations))
    (alb,) = h.balancers()
    attributes = {
        a["Key"]: a["Value"]
        for a in h.elbv2.describe_load_balancer_attributes(LoadBalancerArn=alb["LoadBalancerArn"])["Attributes"]
    }
    assert attributes["deletion_protection.enabled"] == "true" and attributes["idle_timeout.timeout_seconds"] == "90"
    reconciler, calls = h.reconciler()
    assert await h.reconcile(reconciler)
    assert calls.mutating() == []

    await asyncio.to_thread(client.NetworkingV1Api(h.api).delete_namespaced_ingress, "ingress-2048", NS)
    await h.model_where(lambda m: m.ingresses[INGRESS].lifecycle.deleting)
    assert not await h.reconcile(reconciler)
    assert len(h.balancers()) == 1 and INGRESS in h.model.ingresses
    assert "deletion protection on" in reconciler.errors[f"{NS}/ingress-2048"]

    h.elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=alb["LoadBalancerArn"], Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}]
    )
    assert await h.reconcile(reconciler)
    assert h.balancers() == [] and h.target_groups() == []
    await h.model_where(lambda m: INGRESS not in m.ingresses)


CONDITIONS = (
    '[{"field":"http-header","httpHeaderConfig":{"httpHeaderName":"HeaderName","values":["HeaderValue1","HeaderValue2"]}},'
    '{"field":"query-string","queryStringConfig":{"values":[{"key":"paramA","value":"valueA1"}]}},'
    '{"field":"http-request-method","httpRequestMethodConfig":{"Values":["GET","HEAD"]}},'
    '{"field":"source-ip","sourceIpConfig":{"values":["192.168.0.0/16"]}}]'
)  # LBC's documentation example for alb.ingress.kubernetes.io/conditions.<service>


async def test_conditions_annotation_adds_lbcs_conditions_to_the_backends_rules(harness: Harness):
    h = harness
    annotations = {
        **EXAMPLE[-1]["metadata"]["annotations"],
        "alb.ingress.kubernetes.io/conditions.service-2048": CONDITIONS,
    }
    await reconciled(h, example(annotations=annotations))
    (alb,) = h.balancers()
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    (rule,) = [r for r in h.elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    by_field = {c["Field"]: c for c in rule["Conditions"]}
    assert set(by_field) == {"path-pattern", "http-header", "query-string", "http-request-method", "source-ip"}
    assert by_field["http-header"]["HttpHeaderConfig"] == {
        "HttpHeaderName": "HeaderName",
        "Values": ["HeaderValue1", "HeaderValue2"],
    }
    assert by_field["query-string"]["QueryStringConfig"]["Values"] == [{"Key": "paramA", "Value": "valueA1"}]
    assert by_field["http-request-method"]["HttpRequestMethodConfig"]["Values"] == ["GET", "HEAD"]
    assert by_field["source-ip"]["SourceIpConfig"]["Values"] == ["192.168.0.0/16"]
    reconciler, calls = h.reconciler()  # a restart: the rule as AWS describes it is the rule wanted
    assert await h.reconcile(reconciler)
    assert calls.mutating() == []


async def test_without_a_certificate_for_its_host_the_https_ingress_says_so(harness: Harness):
    h = harness
    import_acm_certificate(h.moto.client("acm"), "*.other.example.com")  # covers a.other.example.com only
    h.seed(grpc_example())
    await h.start()
    await h.model_where(lambda m: ObjectKey("Ingress", "grpcserver", "grpcserver") in m.ingresses)
    reconciler, _ = h.reconciler()
    await h.reconcile(reconciler)
    assert h.balancers() == []
    events = client.CoreV1Api(h.api).list_namespaced_event("grpcserver").items
    (event,) = [e for e in events if e.involved_object.name == "grpcserver"]
    assert (
        "HTTPS port 443 needs alb.ingress.kubernetes.io/certificate-arn, or an issued ACM certificate for "
        "grpcserver.example.com" in event.message
    )


async def test_ingress_class_params_from_the_cluster_override_the_ingress(harness: Harness):
    """An IngressClass of LBC's controller whose parameters (IngressClassParams, our group) make every Ingress of
    the class internet-facing and tagged; the Ingress's own annotation says internal."""
    klass = ingress_class("alb", "ingress.k8s.aws/alb")
    klass["spec"]["parameters"] = {"apiGroup": "elbv2.meshctl.dev", "kind": "IngressClassParams", "name": "public"}
    params = {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "IngressClassParams",
        "metadata": {"name": "public"},
        "spec": {"scheme": "internet-facing", "tags": [{"key": "team", "value": "platform"}]},
    }
    annotations = {**WITHOUT_CLASS, "alb.ingress.kubernetes.io/scheme": "internal"}
    docs = [klass, params, *example(annotations=annotations, spec={"ingressClassName": "alb"})]
    await reconciled(harness, docs)
    assert_the_2048_alb(harness)  # internet-facing, as the params say
    (alb,) = harness.balancers()
    assert harness.tags(alb["LoadBalancerArn"])["team"] == "platform"


def _sources(group: dict[str, Any]) -> set[tuple[str, int, str]]:
    """(protocol, port, CIDR or prefix list) of each inbound rule."""
    return {
        (p["IpProtocol"], p["FromPort"], r.get("CidrIp") or r.get("CidrIpv6") or r.get("PrefixListId"))
        for p in group["IpPermissions"]
        for r in [*p.get("IpRanges", []), *p.get("Ipv6Ranges", []), *p.get("PrefixListIds", [])]
    }


async def test_prefix_lists_and_dualstack_open_the_frontend_group_as_lbc_does(harness: Harness):
    """``security-group-prefix-lists``: the listen port opened to each prefix list (and, with no inbound-cidrs, to
    nothing else); ``ip-address-type: dualstack`` with neither: 0.0.0.0/0 and ::/0, as LBC. A second reconcile of
    either makes no changing call."""
    h = harness
    ec2 = h.moto.client("ec2")
    prefix_list = ec2.create_managed_prefix_list(
        PrefixListName="office", AddressFamily="IPv4", MaxEntries=5, Entries=[{"Cidr": "198.51.100.0/24"}]
    )["PrefixList"]["PrefixListId"]
    annotated = {
        **EXAMPLE[-1]["metadata"]["annotations"],
        "alb.ingress.kubernetes.io/security-group-prefix-lists": prefix_list,
    }
    await reconciled(h, example(annotations=annotated))
    (alb,) = h.balancers()
    (frontend,) = [
        g for g in map(lambda i: _group(h, i), alb["SecurityGroups"]) if not g["GroupName"].startswith("k8s-traffic-")
    ]
    rules = _sources(frontend)
    assert rules == {("tcp", 80, prefix_list)}
    again, calls = h.reconciler()
    assert await h.reconcile(again)
    assert calls.mutating() == []

    dualstack = {
        "alb.ingress.kubernetes.io/security-group-prefix-lists": None,
        "alb.ingress.kubernetes.io/ip-address-type": "dualstack",
    }
    await asyncio.to_thread(
        client.NetworkingV1Api(h.api).patch_namespaced_ingress,
        "ingress-2048",
        NS,
        {"metadata": {"annotations": dualstack}},
    )
    await h.model_where(lambda m: "dualstack" in str(m.ingresses[INGRESS].lifecycle.annotations))
    assert await h.reconcile(again)
    frontend = _group(h, frontend["GroupId"])
    rules = _sources(frontend)
    assert rules == {("tcp", 80, "0.0.0.0/0"), ("tcp", 80, "::/0")}


async def test_a_pod_with_its_own_security_group_gets_the_rule_on_its_branch_interface(harness: Harness):
    """Security groups for pods: the VPC CNI gives the pod a branch interface and names it in the annotation
    ``vpc.amazonaws.com/pod-eni``; its group is the one the load balancer must be allowed through (LBC's
    ``podENIInfo``), not the group of an interface that merely holds the same address."""
    h = harness
    ec2 = h.moto.client("ec2")
    vpc = h.network.vpc_id
    pod_sg = ec2.create_security_group(GroupName="payments-pods", Description="pods", VpcId=vpc)["GroupId"]
    node_sg = ec2.create_security_group(GroupName="nodes", Description="nodes", VpcId=vpc)["GroupId"]
    branch = ec2.create_network_interface(SubnetId=h.network.private[0], Groups=[pod_sg])["NetworkInterface"]
    ec2.create_network_interface(SubnetId=h.network.private[0], PrivateIpAddress="10.0.10.31", Groups=[node_sg])
    eni = [{"eniId": branch["NetworkInterfaceId"], "ifAddress": "02:00:00:00:00:01", "privateIp": "10.0.10.31"}]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "game-1",
            "namespace": NS,
            "annotations": {"vpc.amazonaws.com/pod-eni": json.dumps(eni)},
        },
        "spec": {"containers": [{"name": "game", "image": "game"}]},
    }
    docs = [*example(), pod]
    docs[-2]["endpoints"] = [
        {"addresses": ["10.0.10.31"], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "game-1"}}
    ]
    h.seed(docs)
    await h.start()
    await h.model_where(
        lambda m: (
            INGRESS in m.ingresses
            and (p := m.pods.get(ObjectKey("Pod", NS, "game-1"))) is not None
            and p.branch_eni is not None
        )
    )
    reconciler, _ = h.reconciler()
    assert await h.reconcile(reconciler)
    (alb,) = h.balancers()
    backend = next(g for g in alb["SecurityGroups"] if _group(h, g)["GroupName"].startswith("k8s-traffic-"))
    assert _inbound(_group(h, pod_sg)) == {("tcp", 80, 80, backend)}
    assert _group(h, node_sg)["IpPermissions"] == []


async def test_transforms_rewrite_the_host_and_url_of_the_backends_rules(harness: Harness):
    """``transforms.<service>``: LBC's rule transforms, sent as the rule's Transforms (moto keeps none: a shim keeps
    them behind the same calls, tests/aws.py); a second reconcile changes nothing; taking the annotation away resets
    them."""
    h = harness
    shim = RuleTransforms()
    shim.attach(h.elbv2)
    rewrite = [
        {"type": "url-rewrite", "urlRewriteConfig": {"rewrites": [{"regex": "^/game/(.*)$", "replace": "/$1"}]}},
        {"type": "host-header-rewrite", "hostHeaderRewriteConfig": {"rewrites": [{"regex": ".*", "replace": "game"}]}},
    ]
    annotated = {
        **EXAMPLE[-1]["metadata"]["annotations"],
        "alb.ingress.kubernetes.io/transforms.service-2048": json.dumps(rewrite),
    }
    h.seed(example(annotations=annotated))
    await h.start()
    await h.model_where(lambda m: INGRESS in m.ingresses)
    reconciler, calls = h.reconciler()
    shim.attach(reconciler.clients.elbv2)
    assert await h.reconcile(reconciler)
    (alb,) = h.balancers()
    (listener,) = h.elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    (rule,) = [r for r in h.elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert {t["Type"]: t for t in rule["Transforms"]}["url-rewrite"]["UrlRewriteConfig"]["Rewrites"] == [
        {"Regex": "^/game/(.*)$", "Replace": "/$1"}
    ]
    again, calls = h.reconciler()
    shim.attach(again.clients.elbv2)
    assert await h.reconcile(again)
    assert calls.mutating() == []

    await asyncio.to_thread(
        client.NetworkingV1Api(h.api).patch_namespaced_ingress,
        "ingress-2048",
        NS,
        {"metadata": {"annotations": {"alb.ingress.kubernetes.io/transforms.service-2048": None}}},
    )
    await h.model_where(lambda m: "transforms" not in str(m.ingresses[INGRESS].lifecycle.annotations))
    assert await h.reconcile(again)
    (rule,) = [r for r in h.elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]
    assert "Transforms" not in rule


async def test_a_bad_transform_is_an_error_on_the_ingress(harness: Harness):
    bad = [{"type": "url-rewrite", "urlRewriteConfig": {"rewrites": [{"regex": "([", "replace": "/"}]}}]
    annotated = {
        **EXAMPLE[-1]["metadata"]["annotations"],
        "alb.ingress.kubernetes.io/transforms.service-2048": json.dumps(bad),
    }
    h = harness
    await reconciled(h, example(annotations=annotated))
    assert h.balancers() == []
    events = client.CoreV1Api(h.api).list_namespaced_event(NS).items
    assert any("transforms.service-2048" in e.message and "regex" in e.message for e in events)
