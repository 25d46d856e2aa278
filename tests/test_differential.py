"""Randomized differential test of every incremental path (issue 9).

Random model edits go through the controller as a source would send them (with or without a ModelDelta); a second
controller with the same history always builds from scratch. After every edit both must serve the same snapshot
versions (content-addressed, so equal versions mean equal bytes) and the same statuses.

Meanwhile a simulated Envoy talks to a StreamState reading the incremental controller's snapshots: it subscribes
and unsubscribes EDS names, ACKs, NACKs, answers with stale nonces and reconnects (state-of-the-world and delta),
in random interleavings. At the end it accepts everything until quiet, and must then hold exactly the snapshot.

Examples: ``MESHCTL_DIFF_EXAMPLES`` (default 25, what CI runs); e.g. 2000 for a long local run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import replace

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import Node
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (
    HttpConnectionManager,
)
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from google.protobuf import any_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import meshgen
from meshctl.controlplane.controller import Controller
from meshctl.model import (
    ConnectionPool,
    FieldError,
    HttpMatch,
    Logging,
    Model,
    ModelDelta,
    ObjectKey,
    Pod,
    Service,
    ServicePort,
    VirtualNode,
)
from meshctl.model.authz import AuthorizationPolicy, AuthzAction, AuthzPolicySpec, AuthzRule, AuthzSource, AuthzTarget
from meshctl.model.gateway import (
    GATEWAY_CONTROLLER,
    GATEWAY_GROUP,
    BackendRef,
    Gateway,
    GatewayClass,
    GatewayListener,
    GatewayRouteSpec,
    GatewayRule,
    HTTPRoute,
    ParentRef,
)
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import Snapshot
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER
from meshctl.xds.server.node import sidecar_params
from meshctl.xds.server.stream import StreamState
from tests.controller_driver import apply, controller_for

EXAMPLES = int(os.environ.get("MESHCTL_DIFF_EXAMPLES", "25"))
N = 5
NS = meshgen.NS
_NAME_OF = {
    CLUSTER: lambda b: Cluster.FromString(b).name,
    ENDPOINT: lambda b: ClusterLoadAssignment.FromString(b).cluster_name,
    LISTENER: lambda b: Listener.FromString(b).name,
    ROUTE: lambda b: RouteConfiguration.FromString(b).name,
}


# --- model edits ---------------------------------------------------------------------------------------------


def _edit(model: Model, draw) -> Model:
    """One random edit, as a source would send it: sometimes with a ModelDelta, sometimes without."""
    kind = draw(
        st.sampled_from(
            [
                "weight",
                "match",
                "invalid",
                "route-gone",
                "endpoints",
                "slice-gone",
                "pod",
                "pod-gone",
                "node",
                "service",
                "policy",
                "httproute",
                "edge",
            ]
        )
    )
    i = draw(st.integers(0, N - 1))
    if kind in ("httproute", "edge"):  # a Gateway API route on svc-i, to Service ports (their EndpointSlices), or gone
        http_routes = dict(model.http_routes)
        grpc = kind == "httproute" and draw(st.booleans())
        edge = kind == "edge"  # a route of the edge gateway (and maybe of the mesh too)
        hkey = ObjectKey("GRPCRoute" if grpc else "HTTPRoute", NS, f"e-{i}" if edge else f"h-{i}")
        existing = http_routes.get(hkey)
        action = draw(st.sampled_from(["new", "weights", "gone", "invalid"]))
        if action == "gone":
            http_routes.pop(hkey, None)
        elif action == "weights" and existing is not None and existing.spec is not None:
            http_routes[hkey] = _reweighted(existing, draw)  # the RDS-only patch
        elif action == "invalid" and existing is not None:
            errors = (FieldError(path="spec.rules[0].filters[0].type", message="unsupported"),)
            parents = existing.spec.parents if existing.spec is not None else existing.parents_if_invalid
            http_routes[hkey] = replace(existing, spec=None, errors=errors, parents_if_invalid=parents)
        else:
            http_routes[hkey] = _edge_route(i, draw) if edge else _http_route(i, draw, grpc=grpc)
        return _with(
            model,
            draw,
            http_routes=http_routes,
            delta=ModelDelta(base_revision=model.revision, http_routes=frozenset({hkey})),
        )
    if kind == "policy":
        policies = dict(model.authorization_policies)
        key = ObjectKey("AuthorizationPolicy", NS, f"p-{i}")
        if key in policies and draw(st.booleans()):
            del policies[key]
        else:
            policies[key] = _policy(i, draw)
        return _with(model, draw, authorization_policies=policies)
    routes, slices = dict(model.routes), dict(model.endpoint_slices)
    rkey = ObjectKey("Route", NS, f"svc-{i}")
    delta = None
    if kind == "weight":
        routes[rkey] = meshgen.route(i, draw(st.integers(0, 100)))
    elif kind == "match":
        base = meshgen.route(i, draw(st.integers(0, 100)))
        http = replace(base.spec.http_route, match=HttpMatch(prefix=draw(st.sampled_from(["/", "/a", "/b/"]))))
        routes[rkey] = replace(base, spec=replace(base.spec, http_route=http))
    elif kind == "invalid":
        routes[rkey] = replace(meshgen.route(i), spec=None, errors=(FieldError(path="spec.httpRoute", message="x"),))
    elif kind == "route-gone":
        routes.pop(rkey, None)
    if kind in ("weight", "match", "invalid", "route-gone"):
        delta = ModelDelta(base_revision=model.revision, routes=frozenset({rkey}))
        return _with(model, draw, routes=routes, delta=delta)
    version = draw(st.integers(1, 2))
    skey = ObjectKey("EndpointSlice", NS, f"svc-{i}-v{version}")
    if kind == "endpoints":
        base = meshgen.endpoint_slice(i, version, ready=draw(st.booleans()))
        port = draw(st.sampled_from([8080, 8080, 9090]))
        slices[skey] = replace(
            base, ports=(replace(base.ports[0], port=port),), endpoints=base.endpoints[: draw(st.integers(0, 5))]
        )
        return _with(
            model,
            draw,
            endpoint_slices=slices,
            delta=ModelDelta(base_revision=model.revision, endpoint_slices=frozenset({skey})),
        )
    if kind in ("pod", "pod-gone"):
        pkey = ObjectKey("Pod", NS, f"svc-{i}-v{version}-{draw(st.integers(0, 4))}")
        pods = dict(model.pods)
        if kind == "pod-gone" and draw(st.booleans()):
            pods.pop(pkey, None)
        else:  # relabelled (its endpoints may move to the other version's node), or back as it was
            labels = {"app": f"svc-{i}", "version": draw(st.sampled_from(["v1", "v2", "v3"]))}
            pods[pkey] = Pod(labels=labels, service_account=draw(st.sampled_from(["default", "sa-a"])))
        return _with(model, draw, pods=pods, delta=ModelDelta(base_revision=model.revision, pods=frozenset({pkey})))
    if kind == "slice-gone":
        slices.pop(skey, None)
        return _with(
            model,
            draw,
            endpoint_slices=slices,
            delta=ModelDelta(base_revision=model.revision, endpoint_slices=frozenset({skey})),
        )
    if kind == "node":
        vkey = ObjectKey("VirtualNode", NS, f"svc-{i}-v{version}")
        vn = model.virtual_nodes[vkey]
        assert vn.spec is not None
        listener = replace(
            vn.spec.listeners[0], connection_pool=ConnectionPool(max_connections=draw(st.integers(1, 3)))
        )
        nodes = {**model.virtual_nodes, vkey: VirtualNode(meta=vn.meta, spec=replace(vn.spec, listeners=(listener,)))}
        return _with(model, draw, virtual_nodes=nodes)
    skey = ObjectKey("Service", NS, f"svc-{i}")
    services = dict(model.services)
    if skey in services and draw(st.booleans()):
        del services[skey]
    else:
        port = draw(st.sampled_from([80, 8000]))
        services[skey] = Service(
            meta=meshgen.Meta(namespace=NS, name=f"svc-{i}"), ports=(ServicePort(name="http", port=port),)
        )
    return _with(model, draw, services=services)


def _http_route(i: int, draw, *, grpc: bool = False) -> HTTPRoute:
    backends = tuple(
        BackendRef(
            group="",
            kind="Service",
            namespace=NS,
            name=f"svc-{j}",
            port=draw(st.sampled_from([80, 8000])),
            weight=draw(st.integers(0, 3)),
        )
        for j in draw(st.lists(st.integers(0, N), min_size=0, max_size=2, unique=True))  # (svc-N does not exist)
    )
    parent = ParentRef(group="", kind="Service", namespace=NS, name=f"svc-{i}", port=draw(st.sampled_from([None, 80])))
    match = HttpMatch(prefix="/") if grpc else HttpMatch(prefix=draw(st.sampled_from(["/", "/a"])))
    rule = GatewayRule(name=None, matches=(match,), backends=backends)
    spec = GatewayRouteSpec(parents=(parent,), rules=(rule,), grpc=grpc)
    kind = "GRPCRoute" if grpc else "HTTPRoute"
    return HTTPRoute(meta=meshgen.Meta(namespace=NS, name=f"h-{i}"), spec=spec, kind=kind)


EDGE = SidecarParams(virtual_node=None, gateway=ObjectKey("Gateway", NS, "edge"), bind_address="127.0.0.1")


def _with_edge_gateway(model: Model) -> Model:
    """An edge gateway (its class ours) with an HTTP and an HTTPS listener, whose proxies are a group of their own:
    its routes, the Services and Routes they reach and their endpoints change under it."""
    gateway = Gateway(
        meta=meshgen.Meta(namespace=NS, name="edge"),
        class_name="meshctl",
        listeners=(
            GatewayListener(name="http", port=80, protocol="HTTP"),
            GatewayListener(name="api", port=80, protocol="HTTP", hostname="*.example.com"),
        ),
        addresses=(("IPAddress", "192.0.2.10"),),
    )
    gateway_class = GatewayClass(meta=meshgen.Meta(namespace="", name="meshctl"), controller_name=GATEWAY_CONTROLLER)
    return replace(
        model,
        gateways={ObjectKey("Gateway", NS, "edge"): gateway},
        gateway_classes={ObjectKey("GatewayClass", "", "meshctl"): gateway_class},
    )


def _edge_route(i: int, draw) -> HTTPRoute:
    """An HTTPRoute on the edge gateway (a listener by sectionName, or both), to svc-j: the Service's meshctl Route
    if it has one, else its endpoints; sometimes on the mesh Service too."""
    route = _http_route(i, draw)
    assert route.spec is not None
    section = draw(st.sampled_from([None, "http", "api"]))
    parents = (ParentRef(group=GATEWAY_GROUP, kind="Gateway", namespace=NS, name="edge", section_name=section),)
    if draw(st.booleans()):
        parents += route.spec.parents
    hostnames = tuple(draw(st.lists(st.sampled_from(["a.example.com", "*.example.com", "b.test"]), max_size=2)))
    spec = replace(route.spec, parents=parents, hostnames=hostnames)
    return replace(route, meta=meshgen.Meta(namespace=NS, name=f"e-{i}"), spec=spec)


def _reweighted(route: HTTPRoute, draw) -> HTTPRoute:
    """The same route with its backendRefs' weights drawn again (the same clusters, other weights)."""
    assert route.spec is not None
    rules = tuple(
        replace(r, backends=tuple(replace(b, weight=draw(st.integers(0, 3))) for b in r.backends))
        for r in route.spec.rules
    )
    return replace(route, spec=replace(route.spec, rules=rules))


