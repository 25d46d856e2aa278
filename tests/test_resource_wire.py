"""Resources a full build writes without protobuf objects (cache/wire.py, cache/route_wire.py, the EDS cluster
template in cache/builder.py) are byte for byte what protobuf writes for the same IR: versions are content hashes,
so one differing byte would be a spurious update to every proxy, and Envoy would read a different config."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.model import (
    ConnectionPool,
    HeaderMatch,
    HealthCheck,
    HttpMatch,
    ObjectKey,
    OutlierDetection,
    Protocol,
    QueryParameterMatch,
    RetryPolicy,
    StringMatch,
)
from meshctl.translate.ir import (
    ClusterIR,
    EndpointIR,
    RouteIR,
    SidecarIR,
    SidecarParams,
    VirtualHostIR,
    WeightedClusterIR,
)
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.cache.route_wire import encode_virtual_host
from meshctl.xds.cache.wire import encode_load_assignment, with_name
from meshctl.xds.envoy.cluster import build_cluster, build_load_assignment
from meshctl.xds.envoy.route import RETRY_ON, build_virtual_host
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT

# Strings long enough, now and then, for two-byte lengths (>= 128), which the encoders handle apart.
names = st.one_of(st.text(min_size=1, max_size=12), st.text(min_size=120, max_size=300))
ms = st.integers(min_value=0, max_value=10**7)
maybe_ms = st.none() | ms
u32 = st.integers(min_value=0, max_value=2**32 - 1)

endpoints = st.builds(
    EndpointIR,
    address=st.one_of(st.ip_addresses().map(str), names),  # FQDN slices carry host names
    port=st.integers(min_value=1, max_value=65535),
    healthy=st.booleans(),
    zone=st.sampled_from(["", "a", "eu-west-1b", "z" * 200]),
)


@settings(max_examples=300, deadline=None)
@given(cluster=names, eps=st.lists(endpoints, max_size=8), hc_port=st.none() | st.integers(0, 65535))
def test_load_assignment_is_what_protobuf_writes(cluster: str, eps: list[EndpointIR], hc_port: int | None) -> None:
    expected = build_load_assignment(cluster, eps, hc_port).SerializeToString(deterministic=True)
    assert encode_load_assignment(cluster, eps, hc_port) == expected


string_matches = st.one_of(
    st.builds(StringMatch, exact=names),
    st.builds(StringMatch, prefix=names),
    st.builds(StringMatch, suffix=names),
    st.builds(StringMatch, regex=st.sampled_from(["^a.*", "[0-9]+"])),
    st.builds(StringMatch, range_start=st.integers(-5, 5), range_end=st.integers(6, 100)),
)
matches = st.builds(
    HttpMatch,
    prefix=st.none() | st.sampled_from(["/", "/api"]),
    path_exact=st.none() | st.just("/exact"),
    path_regex=st.none() | st.just("/v[0-9]+/.*"),
    method=st.none() | st.sampled_from(["GET", "POST"]),
    headers=st.lists(
        st.builds(HeaderMatch, name=names, match=st.none() | string_matches, invert=st.booleans()), max_size=2
    ).map(tuple),
    query_parameters=st.lists(st.builds(QueryParameterMatch, name=names, exact=st.none() | names), max_size=2).map(
        tuple
    ),
    grpc=st.booleans(),
)
retries = st.builds(
    RetryPolicy,
    http_retry_events=st.lists(st.sampled_from(sorted(RETRY_ON)), max_size=2, unique=True).map(tuple),
    tcp_retry_events=st.just(()) | st.just(("connection-error",)),
    grpc_retry_events=st.just(()) | st.just(("unavailable", "cancelled")),
    max_retries=st.integers(0, 10),
    per_retry_timeout_ms=maybe_ms,
    backoff_base_ms=maybe_ms,
    backoff_max_ms=maybe_ms,
)
routes = st.builds(
    RouteIR,
    name=names,
    match=matches,
    clusters=st.lists(st.builds(WeightedClusterIR, cluster=names, weight=st.integers(0, 100)), max_size=3).map(tuple),
    retry_policy=st.none() | retries,
    timeout_ms=maybe_ms,
    idle_timeout_ms=maybe_ms,
)
hosts = st.builds(
    VirtualHostIR,
    name=names,
    domains=st.lists(names, max_size=3).map(tuple),
    routes=st.lists(routes, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(vh=hosts, default_retries=st.booleans())
def test_virtual_host_is_what_protobuf_writes(vh: VirtualHostIR, default_retries: bool) -> None:
    expected = build_virtual_host(vh, default_retries=default_retries).SerializeToString(deterministic=True)
    assert encode_virtual_host(vh, default_retries=default_retries) == expected


pools = st.builds(
    ConnectionPool,
    max_connections=st.none() | u32,
    max_pending_requests=st.none() | u32,
    max_requests=st.none() | u32,
    max_retries=st.none() | u32,
    retry_budget_percent=st.none() | st.integers(0, 100),
    retry_budget_min_concurrency=st.none() | u32,
    connect_timeout_ms=st.none() | st.integers(1, 10**6),
)
outliers = st.builds(
    OutlierDetection,
    max_server_errors=st.integers(1, 100),
    interval_ms=st.integers(1, 10**6),
    base_ejection_duration_ms=st.integers(1, 10**6),
    max_ejection_percent=st.integers(0, 100),
)
health_checks = st.builds(
    HealthCheck,
    protocol=st.sampled_from(list(Protocol)),
    path=st.none() | st.just("/health"),
    port=st.none() | st.integers(1, 65535),
    interval_ms=st.integers(1, 10**6),
    timeout_ms=st.integers(1, 10**6),
    healthy_threshold=st.integers(1, 10),
    unhealthy_threshold=st.integers(1, 10),
)
eds_clusters = st.builds(
    ClusterIR,
    name=names,
    protocol=st.sampled_from(list(Protocol)),
    connection_pool=st.none() | pools,
    outlier_detection=st.none() | outliers,
    health_check=st.none() | health_checks,
)


@settings(max_examples=200, deadline=None)
@given(cluster=eds_clusters)
def test_an_eds_cluster_is_its_name_then_its_settings(cluster: ClusterIR) -> None:
    expected = build_cluster(cluster).SerializeToString(deterministic=True)
    unnamed = build_cluster(replace(cluster, name="")).SerializeToString(deterministic=True)
    assert with_name(cluster.name, unnamed) == expected


def test_the_builder_serves_protobufs_bytes_for_eds_clusters_and_endpoints() -> None:
    """Clusters of equal settings share one template; each still parses to its own full message."""
    pool = ConnectionPool(max_connections=10)
    clusters = tuple(ClusterIR(name=f"ns/vn-{i}/8080", protocol=Protocol.HTTP, connection_pool=pool) for i in range(3))
    eps = {c.name: (EndpointIR(f"10.0.0.{i}", 8080, i % 2 == 0, "a"),) for i, c in enumerate(clusters)}
    ir = SidecarIR(
        params=SidecarParams(virtual_node=ObjectKey("VirtualNode", "ns", "caller")),
        outbound=None,
        inbound=(),
        route_config_name="",
        virtual_hosts=(),
        clusters=clusters,
        endpoints=eps,
    )
    snap = SnapshotBuilder().build(ir)
    for c in clusters:
        assert snap.resources[CLUSTER][c.name].message == build_cluster(c)
        assert snap.resources[ENDPOINT][c.name].message == build_load_assignment(c.name, eps[c.name])
