"""The AWS Load Balancer Controller's users' manifests, unchanged (issue 32): its 2048 example with the legacy
``kubernetes.io/ingress.class: alb`` annotation, the same Ingress through an IngressClass of LBC's controller or the
cluster's default IngressClass, and another controller's Ingress left alone. moto over HTTP, the test apiserver, the
real kubernetes client."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshctl.model import ObjectKey
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