def _policy(i: int, draw) -> AuthorizationPolicy:
    """A policy whose effect may hang on Routes (a Service target, declared backends) or Pods (a VirtualNode's
    service accounts): the incremental paths must rebuild it when those change."""
    target = draw(
        st.sampled_from(
            [
                AuthzTarget(kind="Service", namespace=NS, name=f"svc-{i}"),
                AuthzTarget(kind="VirtualNode", namespace=NS, name=f"svc-{i}-v1", port=8080),
            ]
        )
    )
    j = draw(st.integers(0, N - 1))
    source = draw(
        st.sampled_from(
            [
                AuthzSource(namespace=NS),
                AuthzSource(virtual_node=(NS, f"svc-{j}-v2")),
                AuthzSource(declared_backends=True),
            ]
        )
    )
    spec = AuthzPolicySpec(
        targets=(target,),
        action=draw(st.sampled_from(list(AuthzAction))),
        audit=draw(st.booleans()),
        rules=(AuthzRule(sources=(source,)),),
    )
    return AuthorizationPolicy(meta=meshgen.Meta(namespace=NS, name=f"p-{i}"), spec=spec)


def _with(model: Model, draw, delta: ModelDelta | None = None, **changes) -> Model:
    if delta is not None and not draw(st.booleans()):
        delta = None  # the controller must find the change by comparing
    return replace(model, revision=model.revision + 1, delta=delta, **changes)


