"""Least privilege, proven by what the controller calls (issue 12).

`meshctl serve` runs as its Deployment runs it (the container args `meshctl install --ingress` renders, with only
addresses, ports and paths changed for loopback) against the test apiserver and moto, and goes through its whole
life: the mesh and its statuses and Events, leader election, its CA and serving certificate in a Secret (created,
then renewed), the webhook's caBundle, an ALB built, changed in every way the reconciler can change one, and deleted,
an NLB with instance targets, a TargetGroupBinding, a readiness gate. Every request is recorded on the server side
(tests/least_privilege.py): the shipped RBAC must allow each Kubernetes call and grant nothing never used, the shipped
IAM policy the same for the AWS calls; and both checks must fail when a needed rule is removed or an unused one added.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshctl.devtools.envoy_process import free_port
from meshctl.inject.pki import KeyPair, issue, new_ca
from tests.apiserver import ApiServer, kubeconfig_for
from tests.aws import Moto
from tests.conftest import eventually
from tests.e2e.test_ingress import certificate
from tests.ingress_fixtures import NS, ec2_node, endpoint_slice, import_acm_certificate, nlb_service, shop_documents
from tests.ingress_fixtures import service as ingress_service
from tests.ingress_harness import CLUSTER, Harness
from tests.least_privilege import (
    Grant,
    check_iam,
    check_rbac,
    controller_aws_calls,
    controller_calls,
    grants,
    policy_actions,
    read_recording,
    shipped_grants,
    shipped_manifests,
    shipped_policy,
)
from tests.manifests import API, route, service, virtual_node, workload

SYSTEM = "meshctl-system"
GATE = "target-health.elbv2.meshctl.dev/web"
OWNED = "elbv2.meshctl.dev/cluster"


def _controller_args(manifests: list[dict[str, Any]]) -> list[str]:
    """The controller container's args as the Deployment gives them, $(POD_NAMESPACE) expanded as the kubelet does."""
    (deployment,) = [d for d in manifests if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return [a.replace("$(POD_NAMESPACE)", SYSTEM) for a in container["args"]]


def _mesh() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        *_gateway_routes(),
        *_edge_gateway(),
        service("reviews"),
        *workload("reviews", "v1", 9080),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
        route("broken", "reviews", {"reviews-v9": 100}, match={"prefix": "/broken"}),  # no such VirtualNode
        {  # its status is written (get, update authorizationpolicies/status)
            "apiVersion": API,
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "reviews-callers", "namespace": "demo"},
            "spec": {
                "targetRefs": [{"kind": "Service", "name": "reviews"}],
                "rules": [{"from": [{"virtualNode": {"name": "frontend"}}]}],
            },
        },
    ]


def _gateway_routes() -> list[dict[str, Any]]:
    """Gateway API routes on the mesh's Service, their statuses written (get, update httproutes|grpcroutes/status),
    and a grant (list, watch referencegrants)."""
    parent = {"group": "", "kind": "Service", "name": "reviews"}
    backend = {"name": "reviews", "port": 80}
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "reviews-http", "namespace": "demo"},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": [backend]}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "reviews-grpc", "namespace": "demo"},
            "spec": {"parentRefs": [parent], "rules": [{"backendRefs": [backend]}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": {"name": "from-shop", "namespace": "demo"},
            "spec": {
                "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "shop"}],
                "to": [{"group": "", "kind": "Service"}],
            },
        },
    ]


def _edge_gateway() -> list[dict[str, Any]]:
    """An edge gateway: its class and Gateway (get, list, watch; update gatewayclasses|gateways/status), an HTTPS
    listener's TLS Secret (list, watch secrets, with a type field selector) and a route attached to it."""
    pair = issue(new_ca(), "shop.example.com", dns_names=("shop.example.com",))
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "meshctl"},
            "spec": {"controllerName": "meshctl.dev/gateway"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "shop-tls", "namespace": "demo"},
            "data": {
                "tls.crt": base64.b64encode(pair.cert_pem).decode(),
                "tls.key": base64.b64encode(pair.key_pem).decode(),
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "demo"},
            "spec": {
                "gatewayClassName": "meshctl",
                "listeners": [
                    {
                        "name": "https",
                        "port": 443,
                        "protocol": "HTTPS",
                        "tls": {"certificateRefs": [{"name": "shop-tls"}]},
                    }
                ],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "edge-reviews", "namespace": "demo"},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [{"backendRefs": [{"name": "reviews", "port": 80}]}]},
        },
    ]


