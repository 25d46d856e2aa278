"""`meshctl import lbc` (issue 32): Ingresses with LBC annotations -> Gateway API for ALB Gateways, as LBC's
lbc-migrate does; what the import writes is what the ALB Gateway builder then serves, rule for rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from meshctl.ingress.alb import build_ingress_stacks
from meshctl.ingress.gateways import build_gateway_stacks
from meshctl.ingress.migrate import convert_ingresses
from meshctl.ingress.stack import Forward, Redirect
from tests.ingress_fixtures import NS, model_of, shop_documents

ARN = "arn:aws:acm:us-east-1:123456789012:certificate/abc"
ROOT = Path(__file__).parent


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_the_issues_shop_ingress_converts_to_a_gateway_with_the_same_rules():
    docs = shop_documents(ARN)
    objects, notes = convert_ingresses(docs)
    (gateway,) = by_kind(objects, "Gateway")
    assert [(li["name"], li["protocol"]) for li in gateway["spec"]["listeners"]] == [
        ("http-80", "HTTP"),
        ("https-443", "HTTPS"),
    ]
    (config,) = by_kind(objects, "LoadBalancerConfiguration")
    assert config["spec"]["scheme"] == "internet-facing" and config["spec"]["tags"] == {"team": "shop"}
    assert config["spec"]["listenerConfigurations"] == [{"protocolPort": "HTTPS:443", "defaultCertificate": ARN}]
    routes = {r["metadata"]["name"]: r for r in by_kind(objects, "HTTPRoute")}
    redirect = routes["shop-ssl-redirect"]
    assert redirect["spec"]["parentRefs"][0]["sectionName"] == "http-80"
    assert redirect["spec"]["rules"][0]["filters"][0]["requestRedirect"] == {"scheme": "https", "statusCode": 301}
    shop = routes["shop-shop-example-com"]
    assert shop["spec"]["hostnames"] == ["shop.example.com"]
    assert [p["sectionName"] for p in shop["spec"]["parentRefs"]] == ["https-443"]
    split = shop["spec"]["rules"][1]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in split] == [("checkout-v1", 90), ("checkout-v2", 10)]
    api = routes["shop-api-example-com"]
    assert api["spec"]["rules"][0]["matches"] == [{"path": {"type": "Exact", "value": "/v1/orders"}}]
    configs = {
        c["metadata"]["name"]: c["spec"]["defaultConfiguration"] for c in by_kind(objects, "TargetGroupConfiguration")
    }
    assert configs["web"] == {
        "targetType": "ip",
        "healthCheckConfig": {"healthCheckPath": "/healthz"},
        "targetGroupAttributes": [{"key": "deregistration_delay.timeout_seconds", "value": "30"}],
    }
    assert not [n for n in notes if n[0] in ("error", "lossy")], notes

    # Served: the Gateway's ALB has the Ingress's listeners, redirect and forwards (the imported GatewayClass is ours).
    services = [d for d in docs if d["kind"] in ("Service", "EndpointSlice")]
    plan = build_gateway_stacks(model_of([*objects, *services]), cluster="c1")
    (stack,) = plan.stacks
    assert stack.valid, stack.problems
    (ingress_stack,) = build_ingress_stacks(model_of(docs), cluster="c1", default_target_type="ip")
    assert {(li.port, li.protocol) for li in stack.listeners} == {
        (li.port, li.protocol) for li in ingress_stack.listeners
    }
    assert stack.load_balancer is not None and ingress_stack.load_balancer is not None
    assert stack.load_balancer.scheme == ingress_stack.load_balancer.scheme
    https = [r for r in stack.rules if r.listener_port == 443]
    http = [r for r in stack.rules if r.listener_port == 80]
    assert len(https) == 3 and all(isinstance(r.action, Forward) for r in https)
    assert len(http) == 1 and isinstance(http[0].action, Redirect)
    weighted = next(r.action for r in https if isinstance(r.action, Forward) and len(r.action.targets) == 2)
    assert [w for _, w in weighted.targets] == [90, 10]
    assert {g.health_check.path for g in stack.target_groups if g.binding.service.name == "web"} == {"/healthz"}


def test_what_has_no_gateway_equivalent_is_reported():
    docs = shop_documents(ARN)
    ingress = next(d for d in docs if d["kind"] == "Ingress")
    ingress["metadata"]["annotations"].update(
        {
            "alb.ingress.kubernetes.io/actions.checkout-split": json.dumps(
                {"type": "fixed-response", "fixedResponseConfig": {"statusCode": "503"}}
            ),
            "alb.ingress.kubernetes.io/waf-acl-id": "x",
            "alb.ingress.kubernetes.io/conditions.web": json.dumps(
                [{"field": "source-ip", "sourceIpConfig": {"values": ["10.0.0.0/8"]}}]
            ),
        }
    )
    other = {
        **ingress,
        "metadata": {
            **ingress["metadata"],
            "name": "nginx-one",
            "annotations": {"kubernetes.io/ingress.class": "nginx"},
        },
    }
    _, notes = convert_ingresses([*docs, other])
    lines = {(level, path.split("[")[-1].rstrip("]"), action.split(" ")[0]) for level, _, path, _, action in notes}
    assert ("lossy", "alb.ingress.kubernetes.io/actions.checkout-split", "rule") in lines
    assert ("lossy", "alb.ingress.kubernetes.io/waf-acl-id", "left") in lines
    assert ("lossy", "alb.ingress.kubernetes.io/conditions.web", "left") in lines
    assert any(level == "note" and subject == f"Ingress {NS}/nginx-one" for level, subject, *_ in notes)


def test_the_cli_converts_lbcs_2048_example(tmp_path: Path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshctl",
            "import",
            "lbc",
            "-f",
            str(ROOT / "testdata/lbc/2048_full.yaml"),
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "objects converted; 0 errors" in run.stderr
    written = list(yaml.safe_load_all((tmp_path / "game-2048.yaml").read_text()))
    assert {o["kind"] for o in written} == {
        "Gateway",
        "LoadBalancerConfiguration",
        "HTTPRoute",
        "TargetGroupConfiguration",
    }
    assert (tmp_path / "cluster-scoped.yaml").exists() and (tmp_path / "import-report.txt").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Ingress\napiVersion: networking.k8s.io/v1\nmetadata: {name: x}\nspec: [\n")
    run = subprocess.run(
        [sys.executable, "-m", "meshctl", "import", "lbc", "-f", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1 and "not valid YAML" in run.stderr and "Traceback" not in run.stderr
