"""``meshctl ca init|rotate``: the mesh CA kept in a directory (``meshctl serve --ca-dir``), and its root rotation in
three steps, each taken by the running control plane within seconds (docs/security.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshctl.identity.ca import ROTATION_STAGES, MeshCA, rotate

__all__ = ["add_commands"]


def _init(args: argparse.Namespace) -> int:
    directory = Path(args.ca_dir)
    if (directory / "ca.key").exists():
        print(f"meshctl ca init: {directory} already holds a CA", file=sys.stderr)
        return 2
    try:
        ca = MeshCA.load_or_create(directory, args.trust_domain)
    except OSError as exc:
        print(f"meshctl ca init: {exc}", file=sys.stderr)
        return 2
    print(f"created the mesh CA for spiffe://{ca.trust_domain} in {directory} (root {ca.root.serial_number:x})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    if bool(args.ca_dir) == bool(args.ca_secret):
        print("meshctl ca rotate: give --ca-dir or --ca-secret", file=sys.stderr)
        return 2
    try:
        if args.ca_dir:
            print(rotate(Path(args.ca_dir), args.stage))
            return 0
        from kubernetes.client import ApiException

        from meshctl.identity.ca_secret import rotate_secret
        from meshctl.kube.config import api_client

        namespace, _, name = args.ca_secret.rpartition("/")
        if not namespace or not name:
            raise ValueError(f"--ca-secret {args.ca_secret!r}: expected NAMESPACE/NAME")
        try:
            api = api_client(args.kubeconfig, in_cluster=False)
        except Exception as exc:  # the client raises several kinds for a missing or broken kubeconfig
            raise ValueError(f"no usable kubeconfig ({exc})") from None
        try:
            print(rotate_secret(api, namespace, name, args.stage))
        except ApiException as exc:
            raise ValueError(f"Secret {args.ca_secret}: {exc.status} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        print(f"meshctl ca rotate: {exc}", file=sys.stderr)
        return 2
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ca = sub.add_parser("ca", help="the mesh CA: create it, rotate its root").add_subparsers(dest="ca", required=True)
    init = ca.add_parser("init", help="create the mesh CA in a directory (serve --ca-dir also does, on first use)")
    init.add_argument("--ca-dir", required=True)
    init.add_argument("--trust-domain", default="meshctl.local")
    init.set_defaults(run=_init)
    rot = ca.add_parser(
        "rotate",
        help="rotate the root: --stage trust, then sign, then finish (wait for every proxy to sync in between)",
    )
    rot.add_argument("--ca-dir", help="the CA directory serve --ca-dir reads")
    rot.add_argument("--ca-secret", metavar="NAMESPACE/NAME", help="the CA Secret serve --ca-secret reads")
    rot.add_argument("--kubeconfig", help="with --ca-secret (default ~/.kube/config)")
    rot.add_argument("--stage", required=True, choices=ROTATION_STAGES)
    rot.set_defaults(run=_rotate)
