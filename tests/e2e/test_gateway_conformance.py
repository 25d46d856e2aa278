"""The upstream Gateway API conformance cases for Gateways (v1.6.1, ``../shared/conformance/gateway-api``:
GATEWAY-HTTP and GATEWAY-GRPC) replayed through meshctl and real Envoy edge gateways.

The upstream suite runs in a cluster; here, on loopback:
- ``base/manifests.yaml`` is applied as a manifest directory: Namespaces, Services and Gateways verbatim (the
  GatewayClass placeholder becomes ``meshctl``, a GatewayClass whose controllerName is meshctl.dev/gateway); each
  Deployment's replicas become Pods served by an echo backend answering like the suite's ``echo-basic`` (HTTP, or
  gRPC for the ``grpc-infra-backend`` ones), with an EndpointSlice per Service and Pod; the TLS Secret the suite makes
  in code (``tls-validity-checks-certificate``) is made here, a kubernetes.io/tls Secret;
- each Gateway a case sends to gets a real Envoy that meshctl configures (``meshctl.gateway`` node metadata), on a
  loopback address of its own (127.0.0.N), as each Gateway's pods have theirs; a Gateway port below 1024 is bound
  10,000 higher (80 -> 10080), as meshctl's gateway Deployment does;
- each test's manifest is written to the directory, its status expectations and cases run, and it is removed.
Comparison is upstream's ``gateway-http`` / ``gateway-grpc`` rule (README "What is compared"); each case must pass 3
times in a row within 30 s; weighted tests send 500 requests and accept |seen/500 - weight| <= 0.05, up to 10 runs.
Status expectations are checked on ``/api/v1/status`` (what the status writer writes), except the Gateway's
``status.addresses``, which the Gateway's Service gives in a cluster.
"""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio

from meshctl.devtools.echo_app import Echo, start_echo
from meshctl.devtools.envoy_process import EnvoyProcess, free_port
from meshctl.translate.gateway import bound_port
from tests.conftest import Mesh, eventually
from tests.e2e.test_gamma_conformance import _docs, _joined, _mismatch, _selected, weights_match
from tests.gateways import GatewayXds, gateway_service, self_signed
from tests.manifests import pod_slice, write

CONFORMANCE = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "gateway-api"
INFRA = "gateway-conformance-infra"
CLASS = "meshctl"
CONTROLLER = "meshctl.dev/gateway"
CERT_SECRET = "tls-validity-checks-certificate"
_NO_BACKENDS = ("tls-backend", "tls-backend-2", "coredns", "tcp-backend")  # (TLS/TCP/UDP routes: not replayed)

# Tests meshctl does not run here, and why (the docs' conformance table says the same).
SKIPPED: dict[str, str] = {}


def _gateway_tests() -> list[str]:
    index = json.loads((CONFORMANCE / "cases.json").read_text())
    return [t["shortName"] for t in index["tests"] if t["harness"] in ("gateway-http", "gateway-grpc")]


GATEWAY_TESTS = _gateway_tests() if CONFORMANCE.exists() else []


def _certificate() -> tuple[bytes, bytes]:
    """What the suite makes for tls-validity-checks-certificate: a self-signed pair for *, *.org, *.wildcard.org
    (and example.org, which the HTTPS cases ask for by SNI)."""
    return self_signed(["*", "*.org", "*.wildcard.org", "example.org"])


