"""Protobuf wire encoding of DiscoveryResponse around pre-serialized resources.

A response is spliced from bytes each resource serialized once: protobuf allows a message to be
written field by field, so ``resources`` entries (field 2, each an ``Any``) are copied in as they are,
never re-encoded per stream. ``tests/test_wire.py`` checks the result parses to the same message.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshctl.translate.ir import EndpointIR

__all__ = [
    "encode_any",
    "encode_delta_discovery_response",
    "encode_delta_resource",
    "encode_discovery_response",
    "encode_discovery_response_pieces",
    "encode_load_assignment",
    "encode_route_configuration",
    "length_delimited",
    "resource_field_header",
    "varint",
    "with_name",
]

# Field tags: (field_number << 3) | wire type 2 (length-delimited).
_ANY_TYPE_URL, _ANY_VALUE = b"\x0a", b"\x12"
_RESP_VERSION, _RESP_RESOURCES, _RESP_TYPE_URL, _RESP_NONCE = b"\x0a", b"\x12", b"\x22", b"\x2a"
# envoy.service.discovery.v3.Resource: version = 1, resource = 2, name = 3.
_RES_VERSION, _RES_RESOURCE, _RES_NAME = b"\x0a", b"\x12", b"\x1a"
# DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4, nonce = 5, removed_resources = 6.
_DELTA_VERSION, _DELTA_RESOURCES, _DELTA_TYPE_URL, _DELTA_NONCE, _DELTA_REMOVED = (
    b"\x0a",
    b"\x12",
    b"\x22",
    b"\x2a",
    b"\x32",
)


_GIL_THRESHOLD = 1 << 20  # bytes.join releases the GIL to copy this much or more (CPython's stringlib/join.h)


def _concat(parts: list[bytes]) -> bytes:
    """``b"".join(parts)``, without letting go of the GIL on the serving loop. A join of 1 MiB or more releases
    the GIL for its copy; getting it back took up to 45 ms whenever other threads (the build) wanted it, while
    an 11 MiB gateway response is ~5 ms to copy holding it."""
    if sum(map(len, parts)) < _GIL_THRESHOLD:
        return b"".join(parts)
    out = bytearray()
    for part in parts:
        out += part
    return bytes(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


_SMALL_VARINTS = [bytes((i,)) for i in range(0x80)]


def varint(n: int) -> bytes:
    """A non-negative integer as protobuf writes it (a length, a uint32 or an enum value)."""
    return _SMALL_VARINTS[n] if n < 0x80 else _varint(n)


def length_delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or a message): its tag byte, length and payload."""
    n = len(payload)
    return tag + (_SMALL_VARINTS[n] if n < 0x80 else _varint(n)) + payload


def encode_any(type_url: str, value: bytes) -> bytes:
    """``google.protobuf.Any{type_url, value}`` serialized."""
    prefix = _ANY_PREFIXES.get(type_url)
    if prefix is None:
        prefix = _ANY_PREFIXES[type_url] = length_delimited(_ANY_TYPE_URL, type_url.encode())
    return prefix + length_delimited(_ANY_VALUE, value)


_ANY_PREFIXES: dict[str, bytes] = {}  # the type_url field of each type's Any (a handful of types)


def resource_field_header(any_length: int) -> bytes:
    """The tag and length that precede one ``Any`` of that length in ``DiscoveryResponse.resources``."""
    return _RESP_RESOURCES + varint(any_length)


def encode_discovery_response(version: str, type_url: str, nonce: str, any_resources: Iterable[bytes]) -> bytes:
    pieces: list[bytes] = []
    for r in any_resources:
        pieces += (resource_field_header(len(r)), r)
    return encode_discovery_response_pieces(version, type_url, nonce, pieces)


def encode_discovery_response_pieces(version: str, type_url: str, nonce: str, pieces: list[bytes]) -> bytes:
    """``pieces``: each resource's ``resource_field_header`` then its ``Any`` bytes. Resources' headers are
    cached (``CachedResource.field_header``), so a 20,000-resource response is one join: no per-resource
    encoding or copying on the serving loop."""
    head = length_delimited(_RESP_VERSION, version.encode())
    tail = length_delimited(_RESP_TYPE_URL, type_url.encode()) + length_delimited(_RESP_NONCE, nonce.encode())
    return _concat([head, *pieces, tail])


def encode_delta_resource(name: str, version: str, any_bytes: bytes) -> bytes:
    """``envoy.service.discovery.v3.Resource{name, version, resource}`` serialized."""
    return (
        length_delimited(_RES_VERSION, version.encode())
        + length_delimited(_RES_RESOURCE, any_bytes)
        + length_delimited(_RES_NAME, name.encode())
    )


