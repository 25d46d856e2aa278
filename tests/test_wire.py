"""The hand-spliced DiscoveryResponse bytes parse to exactly what protobuf itself would encode."""

from __future__ import annotations

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryResponse
from google.protobuf import any_pb2

from meshctl.xds.cache.wire import encode_any, encode_discovery_response
from meshctl.xds.envoy.types import CLUSTER


def test_spliced_response_equals_protobuf_encoding() -> None:
    clusters = [Cluster(name=f"c{i}" * (i * 40 + 1)) for i in range(5)]  # names long enough for 2-byte varints
    spliced = encode_discovery_response(
        "v1", CLUSTER, "7", [encode_any(CLUSTER, c.SerializeToString(deterministic=True)) for c in clusters]
    )
    expected = DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="7")
    for c in clusters:
        packed = any_pb2.Any()
        packed.Pack(c)
        expected.resources.append(packed)
    assert DiscoveryResponse.FromString(spliced) == expected
    assert spliced == expected.SerializeToString(deterministic=True)


def test_a_response_over_a_mebibyte_is_assembled_the_same() -> None:
    """Large responses are copied without releasing the GIL (wire._concat); the bytes must not differ."""
    clusters = [Cluster(name=f"cluster-{i}-" + "x" * 300) for i in range(5000)]  # ~1.6 MiB
    spliced = encode_discovery_response(
        "v9", CLUSTER, "3", [encode_any(CLUSTER, c.SerializeToString(deterministic=True)) for c in clusters]
    )
    assert len(spliced) > 1 << 20
    expected = DiscoveryResponse(version_info="v9", type_url=CLUSTER, nonce="3")
    for c in clusters:
        expected.resources.add().Pack(c)
    assert spliced == expected.SerializeToString(deterministic=True)


def test_empty_response() -> None:
    resp = DiscoveryResponse.FromString(encode_discovery_response("", CLUSTER, "1", []))
    assert (resp.version_info, resp.type_url, resp.nonce, len(resp.resources)) == ("", CLUSTER, "1", 0)


def test_spliced_route_configuration_is_byte_identical() -> None:
    from meshctl.model import HttpMatch
    from meshctl.translate.ir import RouteIR, VirtualHostIR, WeightedClusterIR
    from meshctl.xds.cache.wire import encode_route_configuration
    from meshctl.xds.envoy.route import build_route_configuration, build_virtual_host

    hosts = tuple(
        VirtualHostIR(
            name=f"ns/svc-{i}",
            domains=(f"svc-{i}.ns", f"svc-{i}.ns:80"),
            routes=(
                RouteIR(
                    name=f"ns/r{i}", match=HttpMatch(prefix="/"), clusters=(WeightedClusterIR(cluster="c", weight=1),)
                ),
            ),
        )
        for i in range(40)
    )
    spliced = encode_route_configuration(
        "outbound", [build_virtual_host(h).SerializeToString(deterministic=True) for h in hosts]
    )
    assert spliced == build_route_configuration("outbound", hosts).SerializeToString(deterministic=True)