class Harness:
    def __init__(self, mesh: Mesh, cert_pem: bytes, xds: GatewayXds) -> None:
        self.mesh = mesh
        self.xds = xds
        self.cert_pem = cert_pem
        self.gateways: dict[str, tuple[EnvoyProcess, str]] = {}  # "ns/name" -> (its Envoy, its address)
        self.addresses: dict[str, str] = {}  # "ns/name" -> the loopback address its Service's load balancer got
        self.echoes: dict[str, Echo] = {}  # by pod name
        self.session: aiohttp.ClientSession | None = None
        self.servers: list[grpc.aio.Server] = []

    def service(self, gateway: dict[str, Any]) -> dict[str, Any]:
        """The Gateway's Service, as ``meshctl install --gateway`` makes it, its load balancer on an address of its
        own (the Gateway's ``status.addresses`` come from it)."""
        ns, name = gateway["metadata"].get("namespace", "default"), gateway["metadata"]["name"]
        address = self.addresses.setdefault(f"{ns}/{name}", f"127.0.0.{10 + len(self.addresses)}")
        ports = tuple(sorted({li["port"] for li in gateway["spec"]["listeners"]}))
        return gateway_service(ns, name, address, ports)

    async def gateway(self, ref: str) -> str:
        """The Gateway's address as its status says (what upstream sends to), its Envoy started there on first use
        (over mutual-TLS xDS: tests/gateways.py)."""
        if ref not in self.gateways:
            ns, name = ref.split("/")
            await eventually(lambda: self._address(ns, name), timeout=30)
            found = await self._address(ns, name)
            assert found is not None
            address = found["value"]
            envoy = self.xds.envoy(self.mesh.plane.xds_port, ref, address)
            await envoy.start()
            self.gateways[ref] = (envoy, address)
            await eventually(lambda: envoy.ready(), timeout=30)
        return self.gateways[ref][1]

    async def _address(self, ns: str, name: str) -> dict[str, str] | None:
        gateway = (await self.status()).get(("Gateway", ns, name)) or {}
        return next((a for a in gateway.get("addresses", []) if a.get("type")), None)

    async def status(self) -> dict[tuple[str, str, str], dict[str, Any]]:
        assert self.session is not None
        async with self.session.get(f"http://127.0.0.1:{self.mesh.plane.admin_port}/api/v1/status") as r:
            body = await r.json()
        return {(o["kind"], o["namespace"], o["name"]): o for o in body["objects"]}


async def _grpc_echo(pod: str, namespace: str, port: int) -> grpc.aio.Server:
    """echo-basic's gRPC side: Echo and EchoTwo answer what they saw (here as JSON), EchoThree is unimplemented."""

    def handler(method: str) -> grpc.RpcMethodHandler | None:
        if method.endswith("/EchoThree"):
            return None

        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            return json.dumps({"method": method, "pod": pod, "namespace": namespace, "headers": metadata}).encode()

        return grpc.unary_unary_rpc_method_handler(echo, request_deserializer=None, response_serializer=None)

    class AnyMethod(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return handler(details.method)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def _setup(h: Harness, key_pem: bytes) -> list[dict[str, Any]]:
    docs = _docs(CONFORMANCE / "base" / "manifests.yaml")
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": CLASS},
            "spec": {"controllerName": CONTROLLER},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": CERT_SECRET, "namespace": INFRA},
            "stringData": {"tls.crt": h.cert_pem.decode(), "tls.key": key_pem.decode()},
        },
    ]
    for d in docs:
        if d["kind"] in ("Namespace", "Service"):
            out.append(d)
        elif d["kind"] == "Gateway":
            out.extend((_with_class(d), h.service(d)))
    services = [d for d in docs if d["kind"] == "Service"]
    for dep in (d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] not in _NO_BACKENDS):
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        env = {e["name"] for c in dep["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
        for i in range(dep["spec"].get("replicas", 1)):
            pod = f"{name}-6b7f9c5d8-{i:05d}"
            port = free_port()
            if "GRPC_ECHO_SERVER" in env:
                h.servers.append(await _grpc_echo(pod, ns, port))
            else:
                h.echoes[pod] = Echo(pod=pod, namespace=ns)
                h.mesh._runners.append(await start_echo(h.echoes[pod], port))
            out.append(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns, "labels": labels}}
            )
            for svc in services:
                if svc["metadata"]["namespace"] != ns or not _selected(svc["spec"].get("selector", {}), labels):
                    continue
                ports = [
                    {"name": p.get("name", ""), "port": port, "protocol": "TCP"}
                    for p in svc["spec"]["ports"]
                    if p.get("targetPort", p["port"]) == 3000
                ]
                out.append(pod_slice(ns, svc["metadata"]["name"], pod, ports))
    return out


def _with_class(doc: dict[str, Any]) -> dict[str, Any]:
    """What the suite's Applier does to every Gateway: the class under test replaces the placeholder."""
    if doc.get("kind") == "Gateway":
        doc = {**doc, "spec": {**doc["spec"], "gatewayClassName": CLASS}}
    return doc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("gateway")
    mesh = Mesh(directory)
    xds = GatewayXds(tmp_path_factory.mktemp("gateway-keys"))
    mesh.plane = xds.plane(directory, traffic_interval=0.5)
    cert_pem, key_pem = _certificate()
    h = Harness(mesh, cert_pem, xds)
    h.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        write(directory / "base.yaml", *await _setup(h, key_pem))
        await mesh.start()
        yield h
    finally:
        for envoy, _ in h.gateways.values():
            await envoy.stop()
        await h.session.close()
        await mesh.stop()
        for server in h.servers:
            await server.stop(None)


