"""``meshctl explain`` and the shadowing check agree with a real Envoy (its access log names the route and cluster).

Requests are generated from a seed over prefix/exact/regex paths, methods, headers (exact, prefix, suffix, regex,
range, present, inverted), query parameters, hosts and cookies, including requests no route takes (404 NR).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import pytest
import yarl

from meshctl.routing.match import Request, explain
from meshctl.routing.shadow import find_shadowed
from meshctl.routing.table import host_from_json
from tests.conftest import Mesh, eventually
from tests.manifests import route, service, virtual_node, workload, write

MESHCTL = [sys.executable, "-m", "meshctl"]

# name -> (match, targets); priorities follow the order.
ROUTES = {
    "submit": ({"path": {"exact": "/submit"}, "method": "POST"}, {"reviews-v1": 100}),
    "items": ({"path": {"regex": "/items/[0-9]+"}}, {"reviews-v2": 100}),
    "ranged": (
        {"prefix": "/api", "headers": [{"name": "x-n", "match": {"range": {"start": 10, "end": 20}}}]},
        {"reviews-v3": 100},
    ),
    "not-legacy": (
        {
            "prefix": "/api",
            "headers": [
                {"name": "x-client", "match": {"exact": "legacy"}, "invert": True},
                {"name": "x-beta"},
            ],
        },
        {"reviews-v1": 50, "reviews-v2": 50},
    ),
    "canary-cookie": ({"prefix": "/", "cookies": [{"name": "canary", "match": {"exact": "yes"}}]}, {"reviews-v2": 100}),
    "search": (
        {
            "prefix": "/search",
            "queryParameters": [{"name": "q"}, {"name": "lang", "match": {"exact": "en"}}],
        },
        {"reviews-v3": 100},
    ),
    "by-host": (
        {"prefix": "/", "hostname": {"exact": "reviews.demo"}, "headers": [{"name": "x-h", "match": {"suffix": "-z"}}]},
        {"reviews-v1": 100},
    ),
    "versioned": (
        {
            "prefix": "/v",
            "headers": [
                {"name": "x-ver", "match": {"prefix": "2."}},
                {"name": "x-tag", "match": {"regex": "[a-c]+"}},
            ],
        },
        {"reviews-v2": 100},
    ),
    "exact-get": ({"path": {"exact": "/exact"}, "method": "GET"}, {"reviews-v3": 100}),
    "static": ({"prefix": "/static"}, {"reviews-v1": 100}),
}

PATHS = [
    "/submit", "/items/42", "/items/abc", "/api/x", "/api", "/search?q=1&lang=en", "/search?q=1", "/search?lang=en",
    "/v/1", "/exact", "/exact?y=1", "/static/a.css", "/other", "/", "/api//x", "/staticx",
]  # fmt: skip
METHODS = ["GET", "GET", "POST", "PUT", "DELETE"]
HEADERS = {
    "x-n": ["5", "15", "25", "abc"],
    "x-client": ["legacy", "modern"],
    "x-beta": ["1"],
    "cookie": ["canary=yes", "a=1; canary=yes", "canary=no"],
    "x-h": ["a-z", "b"],
    "x-ver": ["2.1", "3.0"],
    "x-tag": ["abc", "xyz"],
}
HOSTS = ["reviews", "reviews", "reviews.demo", "reviews.demo:80", "ratings"]


def generated_requests(n: int, seed: int = 11) -> list[Request]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        headers = [(k, rng.choice(v)) for k, v in HEADERS.items() if rng.random() < 0.5]
        headers.append(("x-request-id", f"explain-{i}"))
        out.append(Request(rng.choice(METHODS), rng.choice(HOSTS), rng.choice(PATHS), tuple(headers)))
    return out


def access_log_format(path: Path) -> dict:
    fields = {"id": "%REQ(X-REQUEST-ID)%", "route": "%ROUTE_NAME%", "cluster": "%UPSTREAM_CLUSTER%"}
    fields["flags"] = "%RESPONSE_FLAGS%"
    return {"path": str(path), "format": {"json": [{"key": k, "value": v} for k, v in fields.items()]}}


async def send(m: Mesh, sidecar, r: Request) -> None:
    url = yarl.URL(sidecar.url + r.path, encoded=True)  # as written: no client-side normalization
    headers = {"Host": r.authority, **{k: v for k, v in r.headers}}
    async with m.session.request(r.method, url, headers=headers) as resp:
        await resp.read()


def logged(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r for r in records}


@pytest.fixture
async def routed(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    ports = {v: (await m.app(v))[1] for v in ("v1", "v2", "v3")}
    log = tmp_path / "access.json"
    frontend = virtual_node("frontend", backends=["reviews"])
    frontend["spec"]["logging"] = {"accessLog": {"file": access_log_format(log)}}
    docs = [
        route(name, "reviews", targets, match=match, priority=i)
        for i, (name, (match, targets)) in enumerate(ROUTES.items())
    ]
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        *(workload("reviews", v, p) for v, p in ports.items()),
        frontend,
        *docs,
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await eventually(lambda: _ready(m, sidecar), timeout=20)
    return m, sidecar, log


async def _ready(m: Mesh, sidecar) -> bool:
    async with m.session.get(sidecar.url + "/static/x", headers={"Host": "reviews"}) as r:
        return r.status == 200


async def test_explain_agrees_with_envoy_on_generated_requests(routed):
    m, sidecar, log = routed
    table = await m.admin("/api/v1/routes?from=demo/frontend")
    hosts = tuple(host_from_json(h) for h in table["virtualHosts"])
    requests = generated_requests(160)
    for r in requests:
        await send(m, sidecar, r)
    await eventually(lambda: len(logged(log)) >= len(requests), timeout=20)
    seen = logged(log)
    mismatches = []
    outcomes = {"matched": 0, "no route": 0}
    for r in requests:
        got = seen[dict(r.headers)["x-request-id"]]
        expected = explain(hosts, r).route
        if expected is None:
            outcomes["no route"] += 1
            ok = got["route"] is None and "NR" in got["flags"]
        else:
            outcomes["matched"] += 1
            ok = got["route"] == expected.name and got["cluster"] in {t.cluster for t in expected.targets}
        if not ok:
            mismatches.append((r, expected.name if expected else None, got))
    assert not mismatches, mismatches
    # The generator really covers both outcomes and most routes.
    assert outcomes["matched"] >= 25 and outcomes["no route"] >= 10, outcomes
    hit = {explain(hosts, r).route.name for r in requests if explain(hosts, r).route}
    assert len(hit) >= 8, hit


async def run_meshctl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *MESHCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_explain_and_get_routes_commands(routed):
    m, _, _ = routed
    admin = f"http://127.0.0.1:{m.plane.admin_port}"
    code, out, err = await run_meshctl(
        "explain", "--admin", admin, "--from", "demo/frontend", "GET", "http://reviews/api/x", "-H", "x-n: 15"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "request: GET http://reviews/api/x -H 'x-n: 15'"
    assert lines[1].startswith("virtual host: demo/reviews (Host 'reviews' is a domain of demo/reviews)")
    rows = [line.split(None, 3) for line in lines[3:6]]
    assert [r[1] for r in rows] == ["demo/submit", "demo/items", "demo/ranged"]
    assert "path '/api/x' is not '/submit'" in lines[3] and "does not fully match '/items/[0-9]+'" in lines[4]
    assert "match" in lines[5] and "every predicate holds" in lines[5]
    assert any(line.startswith("route demo/ranged: targets demo/reviews-v3/") for line in lines)

    code, out, _ = await run_meshctl(
        "explain", "--admin", admin, "-o", "json", "POST", "reviews.demo/nothing-here", "-H", "Cookie: canary=no"
    )
    assert code == 1  # no route: scripts can tell
    doc = json.loads(out)
    assert doc["matched"] is None and doc["response"] == "404 NR (no route)" and len(doc["routes"]) == len(ROUTES)
    # A host no Service has: what a captured proxy would do with it (the caller namespace's egress filter).
    code, out, _ = await run_meshctl(
        "explain", "--admin", admin, "--from", "demo/frontend", "GET", "http://example.com/"
    )
    assert code == 1 and "virtual host: none" in out and "egress filter ALLOW_ALL, passed through" in out, out

    code, out, err = await run_meshctl("get", "routes", "reviews", "-n", "demo", "--admin", admin, "-o", "json")
    assert code == 0, err
    (vh,) = json.loads(out)["virtualHosts"]
    assert [r["name"] for r in vh["routes"]] == [f"demo/{n}" for n in ROUTES]
    split = vh["routes"][3]["targets"]
    assert [(t["probability"], t["endpoints"]) for t in split] == [(0.5, {"healthy": 1, "total": 1})] * 2

    code, out, err = await run_meshctl("get", "routes", "--admin", admin, "--from", "demo/frontend")
    assert code == 0, err
    assert out.splitlines()[1].split()[:7] == ["#", "ROUTE", "MATCH", "TARGETS", "RETRIES", "TIMEOUT", "SHADOWED"]

    for bad, message in (
        (["explain", "GET", "reviews/", "-H", "no-colon"], "-H 'no-colon': expected 'Name: value'"),
        (
            ["explain", "--from", "demo/nobody", "GET", "reviews/"],
            "VirtualNode demo/nobody not found (or not accepted)",
        ),
        (["get", "routes", "demo/nothing"], "Service demo/nothing not found"),
    ):
        code, out, err = await run_meshctl(*bad, "--admin", admin)
        assert code != 0 and err.strip() == f"meshctl: {message}", (bad, err)
        assert "Traceback" not in err


# --- shadowing against Envoy -------------------------------------------------------------------------------------

POOL_PATHS = [
    {"prefix": "/"},
    {"prefix": "/api"},
    {"prefix": "/api/v1"},
    {"path": {"exact": "/api/v1"}},
    {"path": {"exact": "/web"}},
    {"path": {"regex": "/api/v[0-9]"}},
]
POOL_HEADERS = [
    None,
    {"name": "x-a", "match": {"exact": "1"}},
    {"name": "x-a", "match": {"exact": "1"}, "invert": True},
    {"name": "x-a"},
    {"name": "x-a", "invert": True},
    {"name": "x-b", "match": {"prefix": "p"}},
]
POOL_QUERY = [None, {"name": "q", "match": {"exact": "1"}}, {"name": "q"}]


def generated_tables(services: int, routes: int, seed: int = 5) -> dict[str, list[tuple[str, dict]]]:
    rng = random.Random(seed)
    tables = {}
    for s in range(services):
        entries = []
        for r in range(routes):
            match = dict(rng.choice(POOL_PATHS))
            if (method := rng.choice([None, None, "GET", "POST"])) is not None:
                match["method"] = method
            if (h := rng.choice(POOL_HEADERS)) is not None:
                match["headers"] = [h]
            if (q := rng.choice(POOL_QUERY)) is not None:
                match["queryParameters"] = [q]
            entries.append((f"s{s}-r{r}", match))
        tables[f"s{s}"] = entries
    return tables


def universe(authority: str) -> list[Request]:
    """Requests that fall into every region the pool's predicates can tell apart: whether a route is reachable at
    all is decided exactly by trying them all."""
    out = []
    for path in ("/", "/api", "/api/v1", "/api/v1/x", "/api/v2", "/web", "/apix", "/z"):
        for query in ("", "?q=1", "?q=2"):
            for method in ("GET", "POST", "PUT"):
                for xa in (None, "1", "2"):
                    for xb in (None, "p", "pq", "q"):
                        headers = tuple((k, v) for k, v in (("x-a", xa), ("x-b", xb)) if v is not None)
                        out.append(Request(method, authority, path + query, headers))
    return out


async def test_shadowed_routes_are_all_found_with_witnesses_envoy_agrees_with(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    ports = {v: (await m.app(v))[1] for v in ("v1", "v2", "v3")}
    tables = generated_tables(services=10, routes=6)
    log = tmp_path / "access.json"
    frontend = virtual_node("frontend", backends=list(tables))
    frontend["spec"]["logging"] = {"accessLog": {"file": access_log_format(log)}}
    docs = [
        route(name, svc, {f"reviews-v{1 + i % 3}": 100}, match=match, priority=i)
        for svc, entries in tables.items()
        for i, (name, match) in enumerate(entries)
    ]
    write(
        m.dir / "mesh.yaml",
        *(service(svc) for svc in tables),
        *(workload("reviews", v, p) for v, p in ports.items()),
        frontend,
        *docs,
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    table = await m.admin("/api/v1/routes?from=demo/frontend")
    hosts = [host_from_json(h) for h in table["virtualHosts"]]
    assert len(hosts) == len(tables)

    findings = []
    for vh in hosts:
        reached = {explain((vh,), r).route.name for r in universe(vh.domains[0]) if explain((vh,), r).route}
        unreachable = {r.name for r in vh.routes} - reached
        found = find_shadowed(vh)
        certain = {f.route for f in found if f.certain}
        assert certain <= unreachable, (vh.name, certain - unreachable)  # no false "certain"
        assert unreachable <= {f.route for f in found}, (vh.name, unreachable)  # none missed
        findings += found
    assert sum(f.certain for f in findings) >= 5, findings  # the generated set really has shadowing

    # Every witness is a request the shadowed route matches that a real Envoy sends to the shadowing route.
    witnessed = [f for f in findings if f.witness is not None]
    assert len(witnessed) >= len(findings) - 1
    for i, f in enumerate(witnessed):
        w = f.witness
        await send(m, sidecar, Request(w.method, w.authority, w.path, (*w.headers, ("x-request-id", f"shadow-{i}"))))
    await eventually(lambda: sum(k.startswith("shadow-") for k in logged(log)) == len(witnessed), timeout=20)
    seen = logged(log)
    assert [seen[f"shadow-{i}"]["route"] for i in range(len(witnessed))] == [f.witness_route for f in witnessed]

    # And each certainly shadowed Route says so in its status.
    statuses = {o["name"]: o for o in (await m.admin("/api/v1/status"))["objects"] if o["kind"] == "Route"}
    for f in findings:
        (cond,) = [c for c in statuses[f.route.split("/")[1]]["conditions"] if c["type"] == "Reachable"]
        assert (cond["status"], cond["reason"]) == (
            ("False", "Shadowed") if f.certain else ("Unknown", "PossiblyShadowed")
        )
