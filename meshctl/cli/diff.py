"""``meshctl diff -f FILE|DIR``: what applying these manifests would change at the proxy level, before anything is
applied (like ``kubectl diff``: exit 0 when nothing changes, 1 when something does, 2 on an error)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from meshctl.cli.client import AdminClient, CliError
from meshctl.cli.inspect import add_admin_flag
from meshctl.cli.output import add_output_flag, emit

__all__ = ["add_commands", "read_documents"]


def read_documents(paths: list[str]) -> list[Any]:
    """Every document in these files and directories (``*.yaml``, ``*.yml``, ``*.json``, recursively), read as the
    manifest source reads them."""
    from meshctl.sources.files import ManifestError, manifest_files
    from meshctl.sources.files import read_documents as read_file

    docs: list[Any] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise CliError(f"-f {given}: no such file or directory")
        for f in manifest_files(path):
            try:
                docs.extend(d for d in read_file(f) if d is not None)
            except ManifestError as exc:
                raise CliError(f"{f}: {str(exc).splitlines()[0]}") from None
    return docs


def _render(data: dict[str, Any]) -> Group:
    lines: list[Any] = []
    for e in data["errors"]:
        lines.append(Text(f"error: {e}", style="red"))
    for p in data["problems"]:
        lines.append(Text(f"would be rejected: {p['object']}: {p['message']}", style="red"))
    if data["groups"]:
        lines.append(Text("node groups that change:", style="bold"))
        for g in data["groups"]:
            lines.append(Text(f"  {g['group']} ({', '.join(g['changes'])})"))
    for svc in data["services"]:
        lines.append(Text(f"{svc['service']}:", style="bold"))
        for r in svc["routes"]:
            change = r["change"]
            if change == "added":
                lines.append(Text(f"  + {r['route']} ({r['match']}) at position {r['to']}", style="green"))
            elif change == "removed":
                lines.append(Text(f"  - {r['route']} ({r['match']}) was at position {r['from']}", style="red"))
            elif change == "moved":
                lines.append(Text(f"  ~ {r['route']} moves from position {r['from']} to {r['to']}", style="yellow"))
            else:
                lines.append(Text(f"  ~ {r['route']} match {r['before']} -> {r['after']}", style="yellow"))
        for t in svc["traffic"]:
            moves = ", ".join(f"{m['target'].split('/')[1]} {m['before']:g}% -> {m['after']:g}%" for m in t["moves"])
            lines.append(Text(f"  ~ {t['match']} ({t['route']}): {moves}", style="yellow"))
        for s in svc["newlyShadowed"]:
            label = "SHADOWED" if s["certain"] else "POSSIBLY SHADOWED"
            lines.append(Text(f"  ! {s['route']} becomes {label}: {s['witness']}", style="bold red"))
    if not lines:
        lines.append(Text("no change at the proxy level"))
    return Group(*lines)


def _diff(args: argparse.Namespace) -> int:
    documents = read_documents(args.filename)
    data = AdminClient(args.admin, timeout=60).post("/api/v1/diff", {"documents": documents})
    emit(data, args.output, lambda: _render(data))
    if data["errors"] or data["problems"]:
        return 2
    return 1 if data["groups"] or data["services"] else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="what applying these manifests would change at the proxy level (exit 0: nothing, 1: changes, 2: errors)",
    )
    p.add_argument("-f", "--filename", action="append", required=True, help="a YAML file or directory (repeatable)")
    add_admin_flag(p)
    add_output_flag(p)
    p.set_defaults(run=_diff)
