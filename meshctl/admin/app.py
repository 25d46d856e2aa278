"""The admin API (aiohttp): health, readiness, Prometheus metrics, and JSON views that meshctl reads."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from prometheus_client import CollectorRegistry, generate_latest

from meshctl.admin.graph_view import GraphView
from meshctl.admin.policies_view import policies_document, scrape_policy_counters
from meshctl.admin.routes_view import NotFound, routes_document
from meshctl.admin.traffic import TrafficCollector, counters_json
from meshctl.admin.whatif import what_if
from meshctl.controlplane.controller import Controller
from meshctl.model import ObjectKey
from meshctl.routing.match import Request, explain, explanation_json, header_pair
from meshctl.routing.table import host_from_json
from meshctl.translate.authz import service_accounts
from meshctl.translate.gamma import parents_document
from meshctl.translate.gateway import gateway_status_document
from meshctl.translate.ir import ObjectStatus
from meshctl.xds.cache import Snapshot
from meshctl.xds.envoy.types import SECRET, SHORT_NAMES
from meshctl.xds.server.registry import ProxyRegistry

__all__ = ["build_admin_app", "status_to_dict"]


def status_to_dict(status: ObjectStatus) -> dict[str, Any]:
    out = _status_dict(status)
    if status.parents:  # a Gateway API route: its status.parents[], as the API has it
        out["parents"] = parents_document(status)
    if status.gateway is not None:  # a Gateway: its addresses and listeners too
        document = gateway_status_document(status)
        out["addresses"], out["listeners"] = document["addresses"], document["listeners"]
    return out


def _status_dict(status: ObjectStatus) -> dict[str, Any]:
    return {
        "kind": status.key.kind,
        "namespace": status.key.namespace,
        "name": status.key.name,
        "origin": status.origin,
        "accepted": status.accepted,
        "healthy": status.healthy,
        "observedGeneration": status.observed_generation,
        "conditions": [
            {"type": c.type, "status": c.status.value, "reason": c.reason, "message": c.message}
            for c in status.conditions
        ],
    }


def _render_dump(snapshots: Mapping[str, Snapshot]) -> list[bytes]:
    """``{"groups": {group: {type: {"version", "resources"}}}}`` as a list of encoded pieces, one resource at a time:
    one json.dumps of the whole dump, or one join or encode of it, would hold the GIL for tens of milliseconds and
    stall the serving loop (a 10,000-service dump is tens of MiB)."""
    parts = [b'{"groups": {']
    for i, (group, snap) in enumerate(snapshots.items()):
        parts.append(f"{', ' if i else ''}{json.dumps(group)}: {{".encode())
        # Secrets (redacted) only for groups that have them: most proxies use no mTLS.
        types = [t for t in snap.resources if t != SECRET or snap.resources[t]]
        for j, type_url in enumerate(types):
            name, version = json.dumps(SHORT_NAMES[type_url]), json.dumps(snap.version(type_url))
            parts.append(f'{", " if j else ""}{name}: {{"version": {version}, "resources": ['.encode())
            for k, (_, res) in enumerate(sorted(snap.resources[type_url].items())):
                if k:
                    parts.append(b", ")
                parts.extend(json_pieces(MessageToDict(res.message, preserving_proto_field_name=True)))
            parts.append(b"]}")
        parts.append(b"}")
    parts.append(b"}}")
    return parts


_SPLIT = 64


def json_pieces(value: Any) -> list[bytes]:
    """``json.dumps(value).encode()`` in pieces: a list longer than ``_SPLIT``, and a dict holding one, are written
    element by element. json.dumps is one C call that holds the GIL throughout: 70 ms for a route configuration
    with 10,000 virtual hosts, a stall of the serving loop (issue 14). Anything else is one piece, as most
    resources are (a piece per small element would cost memory)."""
    out: list[bytes] = []
    _append_json(value, out)
    return out


def _append_json(value: Any, out: list[bytes]) -> None:
    if isinstance(value, list) and len(value) > _SPLIT:
        out.append(b"[")
        for i, item in enumerate(value):
            if i:
                out.append(b", ")
            _append_json(item, out)
        out.append(b"]")
    elif isinstance(value, dict) and any(isinstance(v, list) and len(v) > _SPLIT for v in value.values()):
        out.append(b"{")
        for i, (key, item) in enumerate(value.items()):
            out.append(f"{', ' if i else ''}{json.dumps(key)}: ".encode())
            _append_json(item, out)
        out.append(b"}")
    else:
        out.append(json.dumps(value).encode())


def _render_status(controller: Controller) -> bytes:
    mesh = controller.mesh
    document = {
        "synced": controller.synced,
        "objects": [status_to_dict(s) for s in controller.statuses()],
        "loadErrors": list(mesh.load_errors) if mesh else [],
    }
    return json.dumps(document).encode()


_CHUNK = 256 * 1024


async def _send_in_chunks(request: web.Request, parts: list[bytes]) -> web.StreamResponse:
    """A large body written ~256 KiB at a time, waiting for the socket in between: handed over whole, aiohttp copies
    it into the transport's buffer in one go (tens of MiB for a 10,000-service dump) on the serving loop."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = sum(map(len, parts))
    await response.prepare(request)
    chunk: list[bytes] = []
    size = 0
    for part in parts:
        chunk.append(part)
        size += len(part)
        if size >= _CHUNK:
            await response.write(b"".join(chunk))
            chunk, size = [], 0
            # write() returns at once while the socket takes it all (a fast reader): yield anyway, one chunk per
            # step, or the whole dump goes out in one step of the loop (55 ms at 10,000 services with a gateway).
            await asyncio.sleep(0)
    if chunk:
        await response.write(b"".join(chunk))
    await response.write_eof()
    return response


