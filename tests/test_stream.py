"""StreamState without grpc: the protocol decisions, request by request. (NACKs and stale nonces are tested once,
through a real grpc.aio server: tests/test_ads_protocol.py.)"""

from __future__ import annotations

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from meshctl.xds.cache import CachedResource, Snapshot
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT
from meshctl.xds.server.stream import StreamState


def snapshot(*clusters: str, ports: dict[str, int] | None = None) -> Snapshot:
    """EDS clusters whose assignments differ only in a port, so a changed port is a changed resource."""
    ports = ports or {}
    cds = {c: CachedResource(CLUSTER, c, Cluster(name=c, type=Cluster.EDS), [(ENDPOINT, c)]) for c in clusters}
    eds = {
        c: CachedResource(ENDPOINT, c, ClusterLoadAssignment(cluster_name=f"{c}:{ports.get(c, 80)}")) for c in clusters
    }
    return Snapshot("g", {CLUSTER: cds, ENDPOINT: eds})


def names_in(raw: bytes) -> list[str]:
    resp = DiscoveryResponse.FromString(raw)
    if resp.type_url == CLUSTER:
        return [Cluster.FromString(a.value).name for a in resp.resources]
    return [ClusterLoadAssignment.FromString(a.value).cluster_name.split(":")[0] for a in resp.resources]


def ack(stream: StreamState, type_url: str, names=()) -> None:
    st = stream.types[type_url]
    stream.on_request(
        DiscoveryRequest(type_url=type_url, resource_names=names, version_info=st.sent_version, response_nonce=st.nonce)
    )


def test_endpoint_change_sends_only_the_changed_assignment() -> None:
    stream = StreamState("n", "g")
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
    [(_, raw)] = stream.next_responses(snapshot("a", "b"))
    assert names_in(raw) == ["a", "b"]
    ack(stream, ENDPOINT, ["a", "b"])
    changed = snapshot("a", "b", ports={"b": 81})
    [(_, raw)] = stream.next_responses(changed)
    assert names_in(raw) == ["b"]


def test_a_name_subscribed_again_is_sent_again() -> None:
    """Regression: after Envoy dropped a cluster and re-added it, its endpoints were never resent."""
    snap = snapshot("a", "b")
    stream = StreamState("n", "g")
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
    stream.next_responses(snap)
    ack(stream, ENDPOINT, ["a", "b"])
    ack(stream, ENDPOINT, ["b"])  # Envoy removed cluster a: it unsubscribes (same nonce)
    assert stream.next_responses(snap) == []  # nothing new for b
    ack(stream, ENDPOINT, ["a", "b"])  # cluster a is back
    [(_, raw)] = stream.next_responses(snap)
    assert names_in(raw) == ["a"]


def test_a_modified_eds_cluster_gets_its_endpoints_again() -> None:
    """Regression: Envoy re-warms a changed EDS cluster and waits for its endpoints; we never resent them."""
    stream = StreamState("n", "g")
    stream.on_request(DiscoveryRequest(type_url=CLUSTER))
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
    snap = snapshot("a", "b")
    stream.next_responses(snap)
    ack(stream, CLUSTER)
    ack(stream, ENDPOINT, ["a", "b"])
    changed = Snapshot(
        "g",
        {
            CLUSTER: {
                **snap.resources[CLUSTER],
                "a": CachedResource(
                    CLUSTER, "a", Cluster(name="a", type=Cluster.EDS, connect_timeout={"seconds": 5}), [(ENDPOINT, "a")]
                ),
            },
            ENDPOINT: snap.resources[ENDPOINT],  # endpoints unchanged
        },
    )
    responses = stream.next_responses(changed)
    assert [(t, names_in(raw)) for t, raw in responses] == [(CLUSTER, ["a", "b"]), (ENDPOINT, ["a"])]


