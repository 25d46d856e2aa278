"""``meshctl serve`` options for the sidecar injection webhook and the controller's certificates."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshctl.inject.server import InjectionServer
    from meshctl.inject.tlsfiles import TlsDir
    from meshctl.kube.leader import LeaderElector

__all__ = ["add_arguments", "injection_server", "native_sidecars_supported"]


def add_arguments(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group(
        "sidecar injection and certificates",
        "the webhook and xDS share one serving certificate: tls.crt, tls.key and ca.crt in --tls-dir",
    )
    group.add_argument("--tls-dir", help="directory of tls.crt, tls.key and ca.crt (re-read when they change)")
    group.add_argument(
        "--tls-secret",
        help="with --kubernetes: NAMESPACE/NAME of a Secret where the controller keeps its own CA and serving "
        "certificate (created if missing, renewed at half its lifetime by the leader) and copies it to --tls-dir; "
        "without it, --tls-dir is filled by someone else (cert-manager)",
    )
    group.add_argument(
        "--tls-secret-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often --tls-secret is read again (renewal by the leader, the caBundle, copies to --tls-dir)",
    )
    group.add_argument(
        "--tls-dns-names",
        default="meshctl.meshctl-system.svc,meshctl.meshctl-system.svc.cluster.local",
        help="names in the serving certificate (default: the meshctl Service in meshctl-system)",
    )
    group.add_argument("--webhook-port", type=int, default=0, help="serve the injection webhook here (0: off)")
    group.add_argument("--webhook-config", help="MutatingWebhookConfiguration whose caBundle the leader keeps")
    group.add_argument("--inject-proxy-image", default="envoyproxy/envoy:v1.40.0", help="the sidecar's Envoy image")
    group.add_argument(
        "--inject-capture-image", default="ghcr.io/meshctl/meshctl:0.1.0", help="image running `meshctl capture`"
    )
    group.add_argument(
        "--inject-xds-address", default="meshctl.meshctl-system.svc", help="where sidecars reach xDS (a TLS name)"
    )
    group.add_argument("--inject-xds-port", type=int, default=18000, help="the xDS Service port sidecars use")
    group.add_argument(
        "--inject-xds-token",
        action="store_true",
        help="sidecars send their pod's projected ServiceAccount token on the xDS stream (for --xds-auth=kubernetes)",
    )
    group.add_argument(
        "--inject-spiffe-csi",
        action="store_true",
        help="mount SPIRE's Workload API socket (SPIFFE CSI driver csi.spiffe.io) into each sidecar: VirtualNode tls "
        "'sds' sources are fetched from it",
    )
    group.add_argument(
        "--native-sidecars",
        choices=("auto", "true", "false"),
        default="auto",
        help="Envoy as a native sidecar (init container with restartPolicy Always); auto: when the API server "
        "is Kubernetes 1.29 or newer",
    )


def native_sidecars_supported(api: Any) -> bool:
    """Native sidecars are on by default from Kubernetes 1.29 (beta; GA in 1.33). Read as raw JSON: the client's
    VersionInfo model refuses a /version missing any of its nine fields, which some distributions omit."""
    import json

    from kubernetes import client

    versions: Any = client.VersionApi(api)  # read raw, not as the typed model
    raw = versions.get_code(_preload_content=False)
    version = json.loads(raw.data)
    major = "".join(ch for ch in str(version.get("major", "")) if ch.isdigit())
    minor = "".join(ch for ch in str(version.get("minor", "")) if ch.isdigit())
    return (int(major or 0), int(minor or 0)) >= (1, 29)


def tls_dir(args: argparse.Namespace) -> TlsDir | None:
    from meshctl.inject.tlsfiles import TlsDir

    return TlsDir(Path(args.tls_dir)) if args.tls_dir else None


def injection_server(args: argparse.Namespace, api: Any | None, elector: LeaderElector | None) -> InjectionServer:
    """The webhook (and certificate keeper) ``args`` ask for; raises CliError on options that do not fit."""
    from meshctl.cli.client import CliError
    from meshctl.inject.certificate_keeper import CertificateKeeper
    from meshctl.inject.pod_patch import InjectConfig
    from meshctl.inject.server import InjectionServer

    directory = tls_dir(args)
    if directory is None:
        raise CliError("--webhook-port and --tls-secret need --tls-dir")
    if args.tls_secret_interval <= 0:
        raise CliError("--tls-secret-interval must be more than 0 seconds")
    keeper = None
    if args.tls_secret:
        if api is None:
            raise CliError("--tls-secret needs --kubernetes")
        namespace, _, name = args.tls_secret.rpartition("/")
        if not namespace or not name:
            raise CliError("--tls-secret is NAMESPACE/NAME")
        dns_names = tuple(n.strip() for n in args.tls_dns_names.split(",") if n.strip())
        keeper = CertificateKeeper(
            api,
            namespace,
            name,
            dns_names,
            directory,
            webhook_config=args.webhook_config,
            is_leader=(lambda: elector.is_leader) if elector is not None else (lambda: True),
        )
    if args.native_sidecars == "auto":
        native = api is not None and native_sidecars_supported(api)
    else:
        native = args.native_sidecars == "true"
    config = InjectConfig(
        proxy_image=args.inject_proxy_image,
        capture_image=args.inject_capture_image,
        xds_address=args.inject_xds_address,
        xds_port=args.inject_xds_port,
        native_sidecars=native,
        xds_token=args.inject_xds_token,
        spiffe_csi=args.inject_spiffe_csi,
    )
    return InjectionServer(
        directory,
        config,
        address=args.address,
        port=args.webhook_port,
        keeper=keeper,
        keep_seconds=args.tls_secret_interval,
    )