def _gateway_condition(h: Harness, plural: str, name: str, kind: str, namespace: str = "demo") -> str | None:
    api = client.CustomObjectsApi(h.api)
    if plural == "gatewayclasses":
        obj = api.get_cluster_custom_object("gateway.networking.k8s.io", "v1", plural, name)
    else:
        obj = api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, plural, name)
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def _route_accepted(h: Harness, plural: str, name: str) -> str | None:
    obj = client.CustomObjectsApi(h.api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NS, plural, name
    )
    parents = (obj.get("status") or {}).get("parents") or []
    return next((c["status"] for p in parents for c in p["conditions"] if c["type"] == "Accepted"), None)


def _aws_gateways(cert: str) -> list[dict[str, Any]]:
    """Gateways of LBC's ALB class and our NLB class (patch gateways for the finalizer and checkpoints; patch
    gateways|gatewayclasses/status), a route of every kind they serve (get tcp|udp|tlsroutes, patch */status) and
    the configuration kinds (list, watch loadbalancer|targetgroupconfigurations)."""
    gw = "gateway.networking.k8s.io/v1"

    def route(kind: str, name: str, parent: str, backend: str, port: int, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": gw,
            "kind": kind,
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "parentRefs": [{"name": parent}],
                "rules": [{"backendRefs": [{"name": backend, "port": port}]}],
                **spec,
            },
        }

    def klass(name: str, controller: str) -> dict[str, Any]:
        return {
            "apiVersion": gw,
            "kind": "GatewayClass",
            "metadata": {"name": name},
            "spec": {"controllerName": controller},
        }

    def gateway(name: str, class_name: str, listeners: list[dict[str, Any]]) -> dict[str, Any]:
        ref = {"group": "elbv2.meshctl.dev", "kind": "LoadBalancerConfiguration", "name": "gateways"}
        spec = {"gatewayClassName": class_name, "listeners": listeners, "infrastructure": {"parametersRef": ref}}
        return {"apiVersion": gw, "kind": "Gateway", "metadata": {"name": name, "namespace": NS}, "spec": spec}

    udp = ingress_service("dns", port=5353)
    udp["spec"]["ports"][0]["protocol"] = "UDP"
    return [
        klass("aws-alb", "gateway.k8s.aws/alb"),
        klass("aws-nlb", "meshctl.dev/nlb"),
        {
            "apiVersion": "elbv2.meshctl.dev/v1beta1",
            "kind": "LoadBalancerConfiguration",
            "metadata": {"name": "gateways", "namespace": NS},
            "spec": {
                "listenerConfigurations": [{"protocolPort": "TLS:6443", "defaultCertificate": cert}],
                "defaultTargetGroupConfiguration": {"name": "ip-targets"},
            },
        },
        {
            "apiVersion": "elbv2.meshctl.dev/v1beta1",
            "kind": "TargetGroupConfiguration",
            "metadata": {"name": "ip-targets", "namespace": NS},
            "spec": {"defaultConfiguration": {"targetType": "ip"}},
        },
        gateway("public", "aws-alb", [{"name": "http", "port": 8080, "protocol": "HTTP"}]),
        gateway(
            "l4",
            "aws-nlb",
            [
                {"name": "postgres", "port": 5432, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
                {"name": "tls", "port": 6443, "protocol": "TLS", "tls": {"mode": "Terminate"}},
            ],
        ),
        route("HTTPRoute", "public-web", "public", "web", 80),
        route("GRPCRoute", "public-grpc", "public", "web", 80),
        route("TCPRoute", "db", "l4", "db", 5432),
        route("UDPRoute", "dns", "l4", "dns", 5353),
        route("TLSRoute", "api", "l4", "db", 5432, hostnames=["db.example.com"]),
        ingress_service("db", port=5432),
        udp,
        endpoint_slice("db", ["10.0.6.1"]),
        endpoint_slice("dns", ["10.0.6.2"]),
    ]


def _aws_world(h: Harness) -> tuple[list[dict[str, Any]], str]:
    """Nodes backed by EC2 instances, an NLB Service with instance targets, a hand-made target group and a
    TargetGroupBinding filling it, and a Pod behind the ALB held by our readiness gate."""
    ec2 = h.moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (instance,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=h.network.private[0])["Instances"]
    node = ec2_node("node-0", instance["InstanceId"], "10.0.10.1")
    nlb = nlb_service()
    group = h.elbv2.create_target_group(
        Name="hand-made", Protocol="HTTP", Port=8080, VpcId=h.network.vpc_id, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    binding = {
        "apiVersion": "elbv2.meshctl.dev/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "bound", "namespace": NS},
        "spec": {"targetGroupName": "hand-made", "serviceRef": {"name": "bound", "port": 80}},
    }
    gated = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-10-0-1-10", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web"}], "readinessGates": [{"conditionType": GATE}]},
        "status": {"podIP": "10.0.1.10", "conditions": [{"type": "ContainersReady", "status": "True"}]},
    }
    docs = [node, nlb, binding, gated, ingress_service("bound"), endpoint_slice("bound", ["10.0.5.1", "10.0.5.2"])]
    return docs, group


