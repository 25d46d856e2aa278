"""VirtualHost bytes written directly: a full build encodes 10,000 of them at 10,000 services, and a protobuf
message built in Python costs ~10x its serialization (docs/benchmarks.md).

Only the per-Route parts (names, clusters, weights) are written here; the match and the action's timeouts and
retries are built by ``envoy/route.py`` once per distinct value and their bytes reused, so the meaning stays in one
place. Protobuf writes fields in number order, which is what makes the splicing exact: ``tests/test_resource_wire.py``
holds the result to ``build_virtual_host``'s bytes for generated hosts.
"""

from __future__ import annotations

from functools import lru_cache

from meshctl.model import HttpMatch, RetryPolicy
from meshctl.translate.ir import INVALID_BACKEND, RouteIR, VirtualHostIR
from meshctl.xds.cache.wire import length_delimited, varint
from meshctl.xds.envoy.route import build_action_policies, build_match, build_routes, envoy_matches

__all__ = ["encode_routes", "encode_virtual_host"]

# VirtualHost: name = 1, domains = 2, routes = 3. Route: match = 1, route = 2, name = 14. RouteAction: cluster = 1,
# weighted_clusters = 3 {clusters = 1 ClusterWeight{name = 1, weight = 2 UInt32Value{value = 1}}}, then the
# policies (timeout = 8, retry_policy = 9, idle_timeout = 24, max_stream_duration = 36).
_NAME, _DOMAINS, _ROUTES = b"\x0a", b"\x12", b"\x1a"
_MATCH, _ACTION, _ROUTE_NAME = b"\x0a", b"\x12", b"\x72"
_CLUSTER, _WEIGHTED, _WEIGHTED_CLUSTER, _WEIGHT_NAME, _WEIGHT = b"\x0a", b"\x1a", b"\x0a", b"\x0a", b"\x12"


@lru_cache(maxsize=1024)
def _match_bytes(match: HttpMatch) -> bytes:
    return bytes(build_match(match).SerializeToString(deterministic=True))


@lru_cache(maxsize=1024)
def _policies_bytes(
    timeout_ms: int | None, idle_timeout_ms: int | None, retry: RetryPolicy | None, grpc: bool, default_retries: bool
) -> bytes:
    policies = build_action_policies(timeout_ms, idle_timeout_ms, retry, grpc, default_retries)
    return bytes(policies.SerializeToString(deterministic=True))


def _plain(ir: RouteIR) -> bool:
    """Only what this module writes: clusters and weights, a match, timeouts and retries (no Gateway API filter)."""
    return (
        ir.request_headers is None
        and ir.response_headers is None
        and ir.redirect is None
        and ir.rewrite is None
        and not ir.mirrors
        and ir.direct_status is None
        and all(wc.request_headers is None and wc.response_headers is None for wc in ir.clusters)
        and all(wc.cluster != INVALID_BACKEND for wc in ir.clusters)
    )


def encode_routes(ir: RouteIR, *, default_retries: bool = True) -> list[bytes]:
    """``envoy/route.py``'s ``build_routes(ir)`` serialized (by it, for a route with Gateway API filters)."""
    if not _plain(ir):
        return [
            bytes(r.SerializeToString(deterministic=True)) for r in build_routes(ir, default_retries=default_retries)
        ]
    if len(ir.clusters) == 1:
        destination = length_delimited(_CLUSTER, ir.clusters[0].cluster.encode())
    else:
        weights = b"".join(
            length_delimited(
                _WEIGHTED_CLUSTER,
                length_delimited(_WEIGHT_NAME, wc.cluster.encode())
                + length_delimited(_WEIGHT, b"\x08" + varint(wc.weight) if wc.weight else b""),
            )
            for wc in ir.clusters
        )
        destination = length_delimited(_WEIGHTED, weights) if ir.clusters else b""
    action = destination + _policies_bytes(
        ir.timeout_ms, ir.idle_timeout_ms, ir.retry_policy, ir.match.grpc, default_retries
    )
    tail = (length_delimited(_ACTION, action) if action else b"") + length_delimited(_ROUTE_NAME, ir.name.encode())
    return [length_delimited(_MATCH, _match_bytes(m)) + tail for m in envoy_matches(ir.match)]


def encode_virtual_host(vh: VirtualHostIR, *, default_retries: bool = True) -> bytes:
    """``envoy/route.py``'s ``build_virtual_host(vh)`` serialized."""
    parts = [length_delimited(_NAME, vh.name.encode())]
    parts.extend(length_delimited(_DOMAINS, domain.encode()) for domain in vh.domains)
    parts.extend(
        length_delimited(_ROUTES, one) for r in vh.routes for one in encode_routes(r, default_retries=default_retries)
    )
    return b"".join(parts)
