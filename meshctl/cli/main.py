"""``meshctl``: run the control plane, print sidecar bootstraps, inspect live routing, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from meshctl.cli.client import CliError

if TYPE_CHECKING:
    from meshctl.identity.ca import Issuer
    from meshctl.identity.keeper import IdentityKeeper
    from meshctl.ingress.reconciler import IngressReconciler
    from meshctl.kube.status_writer import StatusWriter
    from meshctl.model import TlsMode
    from meshctl.sources.kubernetes import KubernetesSource
    from meshctl.xds.server.tls import XdsTls

__all__ = ["main"]


def _print(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")


async def _serve(args: argparse.Namespace) -> int:
    from meshctl.controlplane.plane import ControlPlane
    from meshctl.model import EgressFilter
    from meshctl.model.authz import AuthzDefault
    from meshctl.sources import ManifestSource

    writer = None
    ingress = None
    xds_tls = _xds_tls(args)
    if args.ingress and not args.kubernetes:
        print("meshctl serve: --ingress needs --kubernetes", file=sys.stderr)
        return 2
    if args.ingress and not args.cluster_name:
        print("meshctl serve: --ingress needs --cluster-name (it goes into the ownership tags)", file=sys.stderr)
        return 2
    if args.kubernetes:
        source, writer = _kubernetes_source(args)
        if args.ingress:
            ingress = _ingress_reconciler(args, source, writer)
    else:
        manifests = Path(args.manifests)
        if not manifests.is_dir():
            print(f"meshctl serve: --manifests {manifests}: not a directory", file=sys.stderr)
            return 2
        source = ManifestSource(manifests)  # type: ignore[assignment]
    injection = None
    if args.webhook_port or args.tls_secret:
        from meshctl.cli.injection import injection_server

        kube = (source.api, writer.elector) if writer is not None else (None, None)
        injection = injection_server(args, *kube)
    if xds_tls is None and args.tls_dir:
        # xDS over TLS with the controller's serving certificate (the one the webhook serves)
        from meshctl.xds.server.tls import XdsTls

        directory = Path(args.tls_dir)
        if injection is None:
            for name in ("tls.crt", "tls.key"):
                _read_text(str(directory / name), "--tls-dir")
        xds_tls = XdsTls(directory / "tls.crt", directory / "tls.key")
    admin_authorizer = xds_token_auth = None
    if (args.admin_auth == "kubernetes" or args.xds_auth == "kubernetes") and writer is None:
        raise CliError("--admin-auth/--xds-auth kubernetes need --kubernetes (the API server reviews each token)")
    if args.admin_auth == "kubernetes":
        from meshctl.kube.reviews import AdminReviewer

        admin_authorizer = AdminReviewer(source.api)
    if args.xds_auth == "kubernetes":
        if xds_tls is None:
            raise CliError(
                "--xds-auth kubernetes needs xDS over TLS (--tls-dir or --xds-tls-cert): no token in the clear"
            )
        from meshctl.kube.reviews import XdsTokenReviewer

        xds_token_auth = XdsTokenReviewer(source.api)
    plane = ControlPlane(
        source,
        identities=_identities(args, source.api if writer is not None else None),
        admin_authorizer=admin_authorizer,
        xds_token_auth=xds_token_auth,
        address=args.address,
        xds_port=args.xds_port,
        admin_port=args.admin_port,
        status_writer=writer,
        ingress=ingress,
        xds_tls=xds_tls,
        injection=injection,
        dns_resolvers=_dns_resolvers(args.dns_resolver),
        traffic_interval=_positive(args.traffic_interval, "--traffic-interval"),
    )
    plane.controller.default_tls_mode = _tls_mode(args.default_tls_mode)
    plane.controller.default_authz = AuthzDefault(args.default_authorization)
    plane.controller.default_egress = EgressFilter(args.egress_filter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await plane.start()
    except OSError as exc:  # a port in use, an address not on this host
        await plane.stop()
        raise CliError(str(exc) if "xDS:" in str(exc) else f"cannot listen: {exc}") from None
    webhook = f", injection webhook on https://{args.address}:{injection.port}" if injection is not None else ""
    print(
        f"meshctl: serving xDS on {args.address}:{plane.xds_port}, admin on http://{args.address}:{plane.admin_port}"
        + webhook,
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await plane.stop()
    return 0


_TLS_MODE_HELP = (
    "the TLS mode of VirtualNode listeners that set no tls, in namespaces without a mesh.meshctl.dev/tls-mode label: "
    "STRICT (mTLS only), PERMISSIVE (mTLS and plaintext) or DISABLED (default DISABLED)"
)


def _tls_mode(value: str) -> TlsMode | None:
    from meshctl.model import TlsMode

    return None if value == "DISABLED" else TlsMode(value)


def _identities(args: argparse.Namespace, api: Any = None) -> IdentityKeeper:
    """The mesh CA: kept in --ca-secret (with --kubernetes: ``api``) or --ca-dir (created there the first time),
    else made in memory for this run."""
    import datetime

    from meshctl.identity.ca import MeshCA
    from meshctl.identity.keeper import IdentityKeeper

    if args.workload_cert_lifetime < 10:
        raise CliError(f"--workload-cert-lifetime {args.workload_cert_lifetime}: at least 10 seconds")
    ca: Issuer
    source = None
    if sum(map(bool, (args.acm_pca_arn, args.ca_dir, args.ca_secret))) > 1:
        raise CliError("--acm-pca-arn, --ca-dir and --ca-secret: choose one issuer")
    if args.acm_pca_arn:
        ca = _acm_pca_issuer(args.acm_pca_arn, args.trust_domain)
    elif args.ca_secret:
        if api is None:
            raise CliError("--ca-secret needs --kubernetes (the CA is kept in the cluster)")
        from kubernetes.client import ApiException

        from meshctl.identity.ca_secret import SecretSource

        namespace, _, name = args.ca_secret.rpartition("/")
        if not namespace or not name:
            raise CliError(f"--ca-secret {args.ca_secret!r}: expected NAMESPACE/NAME")
        source = SecretSource(api, namespace, name)
        try:
            ca = source.load_or_create(args.trust_domain)
        except (ValueError, ApiException) as exc:
            raise CliError(f"--ca-secret {args.ca_secret}: {str(exc).splitlines()[0]}") from None
    elif args.ca_dir:
        try:
            ca = MeshCA.load_or_create(Path(args.ca_dir), args.trust_domain)
        except (OSError, ValueError) as exc:
            raise CliError(f"--ca-dir {args.ca_dir}: {exc}") from None
    else:
        ca = MeshCA.generate(args.trust_domain)
    return IdentityKeeper(
        ca,
        lifetime=datetime.timedelta(seconds=args.workload_cert_lifetime),
        ca_dir=Path(args.ca_dir) if args.ca_dir else None,
        ca_source=source,
    )


def _acm_pca_issuer(arn: str, trust_domain: str) -> Issuer:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    from meshctl.identity.acmpca import AcmPcaIssuer
    from meshctl.version import CONTROLLER_USER_AGENT

    config = Config(retries={"mode": "standard", "total_max_attempts": 10}, user_agent_extra=CONTROLLER_USER_AGENT)
    try:
        return AcmPcaIssuer(boto3.session.Session().client("acm-pca", config=config), arn, trust_domain)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ValueError) as exc:
        raise CliError(f"--acm-pca-arn {arn}: {exc}") from None


def _kubernetes_source(args: argparse.Namespace) -> tuple[KubernetesSource, StatusWriter]:
    from meshctl.kube.config import api_client
    from meshctl.kube.leader import LeaderElector
    from meshctl.kube.status_writer import StatusWriter
    from meshctl.sources.kubernetes import KubernetesSource
    from meshctl.version import CONTROLLER_USER_AGENT

    try:
        api = api_client(args.kubeconfig, user_agent=CONTROLLER_USER_AGENT)
    except Exception as exc:  # the client raises several kinds for a missing or broken kubeconfig
        where = args.kubeconfig or "in-cluster config or ~/.kube/config"
        raise CliError(f"cannot load a Kubernetes configuration ({where}): {exc}") from None
    elector = LeaderElector(api, namespace=args.lease_namespace)  # only the lease holder writes status
    source = KubernetesSource(api, namespaces=args.namespace or None, ingress=args.ingress)
    writer = StatusWriter(api, elector=elector)
    source.on_invalid = writer.report_invalid  # a Warning Event on each object the source cannot read
    return source, writer


def _ingress_reconciler(args: argparse.Namespace, source: KubernetesSource, writer: StatusWriter) -> IngressReconciler:
    from meshctl.ingress.aws import IngressMetrics, make_clients
    from meshctl.ingress.deploy import Subnets
    from meshctl.ingress.kube import KubeWriter
    from meshctl.ingress.reconciler import IngressReconciler, ReconcileSettings

    metrics = IngressMetrics()
    clients = make_clients(metrics=metrics)
    subnets = tuple(s.strip() for s in (args.ingress_subnets or "").split(",") if s.strip())
    return IngressReconciler(
        clients=clients,
        kube=KubeWriter(source.api),
        settings=ReconcileSettings(
            cluster=args.cluster_name,
            default_target_type=args.ingress_default_target_type,
            legacy_nlb=args.ingress_legacy_nlb,
            ingress_class=args.ingress_class,
        ),
        subnets=Subnets(clients.ec2, vpc_id=args.ingress_vpc_id, given=subnets),
        metrics=metrics,
        elector=writer.elector,
    )


def _read_text(path: str, flag: str) -> str:

    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"{flag} {path}: {exc.strerror or exc}") from None


def _xds_tls(args: argparse.Namespace) -> XdsTls | None:
    from meshctl.xds.server.tls import XdsTls

    if not args.xds_tls_cert and not args.xds_tls_key:
        if args.xds_tls_client_ca:
            raise CliError("--xds-tls-client-ca needs --xds-tls-cert and --xds-tls-key")
        return None
    if not (args.xds_tls_cert and args.xds_tls_key):
        raise CliError("--xds-tls-cert and --xds-tls-key go together")
    files = [args.xds_tls_cert, args.xds_tls_key] + ([args.xds_tls_client_ca] if args.xds_tls_client_ca else [])
    for flag, path in zip(("--xds-tls-cert", "--xds-tls-key", "--xds-tls-client-ca"), files, strict=False):
        _read_text(path, flag)
    tls = XdsTls(
        Path(args.xds_tls_cert),
        Path(args.xds_tls_key),
        Path(args.xds_tls_client_ca) if args.xds_tls_client_ca else None,
    )
    try:
        tls.credentials()
    except Exception as exc:  # grpc reports unusable PEM only as a generic error
        raise CliError(f"--xds-tls-cert/--xds-tls-key: not a usable certificate and key ({exc})") from None
    return tls


def _dns_resolvers(given: list[str] | None) -> tuple[str, ...]:
    for server in given or ():
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--dns-resolver {server!r}: expected address:port, e.g. 10.0.0.2:53")
    return tuple(given or ())


def _positive(value: float, flag: str) -> float:
    if not 0 < value < float("inf"):  # (NaN too)
        raise CliError(f"{flag} {value!r}: expected a number of seconds above 0")
    return value


def _bootstrap(args: argparse.Namespace) -> int:
    from meshctl.xds.bootstrap import BootstrapOptions, render_bootstrap, render_grpc_bootstrap

    opts = BootstrapOptions(
        node_id=args.node_id,
        virtual_node=args.virtual_node,
        xds_address=args.xds_address,
        xds_port=args.xds_port,
        admin_address=args.admin_address,
        admin_port=args.admin_port,
        egress_port=args.egress_port,
        ingress_port=args.ingress_port,
        bind_address=args.bind_address,
        delta=args.delta,
        stats_port=args.stats_port or None,
        statsd_address=args.statsd_address,
        capture=args.capture,
        xds_ca_pem=_read_text(args.xds_ca, "--xds-ca") if args.xds_ca else None,
        xds_server_name=args.xds_server_name,
        xds_client_cert=args.xds_client_cert,
        xds_client_key=args.xds_client_key,
        service_account=args.service_account,
        xds_token_file=args.xds_token_file,
        sds_socket=args.sds_socket,
        dns_resolvers=tuple(args.dns_resolver or ()),
        gateway=args.gateway,
    )
    if args.gateway is not None and (args.gateway.count("/") != 1 or not all(args.gateway.split("/"))):
        raise CliError(f"--gateway {args.gateway!r}: expected namespace/name of a Gateway")
    if args.gateway is not None and (args.grpc or args.capture or args.virtual_node):
        raise CliError("--gateway: an edge gateway's proxy has no --virtual-node, --capture or --grpc")
    if args.xds_token_file and not args.xds_ca:
        raise CliError("--xds-token-file needs --xds-ca (a token is sent only over TLS)")
    if args.statsd_address:
        host, _, port = args.statsd_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--statsd-address {args.statsd_address!r}: expected host:port, e.g. 127.0.0.1:8125")
    if bool(args.xds_client_cert) != bool(args.xds_client_key):
        raise CliError("--xds-client-cert and --xds-client-key go together")
    if args.xds_client_cert and not args.xds_ca:
        raise CliError("--xds-client-cert needs --xds-ca (mutual TLS is TLS first)")
    if args.grpc:
        envoy_only = [f for f, on in (("--capture", args.capture), ("--delta", args.delta)) if on]
        if args.xds_token_file:
            envoy_only.append("--xds-token-file")
        if envoy_only:
            raise CliError(f"--grpc: {', '.join(envoy_only)} applies to Envoy sidecars only")
        _print(render_grpc_bootstrap(opts, ca_file=args.xds_ca), "json" if args.output == "yaml" else args.output)
        return 0
    try:
        bootstrap = render_bootstrap(opts)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _print(bootstrap, args.output)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from meshctl.admin.app import status_to_dict
    from meshctl.sources import load_manifests
    from meshctl.translate import translate_mesh

    root = Path(args.manifests)
    if not root.exists():
        raise CliError(f"{args.manifests}: no such file or directory")
    mesh = translate_mesh(load_manifests(root, strict=args.strict), default_tls_mode=_tls_mode(args.default_tls_mode))
    bad = [s for s in mesh.statuses if s.problems]
    if args.output in ("json", "yaml"):
        _print(
            {"objects": [status_to_dict(s) for s in mesh.statuses], "loadErrors": list(mesh.load_errors)}, args.output
        )
    else:
        for problem in mesh.load_errors:
            print(f"error: {problem}")
        for status in mesh.statuses:
            if status.problems:
                print(f"error {status.key}: {'; '.join(c.message for c in status.problems)}")
            else:
                print(f"ok    {status.key}: {status.origin}")
            for warning in status.warnings:
                print(f"warning {status.key}: {warning.message}")
    return 1 if bad or mesh.load_errors else 0


def build_parser() -> argparse.ArgumentParser:
    from meshctl.cli import ca, capture, diff, importer, ingresses, injection, inspect, install, routes, shift

    parser = argparse.ArgumentParser(prog="meshctl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the control plane")
    what = serve.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--manifests",
        help="directory of Kubernetes YAML (Services, EndpointSlices, Pods, VirtualNodes, Routes); re-read on change",
    )
    what.add_argument("--kubernetes", action="store_true", help="watch a cluster (in-cluster config or kubeconfig)")
    serve.add_argument(
        "--kubeconfig", help="kubeconfig file for --kubernetes (default: in-cluster, then ~/.kube/config)"
    )
    serve.add_argument("--namespace", action="append", help="with --kubernetes: watch only this namespace (repeatable)")
    serve.add_argument(
        "--lease-namespace",
        default="meshctl-system",
        help="with --kubernetes: namespace of the leader-election Lease (default meshctl-system)",
    )
    ingress = serve.add_argument_group(
        "ingress",
        "AWS ALB/NLB for Ingresses and Services of type LoadBalancer (credentials, region and endpoints "
        "from boto3's standard settings: AWS_REGION, AWS_ENDPOINT_URL_*, IRSA or EKS Pod Identity)",
    )
    ingress.add_argument(
        "--ingress", action="store_true", help="with --kubernetes: reconcile load balancers (leader only)"
    )
    ingress.add_argument("--cluster-name", help="this cluster's name, carried in every AWS resource's ownership tags")
    ingress.add_argument("--ingress-vpc-id", help="VPC for target groups (default: the VPC of the discovered subnets)")
    ingress.add_argument(
        "--ingress-subnets",
        help="comma-separated subnet ids (default: discovered by the kubernetes.io/role/elb and "
        "kubernetes.io/role/internal-elb tags, one per zone)",
    )
    ingress.add_argument(
        "--ingress-default-target-type",
        choices=("instance", "ip"),
        default="instance",
        help="target type when alb.ingress.kubernetes.io/target-type is not set (default instance, as LBC)",
    )
    ingress.add_argument(
        "--ingress-class",
        default="alb",
        metavar="NAME",
        help="Ingresses annotated kubernetes.io/ingress.class: NAME are ours (default alb, as the AWS Load Balancer "
        "Controller; an empty NAME also takes Ingresses with no class at all); otherwise an Ingress is ours when its "
        "IngressClass (named, or the cluster's default) has controller meshctl.dev/ingress or ingress.k8s.aws/alb. "
        "Taking over from LBC: stop it first",
    )
    ingress.add_argument(
        "--ingress-legacy-nlb",
        action="store_true",
        help="also take Services annotated service.beta.kubernetes.io/aws-load-balancer-type: nlb (only when the "
        "in-tree cloud provider does not act on them too)",
    )
    serve.add_argument("--xds-port", type=int, default=18000, help="gRPC ADS port (default 18000)")
    serve.add_argument(
        "--admin-auth",
        choices=("none", "kubernetes"),
        default="none",
        help="kubernetes: the admin API (but /healthz, /readyz, /metrics) needs a bearer token that TokenReview "
        "accepts and SubjectAccessReview allows to get controlplane.mesh.meshctl.dev (default none)",
    )
    serve.add_argument(
        "--xds-auth",
        choices=("none", "kubernetes"),
        default="none",
        help="kubernetes: every xDS stream carries its pod's projected ServiceAccount token (audience meshctl), "
        "checked with TokenReview; a proxy may claim only its own namespace and service account (default none)",
    )
    identity = serve.add_argument_group("workload identity (mTLS between sidecars)")
    identity.add_argument(
        "--default-tls-mode", choices=("STRICT", "PERMISSIVE", "DISABLED"), default="DISABLED", help=_TLS_MODE_HELP
    )
    identity.add_argument(
        "--default-authorization",
        choices=("allow", "deny", "audit"),
        default="allow",
        help="callers of listeners no ALLOW policy selects, in namespaces without a mesh.meshctl.dev/authorization "
        "label: allow, deny, or audit (would-be denials counted and logged, not enforced; default allow)",
    )
    identity.add_argument("--ca-dir", help="the mesh CA's directory (created on first use; default: in memory)")
    identity.add_argument(
        "--ca-secret",
        metavar="NAMESPACE/NAME",
        help="with --kubernetes: the mesh CA in this Secret, shared by every replica (created on first use)",
    )
    identity.add_argument("--trust-domain", default="meshctl.local", help="SPIFFE trust domain (default meshctl.local)")
    identity.add_argument(
        "--acm-pca-arn", help="issue workload certificates from this AWS Private CA (instead of the built-in CA)"
    )
    identity.add_argument(
        "--workload-cert-lifetime",
        type=int,
        default=86400,
        metavar="SECONDS",
        help="workload certificate lifetime; renewed at about half of it (default 86400: 24 h)",
    )
    serve.add_argument("--admin-port", type=int, default=19000, help="admin HTTP port (default 19000)")
    serve.add_argument("--address", default="127.0.0.1", help="address to bind both ports (default 127.0.0.1)")
    serve.add_argument(
        "--egress-filter",
        choices=("ALLOW_ALL", "DROP_ALL"),
        default="ALLOW_ALL",
        help="what captured proxies do with destinations the mesh does not declare, in namespaces without the label "
        "mesh.meshctl.dev/egress-filter (App Mesh's egressFilter; its default was DROP_ALL): pass them through "
        "(default) or refuse them (HTTP 404 saying why, TCP closed)",
    )
    serve.add_argument(
        "--dns-resolver",
        action="append",
        metavar="ADDRESS:PORT",
        help="DNS server for VirtualNodes found by DNS (serviceDiscovery.dns; repeatable; default: /etc/resolv.conf)",
    )
    serve.add_argument(
        "--traffic-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how often the proxies' stats are read for the web view and progressive shifts, only while one of them "
        "asks (default 5)",
    )
    tls = serve.add_argument_group("xDS over TLS", "files are re-read when they change (rotation needs no restart)")
    tls.add_argument("--xds-tls-cert", help="PEM certificate (chain) the xDS port serves")
    tls.add_argument("--xds-tls-key", help="PEM private key of --xds-tls-cert")
    tls.add_argument(
        "--xds-tls-client-ca",
        help="PEM CA: mutual TLS; each proxy presents a certificate it signed, whose spiffe://.../ns/<ns>[/vn/<name>] "
        "URI names the VirtualNodes it may stream as",
    )
    injection.add_arguments(serve)
    serve.set_defaults(run=lambda a: asyncio.run(_serve(a)))

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a sidecar (--grpc: a proxyless gRPC one)")
    boot.add_argument("--node-id", required=True, help="Envoy node id, e.g. demo/frontend/pod-1")
    boot.add_argument(
        "--virtual-node", help="namespace/name of the VirtualNode (default: first two parts of --node-id)"
    )
    boot.add_argument("--xds-address", default="127.0.0.1")
    boot.add_argument("--xds-port", type=int, default=18000)
    boot.add_argument("--admin-address", default="127.0.0.1", help="Envoy admin address")
    boot.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port (0: any)")
    boot.add_argument("--egress-port", type=int, help="outbound listener port (default 15001)")
    boot.add_argument("--ingress-port", type=int, help="first inbound listener port (default 15000)")
    boot.add_argument("--bind-address", help="address the listeners bind (default 0.0.0.0)")
    boot.add_argument("--delta", action="store_true", help="use incremental xDS (DELTA_GRPC)")
    boot.add_argument(
        "--stats-port",
        type=int,
        default=15090,
        help="port serving only /stats/prometheus (scraping) and /ready (probes) (default 15090; 0: none)",
    )
    boot.add_argument("--statsd-address", help="host:port of a StatsD server to push stats to over UDP")
    boot.add_argument(
        "--capture", action="store_true", help="the pod's traffic is redirected by iptables (meshctl capture)"
    )
    boot.add_argument("--xds-ca", help="PEM file of the CA that signed the control plane's certificate: xDS over TLS")
    boot.add_argument(
        "--xds-server-name", help="name the control plane's certificate must carry (default --xds-address)"
    )
    boot.add_argument("--xds-client-cert", help="client certificate file, in Envoy's filesystem (mutual TLS)")
    boot.add_argument("--xds-client-key", help="client key file, in Envoy's filesystem (mutual TLS)")
    boot.add_argument("--service-account", help="the workload's service account: its mTLS identity (default: default)")
    boot.add_argument(
        "--xds-token-file",
        help="file of a token sent on the xDS stream, re-read for each new stream (in a pod: its projected "
        "ServiceAccount token, audience meshctl; serve --xds-auth=kubernetes checks it)",
    )
    boot.add_argument(
        "--sds-socket",
        help="Unix socket of the node's SDS agent (SPIRE agent's Workload API): serves the secrets that VirtualNode "
        "tls 'sds' sources name",
    )
    boot.add_argument(
        "--dns-resolver",
        action="append",
        metavar="ADDRESS:PORT",
        help="DNS server Envoy resolves DNS-discovered VirtualNodes with (repeatable; default: the host's)",
    )
    boot.add_argument(
        "--grpc",
        action="store_true",
        help="print the xDS bootstrap of a proxyless gRPC workload instead (JSON for GRPC_XDS_BOOTSTRAP or "
        "GRPC_XDS_BOOTSTRAP_CONFIG): no Envoy, the app dials xds:///name.namespace:port",
    )
    boot.add_argument(
        "--gateway",
        metavar="NAMESPACE/NAME",
        help="an edge gateway's Envoy serving this Gateway (its GatewayClass's controllerName meshctl.dev/gateway): "
        "listeners from the Gateway's, a Gateway port below 1024 bound 10,000 higher",
    )
    boot.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    boot.set_defaults(run=_bootstrap)

    val = sub.add_parser("validate", help="check a manifest directory offline, as serve would")
    val.add_argument("--strict", action="store_true", help="unknown or not-implemented fields are errors, not warnings")
    val.add_argument(
        "--default-tls-mode", choices=("STRICT", "PERMISSIVE", "DISABLED"), default="DISABLED", help=_TLS_MODE_HELP
    )
    val.add_argument("manifests")
    val.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    val.set_defaults(run=_validate)

    get = sub.add_parser("get", help="show live state: proxies, routes, status, rejections").add_subparsers(
        dest="what", required=True
    )
    inspect.add_commands(sub, get)
    routes.add_commands(sub, get)
    ingresses.add_commands(get)
    shift.add_commands(sub)
    diff.add_commands(sub)
    importer.add_commands(sub)
    capture.add_commands(sub)
    ca.add_commands(sub)
    install.add_commands(sub)

    demo = sub.add_parser("demo", help="control plane + real Envoy + sample services, with a live traffic shift")
    demo.add_argument(
        "--duration", type=float, default=0, help="seconds to run after the shift, then exit (default: until Ctrl-C)"
    )
    demo.add_argument("--requests", type=int, default=1000, help="requests per measurement (default 1000)")

    def run_demo(args: argparse.Namespace) -> int:
        from meshctl.cli.demo import run_demo as demo_main

        return asyncio.run(demo_main(duration=args.duration, requests=args.requests))

    demo.set_defaults(run=run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        return args.run(args) or 0
    except CliError as exc:
        print(f"meshctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input: still one line; the traceback with -vv
        logging.getLogger("meshctl").debug("unexpected error", exc_info=True)
        print(f"meshctl: internal error: {type(exc).__name__}: {exc} (-vv shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
