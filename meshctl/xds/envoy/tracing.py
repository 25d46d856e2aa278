"""TracingIR -> the HTTP connection manager's tracing provider (Zipkin, OpenTelemetry over HTTP, X-Ray)."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, http_service_pb2, http_uri_pb2
from envoy.config.trace.v3 import opentelemetry_pb2, xray_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshctl.translate.ir import TracingIR
from meshctl.xds.envoy.common import any_of, duration_ms

__all__ = ["build_tracing"]


def build_tracing(ir: TracingIR) -> hcm_pb2.HttpConnectionManager.Tracing:
    tc = ir.config
    tracing = hcm_pb2.HttpConnectionManager.Tracing()
    tracing.random_sampling.value = tc.sampling_percent
    provider = tracing.provider
    if tc.provider == "zipkin":
        provider.name = "envoy.tracers.zipkin"
        provider.typed_config.CopyFrom(
            any_of(
                zipkin_pb2.ZipkinConfig(
                    collector_cluster=ir.collector_cluster,
                    collector_endpoint=tc.path,
                    collector_endpoint_version=zipkin_pb2.ZipkinConfig.HTTP_JSON,
                    collector_hostname=tc.host,
                )
            )
        )
    elif tc.provider == "opentelemetry":
        provider.name = "envoy.tracers.opentelemetry"
        uri = http_uri_pb2.HttpUri(
            uri=f"http://{tc.host}:{tc.port}{tc.path}", cluster=ir.collector_cluster, timeout=duration_ms(1000)
        )
        provider.typed_config.CopyFrom(
            any_of(
                opentelemetry_pb2.OpenTelemetryConfig(
                    http_service=http_service_pb2.HttpService(http_uri=uri), service_name=ir.service_name
                )
            )
        )
    else:  # xray: segments go straight to the daemon over UDP
        provider.name = "envoy.tracers.xray"
        daemon = address_pb2.SocketAddress(protocol=address_pb2.SocketAddress.UDP, address=tc.host, port_value=tc.port)
        provider.typed_config.CopyFrom(
            any_of(xray_pb2.XRayConfig(daemon_endpoint=daemon, segment_name=ir.service_name.replace("/", ".")))
        )
    return tracing
