"""``meshctl get ingresses``: the load balancers the ingress reconciler keeps, as it last left them."""

from __future__ import annotations

import argparse
from typing import Any

from rich.text import Text

from meshctl.cli.client import AdminClient
from meshctl.cli.inspect import add_read_flags
from meshctl.cli.output import emit, table

__all__ = ["add_commands"]


def _count(group: dict[str, Any]) -> str | Text:
    if group["registered"] is None:
        return "-"
    text = f"{group['healthy']}/{group['registered']}"
    return text if group["healthy"] == group["registered"] else Text(text, style="yellow")


def _get_ingresses(args: argparse.Namespace) -> int:
    data = AdminClient(args.admin).get("/api/v1/ingresses")
    items = [
        i for i in data["items"] if not args.namespace or any(o.split("/")[1] == args.namespace for o in i["owners"])
    ]
    balancers: list[list[str | Text]] = []
    rules: list[list[str | Text]] = []
    groups: list[list[str | Text]] = []
    for item in items:
        lb = item["loadBalancer"] or {}
        error = item["error"] or ""
        balancers.append(
            [
                item["stack"],
                f"{lb.get('type', '-')}/{lb.get('scheme', '-')}" if lb else "-",
                lb.get("dnsName") or "-",
                ",".join(f"{li['port']}/{li['protocol']}" for li in item["listeners"]) or "-",
                ",".join(lb.get("securityGroups") or []) or "-",
                str(len(item["rules"])),
                Text(error, style="red") if error else "",
            ]
        )
        for li in item["listeners"]:
            rules.append([item["stack"], str(li["port"]), "default", "", li["defaultAction"]])
        for r in item["rules"]:
            rules.append([item["stack"], str(r["port"]), str(r["priority"]), " ".join(r["conditions"]), r["action"]])
        for g in item["targetGroups"]:
            groups.append([item["stack"], g["resourceId"], g["service"], g["targetType"], _count(g), g["name"]])

    def render() -> Any:
        from rich.console import Group

        return Group(
            table(["STACK", "TYPE", "DNS NAME", "LISTENERS", "SECURITY GROUPS", "RULES", "ERROR"], balancers),
            Text(""),
            table(["STACK", "PORT", "PRIORITY", "CONDITIONS", "ACTION"], rules),
            Text(""),
            table(["STACK", "TARGET GROUP", "SERVICE", "TARGETS", "HEALTHY/REGISTERED", "AWS NAME"], groups),
        )

    emit({"items": items}, args.output, render)
    return 1 if any(i["error"] for i in items) else 0


def add_commands(get: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = get.add_parser(
        "ingresses",
        aliases=["ingress", "ing"],
        help="ALBs/NLBs the ingress reconciler keeps: DNS names, listeners, rules, target groups, last error "
        "(exit 1 if any stack has an error)",
    )
    add_read_flags(p, "only load balancers serving objects in this namespace")
    p.set_defaults(run=_get_ingresses)