def _final_change(model: Model) -> Model:
    slices = {
        k: replace(es, endpoints=(replace(es.endpoints[0], address="10.255.0.1"),) if es.endpoints else ())
        for k, es in model.endpoint_slices.items()
    }
    nodes = {}
    for k, vn in model.virtual_nodes.items():
        assert vn.spec is not None
        pool = ConnectionPool(max_connections=77)
        spec = replace(vn.spec, listeners=tuple(replace(li, connection_pool=pool) for li in vn.spec.listeners))
        if k == meshgen.GATEWAY.virtual_node:
            spec = replace(spec, logging=Logging(access_log_path="/dev/stdout"))
        nodes[k] = replace(vn, spec=spec)
    routes = {k: meshgen.route(int(k.name.split("-")[1]), 37) for k in model.routes}
    return replace(
        model, endpoint_slices=slices, virtual_nodes=nodes, routes=routes, revision=model.revision + 1, delta=None
    )


# --- a simulated Envoy -----------------------------------------------------------------------------------------


class FakeEnvoy:
    """What an Envoy holds per type (name -> Any bytes), and the requests it would send."""

    def __init__(self, delta: bool) -> None:
        self.delta = delta
        self.held: dict[str, dict[str, bytes]] = {t: {} for t in TYPE_ORDER}
        self.pending: dict[str, tuple[str, str, dict[str, bytes], list[str]]] = {}  # type -> (version, nonce, ...)
        self.nacked_versions: set[tuple[str, str]] = set()
        self.stream = StreamState("envoy", "g", delta=delta)
        self.subscribed = {t: False for t in TYPE_ORDER}

    def names(self, type_url: str) -> list[str]:
        """What a real Envoy subscribes to: the EDS clusters it has, the route configs its listeners use."""
        if type_url == ENDPOINT:
            return sorted(n for n, b in self.held[CLUSTER].items() if Cluster.FromString(_value(b)).type == Cluster.EDS)
        if type_url == ROUTE:
            out = set()
            for b in self.held[LISTENER].values():
                for chain in Listener.FromString(_value(b)).filter_chains:
                    for f in chain.filters:
                        if f.typed_config.type_url.endswith("HttpConnectionManager"):
                            hcm = HttpConnectionManager.FromString(f.typed_config.value)
                            if hcm.HasField("rds"):
                                out.add(hcm.rds.route_config_name)
            return sorted(out)
        return []

    def request(
        self, type_url: str, *, ack: bool | None = None, stale: bool = False, names: list[str] | None = None
    ) -> None:
        """``ack``: True/False answers the pending response (ACK/NACK); None sends only a subscription."""
        names = self.names(type_url) if names is None else names
        version, nonce = "", ""
        error = None
        if ack is not None and type_url in self.pending:
            version, nonce, resources, removed = self.pending.pop(type_url)
            if ack:
                self._apply(type_url, resources, removed)
            else:
                self.nacked_versions.add((type_url, version))
                error = status_pb2.Status(code=3, message="rejected")
                version = self.stream.types[type_url].acked_version
        if stale:
            nonce = "stale-" + nonce
        if self.delta:
            st_ = self.stream.types[type_url]
            current = set(st_.names or ()) if st_.names is not None else set()
            req = DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)
            if type_url in (ENDPOINT, ROUTE):
                req.resource_names_subscribe.extend(sorted(set(names) - current))
                req.resource_names_unsubscribe.extend(sorted(current - set(names)))
                if not self.subscribed[type_url]:
                    req.initial_resource_versions.update({n: "?" for n in ()})
        else:
            req = DiscoveryRequest(type_url=type_url, version_info=version, response_nonce=nonce, resource_names=names)
        if error is not None:
            req.error_detail.CopyFrom(error)
        self.subscribed[type_url] = True
        self.stream.on_request(req)
        if type_url in (ENDPOINT, ROUTE):
            keep = set(names)  # Envoy drops what it unsubscribed from
            self.held[type_url] = {n: b for n, b in self.held[type_url].items() if n in keep}

    def _apply(self, type_url: str, resources: dict[str, bytes], removed: list[str]) -> None:
        if not self.delta and type_url in (CLUSTER, LISTENER):
            self.held[type_url] = dict(resources)  # state of the world: the response is the whole set
        else:
            self.held[type_url].update(resources)
            for name in removed:
                self.held[type_url].pop(name, None)

    def receive(self, snap: Snapshot | None) -> None:
        for type_url, raw in self.stream.next_responses(snap):
            if self.delta:
                resp = DeltaDiscoveryResponse.FromString(raw)
                resources = {r.name: r.resource.SerializeToString() for r in resp.resources}
                self.pending[type_url] = (resp.system_version_info, resp.nonce, resources, list(resp.removed_resources))
            else:
                resp = DiscoveryResponse.FromString(raw)
                resources = {_NAME_OF[type_url](a.value): a.SerializeToString() for a in resp.resources}
                self.pending[type_url] = (resp.version_info, resp.nonce, resources, [])

    def reconnect(self) -> None:
        """A new stream; Envoy keeps its config and (delta) says what it has."""
        self.stream = StreamState("envoy", "g", delta=self.delta)
        self.pending.clear()
        self.subscribed = {t: False for t in TYPE_ORDER}
        for type_url in TYPE_ORDER:
            if self.delta and self.held[type_url]:
                req = DeltaDiscoveryRequest(type_url=type_url)
                if type_url in (ENDPOINT, ROUTE):
                    req.resource_names_subscribe.extend(self.names(type_url))
                for name, b in self.held[type_url].items():
                    req.initial_resource_versions[name] = _version(b)
                self.stream.on_request(req)
                self.subscribed[type_url] = True