class Controller:
    """`meshctl serve` with the Deployment's args, as a process."""

    def __init__(self, h: Harness, tmp: Path) -> None:
        self.h, self.tmp = h, tmp
        self.kubeconfig = tmp / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig_for(h.apiserver.url))
        self.admin = free_port()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, args: list[str]) -> None:
        overrides = [
            f"--kubeconfig={self.kubeconfig}",
            "--address=127.0.0.1",
            f"--xds-port={free_port()}",
            f"--admin-port={self.admin}",
            f"--webhook-port={free_port()}",
            f"--tls-dir={self.tmp / 'tls'}",
            "--tls-secret-interval=0.3",
        ]
        assert args[0] == "serve", args
        self.log = (self.tmp / "serve.log").open("wb")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "meshctl",
            *args,
            *overrides,
            env={**os.environ, **self.h.moto.env(), "POD_NAMESPACE": SYSTEM},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self.log,
        )

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 30)
        self.log.close()

    def logs(self) -> str:
        return (self.tmp / "serve.log").read_text(errors="replace")[-4000:]


# --- reading the world ---------------------------------------------------------------------------------------------


def _balancer(h: Harness, stack: str) -> dict[str, Any] | None:
    for lb in h.balancers():
        tags = h.tags(lb["LoadBalancerArn"])
        if tags.get(OWNED) == CLUSTER and tags.get("elbv2.meshctl.dev/stack") == stack:
            return lb
    return None


def _listeners(h: Harness, lb: dict[str, Any]) -> dict[int, dict[str, Any]]:
    listed = h.elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    return {li["Port"]: li for li in listed}


def _rules(h: Harness, listener: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in h.elbv2.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]]


def _extra_certificates(h: Harness, listener: dict[str, Any]) -> set[str]:
    listed = h.elbv2.describe_listener_certificates(ListenerArn=listener["ListenerArn"])["Certificates"]
    return {c["CertificateArn"] for c in listed if not c.get("IsDefault")}


def _owned_groups(h: Harness) -> dict[str, dict[str, Any]]:
    groups = {}
    for g in h.target_groups():
        tags = h.tags(g["TargetGroupArn"])
        if tags.get(OWNED) == CLUSTER and not tags["elbv2.meshctl.dev/stack"].startswith("gateway/"):
            groups[tags["elbv2.meshctl.dev/resource"]] = g  # (the Ingresses' and Services', not the Gateways')
    return groups