def test_a_name_subscribed_again_is_sent_with_the_next_endpoint_patch() -> None:
    """Regression (issue 9, lost endpoints): Envoy dropped and re-added cluster a, then the next snapshot was an
    endpoint patch of b. The stream trimmed a from what Envoy holds but kept the old version, so the patch fast path
    sent only b and then recorded Envoy as holding a."""
    snap = snapshot("a", "b")
    stream = StreamState("n", "g")
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
    stream.next_responses(snap)
    ack(stream, ENDPOINT, ["a", "b"])
    ack(stream, ENDPOINT, ["b"])  # unsubscribes a
    ack(stream, ENDPOINT, ["a", "b"])  # and subscribes it again before anything new was sent
    new_b = CachedResource(ENDPOINT, "b", ClusterLoadAssignment(cluster_name="b:81"))
    patch = snap.patched(ENDPOINT, {"b": new_b})
    [(_, raw)] = stream.next_responses(patch)
    assert names_in(raw) == ["a", "b"]
    ack(stream, ENDPOINT, ["a", "b"])
    assert stream.types[ENDPOINT].acked_version == patch.version(ENDPOINT)


def test_a_name_dropped_and_subscribed_again_while_a_response_is_in_flight_is_sent_again() -> None:
    """Regression (found by the differential test): Envoy unsubscribed a and subscribed it again while a response
    that left a out (unchanged) was in flight; the ACK recorded Envoy as holding a, which it had dropped, so a was
    never sent again."""
    snap = snapshot("a", "b")
    stream = StreamState("n", "g")
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))
    stream.next_responses(snap)
    ack(stream, ENDPOINT, ["a", "b"])
    changed = snapshot("a", "b", ports={"b": 81})
    [(_, raw)] = stream.next_responses(changed)
    assert names_in(raw) == ["b"]  # in flight
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["b"]))  # Envoy drops cluster a
    stream.on_request(DiscoveryRequest(type_url=ENDPOINT, resource_names=["a", "b"]))  # and adds it back
    ack(stream, ENDPOINT, ["a", "b"])
    [(_, raw)] = stream.next_responses(changed)
    assert names_in(raw) == ["a"]


def test_a_reconnecting_delta_proxy_is_told_to_remove_what_is_no_longer_served() -> None:
    """Found by the differential test: a delta proxy reconnects holding cluster c, which the snapshot dropped
    meanwhile; delta never implies removal, so c must be named in removed_resources."""
    from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DeltaDiscoveryResponse

    snap = snapshot("a", "b")
    stream = StreamState("n", "g", delta=True)
    hello = DeltaDiscoveryRequest(type_url=CLUSTER)
    hello.initial_resource_versions.update({"a": snap.resources[CLUSTER]["a"].version, "c": "0123456789abcdef"})
    stream.on_request(hello)
    [(_, raw)] = stream.next_responses(snap)
    resp = DeltaDiscoveryResponse.FromString(raw)
    assert [r.name for r in resp.resources] == ["b"]
    assert list(resp.removed_resources) == ["c"]


def test_sync_state_follows_the_proxy_against_the_latest_snapshot() -> None:
    """What `meshctl get proxies` shows per type: NOT SENT, STALE (in flight), SYNCED, NACKED, IGNORED."""
    from meshctl.xds.envoy.types import LISTENER

    stream = StreamState("n", "g")
    snap = snapshot("a")
    assert stream.sync_state(LISTENER, snap, 0)["state"] == "IGNORED"
    stream.on_request(DiscoveryRequest(type_url=CLUSTER))
    assert stream.sync_state(CLUSTER, snap, 0)["state"] == "NOT SENT"
    [(_, raw)] = stream.next_responses(snap)
    stale = stream.sync_state(CLUSTER, snap, stream.types[CLUSTER].sent_at + 2.5)
    assert (stale["state"], stale["age"], stale["acked"]) == ("STALE", 2.5, "")
    ack(stream, CLUSTER)
    assert stream.sync_state(CLUSTER, snap, 0)["state"] == "SYNCED"
    newer = snapshot("a", "c")
    assert stream.sync_state(CLUSTER, newer, 0)["state"] == "STALE"  # not sent yet: behind the snapshot
    [(_, raw)] = stream.next_responses(newer)
    nack = DiscoveryRequest(type_url=CLUSTER, response_nonce=DiscoveryResponse.FromString(raw).nonce)
    nack.error_detail.message = "bad cluster c"
    stream.on_request(nack)
    nacked = stream.sync_state(CLUSTER, newer, 0)
    assert (nacked["state"], nacked["message"]) == ("NACKED", "bad cluster c")


