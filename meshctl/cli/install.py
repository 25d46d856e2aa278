"""``meshctl install``: print the controller's manifests for ``kubectl apply -f -`` (YAML, or a JSON List)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from meshctl.inject.gateway_manifests import GatewayInstall, render_gateway
from meshctl.kube.install_manifests import DEFAULT_IMAGE, DEFAULT_NAMESPACE, InstallError, InstallOptions, render

__all__ = ["add_commands"]


def _run(args: argparse.Namespace) -> int:
    if args.gateway is not None:
        return _gateway(args)
    options = InstallOptions(
        namespace=args.namespace,
        replicas=args.replicas,
        image=args.image,
        role_arn=args.role_arn,
        ingress=args.ingress,
        cluster_name=args.cluster_name,
        gateway_api_crds=args.gateway_api_crds,
    )
    try:
        docs = render(options)
    except InstallError as exc:
        print(f"meshctl install: {exc}", file=sys.stderr)
        return 2
    _print(docs, args.output)
    return 0


def _gateway(args: argparse.Namespace) -> int:
    """``--gateway NAMESPACE/NAME``: the edge gateway's Deployment, Service (an NLB), PDB and ServiceAccount."""
    namespace, _, name = args.gateway.partition("/")
    options = GatewayInstall(
        namespace=namespace,
        name=name,
        ports=tuple(args.gateway_port or (80, 443)),
        replicas=args.gateway_replicas,
        internal=args.gateway_internal,
    )
    try:
        docs = render_gateway(options)
    except ValueError as exc:
        print(f"meshctl install: {exc}", file=sys.stderr)
        return 2
    _print(docs, args.output)
    return 0


def _print(docs: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2))
    else:
        print(yaml.safe_dump_all(docs, sort_keys=False), end="")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = sub.add_parser(
        "install",
        help="print the controller's manifests: meshctl install [options] | kubectl apply -f -",
        description="The manifests of deploy/base (CRDs, namespace, RBAC, Deployment, Service, PDB, injection "
        "webhook) with these options applied; the kustomize overlays in deploy/overlays do the same.",
    )
    cmd.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help=f"controller namespace (default {DEFAULT_NAMESPACE})"
    )
    cmd.add_argument("--replicas", type=int, default=2, help="controller replicas (default 2; 1 drops the PDB)")
    cmd.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"controller image, also used for capture ({DEFAULT_IMAGE})"
    )
    cmd.add_argument("--role-arn", help="IAM role for the service account (IRSA: eks.amazonaws.com/role-arn)")
    cmd.add_argument("--ingress", action="store_true", help="reconcile AWS ALBs/NLBs (adds its RBAC and flags)")
    cmd.add_argument("--cluster-name", help="with --ingress: the cluster's name in AWS ownership tags")
    cmd.add_argument(
        "--gateway-api-crds",
        action="store_true",
        help="also the upstream Gateway API CRDs (Gateway, GatewayClass, HTTPRoute, GRPCRoute, ReferenceGrant; "
        "v1.6.1 standard channel): for clusters without them; apply with kubectl apply --server-side",
    )
    cmd.add_argument(
        "--gateway",
        metavar="NAMESPACE/NAME",
        help="instead: an edge gateway's Envoys for that Gateway (its class's controllerName meshctl.dev/gateway): "
        "Deployment, PodDisruptionBudget, ServiceAccount and a LoadBalancer Service (an NLB with IP targets)",
    )
    cmd.add_argument(
        "--gateway-port",
        type=int,
        action="append",
        metavar="PORT",
        help="with --gateway: a listener port the NLB forwards (repeatable; default 80 and 443)",
    )
    cmd.add_argument("--gateway-replicas", type=int, default=2, help="with --gateway: Envoy replicas (default 2)")
    cmd.add_argument("--gateway-internal", action="store_true", help="with --gateway: an internal NLB")
    cmd.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    cmd.set_defaults(run=_run)