def encode_delta_discovery_response(
    system_version: str, type_url: str, nonce: str, resources: Iterable[bytes], removed: Iterable[str]
) -> bytes:
    parts = [length_delimited(_DELTA_VERSION, system_version.encode())]
    parts.extend(length_delimited(_DELTA_RESOURCES, r) for r in resources)
    parts.append(length_delimited(_DELTA_TYPE_URL, type_url.encode()))
    parts.append(length_delimited(_DELTA_NONCE, nonce.encode()))
    parts.extend(length_delimited(_DELTA_REMOVED, name.encode()) for name in removed)
    return _concat(parts)


def encode_route_configuration(name: str, virtual_hosts: Iterable[bytes], *, ignore_port: bool = False) -> bytes:
    """``RouteConfiguration{name = 1, virtual_hosts = 2, ignore_port_in_host_matching = 14}`` from already
    serialized VirtualHosts: the bytes protobuf itself would write (fields in number order), without rebuilding
    unchanged hosts. ``ignore_port``: ``a.example.com:1234`` picks the host of ``a.example.com`` (and the backend
    still sees the port)."""
    encoded = length_delimited(b"\x0a", name.encode()) + b"".join(
        [length_delimited(b"\x12", vh) for vh in virtual_hosts]
    )
    return encoded + b"\x70\x01" if ignore_port else encoded


# --- Resources encoded without protobuf objects ------------------------------------------------------------------
# Building a protobuf message in Python costs ~10x serializing it (docs/benchmarks.md). The resources a full build makes
# by the tens of thousands are written here (and VirtualHosts in route_wire.py); tests/test_resource_wire.py holds
# each to the bytes protobuf writes.


# envoy.config.core.v3.HealthStatus in LbEndpoint.health_status (= 2, varint)
_HEALTHY, _UNHEALTHY = b"\x10\x01", b"\x10\x02"


@lru_cache(maxsize=4096)
def _lb_endpoint_frame(
    address_length: int, port: int, healthy: bool, health_check_port: int | None
) -> tuple[bytes, bytes]:
    """What goes before and after an endpoint's address in ``LocalityLbEndpoints.lb_endpoints`` (= 2): the same
    for every address of that length, so an endpoint costs two concatenations (100,000 at 10,000 services).
    LbEndpoint{endpoint = 1 Endpoint{address = 1 Address{socket_address = 1 SocketAddress{address = 2,
    port_value = 3}}, health_check_config = 2 {port_value = 1}}, health_status = 2}."""
    port_value = b"\x18" + varint(port)
    hc = length_delimited(b"\x12", b"\x08" + varint(health_check_port)) if health_check_port else b""
    health = _HEALTHY if healthy else _UNHEALTHY
    socket = 1 + len(varint(address_length)) + address_length + len(port_value)
    address = 1 + len(varint(socket)) + socket
    endpoint = 1 + len(varint(address)) + address + len(hc)
    lb = 1 + len(varint(endpoint)) + endpoint + len(health)
    head = b"".join(
        (
            b"\x12" + varint(lb),
            b"\x0a" + varint(endpoint),
            b"\x0a" + varint(address),
            b"\x0a" + varint(socket),
            b"\x12" + varint(address_length),
        )
    )
    return head, port_value + hc + health


_WEIGHT_ONE = b"\x1a\x02\x08\x01"


def encode_load_assignment(cluster: str, endpoints: Iterable[EndpointIR], health_check_port: int | None) -> bytes:
    """``ClusterLoadAssignment`` serialized as ``envoy/cluster.py``'s ``build_load_assignment`` builds it: one
    ``LocalityLbEndpoints`` per zone (sorted; an empty locality for endpoints without one; each of weight 1),
    endpoints in the given order."""
    by_zone: dict[str, list[bytes]] = {}
    no_zone: list[bytes] = []  # (the usual case: one list, without a dict lookup per endpoint)
    for ep in endpoints:
        address = ep.address.encode()
        head, tail = _lb_endpoint_frame(len(address), ep.port, ep.healthy, health_check_port)
        if ep.zone:
            by_zone.setdefault(ep.zone, []).append(head + address + tail)
        else:
            no_zone.append(head + address + tail)
    if no_zone:
        by_zone[""] = no_zone
    out = [length_delimited(b"\x0a", cluster.encode())]  # cluster_name = 1
    for zone in sorted(by_zone):
        # Locality{zone = 2}, present (empty) even without a zone: a proxyless gRPC client requires one (A27)
        locality = length_delimited(b"\x0a", length_delimited(b"\x12", zone.encode()) if zone else b"")
        # endpoints = 2 {locality = 1, lb_endpoints = 2, load_balancing_weight = 3 UInt32Value{value = 1}: 1}
        out.append(length_delimited(b"\x12", locality + b"".join(by_zone[zone]) + _WEIGHT_ONE))
    return b"".join(out)


def with_name(name: str, unnamed: bytes) -> bytes:
    """A message whose field 1 is its ``name`` (Cluster, Listener), from the same message serialized without it:
    protobuf writes fields in number order, so the name goes first and the rest is the very same bytes."""
    return length_delimited(b"\x0a", name.encode()) + unnamed