def test_shared_name_sets_are_bounded_by_the_names_they_hold_and_only_share_equal_sets():
    from meshctl.xds.server.stream import _SharedNameSets

    shared = _SharedNameSets(max_names=40)
    a = frozenset({"x", "y"})
    assert shared(frozenset({"y", "x"})) == a and shared(a) is not a  # the first equal set seen is kept
    b, c = frozenset({"b"}), frozenset({"c"})
    assert shared(b) is b and shared(c) is c
    assert shared(frozenset({"x", "y"})) is not a

    # A proxy whose large subscription changes again and again: the table never holds more than its budget.
    for i in range(200):
        shared(frozenset(f"cluster-{i}-{j}" for j in range(4)))
    assert shared._names <= 40 and sum(map(len, shared._sets)) == shared._names
    assert shared(b) is b  # {b} was let go long ago: a new equal set is kept as given
    big = frozenset(str(i) for i in range(5))  # over a tenth of the budget: never kept
    assert shared(big) is big and big not in shared._sets


def test_a_proxyless_grpc_client_gets_named_api_listeners_and_routes_before_clusters() -> None:
    """Issue 34: gRPC asks LDS for the target it dials and asks CDS only once it has the routes; an Envoy's
    make-before-break hold (routes wait for their clusters) would deadlock it."""
    from envoy.config.listener.v3.listener_pb2 import Listener
    from envoy.config.route.v3.route_pb2 import RouteConfiguration

    from meshctl.xds.envoy.types import LISTENER, ROUTE

    routes = CachedResource(ROUTE, "outbound", RouteConfiguration(name="outbound"), [(CLUSTER, "a")])
    snap = Snapshot("g", {CLUSTER: snapshot("a").resources[CLUSTER], ROUTE: {"outbound": routes}})
    stream = StreamState("n", "g")
    stream.proxyless = True
    stream.on_request(DiscoveryRequest(type_url=LISTENER, resource_names=["echo.demo:50051"]))
    [(_, raw)] = stream.next_responses(snap)
    [listener] = DiscoveryResponse.FromString(raw).resources
    assert Listener.FromString(listener.value).name == "echo.demo:50051"
    assert Listener.FromString(listener.value).api_listener.HasField("api_listener")
    ack(stream, LISTENER, ["echo.demo:50051"])
    stream.on_request(DiscoveryRequest(type_url=ROUTE, resource_names=["outbound"]))
    assert [t for t, _ in stream.next_responses(snap)] == [ROUTE]  # no cluster ACKed yet, and none asked for


def test_a_proxyless_grpc_client_gets_each_cluster_it_names_when_it_names_it() -> None:
    """gRPC asks CDS by name and ignores resources it did not ask for. Treated as wildcard, a cluster present since
    the first response was never sent again when a route change made the client ask for it: the route's share
    to that cluster failed at its deadline (found by the interop suite's traffic_splitting)."""
    snap = snapshot("a", "b")
    stream = StreamState("n", "g")
    stream.proxyless = True
    stream.on_request(DiscoveryRequest(type_url=CLUSTER, resource_names=["a"]))
    [(_, raw)] = stream.next_responses(snap)
    assert names_in(raw) == ["a"]
    ack(stream, CLUSTER, ["a"])
    assert stream.next_responses(snap) == []
    ack(stream, CLUSTER, ["a", "b"])  # the new route splits a/b: it names b, in the same snapshot
    [(_, raw)] = stream.next_responses(snap)
    assert names_in(raw) == ["a", "b"]  # state of the world: every named cluster, in each response