def _value(any_bytes: bytes) -> bytes:
    return any_pb2.Any.FromString(any_bytes).value


def _version(any_bytes: bytes) -> str:
    return hashlib.blake2b(any_bytes, digest_size=8).hexdigest()


def _quiesce(envoy: FakeEnvoy, snap: Snapshot) -> None:
    """Envoy accepts everything and follows its subscriptions until nothing more is sent."""
    for type_url in TYPE_ORDER:
        envoy.request(type_url)  # (re)subscribe as a real Envoy would after a reconnect
    for _ in range(50):
        envoy.receive(snap)
        if not envoy.pending:
            for type_url in TYPE_ORDER:  # follow the clusters and listeners it now holds
                if sorted(envoy.stream.types[type_url].names or []) != envoy.names(type_url) and type_url in (
                    ENDPOINT,
                    ROUTE,
                ):
                    envoy.request(type_url)
            envoy.receive(snap)
            if not envoy.pending:
                return
        for type_url in list(envoy.pending):
            envoy.request(type_url, ack=True)
    raise AssertionError("the stream never went quiet")


# --- the test --------------------------------------------------------------------------------------------------


async def _controllers(stack: contextlib.AsyncExitStack):
    """An incremental controller and a reference that translates every model whole, both with the mesh built."""
    model, clients = meshgen.with_clients(meshgen.build(N), groups=2, backends=3)
    model = _with_edge_gateway(model)
    params = [sidecar_params(Node(cluster=c)) for c in clients] + [meshgen.GATEWAY, EDGE]
    # Callees too: their inbound listeners carry authorization.
    params += [SidecarParams(virtual_node=ObjectKey("VirtualNode", NS, f"svc-{i}-v1")) for i in range(N)]
    pair = []
    for incremental in (True, False):
        controller = await stack.enter_async_context(controller_for(params, incremental=incremental))
        await apply(controller, model)
        pair.append(controller)
    return model, params, pair