def _gateway_docs(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Gateway the base and the test's manifest make, by "namespace/name"."""
    docs = _docs(CONFORMANCE / "base" / "manifests.yaml")
    if spec.get("manifest"):
        docs += _docs(CONFORMANCE / spec["manifest"])
    return {
        f"{d['metadata'].get('namespace', 'default')}/{d['metadata']['name']}": d
        for d in docs
        if d.get("kind") == "Gateway"
    }


def _listener_port(gateway: dict[str, Any], names: list[str] | None) -> tuple[int, str]:
    """The port and protocol of the Gateway's first listener (or of the first one named)."""
    listeners = gateway["spec"]["listeners"]
    chosen = next((li for li in listeners if li["name"] in names), listeners[0]) if names else listeners[0]
    return chosen["port"], chosen["protocol"]


def _fresh(case: dict[str, Any]) -> dict[str, Any]:
    """The case with a new uuid wherever it says {uuid} (upstream adds a fresh request id to each request)."""
    text = json.dumps(case)
    return json.loads(text.replace("{uuid}", uuid.uuid4().hex)) if "{uuid}" in text else case


async def _send_http(
    h: Harness, case: dict[str, Any], address: str, port: int, https: bool
) -> tuple[int, dict[str, Any] | None, Any]:
    """One request as upstream's roundtripper sends it: the status, the echo's JSON and the response headers."""
    req = case["request"]
    path = req.get("path") or "/"
    authority = address if port == (443 if https else 80) else f"{address}:{port}"
    headers = {"Host": req.get("host") or authority, "X-Echo-Set-Header": ""}
    headers.update(req.get("headers") or {})
    if echo := req.get("echo_set_response_headers"):
        headers["X-Echo-Set-Header"] = ",".join(f"{k}:{v}" for k, v in echo.items())
    url = f"{'https' if https else 'http'}://{address}:{bound_port(port)}{path}"
    tls: ssl.SSLContext | bool = False
    if https:
        tls = ssl.create_default_context(cadata=h.cert_pem.decode())
    assert h.session is not None
    async with h.session.request(
        req.get("method") or "GET",
        url,
        headers=headers,
        allow_redirects=False,
        ssl=tls,
        server_hostname=(req.get("host") or "example.org").split(":")[0] if https else None,
    ) as r:
        body = await r.json(content_type=None) if r.status in (200, 204) else None
        return r.status, body, r.headers


def _gateway_mismatch(case: dict[str, Any], status: int, body: dict[str, Any] | None, headers: Any) -> str | None:
    """Upstream's gateway-http rule: the mesh rule's checks plus path (with the query), host, method, namespace."""
    exp = case["expected"]
    after = exp.get("request_after_filters") or {}
    if status in (408, 504) and any(w in (408, 504) for w in exp.get("status") or [200]):
        status = next(w for w in exp["status"] if w in (408, 504))  # upstream: timeout codes are interchangeable
    problem = _mismatch(case, status, body, headers)
    if problem is not None or status not in (200, 204) or body is None:
        return problem
    if after.get("host") is not None and body["host"] != after["host"]:
        return f"backend got Host {body['host']!r}, wanted {after['host']!r}"
    method = after.get("method") or case["request"].get("method") or "GET"
    if body["method"] != method:
        return f"backend got method {body['method']}, wanted {method}"
    if exp.get("namespace") and body["namespace"] != exp["namespace"]:
        return f"answered from namespace {body['namespace']}, wanted {exp['namespace']}"
    if after.get("source") == "defaulted_from_request":
        for name, value in (case["request"].get("headers") or {}).items():
            if _joined(body["headers"], name) != value:
                return f"backend got {name}: {_joined(body['headers'], name)!r}, wanted {value!r}"
    return None


async def _send_grpc(case: dict[str, Any], address: str, port: int) -> tuple[str, dict[str, Any] | None]:
    req = case["request"]
    metadata = tuple((k.lower(), v) for k, v in (req.get("headers") or {}).items())
    options = [("grpc.default_authority", req["host"])] if req.get("host") else []
    async with grpc.aio.insecure_channel(f"{address}:{bound_port(port)}", options=options) as channel:
        call = channel.unary_unary(req["path"], request_serializer=None, response_deserializer=None)
        try:
            answer = await call(b"", timeout=5, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name, None
    return "OK", json.loads(answer)


def _grpc_mismatch(case: dict[str, Any], code: str, body: dict[str, Any] | None) -> str | None:
    exp = case["expected"]
    if code.replace("_", "").lower() != exp["grpc_code"].lower():  # (grpc-go's names: Unimplemented)
        return f"gRPC {code}, wanted {exp['grpc_code']}"
    if code != "OK" or body is None:
        return None
    method = (exp.get("request_after_filters") or {}).get("fully_qualified_method") or case["request"]["path"]
    if body["method"] != method:
        return f"backend saw {body['method']}, wanted {method}"
    if exp.get("namespace") and body["namespace"] != exp["namespace"]:
        return f"answered from {body['namespace']}, wanted {exp['namespace']}"
    if exp.get("backend") and not body["pod"].startswith(exp["backend"]):
        return f"answered by {body['pod']}, wanted {exp['backend']}"
    return None


async def _probe(h: Harness, case: dict[str, Any], spec: dict[str, Any], gateways: dict[str, Any]) -> str | None:
    """One try of a case: why it failed, or None."""
    case = _fresh(case)
    ref = case.get("gateway") or spec["gateway"]
    address = await h.gateway(ref)
    names = case.get("gateway_ref_listeners") or spec.get("gateway_ref_listeners")
    port, protocol = _listener_port(gateways[ref], names)
    if case["request"].get("protocol") == "grpc":
        code, body = await _send_grpc(case, address, port)
        return _grpc_mismatch(case, code, body)
    status, body, headers = await _send_http(h, case, address, port, protocol == "HTTPS")
    problem = _gateway_mismatch(case, status, body, headers)
    path = case["request"].get("path") or "/"
    if problem is None and (mirrored := case["expected"].get("mirrored_to")):
        for target in mirrored:
            pods = [e for name, e in h.echoes.items() if name.startswith(target["name"] + "-6b7f")]
            await eventually(lambda pods=pods: any(path in e.seen for e in pods), timeout=10)
    return problem


async def _eventually_passes(h: Harness, case: dict[str, Any], spec: dict[str, Any], gateways: dict[str, Any]) -> None:
    """Upstream's rule: 3 consecutive passes within 30 s; 1 s between failed tries."""
    deadline, streak, last = time.monotonic() + 30, 0, ""
    while streak < 3:
        try:
            problem = await _probe(h, case, spec, gateways)
        except (TimeoutError, aiohttp.ClientError, ValueError, ssl.SSLError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            streak += 1
            continue
        streak, last = 0, problem
        if time.monotonic() > deadline:
            raise AssertionError(f"{case['request']}: {last}")
        await asyncio.sleep(1)


async def _weights(h: Harness, case: dict[str, Any], spec: dict[str, Any], gateways: dict[str, Any]) -> None:
    check = spec["weight_check"]
    expected, total, tolerance = check["expected_weights"], check["total_requests"], check["tolerance_abs"]
    ref = case.get("gateway") or spec["gateway"]
    address = await h.gateway(ref)
    port, _ = _listener_port(gateways[ref], None)
    grpc_case = case["request"].get("protocol") == "grpc"
    last: dict[str, int] = {}

    async def one() -> str | None:
        if grpc_case:
            code, body = await _send_grpc(case, address, port)
            return body["pod"] if code == "OK" and body else None
        status, body, _ = await _send_http(h, case, address, port, False)
        return body["pod"] if status == 200 and body else None

    for _ in range(check["max_attempts"]):
        seen: collections.Counter[str] = collections.Counter()
        for _ in range(total // 10):  # 10 in flight at a time, as upstream sends them
            pods = await asyncio.gather(*(one() for _ in range(10)))
            seen.update("-".join(p.split("-")[:-2]) for p in pods if p)
        last = dict(seen)
        if weights_match(seen, total, expected, tolerance):
            return
    raise AssertionError(f"distribution {last} does not match {expected} within {tolerance}")


def _parent_entries(route: dict[str, Any], gateway: str) -> list[dict[str, Any]]:
    ns, name = gateway.split("/")
    return [
        p
        for p in route.get("parents", [])
        if p["parentRef"]["name"] == name and p["parentRef"].get("namespace", route["namespace"]) == ns
    ]


def _has(conditions: list[dict[str, Any]], want: dict[str, Any]) -> bool:
    return any(
        c["type"] == want["type"]
        and c["status"] == want["status"]
        and (want.get("reason") is None or c["reason"] == want["reason"])
        for c in conditions
    )


def _status_problem(check: dict[str, Any], objects: dict[tuple[str, str, str], dict[str, Any]]) -> str | None:
    """Why upstream's status check does not hold (yet), or None (cases.json status_check_definitions)."""
    kind = check["check"]

    def get(kind_: str, ref: str) -> dict[str, Any] | None:
        ns, name = ref.split("/")
        return objects.get((kind_, ns, name))

    if kind == "GatewayAndRoutesMustBeAccepted":
        gateway = get("Gateway", check["gateway"])
        if gateway is None:
            return f"no status for Gateway {check['gateway']}"
        if not any(a.get("type") for a in gateway.get("addresses", [])):
            return f"Gateway {check['gateway']} has no address"
        for li in gateway.get("listeners", []):
            for t in ("ResolvedRefs", "Accepted", "Programmed"):
                if not _has(li["conditions"], {"type": t, "status": "True"}):
                    return f"listener {li['name']} is not {t}: {li['conditions']}"
        for ref in check["routes"]:
            route = get(check.get("route_kind") or "HTTPRoute", ref)
            entries = _parent_entries(route or {}, check["gateway"])
            if not any(
                e["controllerName"] == CONTROLLER
                and e["parentRef"].get("group") == "gateway.networking.k8s.io"
                and e["parentRef"].get("kind") == "Gateway"
                and _has(e["conditions"], {"type": "Accepted", "status": "True", "reason": "Accepted"})
                for e in entries
            ):
                return f"{ref} is not Accepted by {check['gateway']}: {entries}"
        return None
    if kind == "HTTPRouteMustHaveLatestConditions":
        route = get("HTTPRoute", check["route"])
        generations = {c["observedGeneration"] for p in (route or {}).get("parents", []) for c in p["conditions"]}
        if not route or generations != {check["generation"]}:
            return f"{check['route']} conditions at generations {generations}, wanted {check['generation']}"
        return None
    if kind == "HTTPRouteMustHaveCondition":
        route = get("HTTPRoute", check["route"])
        entries = _parent_entries(route or {}, check["parent_gateway"])
        if not any(_has(e["conditions"], check["condition"]) for e in entries):
            return f"{check['route']} lacks {check['condition']}: {entries}"
        return None
    if kind == "HTTPRouteMustHaveNoAcceptedParents":
        route = get("HTTPRoute", check["route"]) if check.get("route") else None
        parents = (route or {}).get("parents", [])
        if parents and not (
            len(parents) == 1 and _has(parents[0]["conditions"], {"type": "Accepted", "status": "False"})
        ):
            return f"{check.get('route')} has accepted parents: {parents}"
        return None
    if kind == "GatewayMustHaveZeroRoutes":
        gateway = get("Gateway", check["gateway"])
        listeners = (gateway or {}).get("listeners", [])
        if listeners and not (len(listeners) == 1 and listeners[0]["attachedRoutes"] == 0):
            return f"{check['gateway']} has routes: {listeners}"
        return None
    if kind == "HTTPRouteMustHaveParents":
        route = get("HTTPRoute", check["route"])
        for want in check["parents"]:
            ref = want["parentRef"]
            found = [
                p
                for p in (route or {}).get("parents", [])
                if p["parentRef"]["name"] == ref["name"]
                and p["parentRef"].get("kind") == ref.get("kind", "Gateway")
                and p["parentRef"].get("namespace") == ref.get("namespace")
                and p["controllerName"] == CONTROLLER
                and all(_has(p["conditions"], c) for c in want["conditions"])
            ]
            if not found:
                return f"{check['route']} has no parent like {want}: {(route or {}).get('parents')}"
        return None
    if kind == "GatewayStatusMustHaveListeners":
        gateway = get("Gateway", check["gateway"])
        actual = {li["name"]: li for li in (gateway or {}).get("listeners", [])}
        if len(actual) != len(check["listeners"]):
            return f"{check['gateway']} has listeners {list(actual)}"
        for want in check["listeners"]:
            li = actual.get(want["name"])
            if li is None or li["attachedRoutes"] != want["attachedRoutes"]:
                return f"listener {want['name']}: {li}"
            kinds = {(k.get("group", "gateway.networking.k8s.io"), k["kind"]) for k in li["supportedKinds"]}
            if any(
                (k.get("group", "gateway.networking.k8s.io"), k["kind"]) not in kinds for k in want["supportedKinds"]
            ):
                return f"listener {want['name']} kinds {kinds}"
            if not all(_has(li["conditions"], c) for c in want["conditions"]):
                return f"listener {want['name']} conditions {li['conditions']}"
        return None
    return None  # (NamespacesMustBeReady and the generation-bump steps: the harness's own setup and test)


async def _statuses_hold(h: Harness, checks: list[dict[str, Any]]) -> None:
    deadline, last = time.monotonic() + 30, ""
    while True:
        objects = await h.status()
        problems = [p for c in checks if (p := _status_problem(c, objects)) is not None]
        if not problems:
            return
        last = problems[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"status: {last}")
        await asyncio.sleep(0.2)


def _generation(docs: list[dict[str, Any]], ref: str) -> int:
    ns, name = ref.split("/")
    doc = next(d for d in docs if d["metadata"]["name"] == name and d["metadata"].get("namespace") == ns)
    return int(doc["metadata"].get("generation", 1))


def _patched(doc: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """The route after ``spec.rules[0].backendRefs[0].name = X`` (the one patch upstream makes), its generation bumped
    as the API server bumps it for a spec change."""
    ns, name = action["route"].split("/")
    if doc["metadata"]["name"] != name or doc["metadata"].get("namespace") != ns:
        return doc
    assert action["patch"].startswith("spec.rules[0].backendRefs[0].name = "), action
    doc = json.loads(json.dumps(doc))
    doc["spec"]["rules"][0]["backendRefs"][0]["name"] = action["patch"].rsplit(" ", 1)[1]
    doc["metadata"]["generation"] = int(doc["metadata"].get("generation", 1)) + 1
    return doc


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", GATEWAY_TESTS)
async def test_gateway_conformance(harness: Harness, name: str) -> None:
    if not CONFORMANCE.exists():
        pytest.skip("../shared/conformance/gateway-api is not beside the project")
    if name in SKIPPED:
        pytest.skip(SKIPPED[name])
    spec = json.loads((CONFORMANCE / "tests" / f"{name}.json").read_text())
    manifest = harness.mesh.dir / "test.yaml"
    docs = [_with_class(d) for d in _docs(CONFORMANCE / spec["manifest"])] if spec.get("manifest") else []
    docs += [harness.service(d) for d in docs if d["kind"] == "Gateway"]
    if docs:
        write(manifest, *docs)
    gateways = _gateway_docs(spec)
    try:
        checks: list[dict[str, Any]] = []
        for item in spec.get("status_expectations") or []:
            if item.get("action") == "merge-patch":  # HTTPRouteObservedGenerationBump's one patch, as kubectl does
                await _statuses_hold(harness, checks)
                checks = []
                docs = [_patched(d, item) for d in docs]
                write(manifest, *docs)
            elif item.get("check") == "HTTPRouteMustHaveLatestConditions":
                checks.append({**item, "generation": _generation(docs, item["route"])})
            else:
                checks.append(item)
        await _statuses_hold(harness, checks)
        for case in spec["cases"]:
            if before := case.get("before"):  # e.g. "delete ReferenceGrant ns/name (...)": the test's own step
                verb, kind, ref = before.split()[:3]
                assert verb == "delete", before
                ns, obj = ref.split("/")
                docs = [
                    d
                    for d in docs
                    if (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) != (kind, ns, obj)
                ]
                write(manifest, *docs)
            await _eventually_passes(harness, case, spec, gateways)
        if spec.get("weight_check"):
            await _weights(harness, spec["cases"][0], spec, gateways)
    finally:
        manifest.unlink(missing_ok=True)
        keys = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs}

        async def gone() -> bool:
            return not keys & set(await harness.status())

        deadline = time.monotonic() + 30
        while not await gone() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