def _exists(read: Any, *args: Any) -> bool:
    try:
        read(*args)
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _secret(h: Harness) -> dict[str, bytes] | None:
    try:
        secret = h.core().read_namespaced_secret("meshctl-tls", SYSTEM)
    except ApiException:
        return None
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _dns_names(pem: bytes) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    return set(
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    )


def _condition(h: Harness, plural: str, name: str, kind: str) -> str | None:
    obj = client.CustomObjectsApi(h.api).get_namespaced_custom_object(
        "mesh.meshctl.dev", "v1alpha1", "demo", plural, name
    )
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), None)


def _gate(h: Harness) -> str | None:
    pod = h.core().read_namespaced_pod("web-10-0-1-10", NS)
    return next((c.status for c in pod.status.conditions or [] if c.type == GATE), None)


def _patch_ingress(h: Harness, body: dict[str, Any]) -> None:
    h.networking().patch_namespaced_ingress("shop", NS, body)


# --- the controller's life -------------------------------------------------------------------------------------


async def _first_pass(h: Harness, bound_group: str) -> None:
    web_ips = {("10.0.1.10", 8080), ("10.0.1.11", 8080)}

    def alb_built() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        groups = _owned_groups(h)
        web = groups.get(f"{NS}/shop-web:80")
        return lb is not None and len(groups) >= 4 and web is not None and h.targets(web["TargetGroupArn"]) == web_ips

    await eventually(alb_built, timeout=60, interval=0.2)
    await eventually(lambda: _balancer(h, f"{NS}/game") is not None, timeout=30, interval=0.2)
    await eventually(lambda: len(h.targets(bound_group)) == 2, timeout=30, interval=0.2)
    await eventually(lambda: _gate(h) == "True", timeout=30, interval=0.2)
    await eventually(lambda: _condition(h, "routes", "broken", "Accepted") == "False", timeout=30, interval=0.2)
    await eventually(lambda: _condition(h, "virtualnodes", "frontend", "Accepted") == "True", timeout=30)
    await eventually(lambda: _gateway_condition(h, "gateways", "edge", "Accepted") == "True", timeout=30)
    await eventually(lambda: _gateway_condition(h, "gatewayclasses", "meshctl", "Accepted") == "True", timeout=30)
    for name in ("public", "l4"):
        await eventually(lambda n=name: _gateway_condition(h, "gateways", n, "Programmed", NS) == "True", timeout=30)
    routes = (("httproutes", "public-web"), ("grpcroutes", "public-grpc"), ("tcproutes", "db"), ("udproutes", "dns"))
    for plural, name in (*routes, ("tlsroutes", "api")):
        await eventually(lambda p=plural, n=name: _route_accepted(h, p, n) == "True", timeout=30)
    events = lambda: h.core().list_namespaced_event("demo").items  # noqa: E731
    await eventually(lambda: any(e.involved_object.name == "broken" for e in events()), timeout=30)

    def ca_bundle_set() -> bool:
        secret = _secret(h)
        config = client.AdmissionregistrationV1Api(h.api).read_mutating_webhook_configuration(
            "meshctl-sidecar-injector"
        )
        bundle = config.webhooks[0].client_config.ca_bundle
        return secret is not None and bundle is not None and base64.b64decode(bundle) == secret["ca.crt"]

    await eventually(ca_bundle_set, timeout=30, interval=0.2)