# An Authorization header -> (200, who) or (401 | 403, why).
Authorizer = Callable[[str | None], Awaitable[tuple[int, str]]]
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scraping: nothing in them is private


def _authorization(authorize: Authorizer) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        # (the web view's three static files hold no data: its data comes from the API, authorized as the rest)
        if request.path not in OPEN_PATHS and not request.path.startswith("/ui"):
            status, why = await authorize(request.headers.get("Authorization"))
            if status != 200:
                return web.Response(status=status, text=why + "\n")
        return await handler(request)

    return check


_UI_DIR = Path(__file__).parent / "ui"
_UI_TYPES = {"index.html": "text/html", "app.mjs": "text/javascript", "style.css": "text/css"}
# Read-only and self-contained: nothing inline, nothing from another origin, never framed.
_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def build_admin_app(
    controller: Controller,
    registry: ProxyRegistry,
    metrics: Callable[[], Sequence[CollectorRegistry]],
    *,
    health: Callable[[], str | None] = lambda: None,
    replica: str = "",
    about: Callable[[], dict[str, Any]] = dict,
    ingresses: Callable[[], list[dict[str, Any]]] | None = None,
    authorize: Authorizer | None = None,
    traffic: TrafficCollector | None = None,
) -> web.Application:
    """``authorize``: every path but /healthz, /readyz and /metrics needs the caller's Authorization header to pass
    it (in a cluster: TokenReview and SubjectAccessReview, ``meshctl.kube.reviews``); None: open (manifest mode, a
    loopback address).
    ``metrics``: the Prometheus registries ``/metrics`` exposes.
    ``replica``: this control plane's name in a multi-replica install (the leader-election identity).
    ``ingresses``: the ingress reconciler's load balancers (``/api/v1/ingresses``), when it runs.
    ``traffic``: the proxies' traffic figures (``/api/v1/traffic``, the graph's edges), when collected."""
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        problem = health()
        if problem:
            return web.Response(status=500, text=problem + "\n")
        return web.Response(text="ok\n")

    @routes.get("/readyz")
    async def readyz(_: web.Request) -> web.Response:
        if controller.synced:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="waiting for the initial sync\n")

    @routes.get("/metrics")
    async def prometheus(_: web.Request) -> web.Response:
        text = "".join(generate_latest(registry).decode() for registry in metrics())
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    @routes.get("/api/v1/ingresses")
    async def ingress_view(_: web.Request) -> web.Response:
        if ingresses is None:
            return web.json_response(
                {"error": "the ingress reconciler is not running (meshctl serve --ingress)"}, status=404
            )
        return web.json_response({"items": ingresses()})

    graph_view = GraphView()

    def proxy_items() -> list[dict[str, Any]]:
        now = time.time()
        items = []
        for stream in registry.streams():
            item = stream.describe()
            snap = controller.cache.get(stream.group)
            for type_url, short in SHORT_NAMES.items():
                if short in item["types"]:
                    item["types"][short]["sync"] = stream.sync_state(type_url, snap, now)
            item["replica"] = replica
            items.append(item)
        return items

    @routes.get("/api/v1/proxies")
    async def proxies(_: web.Request) -> web.Response:
        return web.json_response({"replica": replica, "proxies": proxy_items()})

    @routes.get("/api/v1/graph")
    async def graph(_: web.Request) -> web.Response:
        """The mesh as the web view draws it (admin/graph_view.py)."""
        mesh = controller.mesh
        if mesh is None:
            raise web.HTTPServiceUnavailable(text="waiting for the initial sync\n")
        if traffic is not None:
            traffic.want()
        edges = traffic.edges() if traffic is not None else None
        balancers = ingresses() if ingresses is not None else ()
        body = await graph_view.body(mesh, controller.statuses(), proxy_items(), edges, balancers)
        return web.Response(body=body, content_type="application/json")

    @routes.get("/api/v1/traffic")
    async def traffic_view(request: web.Request) -> web.Response:
        """The callers' cumulative counters per cluster from the collector's latest round (``cluster``: a
        comma-separated list to keep), with the control plane's clock: ``meshctl shift --steps`` takes windows
        between two of these."""
        if traffic is None:
            return web.json_response({"error": "traffic figures are not collected here"}, status=404)
        traffic.want()
        wanted = {c for c in request.query.get("cluster", "").split(",") if c}
        reading = traffic.latest
        proxies: dict[str, dict[str, Any]] = {}
        if reading is not None:
            for (node, cluster), counters in reading.counters.items():
                if not wanted or cluster in wanted:
                    entry = proxies.setdefault(node, {"node_id": node, "group": reading.groups.get(node, "")})
                    entry.setdefault("clusters", {})[cluster] = counters_json(counters)
        document = {
            "now": time.time(),
            "interval": traffic.interval,
            "roundSeconds": round(traffic.round_seconds, 3),
            "startedAt": reading.started_at if reading else None,
            "finishedAt": reading.finished_at if reading else None,
            "read": sorted(reading.read) if reading else [],
            "unreachable": list(reading.unreachable) if reading else [],
            "proxies": [proxies[n] for n in sorted(proxies)],
        }
        return web.json_response(document)

    @routes.get("/ui")
    async def ui_root(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    @routes.get("/ui/{name:[a-z.]*}")
    async def ui_file(request: web.Request) -> web.Response:
        """The web view: three static files, no build step, no script or style from anywhere else (CSP)."""
        name = request.match_info["name"] or "index.html"
        if name not in _UI_TYPES:
            raise web.HTTPNotFound()
        response = web.Response(body=(_UI_DIR / name).read_bytes(), content_type=_UI_TYPES[name], charset="utf-8")
        response.headers["Content-Security-Policy"] = _UI_CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        return response

    @routes.get("/api/v1/policies")
    async def policies(_: web.Request) -> web.Response:
        """AuthorizationPolicies, their status and their counters from the connected proxies (``meshctl get
        policies``)."""
        model, mesh = controller.model, controller.mesh
        if model is None or mesh is None:
            raise web.HTTPServiceUnavailable(text="waiting for the initial sync\n")
        urls = {url for s in registry.streams() if (url := s.stats_url) is not None}
        counters, scraped, failed = await scrape_policy_counters(sorted(urls))
        items = policies_document(model, mesh.status_by_key, counters)
        return web.json_response({"policies": items, "proxiesScraped": scraped, "proxiesUnreachable": failed})

    @routes.get("/api/v1/identities")
    async def identities(_: web.Request) -> web.Response:
        """The workload certificates in use (no key material): ``meshctl get identities``."""
        keeper = controller.identities
        return web.json_response(
            {
                "trustDomain": keeper.ca.trust_domain,
                "issuer": keeper.ca.description,
                "signer": keeper.ca.signer_id,
                "trustedRoots": keeper.ca.trusted_root_ids,
                "identities": keeper.described(),
                "issued": keeper.issued,
            }
        )

    @routes.get("/api/v1/rejections")
    async def rejections(_: web.Request) -> web.Response:
        items = [
            {
                "node_id": node,
                "group": group,
                "type": SHORT_NAMES.get(r.type_url, r.type_url),
                "version": r.version,
                "error": r.message,
                "at": r.at,
                # Whether Envoy's validator rejects it too (then its objects are blocked for everyone).
                "verdict": controller.nacks.verdict(group, r.type_url, r.version),
            }
            for node, group, r in registry.rejections
        ]
        return web.json_response({"rejections": items})

    @routes.get("/api/v1/status")
    async def status(_: web.Request) -> web.Response:
        # 20,000 objects at 10,000 services: rendered off the serving loop, like the config dump.
        body = await asyncio.to_thread(_render_status, controller)
        return web.Response(body=body, content_type="application/json")

    @routes.get("/api/v1/summary")
    async def summary(_: web.Request) -> web.Response:
        model = controller.model
        counts = (
            {
                "Service": len(model.services),
                "EndpointSlice": len(model.endpoint_slices),
                "Pod": len(model.pods),
                "VirtualNode": len(model.virtual_nodes),
                "Route": len(model.routes),
            }
            if model
            else {}
        )
        if model:  # the Gateway API's objects, when there are any
            kinds = Counter(k.kind for k in model.http_routes)
            for kind, n in (
                ("Gateway", len(model.gateways)),
                ("HTTPRoute", kinds["HTTPRoute"]),
                ("GRPCRoute", kinds["GRPCRoute"]),
            ):
                if n:
                    counts[kind] = n
        statuses = controller.statuses()
        document = {
            **about(),
            "ready": controller.synced,
            "objects": counts,
            "unhealthyObjects": sum(not s.healthy for s in statuses),
            "loadErrors": len(model.load_errors) if model else 0,
            "groups": len(controller.cache.groups()),
            "proxies": len(registry.streams()),
            "lastPush": controller.last_push or None,
            "rejections": len(registry.rejections),
        }
        return web.json_response(document)

    async def routes_for(
        source: str | None, service: str | None, method: str | None, path: str | None
    ) -> dict[str, Any]:
        mesh = controller.mesh
        if mesh is None:
            raise web.HTTPServiceUnavailable(text="waiting for the initial sync\n")
        snapshots = {g: s for g in controller.cache.groups() if (s := controller.cache.get(g)) is not None}
        model = controller.model

        def accounts(vn: ObjectKey) -> list[str]:  # a caller's service accounts when none of its proxies is connected
            return sorted(service_accounts(model, mesh.virtual_nodes, vn)) if model is not None else []

        try:
            return await asyncio.to_thread(
                routes_document,
                mesh,
                snapshots,
                source=source,
                service=service,
                identities=controller.proven_identities,
                trust_domain=controller.identities.ca.trust_domain,
                method=method,
                path=path,
                service_accounts=accounts,
            )
        except NotFound as exc:
            raise web.HTTPNotFound(text=f"{exc}\n") from None

    @routes.get("/api/v1/routes")
    async def route_tables(request: web.Request) -> web.Response:
        q = request.query
        return web.json_response(await routes_for(q.get("from"), q.get("service"), q.get("method"), q.get("path")))

    @routes.get("/api/v1/explain")
    async def explain_request(request: web.Request) -> web.Response:
        """``meshctl explain``'s answer for ``method``, ``url`` and ``header`` (``Name: value``, repeatable) as the
        proxies of ``from`` see it (the web view's explain form; the same document as ``explain -o json``)."""
        q = request.query
        try:
            headers = [header_pair(raw) for raw in q.getall("header", [])]
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"header {exc}\n") from None
        try:
            req = Request.from_url(q.get("method", "GET"), q.get("url", ""), headers)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{q.get('url')!r} is not a URL: {exc}\n") from None
        data = await routes_for(q.get("from") or None, None, req.method, req.path)
        result = explain(tuple(host_from_json(h) for h in data["virtualHosts"]), req)
        return web.json_response(explanation_json(result, data["clusters"]) | {"egressFilter": data["egressFilter"]})

    @routes.post("/api/v1/diff")
    async def diff(request: web.Request) -> web.Response:
        """What applying the posted documents (``{"documents": [...]}``) would change; nothing is applied."""
        model, mesh = controller.model, controller.mesh
        if model is None or mesh is None:
            raise web.HTTPServiceUnavailable(text="waiting for the initial sync\n")
        try:
            body = await request.json()
            documents = body["documents"]
            if not isinstance(documents, list):
                raise TypeError("documents must be a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise web.HTTPBadRequest(text=f'expected {{"documents": [...]}}: {exc}\n') from None
        return web.json_response(await asyncio.to_thread(what_if, model, mesh, documents))

    @routes.get("/api/v1/config_dump")
    async def config_dump(request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("group")
        # Snapshots are immutable: take them here, then parse and render them in a worker thread. At 10,000 services
        # a dump takes seconds of CPU; on the serving loop it would stall every ADS stream, /healthz and the lease
        # (issue 14). The thread still holds the GIL in turns, but the loop gets its share every few milliseconds.
        snapshots = {
            g: s for g in controller.cache.groups() if (not wanted or g == wanted) and (s := controller.cache.get(g))
        }
        if wanted and not snapshots:
            raise web.HTTPNotFound(text=f"no snapshot for group {wanted!r}\n")
        parts = await asyncio.to_thread(_render_dump, snapshots)
        return await _send_in_chunks(request, parts)

    middlewares = [_authorization(authorize)] if authorize is not None else []
    app = web.Application(middlewares=middlewares)
    app.add_routes(routes)
    return app
