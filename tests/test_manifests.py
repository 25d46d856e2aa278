"""Every manifest we ship is valid: CRDs for Kubernetes (and structural), examples against our CRD schemas."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from meshctl.model import Meta, ObjectKey, Service, ServicePort
from meshctl.parse import parse_document

ROOT = Path(__file__).parent.parent
SHIPPED = sorted(p for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
VALID_GOLDEN_INPUTS = sorted(
    p for p in (ROOT / "tests" / "testdata" / "translate").rglob("input/*.yaml") if "invalid" not in str(p)
)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def crd_schemas() -> dict[str, dict]:
    schemas = {}
    for path in (ROOT / "crds").glob("*.dev_*.yaml"):
        for crd in docs(path):
            (version,) = crd["spec"]["versions"]
            schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return schemas


def gateway_api_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the upstream Gateway API CRDs' schema (deploy/gateway-api), every served version."""
    schemas = {}
    for path in (ROOT / "deploy" / "gateway-api").glob("gateway.networking.k8s.io_*.yaml"):
        for crd in docs(path):
            for version in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_manifests_are_valid_kubernetes(path: Path) -> None:
    for doc in docs(path):
        kubernetes_validate.validate(doc, "1.32", strict=True)


def _assert_structural(schema: dict, where: str) -> None:
    """Kubernetes' structural-schema rule: every node says its type (unless it opts out explicitly)."""
    if not schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("x-kubernetes-int-or-string"):
        assert "type" in schema, f"{where}: no type"
    for name, sub in schema.get("properties", {}).items():
        _assert_structural(sub, f"{where}.{name}")
    if isinstance(schema.get("items"), dict):
        _assert_structural(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        assert "properties" not in schema, f"{where}: properties and additionalProperties together"
        _assert_structural(schema["additionalProperties"], f"{where}{{}}")


@pytest.mark.parametrize("kind", ["VirtualNode", "Route", "TargetGroupBinding"])
def test_crd_schemas_are_structural(kind: str) -> None:
    _assert_structural(crd_schemas()[kind], kind)


@pytest.mark.parametrize("path", [*EXAMPLES, *VALID_GOLDEN_INPUTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_match_the_crds_and_the_parser(path: Path) -> None:
    schemas = crd_schemas()
    gateway = gateway_api_schemas()
    for doc in docs(path):
        if (doc.get("apiVersion"), doc.get("kind")) in gateway:
            jsonschema.validate(doc, gateway[(doc["apiVersion"], doc["kind"])])
            obj = parse_document(doc)
            assert obj is not None and getattr(obj, "errors", ()) == (), obj
        elif doc.get("kind") in schemas:
            jsonschema.validate(doc, schemas[doc["kind"]])
            obj = parse_document(doc)
            assert obj is not None and getattr(obj, "errors", ()) == (), obj
        else:
            kubernetes_validate.validate(doc, "1.32", strict=True)


@pytest.mark.parametrize(
    ("kind", "spec_change"),
    [
        ("Route", {"priority": 5000}),
        (
            "Route",
            {
                "httpRoute": {
                    "match": {"prefix": "/"},
                    "action": {"weightedTargets": [{"virtualNodeRef": {"name": "a"}, "weight": 101}]},
                }
            },
        ),
        ("VirtualNode", {"listeners": [{"portMapping": {"port": 70000, "protocol": "http"}}]}),
    ],
    ids=["priority-too-high", "weight-over-100", "port-out-of-range"],
)
def test_crd_schema_rejects_out_of_range_values(kind: str, spec_change: dict) -> None:
    example = next(d for p in EXAMPLES for d in docs(p) if d.get("kind") == kind)
    example["spec"].update(spec_change)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(example, crd_schemas()[kind])


@pytest.mark.parametrize(
    "directory",
    sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir() and p.name != "ingress"),  # no mesh: see below
    ids=lambda p: p.name,
)
def test_each_example_set_translates_cleanly(directory: Path) -> None:
    from meshctl.sources import load_manifests
    from meshctl.translate import translate_mesh

    mesh = translate_mesh(load_manifests(directory))
    assert mesh.load_errors == ()
    assert [s.summary() for s in mesh.statuses if not s.healthy] == []
    assert mesh.routes_by_service  # every set routes something


def test_the_ingress_examples_build_load_balancers_without_problems() -> None:
    from meshctl.ingress.alb import build_ingress_stacks
    from meshctl.ingress.nlb import build_service_stacks
    from meshctl.sources import load_manifests

    model = load_manifests(ROOT / "examples" / "ingress")
    services = {"web": 80, "orders": 80, "checkout-v1": 80, "checkout-v2": 80}
    model = dataclasses.replace(
        model,
        services={
            **model.services,
            **{
                ObjectKey("Service", "shop", name): Service(
                    meta=Meta(namespace="shop", name=name), ports=(ServicePort(name="http", port=port),)
                )
                for name, port in services.items()
            },
        },
    )
    stacks = build_ingress_stacks(model, cluster="example") + build_service_stacks(model, cluster="example")
    assert [(s.id, s.problems) for s in stacks] == [("shop/shop", ()), ("shop/game", ())]
    assert all(s.load_balancer is not None for s in stacks)
