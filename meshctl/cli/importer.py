"""``meshctl import appmesh``: App Mesh manifests in, meshctl manifests and a report out (or applied)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from meshctl.appmesh import ImportResult, convert, load_paths
from meshctl.appmesh.fields import Report
from meshctl.appmesh.findings import Finding, Level
from meshctl.appmesh.gateway_api import as_gateway_api
from meshctl.cli.client import CliError
from meshctl.ingress.migrate import convert_ingresses

__all__ = ["add_commands"]

FIELD_MANAGER = "meshctl-import"


def with_gateway_api_routes(result: ImportResult) -> ImportResult:
    """``--as gateway-api``: the import's HTTP/gRPC Routes as HTTPRoutes/GRPCRoutes (appmesh/gateway_api.py)."""
    report = Report()
    objects = as_gateway_api(result.objects, report)
    before = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in result.objects if o["kind"] == "Service"}
    made = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "Service"} - before
    return ImportResult(
        objects=objects,
        findings=result.findings + report.findings,
        generated_services=result.generated_services | made,
    )


def _values(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"meshctl import appmesh: --set {pair!r}: expected NAME=VALUE")
        values[name] = value
    return values


def render(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def by_namespace(result: ImportResult) -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {}
    for obj in result.objects:
        # (a cluster-scoped object, the GatewayClass: namespace "", its own file)
        files.setdefault(obj["metadata"].get("namespace", ""), []).append(obj)
    return files


def report_text(findings: list[Finding], objects: int) -> str:
    counts = {level: sum(f.level is level for f in findings) for level in Level}
    lines = [f.line() for f in findings]
    lines.append(
        f"{objects} objects converted; {counts[Level.ERROR]} errors, {counts[Level.LOSSY]} fields not mapped cleanly, "
        f"{counts[Level.NOTE]} notes"
    )
    return "\n".join(lines) + "\n"


def _import_appmesh(args: argparse.Namespace) -> int:
    docs, load_findings = load_paths([Path(p) for p in args.filename], _values(args.set or []))
    result = convert(docs, default_namespace=args.namespace)
    if args.as_ == "gateway-api":
        result = with_gateway_api_routes(result)
    findings = load_findings + result.findings
    return _finish(args, result, findings)


def _finish(args: argparse.Namespace, result: ImportResult, findings: list[Finding]) -> int:
    """The report on stderr, the objects to stdout, files (-o) or the cluster (--apply); the exit code."""
    if args.report == "json":
        print(json.dumps([f.as_dict() for f in findings], indent=2), file=sys.stderr)
    else:
        print(report_text(findings, len(result.objects)), end="", file=sys.stderr)
    if args.output_dir:
        out = Path(args.output_dir)
        for namespace, objects in sorted(by_namespace(result).items()):
            target = out / f"{namespace or 'cluster-scoped'}.yaml"
            if args.dry_run:
                print(f"# would write {target} ({len(objects)} objects)\n---\n{render(objects)}", end="")
            else:
                try:
                    out.mkdir(parents=True, exist_ok=True)
                    target.write_text(render(objects))
                except OSError as exc:
                    raise CliError(f"-o {args.output_dir}: cannot write {target.name}: {exc}") from None
        if not args.dry_run:
            # Not a manifest suffix: `meshctl serve --manifests DIR` reads only .yaml/.yml/.json.
            try:
                out.mkdir(parents=True, exist_ok=True)
                (out / "import-report.txt").write_text(report_text(findings, len(result.objects)))
            except OSError as exc:
                raise CliError(f"-o {args.output_dir}: cannot write the report: {exc}") from None
    elif args.apply:
        failed = _apply(
            result, dry_run=args.dry_run, kubeconfig=args.kubeconfig, command=f"meshctl import {args.source}"
        )
        if failed:
            return 1
    else:
        print(render(result.objects), end="")
    errors = any(f.level is Level.ERROR for f in findings)
    lossy = any(f.level is Level.LOSSY for f in findings)
    return 1 if errors or (args.strict and lossy) else 0


def _import_lbc(args: argparse.Namespace) -> int:
    """Ingresses with LBC annotations -> Gateway, HTTPRoutes and LBC's configuration kinds (ours)."""
    loaded, load_findings = load_paths([Path(p) for p in args.filename], _values(args.set or []))
    docs = [d.data for d in loaded]
    objects, notes = convert_ingresses(docs, ingress_class=args.ingress_class)
    findings = load_findings + [
        Finding(subject, path, Level(level), message, action) for level, subject, path, message, action in notes
    ]
    result = ImportResult(objects=objects, findings=findings, generated_services=set())
    return _finish(args, result, findings)


def _apply(result: ImportResult, *, dry_run: bool, kubeconfig: str | None, command: str) -> int:
    """Server-side apply of every object with our field manager; one line per object; the number that failed."""
    from kubernetes import config
    from urllib3.exceptions import HTTPError

    from meshctl.kube.config import api_client

    try:
        api = api_client(kubeconfig, in_cluster=False)
    except (config.ConfigException, OSError) as exc:
        raise SystemExit(f"{command}: --apply: no cluster configuration: {exc}") from exc
    failed = 0
    query = f"?fieldManager={FIELD_MANAGER}&force=true" + ("&dryRun=All" if dry_run else "")
    headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}
    api.update_params_for_auth(headers, None, ["BearerToken"], "", "PATCH", None)
    for obj in result.objects:
        meta = obj["metadata"]
        if obj["kind"] == "Service" and (meta.get("namespace"), meta["name"]) not in result.generated_services:
            # The input's own Service: it is in the cluster already, owned by whoever applied it; taking its
            # fields over (force) would fight their next apply. Only Services the import wrote are applied.
            print(f"Service {meta['namespace']}/{meta['name']} left as it is (from the input)")
            continue
        namespace = meta.get("namespace", "")
        url = api.configuration.host + _path(obj["apiVersion"], obj["kind"], namespace, meta["name"]) + query
        what = f"{obj['kind']} {namespace}/{meta['name']}" if namespace else f"{obj['kind']} {meta['name']}"
        try:
            # JSON is YAML: the apply patch is the whole object, as kubectl apply --server-side sends it.
            response = api.call_api("PATCH", url, header_params=headers, body=json.dumps(obj))
            response.read()  # type: ignore[no-untyped-call]  # kubernetes.client has no annotations
        except (HTTPError, OSError) as exc:
            raise SystemExit(f"{command}: --apply: cannot reach the API server: {exc}") from exc
        if 200 <= response.status < 300:
            print(f"{what} {'applied (dry run)' if dry_run else 'applied'}")
        else:
            failed += 1
            detail = _message(response.data)
            print(f"{what} failed: {response.status} {detail}", file=sys.stderr)
    return failed


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", ""))
    except ValueError:
        return (data or b"").decode(errors="replace")[:200]


