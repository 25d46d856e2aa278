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
    try:
        print(rotate(Path(args.ca_dir), args.stage))
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
    rot.add_argument("--ca-dir", required=True)
    rot.add_argument("--stage", required=True, choices=ROTATION_STAGES)
    rot.set_defaults(run=_rotate)
