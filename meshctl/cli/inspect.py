"""``meshctl get ...``: read the live state from a running control plane's admin API."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import yaml

__all__ = ["add_commands"]


def _fetch(admin: str, path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(admin.rstrip("/") + path, timeout=10) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except urllib.error.URLError as exc:
        raise SystemExit(f"meshctl: cannot reach the control plane at {admin}: {exc}") from exc


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def _emit(data: dict[str, Any], output: str, table: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=2))
    elif output == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    else:
        print(table)


def _get_proxies(args: argparse.Namespace) -> int:
    data = _fetch(args.admin, "/api/v1/proxies")
    rows = []
    for p in data["proxies"]:
        states = []
        for short in ("cds", "eds", "lds", "rds"):
            t = p["types"][short]
            mark = "NACK" if t["rejected"] else ("pending" if t["pending"] else "ok")
            states.append(f"{mark}:{t['acked_version'][:8] or '-'}")
        rows.append([p["node_id"], p["group"], *states])
    _emit(data, args.output, _table(rows, ["NODE", "GROUP", "CDS", "EDS", "LDS", "RDS"]))
    return 0


def _get_status(args: argparse.Namespace) -> int:
    data = _fetch(args.admin, "/api/v1/status")
    rows = []
    for o in data["objects"]:
        bad = [c for c in o["conditions"] if c["status"] != "True"]
        programmed = next((c["status"] for c in o["conditions"] if c["type"] == "Programmed"), "True")
        rows.append(
            [
                o["kind"],
                f"{o['namespace']}/{o['name']}",
                "True" if o["accepted"] else "False",
                programmed if o["accepted"] else "-",
                bad[0]["reason"] if bad else "",
                bad[0]["message"] if bad else "",
            ]
        )
    table = _table(rows, ["KIND", "NAME", "ACCEPTED", "PROGRAMMED", "REASON", "MESSAGE"])
    if data["loadErrors"]:
        table += "\n\nload errors:\n" + "\n".join(f"  {e}" for e in data["loadErrors"])
    _emit(data, args.output, table)
    return 0 if all(o["healthy"] for o in data["objects"]) and not data["loadErrors"] else 1


def _get_rejections(args: argparse.Namespace) -> int:
    data = _fetch(args.admin, "/api/v1/rejections")
    rows = [[r["node_id"], r["type"], r["version"], r["error"]] for r in data["rejections"]]
    _emit(data, args.output, _table(rows, ["NODE", "TYPE", "VERSION", "ERROR"]))
    return 0


def _config_dump(args: argparse.Namespace) -> int:
    path = "/api/v1/config_dump" + (f"?group={urllib.parse.quote(args.group)}" if args.group else "")
    data = _fetch(args.admin, path)
    print(json.dumps(data, indent=2) if args.output == "json" else yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser, table: bool = True) -> None:
        p.add_argument("--admin", default="http://127.0.0.1:19000", help="control plane admin URL")
        p.add_argument(
            "-o",
            "--output",
            choices=("table", "json", "yaml") if table else ("yaml", "json"),
            default="table" if table else "yaml",
        )

    get = sub.add_parser("get", help="show live state: proxies, status, rejections")
    what = get.add_subparsers(dest="what", required=True)
    p = what.add_parser("proxies", help="connected Envoys and the versions they ACKed or NACKed")
    common(p)
    p.set_defaults(run=_get_proxies)
    p = what.add_parser("status", help="VirtualNode and Route conditions")
    common(p)
    p.set_defaults(run=_get_status)
    p = what.add_parser("rejections", help="recent configs Envoy rejected, with Envoy's error")
    common(p)
    p.set_defaults(run=_get_rejections)

    dump = sub.add_parser("config-dump", help="the Envoy config the control plane serves, per node group")
    common(dump, table=False)
    dump.add_argument("--group", help="only this node group (e.g. demo/frontend)")
    dump.set_defaults(run=_config_dump)