def _served(controller: Controller, params) -> tuple[dict, dict]:
    versions = {p.group: {t: controller.cache.get(p.group).version(t) for t in TYPE_ORDER} for p in params}
    assert controller.mesh is not None
    return versions, dict(controller.mesh.status_by_key)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), delta=st.booleans())
async def test_incremental_equals_from_scratch_and_envoy_ends_with_the_snapshot(data, delta: bool) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await _compare(data, delta, stack)


async def _compare(data, delta: bool, stack: contextlib.AsyncExitStack) -> None:
    model, params, (incremental, reference) = await _controllers(stack)
    group = meshgen.GATEWAY.group
    envoy = FakeEnvoy(delta)
    for _ in range(data.draw(st.integers(1, 12), label="steps")):
        action = data.draw(
            st.sampled_from(["edit", "edit", "ack", "nack", "stale", "unsubscribe", "reconnect", "receive"])
        )
        if action == "edit":
            base = model
            model = _edit(model, data.draw)
            if data.draw(st.booleans(), label="another edit in the same model"):
                # One model for two edits, as a source that saw both at once hands it over: the two deltas merged
                # when both have one (an EndpointSlice file and a Route file in one manifest poll), else none.
                second = _edit(model, data.draw)
                first_delta, second_delta = model.delta, second.delta
                merged = None
                if first_delta is not None and second_delta is not None:
                    merged = ModelDelta(
                        base_revision=base.revision,
                        endpoint_slices=first_delta.endpoint_slices | second_delta.endpoint_slices,
                        pods=first_delta.pods | second_delta.pods,
                        routes=first_delta.routes | second_delta.routes,
                    )
                model = replace(second, delta=merged)
            await apply(incremental, model)
            await apply(reference, model)
            assert _served(incremental, params) == _served(reference, params)
        elif action in ("ack", "nack") and envoy.pending:
            type_url = data.draw(st.sampled_from(sorted(envoy.pending)))
            envoy.request(type_url, ack=action == "ack")
        elif action == "stale":
            envoy.request(data.draw(st.sampled_from(TYPE_ORDER)), stale=True)
        elif action == "unsubscribe":
            names = envoy.names(ENDPOINT)
            dropped = data.draw(st.sets(st.sampled_from(names))) if names else set()
            envoy.request(ENDPOINT, names=sorted(set(names) - dropped))
            envoy.request(ENDPOINT)  # and back (Envoy re-adds the cluster)
        elif action == "reconnect":
            envoy.reconnect()
        for type_url in TYPE_ORDER:
            if not envoy.subscribed[type_url] and data.draw(st.booleans()):
                envoy.request(type_url)
        envoy.receive(incremental.cache.get(group))

    # A NACKed version is rightly never resent; so end with a change that gives every type a new version, which
    # Envoy accepts, together with everything still pending: then it must hold exactly the snapshot.
    model = _final_change(model)
    await apply(incremental, model)
    await apply(reference, model)
    assert _served(incremental, params) == _served(reference, params)
    snap = incremental.cache.get(group)
    assert snap is not None
    _quiesce(envoy, snap)
    for type_url in TYPE_ORDER:
        expected = {n: r.any_bytes for n, r in snap.resources[type_url].items()}
        if type_url in (ENDPOINT, ROUTE):
            expected = {n: b for n, b in expected.items() if n in envoy.names(type_url)}
        assert envoy.held[type_url] == expected, type_url
