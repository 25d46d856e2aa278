"""``meshctl install --gateway``: the edge gateway's manifests, its pods' injection, and the NLB its Service gets."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import yaml

from meshctl.ingress.nlb import build_service_stacks
from meshctl.inject.pod_patch import ANNOTATION_INJECTED, PROXY_CONTAINER, InjectConfig, inject
from meshctl.parse.documents import parse_keyed
from meshctl.sources.base import build_model
from tests.pss import restricted_violations


def _install(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "install", "--gateway", "shop/edge", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _apply(pod: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON Patch ops injection uses (add, replace), applied as the API server would."""
    pod = json.loads(json.dumps(pod))
    for op in patch:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = pod
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            if last == "-":
                target.append(op["value"])
            elif op["op"] == "replace":
                target[int(last)] = op["value"]
            else:
                target.insert(int(last), op["value"])
        else:
            target[last] = op["value"]
    return pod


def test_the_gateway_pods_get_the_gateway_envoy_and_stay_restricted() -> None:
    docs = _install("--gateway-port", "80", "--gateway-port", "8443")
    kinds = {d["kind"] for d in docs}
    assert kinds == {"ServiceAccount", "Service", "Deployment", "PodDisruptionBudget"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"]["meshctl.dev/gateway"] == "edge"
    assert deployment["spec"]["replicas"] == 2
    assert template["spec"]["affinity"]["podAntiAffinity"] and template["spec"]["topologySpreadConstraints"]
    pod = {"metadata": {"name": "edge-gateway-abc", **template["metadata"]}, "spec": template["spec"]}
    config = InjectConfig(ca_pem="-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n", xds_token=True)
    result = inject(pod, "shop", [], config)
    assert result.patch and not result.warnings
    injected = _apply(pod, result.patch)
    assert injected["metadata"]["annotations"][ANNOTATION_INJECTED] == "edge"
    (proxy,) = injected["spec"]["containers"]
    assert proxy["name"] == PROXY_CONTAINER
    bootstrap = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    assert bootstrap["node"]["metadata"]["meshctl.gateway"] == "shop/edge"
    assert "meshctl.virtual_node" not in bootstrap["node"]["metadata"]
    assert proxy["args"][proxy["args"].index("--service-node") + 1] == "$(POD_NAMESPACE)/edge/$(POD_NAME)"
    assert {m["name"] for m in proxy["volumeMounts"]} == {"meshctl-xds-token"}
    assert [p["containerPort"] for p in proxy["ports"]] == [10080, 8443, 15090]  # 80 bound 10,000 higher
    assert not injected["spec"].get("initContainers")  # no capture: a gateway's traffic comes to it
    assert restricted_violations(injected["spec"]) == []


def test_the_gateway_service_is_an_nlb_with_ip_targets_on_the_bound_ports() -> None:
    docs = _install()
    (service,) = [d for d in docs if d["kind"] == "Service"]
    service["status"] = {}
    model = build_model(p for p in (parse_keyed(service),) if p is not None)
    (stack,) = build_service_stacks(model, cluster="prod")
    assert stack.problems == ()
    assert stack.load_balancer is not None and stack.load_balancer.scheme == "internet-facing"
    groups = {(g.port, g.target_type) for g in stack.target_groups}
    assert groups == {(10080, "ip"), (10443, "ip")}
    internal = _install("--gateway-internal")
    (service,) = [d for d in internal if d["kind"] == "Service"]
    model = build_model(p for p in (parse_keyed(service),) if p is not None)
    (stack,) = build_service_stacks(model, cluster="prod")
    assert stack.load_balancer is not None and stack.load_balancer.scheme == "internal"


def test_a_gateway_pod_without_a_proxy_container_or_with_a_bad_name_is_left_alone() -> None:
    pod = {"metadata": {"labels": {"meshctl.dev/gateway": "edge"}}, "spec": {"containers": [{"name": "app"}]}}
    result = inject(pod, "shop", [], InjectConfig())
    assert result.patch == [] and "needs a container named meshctl-proxy" in result.warnings[0]
    pod = {
        "metadata": {"labels": {"meshctl.dev/gateway": "Edge!"}},
        "spec": {"containers": [{"name": PROXY_CONTAINER}]},
    }
    result = inject(pod, "shop", [], InjectConfig())
    assert result.patch == [] and "is not a Gateway name" in result.warnings[0]


def test_install_gateway_errors_are_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "install", "--gateway", "Shop/edge"], capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