def _path(api_version: str, kind: str, namespace: str, name: str) -> str:
    plural = {
        "Service": "services",
        "VirtualNode": "virtualnodes",
        "Route": "routes",
        "HTTPRoute": "httproutes",
        "GRPCRoute": "grpcroutes",
        "Gateway": "gateways",
        "GatewayClass": "gatewayclasses",
        "LoadBalancerConfiguration": "loadbalancerconfigurations",
        "TargetGroupConfiguration": "targetgroupconfigurations",
    }[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}" if namespace else f"{prefix}/{plural}/{name}"


def _input_and_output_flags(p: argparse.ArgumentParser) -> None:
    """What every import reads and where it writes (stdout, -o DIR or --apply), and how it reports."""
    p.add_argument("-f", "--filename", action="append", required=True, help="file or directory (repeatable)")
    p.add_argument("-o", "--output-dir", help="write one <namespace>.yaml per namespace here (default: stdout)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any field does not map cleanly")
    p.add_argument("--dry-run", action="store_true", help="print what would be written or applied; change nothing")
    p.add_argument(
        "--apply", action="store_true", help=f"server-side apply to the cluster (field manager {FIELD_MANAGER})"
    )
    p.add_argument("--kubeconfig", help="with --apply: kubeconfig file (default ~/.kube/config)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="substitute ${NAME} placeholders (repeatable)")
    p.add_argument("--report", choices=("text", "json"), default="text", help="format of the report on stderr")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser("import", help="convert another mesh's configuration to meshctl's")
    what = imp.add_subparsers(dest="source", required=True)
    p = what.add_parser(
        "appmesh",
        help="AWS App Mesh (appmesh.k8s.aws/v1beta2) manifests -> VirtualNodes, Routes and Services",
        description="Reads App Mesh manifests (files or directories, multi-document YAML) and writes meshctl's. "
        "Every field that does not map cleanly is reported on stderr (object, field, what was done instead). "
        "Exit code 1 on errors (malformed YAML, unknown kinds, dangling references), or with --strict on any field "
        "not mapped cleanly.",
    )
    _input_and_output_flags(p)
    p.add_argument(
        "-n", "--namespace", default="default", help="namespace of objects that name none (default: default)"
    )
    p.add_argument(
        "--as",
        dest="as_",
        choices=("meshctl", "gateway-api"),
        default="meshctl",
        help="routes as meshctl Routes (default) or as Gateway API HTTPRoutes/GRPCRoutes attached to their Services, "
        "with a Service per targeted VirtualNode (tcpRoutes stay Routes)",
    )
    p.set_defaults(run=_import_appmesh)
    p = what.add_parser(
        "lbc",
        help="AWS Load Balancer Controller Ingresses -> Gateway API for ALB Gateways (Gateway, HTTPRoutes, "
        "LoadBalancerConfiguration, TargetGroupConfigurations)",
        description="Reads Ingresses with alb.ingress.kubernetes.io annotations (files or directories; Services too, "
        "to resolve named ports) and writes, per IngressGroup or Ingress, a Gateway of the meshctl-alb GatewayClass "
        "(controller meshctl.dev/alb) with its LoadBalancerConfiguration, the HTTPRoutes, and a "
        "TargetGroupConfiguration per Service with target group settings, as LBC's lbc-migrate does. What does not "
        "map is reported on stderr. Nothing is read from or written to a cluster unless --apply.",
    )
    _input_and_output_flags(p)
    p.add_argument(
        "--ingress-class",
        default="alb",
        help="the kubernetes.io/ingress.class value that is LBC's (default alb); Ingresses of others are left out",
    )
    p.set_defaults(run=_import_lbc)
