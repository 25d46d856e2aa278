"""ClusterIR -> Cluster; endpoints -> ClusterLoadAssignment."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.clusters.common.dns.v3 import dns_pb2
from envoy.extensions.clusters.dns.v3 import dns_cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2

from meshctl.model import ConnectionPool, Protocol
from meshctl.translate.ir import ClusterIR, DnsIR, EndpointIR
from meshctl.xds.envoy.common import ads_config_source, any_of, duration_ms, uint32
from meshctl.xds.envoy.tls import upstream_transport_socket

__all__ = ["CONNECT_TIMEOUT_MS", "HEALTHY_PANIC_PERCENT", "UNLIMITED", "build_cluster", "build_load_assignment"]

# Defaults we set on every cluster (docs/api.md, "Defaults"). Each replaces an Envoy default that surprises users:
# - 5 s to connect: Envoy's examples use 1 s, which is exactly Linux's first SYN retransmit, so one lost SYN fails
#   the request; 5 s covers two retransmits (1 s, 3 s).
CONNECT_TIMEOUT_MS = 5000
# - circuit breakers at the maximum unless the VirtualNode sets them: Envoy's own default allows only 3 concurrent
#   retries per cluster, so under load a Route's retry policy is silently not honoured (Istio does the same).
UNLIMITED = 2**32 - 1
# - the healthy panic threshold stays Envoy's 50 %, but is set explicitly so that it is visible and documented:
#   below 50 % healthy hosts Envoy balances over all hosts, healthy or not.
HEALTHY_PANIC_PERCENT = 50.0
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def build_cluster(ir: ClusterIR) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=ir.name, connect_timeout=duration_ms(CONNECT_TIMEOUT_MS))
    cluster.common_lb_config.healthy_panic_threshold.value = HEALTHY_PANIC_PERCENT
    if ir.blackhole:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.cluster_name = ir.name
    elif ir.static_endpoint is not None:
        cluster.type = cluster_pb2.Cluster.STATIC
        cluster.load_assignment.CopyFrom(build_load_assignment(ir.name, [ir.static_endpoint]))
    elif ir.original_dst:
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    elif ir.dns is not None:
        _dns_cluster(cluster, ir.dns)
    elif ir.dns_endpoint is not None:
        host, port = ir.dns_endpoint
        cluster.type = cluster_pb2.Cluster.STATIC if _is_ip(host) else cluster_pb2.Cluster.LOGICAL_DNS
        cluster.load_assignment.CopyFrom(build_load_assignment(ir.name, [EndpointIR(address=host, port=port)]))
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    if ir.tls is not None:
        cluster.transport_socket.CopyFrom(upstream_transport_socket(ir.tls))
    if ir.protocol in (Protocol.HTTP2, Protocol.GRPC):
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(any_of(options))
    pool = ir.connection_pool or ConnectionPool()
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    for field, value in (
        ("max_connections", pool.max_connections),
        ("max_pending_requests", pool.max_pending_requests),
        ("max_requests", pool.max_requests),
        ("max_retries", pool.max_retries),
    ):
        getattr(thresholds, field).CopyFrom(uint32(UNLIMITED if value is None else value))
    if pool.retry_budget_percent is not None:
        thresholds.retry_budget.budget_percent.value = pool.retry_budget_percent
        if pool.retry_budget_min_concurrency is not None:
            thresholds.retry_budget.min_retry_concurrency.value = pool.retry_budget_min_concurrency
    cluster.circuit_breakers.thresholds.append(thresholds)
    if pool.connect_timeout_ms is not None:
        cluster.connect_timeout.CopyFrom(duration_ms(pool.connect_timeout_ms))
    if (od := ir.outlier_detection) is not None:
        cluster.outlier_detection.CopyFrom(
            outlier_detection_pb2.OutlierDetection(
                consecutive_5xx=uint32(od.max_server_errors),
                interval=duration_ms(od.interval_ms),
                base_ejection_time=duration_ms(od.base_ejection_duration_ms),
                max_ejection_percent=uint32(od.max_ejection_percent),
                # Only what App Mesh's outlierDetection asks for: Envoy would also eject by success rate (on by
                # default, enforcing 100 %), which ejects hosts nobody configured a threshold for.
                enforcing_success_rate=uint32(0),
            )
        )
    if (hc := ir.health_check) is not None:
        check = health_check_pb2.HealthCheck(
            timeout=duration_ms(hc.timeout_ms),
            interval=duration_ms(hc.interval_ms),
            healthy_threshold=uint32(hc.healthy_threshold),
            unhealthy_threshold=uint32(hc.unhealthy_threshold),
        )
        if hc.protocol is Protocol.TCP:
            check.tcp_health_check.CopyFrom(health_check_pb2.HealthCheck.TcpHealthCheck())
        elif hc.protocol is Protocol.GRPC:
            check.grpc_health_check.CopyFrom(health_check_pb2.HealthCheck.GrpcHealthCheck())
        else:
            check.http_health_check.path = hc.path or "/"
            if hc.protocol is Protocol.HTTP2:
                check.http_health_check.codec_client_type = http_pb2.HTTP2
        cluster.health_checks.append(check)
    return cluster


# How often a DNS node is resolved again when its records give no TTL to follow, and after a failure.
DNS_REFRESH_MS = 5_000
DNS_FAILURE_REFRESH_MS = 1_000


def _dns_cluster(cluster: cluster_pb2.Cluster, dns: DnsIR) -> None:
    """Envoy's DNS cluster extension (the Cluster-level DNS fields are deprecated): every address a host, or one
    logical host (all addresses in one endpoint, Envoy connects to the first); refreshed at the records' TTL; on a
    failed lookup the last addresses stay."""
    config = dns_cluster_pb2.DnsCluster(
        respect_dns_ttl=True,
        dns_lookup_family=dns_pb2.DnsLookupFamily.Value(dns.lookup_family),
        all_addresses_in_single_endpoint=dns.logical,
    )
    config.dns_refresh_rate.CopyFrom(duration_ms(DNS_REFRESH_MS))
    config.dns_failure_refresh_rate.base_interval.CopyFrom(duration_ms(DNS_FAILURE_REFRESH_MS))
    config.dns_failure_refresh_rate.max_interval.CopyFrom(duration_ms(DNS_REFRESH_MS))
    cluster.cluster_type.name = "envoy.clusters.dns"
    cluster.cluster_type.typed_config.CopyFrom(any_of(config))
    cluster.load_assignment.CopyFrom(
        build_load_assignment(cluster.name, [EndpointIR(address=dns.hostname, port=dns.port)])
    )


def build_load_assignment(
    cluster: str, endpoints: Iterable[EndpointIR], health_check_port: int | None = None
) -> endpoint_pb2.ClusterLoadAssignment:
    by_zone: dict[str, list[EndpointIR]] = {}
    for ep in endpoints:
        by_zone.setdefault(ep.zone or "", []).append(ep)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    for zone in sorted(by_zone):
        group = cla.endpoints.add()
        group.locality.SetInParent()  # present even when empty: a proxyless gRPC client rejects a group without one
        if zone:
            group.locality.zone = zone
        # ... and drops one without a weight (gRFC A27); Envoy reads the weight only with locality weighted load
        # balancing, which meshctl does not turn on.
        group.load_balancing_weight.value = 1
        for ep in by_zone[zone]:
            lb = endpoint_components_pb2.LbEndpoint(
                health_status=health_check_pb2.HEALTHY if ep.healthy else health_check_pb2.UNHEALTHY
            )
            lb.endpoint.address.CopyFrom(
                address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ep.address, port_value=ep.port))
            )
            if health_check_port:
                lb.endpoint.health_check_config.port_value = health_check_port
            group.lb_endpoints.append(lb)
    return cla


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