async def _every_change(h: Harness, cert: str, second_cert: str) -> None:
    """Each change makes the reconciler use another part of its API: modify target groups, their attributes, tags,
    rules; add and remove listener certificates; delete a rule, a target group, a listener; deregister targets."""
    ingress = h.networking().read_namespaced_ingress("shop", NS)
    annotations = dict(ingress.metadata.annotations)
    split = json.loads(annotations["alb.ingress.kubernetes.io/actions.checkout-split"])
    for group in split["forwardConfig"]["targetGroups"]:
        group["weight"] = 50
    first_host = client.ApiClient().sanitize_for_serialization(ingress.spec.rules[0])
    _patch_ingress(
        h,
        {
            "metadata": {
                "annotations": {
                    "alb.ingress.kubernetes.io/healthcheck-path": "/ready",
                    "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=10",
                    "alb.ingress.kubernetes.io/tags": "team=shop,tier=web",
                    "alb.ingress.kubernetes.io/certificate-arn": f"{cert},{second_cert}",
                    "alb.ingress.kubernetes.io/actions.checkout-split": json.dumps(split),
                }
            },
            "spec": {"rules": [first_host]},  # api.example.com's rule and its target group go
        },
    )
    slice_ = endpoint_slice("web", ["10.0.1.10"])
    client.DiscoveryV1Api(h.api).replace_namespaced_endpoint_slice(
        "web-a",
        NS,
        {**slice_, "metadata": {**slice_["metadata"], "resourceVersion": _rv(h, "web-a")}},
    )

    def changed() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        assert lb is not None
        https = _listeners(h, lb).get(443)
        groups = _owned_groups(h)
        if https is None or f"{NS}/shop-orders:80" in groups or len(_rules(h, https)) != 2:
            return False
        if second_cert not in _extra_certificates(h, https):
            return False
        if any(g["HealthCheckPath"] != "/ready" for g in groups.values() if g["TargetType"] == "ip"):
            return False
        web = groups[f"{NS}/shop-web:80"]["TargetGroupArn"]
        return h.targets(web) == {("10.0.1.10", 8080)} and h.tags(lb["LoadBalancerArn"]).get("tier") == "web"

    await eventually(changed, timeout=60, interval=0.2)

    _patch_ingress(h, {"metadata": {"annotations": {"alb.ingress.kubernetes.io/certificate-arn": cert}}})

    def one_certificate() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        assert lb is not None
        return second_cert not in _extra_certificates(h, _listeners(h, lb)[443])

    await eventually(one_certificate, timeout=60, interval=0.2)

    # No certificate-arn: the HTTPS listener's certificate is found in ACM by the rule's host (LBC's discovery).
    found = import_acm_certificate(h.moto.client("acm"), "*.example.com")
    _patch_ingress(h, {"metadata": {"annotations": {"alb.ingress.kubernetes.io/certificate-arn": None}}})

    def discovered() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        assert lb is not None
        https = _listeners(h, lb).get(443)
        return https is not None and [c["CertificateArn"] for c in https.get("Certificates", [])] == [found]

    await eventually(discovered, timeout=60, interval=0.2)

    _patch_ingress(
        h,
        {
            "metadata": {
                "annotations": {
                    "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}]',
                    "alb.ingress.kubernetes.io/ssl-redirect": None,
                    "alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=120",
                    "alb.ingress.kubernetes.io/ip-address-type": "dualstack",
                }
            }
        },
    )

    def http_only() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        assert lb is not None
        listeners = _listeners(h, lb)
        attributes = h.elbv2.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]
        return (
            set(listeners) == {80}
            and listeners[80]["DefaultActions"][0]["Type"] != "redirect"
            and {"Key": "idle_timeout.timeout_seconds", "Value": "120"} in attributes
            and lb["IpAddressType"] == "dualstack"
        )

    await eventually(http_only, timeout=60, interval=0.2)

    # The user's own security group by name, with the backend group: SetSecurityGroups, and the managed group goes.
    ec2 = h.moto.client("ec2")
    mine = ec2.create_security_group(GroupName="shop-frontend", Description="hand-made", VpcId=h.network.vpc_id)
    _patch_ingress(
        h,
        {
            "metadata": {
                "annotations": {
                    "alb.ingress.kubernetes.io/security-groups": "shop-frontend",
                    "alb.ingress.kubernetes.io/manage-backend-security-group-rules": "true",
                }
            }
        },
    )

    def own_group() -> bool:
        lb = _balancer(h, f"{NS}/shop")
        assert lb is not None
        managed = ec2.describe_security_groups(
            Filters=[{"Name": "tag:elbv2.meshctl.dev/resource", "Values": ["ManagedLBSecurityGroup"]}]
        )["SecurityGroups"]
        return (
            mine["GroupId"] in lb.get("SecurityGroups", [])
            and len(lb["SecurityGroups"]) == 2
            and not [
                g
                for g in managed
                if g["Tags"]
                and dict((t["Key"], t["Value"]) for t in g["Tags"]).get("elbv2.meshctl.dev/stack") == f"{NS}/shop"
            ]
        )

    await eventually(own_group, timeout=60, interval=0.2)


