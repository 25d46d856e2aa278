"""``meshctl shift ROUTE --to NODE=WEIGHT[,...] [--dry-run] [--wait]``: change a Route's weights where it is
defined (manifest file or Kubernetes API), show the change first, and with ``--wait`` return only once every
proxy that calls the Route's Service has ACKed a config containing it (naming laggards and NACKs otherwise)."""

from __future__ import annotations

import argparse

from rich.text import Text

from meshctl.cli.client import AdminClient
from meshctl.cli.inspect import add_admin_flag
from meshctl.cli.output import console
from meshctl.cli.progressive import run_progressive
from meshctl.cli.shift_plan import parse_weights, plan_shift, wait_for_proxies

__all__ = ["add_commands"]


def _shift(args: argparse.Namespace) -> int:
    client = AdminClient(args.admin)
    to = parse_weights(args.to)
    shift = plan_shift(args, client, to)
    if args.steps:
        return run_progressive(args, client, shift)
    out = console()
    for line in shift.describe():
        out.print(Text(line))
    if args.dry_run:
        out.print(Text("dry run: nothing written", style="dim"))
        return 0
    where = shift.apply(shift.after)
    out.print(Text(f"written to {where}"))
    if not args.wait:
        return 0
    done, report = wait_for_proxies(client, shift, shift.after, args.timeout)
    out.print(Text(report, style="green" if done else "red"))
    return 0 if done else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "shift",
        help="change a Route's weights (shows the change first; --wait: until every affected proxy ACKed it)",
    )
    p.add_argument(
        "route",
        help="the Route, NAME or NAMESPACE/NAME; a Gateway API route: httproute/NAME or grpcroute/NAMESPACE/NAME",
    )
    p.add_argument(
        "--to",
        required=True,
        help="new weights, NODE=WEIGHT[,NODE=WEIGHT...] summing to 100 (for an HTTPRoute: SERVICE=WEIGHT)",
    )
    p.add_argument("--rule", type=int, help="an HTTPRoute's rule whose backendRefs to shift (default: the only one)")
    p.add_argument("-n", "--namespace", help="namespace of unqualified names (default: default)")
    p.add_argument("--dry-run", action="store_true", help="print the change, write nothing")
    p.add_argument("--wait", action="store_true", help="return once every affected proxy ACKed the change")
    p.add_argument("--timeout", type=float, default=30, help="seconds --wait waits (default 30)")
    p.add_argument("--kubeconfig", help="in a cluster: kubeconfig file (default: in-cluster, then ~/.kube/config)")
    prog = p.add_argument_group(
        "progressive shift", "move traffic to the one --to node given 100 in steps, judged by the callers' Envoys"
    )
    prog.add_argument("--steps", help="the new target's share at each step, e.g. 10,25,50,100")
    prog.add_argument("--interval", default="30s", help="traffic watched per step (default 30s)")
    prog.add_argument("--max-error-rate", default="1%", help="roll back above this 5xx rate (default 1%%)")
    prog.add_argument("--max-p99", help="roll back above this p99 latency, e.g. 500ms")
    prog.add_argument("--min-requests", type=int, default=100, help="requests needed to judge a step (default 100)")
    prog.add_argument("--max-hold", default="5m", help="how long a step waits for enough traffic (default 5m)")
    add_admin_flag(p)
    p.set_defaults(run=_shift)
