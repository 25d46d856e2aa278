"""Which Ingresses are ours: LBC's rules (classifyIngress), as a table."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from meshctl.ingress.classes import classify
from meshctl.model import Meta
from meshctl.model.ingress import Ingress, IngressClass, Lifecycle


def ingress(annotation: str | None = None, class_name: str | None = None) -> Ingress:
    annotations = {"kubernetes.io/ingress.class": annotation} if annotation is not None else {}
    return Ingress(
        meta=Meta(namespace="ns", name="i"),
        class_name=class_name,
        lifecycle=Lifecycle(annotations=MappingProxyType(annotations)),
    )


def klass(name: str, controller: str, default: bool = False) -> IngressClass:
    return IngressClass(meta=Meta(namespace="", name=name), controller=controller, default=default)


OURS = klass("mesh", "meshctl.dev/ingress")
LBC = klass("alb", "ingress.k8s.aws/alb")
NGINX = klass("nginx", "k8s.io/ingress-nginx")


@pytest.mark.parametrize(
    ("case", "ing", "classes", "flag", "ours", "error"),
    [
        ("annotation alb, default flag", ingress("alb"), [], "alb", True, None),
        ("annotation alb, empty flag", ingress("alb"), [], "", True, None),
        ("annotation other than the flag", ingress("alb"), [], "meshctl", False, None),
        ("annotation wins over the class", ingress("nginx", "mesh"), [OURS], "alb", False, None),
        ("class of our controller", ingress(None, "mesh"), [OURS], "alb", True, None),
        ("class of LBC's controller", ingress(None, "alb"), [LBC], "alb", True, None),
        (
            "class matched on controller, not name",
            ingress(None, "alb"),
            [klass("alb", "k8s.io/ingress-nginx")],
            "alb",
            False,
            None,
        ),
        ("class not there (yet)", ingress(None, "mesh"), [], "alb", False, None),
        ("default class ours", ingress(), [klass("d", "meshctl.dev/ingress", True)], "alb", True, None),
        ("default class another's", ingress(), [klass("d", "k8s.io/ingress-nginx", True), OURS], "alb", False, None),
        ("no class at all", ingress(), [OURS], "alb", False, None),
        ("no class at all, empty flag", ingress(), [OURS], "", True, None),
        (
            "two defaults, one ours",
            ingress(),
            [klass("a", "meshctl.dev/ingress", True), klass("b", "k8s.io/ingress-nginx", True)],
            "alb",
            False,
            "the cluster has 2 default IngressClasses (a, b): name one",
        ),
        ("two defaults, none ours", ingress(), [klass("a", "x", True), klass("b", "y", True)], "alb", False, None),
    ],
)
def test_classify(case, ing, classes, flag, ours, error):
    verdict = classify(ing, classes, flag)
    assert (verdict.ours, verdict.error) == (ours, error), case


def test_the_default_class_annotation_and_the_legacy_annotation_are_parsed():
    from meshctl.parse.documents import parse_keyed

    docs = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "d", "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
            "spec": {"controller": "ingress.k8s.aws/alb"},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "i",
                "namespace": "ns",
                "annotations": {"kubernetes.io/ingress.class": "alb", "other": "x"},
            },
            "spec": {},
        },
    ]
    klass_, ing = (parsed.obj for parsed in map(parse_keyed, docs) if parsed is not None)
    assert klass_.default and klass_.controller == "ingress.k8s.aws/alb"
    assert dict(ing.lifecycle.annotations) == {"kubernetes.io/ingress.class": "alb"}
