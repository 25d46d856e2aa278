"""Parsing any document never raises (issue 27, part 2): valid documents of every kind the mesh reads, mutated at
any depth (a value replaced by one of another type, a huge number, a list, text that is not a name), give a
model object, nothing, or an error naming the object and the field; never any other exception. And the manifest
source reads a directory of such files without stopping.

Examples: ``MESHCTL_FUZZ_EXAMPLES`` (default 300 in CI; run with 20000 locally)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.ingress.alb import build_ingress_stacks
from meshctl.ingress.gateways import build_gateway_stacks
from meshctl.ingress.nlb import build_service_stacks
from meshctl.parse.documents import UnsupportedDocument, parse_keyed
from meshctl.sources import load_manifests
from meshctl.sources.base import build_model

ROOT = Path(__file__).parent.parent
EXAMPLES = int(os.environ.get("MESHCTL_FUZZ_EXAMPLES", "300"))
SOURCES = [
    *sorted((ROOT / "examples").rglob("*.yaml")),
    *sorted((ROOT / "tests" / "testdata" / "translate").rglob("input/*.yaml")),
    *sorted((ROOT / "tests" / "testdata" / "ingress").rglob("input.yaml")),
    # Gateway API routes and Gateways as upstream writes them (HTTPRoute, GRPCRoute, ReferenceGrant, Gateway), when
    # ../shared is there
    *sorted((ROOT.parent / "shared" / "conformance" / "gateway-api" / "tests").glob("*.yaml")),
    *sorted((ROOT.parent / "shared" / "conformance" / "gateway-api" / "base").glob("*.yaml")),
    # An imported edge gateway (GatewayClass, Gateway with namespace selectors, HTTPRoutes with rewrites)
    *sorted((ROOT / "tests" / "testdata" / "appmesh" / "gateway").glob("expected*.yaml")),
]
EXTRA = [
    {  # an HTTPS listener's certificate
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "cert", "namespace": "shop"},
        "data": {"tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "tls.key": "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t"},
    },
    {  # an edge gateway's Service, its load balancer's address read
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "edge-gateway", "namespace": "shop", "labels": {"meshctl.dev/gateway": "edge"}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 10080}]},
        "status": {"loadBalancer": {"ingress": [{"hostname": "edge.elb.amazonaws.com"}]}},
    },
    {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "IngressClassParams",
        "metadata": {"name": "public"},
        "spec": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}},
    },
    {  # an ALB Gateway's configuration (LBC's fields, ours)
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "LoadBalancerConfiguration",
        "metadata": {"name": "public", "namespace": "shop"},
        "spec": {
            "scheme": "internet-facing",
            "mergingMode": "prefer-gateway",
            "loadBalancerSubnets": [{"identifier": "subnet-1"}],
            "listenerConfigurations": [{"protocolPort": "HTTPS:443", "defaultCertificate": "arn:c", "sslPolicy": "p"}],
            "sourceRanges": ["10.0.0.0/8"],
            "loadBalancerAttributes": [{"key": "idle_timeout.timeout_seconds", "value": "60"}],
            "tags": {"team": "shop"},
            "defaultTargetGroupConfiguration": {"name": "defaults"},
        },
    },
    {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "TargetGroupConfiguration",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "targetReference": {"name": "web"},
            "defaultConfiguration": {
                "targetType": "ip",
                "healthCheckConfig": {"healthCheckPath": "/h", "matcher": {"httpCode": "200"}},
                "targetGroupAttributes": [{"key": "deregistration_delay.timeout_seconds", "value": "30"}],
            },
        },
    },
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "alb"},
        "spec": {
            "controllerName": "gateway.k8s.aws/alb",
            "parametersRef": {
                "group": "gateway.k8s.aws",
                "kind": "LoadBalancerConfiguration",
                "name": "x",
                "namespace": "a",
            },
        },
    },
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "nlb", "namespace": "shop", "finalizers": ["gateway.elbv2.meshctl.dev/resources"]},
        "spec": {
            "gatewayClassName": "nlb",
            "infrastructure": {
                "parametersRef": {"group": "elbv2.meshctl.dev", "kind": "LoadBalancerConfiguration", "name": "p"}
            },
            "listeners": [{"name": "tls", "port": 6443, "protocol": "TLS", "hostname": "db.example.com"}],
        },
    },
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "TLSRoute",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "nlb", "sectionName": "tls"}],
            "hostnames": ["db.example.com"],
            "rules": [{"backendRefs": [{"name": "db", "port": 5432, "weight": 1}]}],
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0123"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    },
    {
        "apiVersion": "elbv2.meshctl.dev/v1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "t", "namespace": "shop"},
        "spec": {
            "targetGroupARN": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/t/1",
            "targetType": "ip",
            "serviceRef": {"name": "web", "port": 80},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {"readinessGates": [{"conditionType": "target-health.elbv2.meshctl.dev/x"}]},
        "status": {"conditions": [{"type": "ContainersReady", "status": "True"}]},
    },
]


def _documents() -> list[dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in SOURCES:
        try:
            loaded = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # golden inputs that are broken on purpose
        for doc in loaded:
            if isinstance(doc, dict) and isinstance(doc.get("kind"), str):
                docs.setdefault(f"{doc['kind']}:{len(docs)}", doc)
    return [*docs.values(), *EXTRA]


DOCUMENTS = _documents()
KINDS = sorted({d["kind"] for d in DOCUMENTS})

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["http", "", "-1", "1e9", "x" * 300, "\udcff"]),
    st.lists(st.integers(), max_size=3),
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just([]),
    st.just({}),
)


def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _replace(doc: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return doc


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any]:
    doc = draw(st.sampled_from(DOCUMENTS))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths[1:] if len(paths) > 1 else paths))
        doc = _replace(doc, path, draw(JUNK))
    return str(doc.get("kind") if isinstance(doc, dict) else type(doc).__name__), doc


def test_every_kind_the_mesh_reads_is_fuzzed() -> None:
    for kind in (
        "Service",
        "EndpointSlice",
        "Pod",
        "VirtualNode",
        "Route",
        "Ingress",
        "IngressClass",
        "Node",
        "TargetGroupBinding",
        "Namespace",
        "AuthorizationPolicy",
    ):
        assert kind in KINDS


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=bool(os.environ.get("CI")),
)
@given(case=mutated())
def test_a_mutated_document_parses_or_is_refused_by_name(case: tuple[str, Any]) -> None:
    _, doc = case
    try:
        parse_keyed(doc, origin="fuzz.yaml")
    except UnsupportedDocument as exc:
        assert str(exc)  # a message a user can act on


@settings(
    max_examples=max(EXAMPLES // 10, 10),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=bool(os.environ.get("CI")),
)
@given(cases=st.lists(mutated(), min_size=1, max_size=4), junk=st.binary(max_size=40))
def test_the_manifest_source_reads_any_directory(tmp_path_factory, cases, junk: bytes) -> None:
    root = tmp_path_factory.mktemp("m")
    for i, (_, doc) in enumerate(cases):
        try:
            text = yaml.safe_dump(doc)
        except yaml.YAMLError:
            continue
        (root / f"doc-{i}.yaml").write_text(text, errors="surrogateescape")
    (root / "junk.yaml").write_bytes(junk)
    load_manifests(root)  # never raises


@settings(
    max_examples=max(EXAMPLES // 3, 30),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=bool(os.environ.get("CI")),
)
@given(cases=st.lists(mutated(), min_size=1, max_size=6))
def test_load_balancer_builders_never_raise_on_what_parses(cases: list[tuple[str, Any]]) -> None:
    """Whatever parses, the ALB/NLB builders (Ingresses, Services, Gateways) turn into stacks and statuses, bad input
    into problems on its own object: never an exception out of the pass."""
    parsed = []
    for _, doc in cases:
        try:
            found = parse_keyed(doc, origin="fuzz.yaml")
        except UnsupportedDocument:
            continue
        if found is not None:
            parsed.append(found)
    model = build_model(parsed)
    build_ingress_stacks(model, cluster="c1")
    build_service_stacks(model, cluster="c1", legacy_nlb=True)
    build_gateway_stacks(model, cluster="c1", certificates=lambda hosts: ((), hosts))
