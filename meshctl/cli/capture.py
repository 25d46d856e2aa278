"""``meshctl capture``: the traffic-capture init program (runs in the pod's network namespace, as root with
NET_ADMIN and NET_RAW, before Envoy and the app start)."""

from __future__ import annotations

import argparse
import sys

from meshctl.inject.capture import (
    CaptureConfig,
    CaptureError,
    apply_capture,
    capture_rules,
    parse_ports,
    split_list,
)

__all__ = ["add_commands"]


def _run(args: argparse.Namespace) -> int:
    try:
        config = CaptureConfig(
            proxy_uid=args.proxy_uid,
            egress_port=args.egress_port,
            ingress_port=args.ingress_port,
            app_ports=parse_ports(args.app_ports),
            ignored_ports=parse_ports(args.ignored_ports),
            ignored_cidrs=split_list(args.ignored_cidrs),
        )
        rules = capture_rules(config) if args.dry_run else apply_capture(config, iptables=args.iptables)
    except CaptureError as exc:
        print(f"meshctl capture: {exc}", file=sys.stderr)
        return 2
    print(rules, end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cap = sub.add_parser(
        "capture",
        help="write the iptables rules that send a pod's TCP traffic through its Envoy (init container)",
        description="Outbound TCP to non-local addresses -> the egress port (except the proxy's uid, ignored ports "
        "and CIDRs); inbound TCP to the app ports -> the ingress port. Idempotent; prints the rules it wrote.",
    )
    cap.add_argument("--proxy-uid", type=int, default=1337, help="uid Envoy runs as: its traffic is never captured")
    cap.add_argument("--egress-port", type=int, default=15001, help="Envoy's egress listener (default 15001)")
    cap.add_argument("--ingress-port", type=int, default=15000, help="Envoy's ingress listener (default 15000)")
    cap.add_argument("--app-ports", help="comma-separated ports the app serves (inbound capture; default none)")
    cap.add_argument("--ignored-ports", default="22", help="outbound destination ports left alone (default 22)")
    cap.add_argument("--ignored-cidrs", help="comma-separated outbound destinations left alone")
    cap.add_argument("--iptables", default="iptables", help="iptables binary (iptables, iptables-legacy, ...)")
    cap.add_argument("--dry-run", action="store_true", help="print the rules without writing them")
    cap.set_defaults(run=_run)
