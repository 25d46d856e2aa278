"""Manifests for the ingress tests: the Ingress from issue 10 (two hosts, three paths, HTTPS, ssl-redirect, a
weighted action) and what it points at."""

from __future__ import annotations

import json
from typing import Any

from meshctl.model import Model
from meshctl.parse.documents import parse_keyed
from meshctl.sources.base import build_model

NS = "shop"


def ingress_class() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "meshctl"},
        "spec": {"controller": "meshctl.dev/ingress"},
    }


def service(name: str, port: int = 80, node_port: int | None = None, annotations: dict | None = None) -> dict:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": port, "targetPort": 8080, "protocol": "TCP"}]}
    if node_port:
        spec["type"] = "NodePort"
        spec["ports"][0]["nodePort"] = node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
        "spec": spec,
    }


def nlb_service(name: str = "game", **spec: Any) -> dict[str, Any]:
    """A `type: LoadBalancer` Service of our NLB class on TCP 7000 (node port 30700); ``spec`` adds fields."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "meshctl.dev/nlb",
            **spec,
            "ports": [{"name": "tcp", "port": 7000, "targetPort": 7000, "nodePort": 30700, "protocol": "TCP"}],
        },
    }


def endpoint_slice(service_name: str, ips: list[str], *, terminating: tuple[str, ...] = (), suffix: str = "a") -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ip not in terminating, "serving": True, "terminating": ip in terminating},
                "targetRef": {"kind": "Pod", "name": f"{service_name}-{ip.replace('.', '-')}", "namespace": NS},
            }
            for ip in ips
        ],
    }


def shop_ingress(certificate_arn: str, *, name: str = "shop", extra: dict | None = None) -> dict:
    weighted = {
        "type": "forward",
        "forwardConfig": {
            "targetGroups": [
                {"serviceName": "checkout-v1", "servicePort": 80, "weight": 90},
                {"serviceName": "checkout-v2", "servicePort": 80, "weight": 10},
            ]
        },
    }
    annotations = {
        "alb.ingress.kubernetes.io/scheme": "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/listen-ports": '[{"HTTP": 80}, {"HTTPS": 443}]',
        "alb.ingress.kubernetes.io/certificate-arn": certificate_arn,
        "alb.ingress.kubernetes.io/ssl-redirect": "443",
        "alb.ingress.kubernetes.io/healthcheck-path": "/healthz",
        "alb.ingress.kubernetes.io/target-group-attributes": "deregistration_delay.timeout_seconds=30",
        "alb.ingress.kubernetes.io/tags": "team=shop",
        "alb.ingress.kubernetes.io/actions.checkout-split": json.dumps(weighted),
        **(extra or {}),
    }

    def path(p: str, svc: str, kind: str = "Prefix", port: dict | None = None) -> dict:
        return {"path": p, "pathType": kind, "backend": {"service": {"name": svc, "port": port or {"number": 80}}}}

    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "ingressClassName": "meshctl",
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            path("/", "web"),
                            path("/checkout", "checkout-split", port={"name": "use-annotation"}),
                        ]
                    },
                },
                {"host": "api.example.com", "http": {"paths": [path("/v1/orders", "orders", "Exact")]}},
            ],
        },
    }


def shop_documents(certificate_arn: str) -> list[dict]:
    return [
        ingress_class(),
        service("web"),
        service("orders"),
        service("checkout-v1"),
        service("checkout-v2"),
        endpoint_slice("web", ["10.0.1.10", "10.0.1.11"]),
        endpoint_slice("orders", ["10.0.1.20"]),
        endpoint_slice("checkout-v1", ["10.0.1.30"]),
        endpoint_slice("checkout-v2", ["10.0.1.40"]),
        shop_ingress(certificate_arn),
    ]


def model_of(docs: list[dict]) -> Model:
    objects = [p for p in (parse_keyed(d) for d in docs) if p is not None]
    return build_model(objects)


def ec2_node(name: str, instance_id: str, address: str, ready: bool = True) -> dict[str, Any]:
    """A Node backed by an EC2 instance (its providerID), as the kubelet reports it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"providerID": f"aws:///us-east-1a/{instance_id}"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": address}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def import_acm_certificate(acm: Any, *names: str) -> str:
    """An ACM certificate for ``names`` (imported, so ACM says ISSUED at once, as certificate discovery wants)."""
    from meshctl.inject.pki import issue, new_ca

    ca = new_ca("test ACM import")
    leaf = issue(ca, names[0], dns_names=names)
    imported = acm.import_certificate(Certificate=leaf.cert_pem, PrivateKey=leaf.key_pem, CertificateChain=ca.cert_pem)
    return str(imported["CertificateArn"])