def _rv(h: Harness, slice_name: str) -> str:
    return str(client.DiscoveryV1Api(h.api).read_namespaced_endpoint_slice(slice_name, NS).metadata.resource_version)


async def _admin_access(h: Harness, controller: Controller) -> None:
    """The admin API as the Deployment runs it (--admin-auth=kubernetes): probes and metrics open; the rest needs
    a token TokenReview accepts for a user SubjectAccessReview allows (ClusterRole meshctl-admin-reader); the CLI
    sends MESHCTL_TOKEN or the kubeconfig's token when asked."""
    import urllib.error
    import urllib.request

    base = f"http://127.0.0.1:{controller.admin}"

    def status(path: str, token: str | None = None) -> int:
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    reader, stranger = h.apiserver.issue_token("alice"), h.apiserver.issue_token("bob")
    h.apiserver.permissions.add(("alice", "get", "mesh.meshctl.dev", "controlplane"))
    assert status("/healthz") == 200 and status("/metrics") == 200
    assert status("/api/v1/status") == 401
    assert status("/api/v1/status", "not-a-token") == 401
    assert status("/api/v1/status", stranger) == 403
    assert status("/api/v1/config_dump", reader) == 200
    cli = [sys.executable, "-m", "meshctl", "get", "status", "--admin", base, "-o", "json"]
    env = {**os.environ, "MESHCTL_TOKEN": reader}
    done = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(done.stdout)["objects"], done.stderr
    env = {k: v for k, v in os.environ.items() if k != "MESHCTL_TOKEN"} | {"KUBECONFIG": str(controller.kubeconfig)}
    denied = await asyncio.to_thread(subprocess.run, cli, capture_output=True, text=True, env=env, timeout=60)
    assert denied.returncode == 2 and "MESHCTL_TOKEN" in denied.stderr, denied.stderr  # its kubeconfig has no token


async def _renewal(h: Harness) -> None:
    """A serving certificate for other names (as after a change of --tls-dns-names): the leader issues a new one."""
    data = _secret(h)
    assert data is not None
    expected = _dns_names(data["tls.crt"])
    wrong = issue(KeyPair(data["ca.crt"], data["ca.key"]), "elsewhere.example", dns_names=("elsewhere.example",))
    encoded = {**data, "tls.crt": wrong.cert_pem, "tls.key": wrong.key_pem}
    h.core().patch_namespaced_secret(
        "meshctl-tls", SYSTEM, {"data": {k: base64.b64encode(v).decode() for k, v in encoded.items()}}
    )
    await eventually(lambda: (s := _secret(h)) is not None and _dns_names(s["tls.crt"]) == expected, timeout=30)


async def _deletion(h: Harness, bound_group: str) -> None:
    await asyncio.to_thread(h.networking().delete_namespaced_ingress, "shop", NS)
    await asyncio.to_thread(h.core().delete_namespaced_service, "game", NS)
    custom = client.CustomObjectsApi(h.api)
    await asyncio.to_thread(
        custom.delete_namespaced_custom_object, "elbv2.meshctl.dev", "v1beta1", NS, "targetgroupbindings", "bound"
    )

    def gone() -> bool:
        return (
            not _owned_groups(h)
            and _balancer(h, f"{NS}/shop") is None
            and _balancer(h, f"{NS}/game") is None
            and not h.targets(bound_group)
            and not _exists(h.networking().read_namespaced_ingress, "shop", NS)
            and not _exists(h.core().read_namespaced_service, "game", NS)
            and not _exists(
                custom.get_namespaced_custom_object, "elbv2.meshctl.dev", "v1beta1", NS, "targetgroupbindings", "bound"
            )
        )

    await eventually(gone, timeout=60, interval=0.2)


# --- the test --------------------------------------------------------------------------------------------------


@pytest.fixture
async def harness(apiserver: ApiServer, moto: Moto):
    h = Harness(apiserver, moto)
    yield h
    await h.stop()


async def test_the_controller_calls_exactly_what_its_rbac_and_iam_policy_grant(harness: Harness, tmp_path: Path):
    h = harness
    manifests = shipped_manifests()  # the Deployment's args and the RBAC checked come from one rendering
    h.apiserver.seed([d for d in manifests if d["kind"] in ("Namespace", "MutatingWebhookConfiguration")])
    cert = certificate(h)
    second_cert = h.moto.client("acm").request_certificate(DomainName="api.example.com")["CertificateArn"]
    aws_docs, bound_group = _aws_world(h)
    h.seed([*_mesh(), *shop_documents(cert), *aws_docs, *_aws_gateways(cert)])
    assert h.moto.recording is not None
    aws_start = h.moto.recording.stat().st_size if h.moto.recording.exists() else 0
    controller = Controller(h, tmp_path)
    await controller.start(_controller_args(manifests))
    try:
        try:
            await _first_pass(h, bound_group)
            await _admin_access(h, controller)
            await _every_change(h, cert, second_cert)
            await _renewal(h)
            await _deletion(h, bound_group)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- meshctl serve:\n{controller.logs()}") from None
    finally:
        await controller.stop()

    kube_calls = controller_calls(h.apiserver.calls)
    aws_calls = controller_aws_calls(read_recording(h.moto.recording, aws_start)[0])
    granted = shipped_grants()
    rbac = check_rbac(granted, kube_calls)
    assert rbac.ok, rbac.report()
    policy = shipped_policy()
    iam = check_iam(policy, aws_calls)
    assert iam.ok, iam.report()
    assert len(kube_calls) > 100 and len(aws_calls) > 50  # the proof rests on real traffic

    # Each grant is needed: without it some call the controller made is denied ...
    for grant in granted:
        assert check_rbac([g for g in granted if g != grant], kube_calls).denied, f"not needed: {grant}"
    for action in policy_actions(policy):
        assert check_iam(_policy_without(policy, action), aws_calls).denied, f"not needed: {action}"
    # ... and a grant nothing uses is reported, whether a verb, a resource or a name too many.
    for extra in (
        Grant("ClusterRole/meshctl", None, "", "configmaps", "list"),
        Grant("ClusterRole/meshctl", None, "", "pods", "patch"),
        Grant("Role/meshctl", SYSTEM, "coordination.k8s.io", "leases", "delete", "meshctl-leader"),
    ):
        assert check_rbac([*granted, extra], kube_calls).unused == [str(extra)]
    # The same through the manifests: a rule taken out of the rendered ClusterRole, then one added.
    docs = copy.deepcopy(manifests)
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "meshctl-ingress"]
    removed = role["rules"].pop(0)
    assert check_rbac(grants(docs), kube_calls).denied
    role["rules"] += [removed, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    assert check_rbac(grants(docs), kube_calls).unused == ["ClusterRole/meshctl-ingress: get configmaps"]
    wider = _policy_with(policy, "elasticloadbalancing:SetSubnets")
    assert check_iam(wider, aws_calls).unused == ["elasticloadbalancing:SetSubnets"]


def _policy_without(policy: dict[str, Any], action: str) -> dict[str, Any]:
    statements = [{**s, "Action": [a for a in s["Action"] if a != action]} for s in policy["Statement"]]
    return {**policy, "Statement": statements}


def _policy_with(policy: dict[str, Any], action: str) -> dict[str, Any]:
    return {**policy, "Statement": [*policy["Statement"], {"Effect": "Allow", "Action": [action], "Resource": "*"}]}
