"""Outbound/inbound listener IR -> Listener (HTTP connection manager or TCP proxy)."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2

from meshctl.model import HttpMatch, Logging, Protocol, TlsMode
from meshctl.translate.ir import (
    EGRESS_DENIED_CLUSTER,
    PASSTHROUGH_CLUSTER,
    CapturedInboundIR,
    GatewayListenerIR,
    InboundListenerIR,
    OutboundListenerIR,
    OutboundTcpListenerIR,
    RouteIR,
    TracingIR,
    VirtualHostIR,
    WeightedClusterIR,
)
from meshctl.xds.envoy.common import ads_config_source, any_of, duration_ms
from meshctl.xds.envoy.rbac import http_rbac_filters, network_rbac_filters
from meshctl.xds.envoy.route import build_route_configuration
from meshctl.xds.envoy.tls import downstream_transport_socket, gateway_transport_socket
from meshctl.xds.envoy.tracing import build_tracing

__all__ = [
    "DEFAULT_ACCESS_LOG",
    "build_captured_inbound_listener",
    "build_gateway_listener",
    "build_inbound_listener",
    "build_outbound_listener",
    "build_outbound_tcp_listener",
]

_HCM = "envoy.filters.network.http_connection_manager"
_TCP_PROXY = "envoy.filters.network.tcp_proxy"
_NO_CALLER = "192.0.2.1"  # TEST-NET-1: the only "internal" address on inbound listeners, i.e. none


def build_outbound_listener(ir: OutboundListenerIR) -> listener_pb2.Listener:
    hcm = _hcm(stat_prefix="outbound", access_log=ir.access_log, tracing=ir.tracing)
    hcm.rds.config_source.CopyFrom(ads_config_source())
    hcm.rds.route_config_name = ir.route_config_name
    listener = _listener(ir.name, ir.address, ir.port, _HCM, any_of(hcm), bind=ir.bind_to_port)
    if ir.capture:
        # Redirected connections are handed to the listener of their original destination; what no listener
        # takes goes where it was going. Connections made to the egress port itself are still routed by Host
        # (the chain matching the egress port), and never passed through to themselves.
        listener.use_original_dst.value = True
        _restore_original_destination(listener)
        listener.filter_chains[0].filter_chain_match.destination_port.value = ir.port
        # DROP_ALL: to a cluster with no endpoint, closed at once without any connection out, counted as
        # tcp.egress_denied.downstream_cx_total; but TLS to AWS's APIs (SNI *.amazonaws.com) passes, as App Mesh
        # always let it (its SDKs call AWS directly), counted as tcp.egress_aws.*.
        if ir.drop_undeclared:
            # Only connections to port 443 are inspected: the others go on at once (to their own listener, or
            # refused), a server-first protocol included.
            inspector = listener.listener_filters.add(
                name="envoy.filters.listener.tls_inspector", typed_config=any_of(tls_inspector_pb2.TlsInspector())
            )
            inspector.filter_disabled.not_match.destination_port_range.start = 443
            inspector.filter_disabled.not_match.destination_port_range.end = 444
            aws = listener.filter_chains.add()
            aws.filter_chain_match.destination_port.value = 443
            aws.filter_chain_match.transport_protocol = "tls"
            aws.filter_chain_match.server_names.append("*.amazonaws.com")
            to_aws = tcp_proxy_pb2.TcpProxy(stat_prefix="egress_aws", cluster=PASSTHROUGH_CLUSTER)
            aws.filters.add(name=_TCP_PROXY, typed_config=any_of(to_aws))
        where = EGRESS_DENIED_CLUSTER if ir.drop_undeclared else PASSTHROUGH_CLUSTER
        passthrough = tcp_proxy_pb2.TcpProxy(stat_prefix=where, cluster=where)
        listener.default_filter_chain.filters.add(name=_TCP_PROXY, typed_config=any_of(passthrough))
    return listener


def build_gateway_listener(ir: GatewayListenerIR) -> listener_pb2.Listener:
    """An edge gateway's port, Host-routed over RDS (its RouteConfiguration ignores the Host's port when it picks a
    virtual host: ``a.example.com:1234`` is ``a.example.com``'s). Callers' x-envoy-* headers are not trusted (the
    gateway is the edge). Over HTTPS, a filter chain per certificate, chosen by SNI (no hostname: any)."""
    hcm = _hcm(stat_prefix=ir.name.replace("|", "_"), access_log=None, tracing=None)
    hcm.rds.config_source.CopyFrom(ads_config_source())
    hcm.rds.route_config_name = ir.route_config_name
    hcm.use_remote_address.value = True
    hcm.internal_address_config.cidr_ranges.add(address_prefix=_NO_CALLER).prefix_len.value = 32
    listener = _listener(ir.name, ir.address, ir.port, _HCM, any_of(hcm))
    if not ir.certificates:
        return listener
    _inspect_tls(listener)
    plain = listener.filter_chains.pop()
    for cert in ir.certificates:
        chain = listener.filter_chains.add()
        chain.CopyFrom(plain)
        chain.filter_chain_match.server_names.extend(cert.server_names)
        chain.transport_socket.CopyFrom(gateway_transport_socket(cert.secret))
    return listener


def build_captured_inbound_listener(ir: CapturedInboundIR) -> listener_pb2.Listener:
    """Every redirected app port arrives here: one chain per app port (by original destination port); a
    connection made to the ingress port itself takes the first."""
    listener = listener_pb2.Listener(
        name=ir.name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ir.address, port_value=ir.port)),
    )
    _restore_original_destination(listener)
    built = [build_inbound_listener(chain_ir) for chain_ir in ir.chains]
    if any(len(b.filter_chains) > 1 for b in built):  # a PERMISSIVE listener tells mTLS from plaintext
        _inspect_tls(listener)
    listener.default_filter_chain.CopyFrom(built[0].filter_chains[0])  # before it gets a match of its own
    for one, chain_ir in zip(built, ir.chains, strict=True):
        for chain in one.filter_chains:
            chain.filter_chain_match.destination_port.value = chain_ir.port
            listener.filter_chains.append(chain)
    return listener


def _inspect_tls(listener: listener_pb2.Listener) -> None:
    listener.listener_filters.add(
        name="envoy.filters.listener.tls_inspector", typed_config=any_of(tls_inspector_pb2.TlsInspector())
    )


def _with_tls(listener: listener_pb2.Listener, ir: InboundListenerIR, secured_filter: any_pb2.Any | None) -> None:
    """STRICT: the one chain takes only mTLS. PERMISSIVE: a TLS chain (mTLS) and a plaintext chain, told apart
    by the TLS inspector; unmeshed callers keep working on the same port while callers move to mTLS."""
    tls = ir.tls
    if tls is None:
        return
    plain = listener.filter_chains[0]
    secured = listener_components_pb2.FilterChain()
    secured.CopyFrom(plain)
    if secured_filter is not None:
        secured.filters[0].typed_config.CopyFrom(secured_filter)
    secured.transport_socket.CopyFrom(downstream_transport_socket(tls, http=ir.protocol is not Protocol.TCP))
    if tls.mode is TlsMode.PERMISSIVE:
        _inspect_tls(listener)
        secured.filter_chain_match.transport_protocol = "tls"
        plain.filter_chain_match.transport_protocol = "raw_buffer"
        listener.filter_chains.insert(0, secured)
    else:
        listener.filter_chains[0].CopyFrom(secured)


def _restore_original_destination(listener: listener_pb2.Listener) -> None:
    listener.listener_filters.add(
        name="envoy.filters.listener.original_dst", typed_config=any_of(original_dst_pb2.OriginalDst())
    )


def build_outbound_tcp_listener(ir: OutboundTcpListenerIR) -> listener_pb2.Listener:
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=ir.name.replace("|", "_").replace("/", "_"))
    targets = [wc for wc in ir.route.clusters if wc.weight > 0]  # Envoy's TCP weights start at 1
    if len(targets) == 1:
        proxy.cluster = targets[0].cluster
    else:
        for wc in targets:
            proxy.weighted_clusters.clusters.add(name=wc.cluster, weight=wc.weight)
    if ir.route.idle_timeout_ms is not None:
        proxy.idle_timeout.CopyFrom(duration_ms(ir.route.idle_timeout_ms))
    return _listener(ir.name, ir.address, ir.port, _TCP_PROXY, any_of(proxy), bind=ir.bind_to_port)


def build_inbound_listener(ir: InboundListenerIR) -> listener_pb2.Listener:
    stat_prefix = ir.name.replace("|", "_")
    if ir.protocol is Protocol.TCP:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=ir.cluster)
        if ir.idle_timeout_ms is not None:
            proxy.idle_timeout.CopyFrom(duration_ms(ir.idle_timeout_ms))
        if ir.access_log:
            proxy.access_log.append(_access_log(ir.access_log))
        listener = _listener(ir.name, ir.address, ir.port, _TCP_PROXY, any_of(proxy))
        if ir.authz is not None:  # before the proxy: a denied connection is closed
            filters = listener.filter_chains[0].filters
            for i, rbac in enumerate(network_rbac_filters(ir.authz, stat_prefix)):
                filters.insert(i, rbac)
        _with_tls(listener, ir, None)
        return listener
    hcm = _hcm(stat_prefix=stat_prefix, access_log=ir.access_log, tracing=ir.tracing)
    if ir.authz is not None:  # before the router: a denied request is answered 403 (gRPC: PERMISSION_DENIED)
        for i, rbac in enumerate(http_rbac_filters(ir.authz)):
            hcm.http_filters.insert(i, rbac)
    # Callers are never trusted to steer this Envoy: no caller counts as internal, so the x-envoy-* headers they
    # send (x-envoy-upstream-rq-timeout-ms, x-envoy-max-retries, x-envoy-retry-on, ...) are removed. Envoy reads an
    # *empty* internal_address_config as its legacy default (loopback and RFC 1918 are internal: measured, the
    # headers were honoured), so the list names one documentation address (RFC 5737) that no caller can have.
    hcm.use_remote_address.value = True
    hcm.internal_address_config.cidr_ranges.add(address_prefix=_NO_CALLER).prefix_len.value = 32
    local = RouteIR(
        name=ir.name,
        match=HttpMatch(prefix="/"),
        clusters=(WeightedClusterIR(cluster=ir.cluster, weight=100),),
        # No timeout of its own unless the listener sets one: the caller's Route timeout governs. (App Mesh's
        # trap: the callee's default 15 s cut every longer timeout a caller set.)
        timeout_ms=ir.timeout_ms if ir.timeout_ms is not None else 0,
        idle_timeout_ms=ir.idle_timeout_ms,
    )
    config = build_route_configuration(
        ir.name, [VirtualHostIR(name=ir.name, domains=("*",), routes=(local,))], default_retries=False
    )
    hcm.route_config.CopyFrom(config)
    listener = _listener(ir.name, ir.address, ir.port, _HCM, any_of(hcm))
    if ir.tls is not None:
        # Over mTLS the app learns who called: the caller's SPIFFE ID in x-forwarded-client-cert, set by this
        # proxy alone (a header the caller sent is replaced; plaintext callers' is removed).
        hcm.forward_client_cert_details = hcm_pb2.HttpConnectionManager.SANITIZE_SET
        hcm.set_current_client_cert_details.uri = True
        _with_tls(listener, ir, any_of(hcm))
    return listener


def build_api_listener(name: str, route_config_name: str) -> listener_pb2.Listener:
    """What a proxyless gRPC client asks LDS for (gRFC A27): a listener named after the target it dials
    (``xds:///name``), whose API listener is an HttpConnectionManager taking its routes over ADS; the router is the
    only (and last) HTTP filter, as gRPC requires."""
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.config_source.CopyFrom(ads_config_source())
    hcm.rds.route_config_name = route_config_name
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=any_of(router_pb2.Router()))
    listener = listener_pb2.Listener(name=name)
    listener.api_listener.api_listener.CopyFrom(any_of(hcm))
    return listener


def _hcm(*, stat_prefix: str, access_log: Logging | None, tracing: TracingIR | None) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=stat_prefix, codec_type=hcm_pb2.HttpConnectionManager.AUTO)
    # Paths are normalized before routing, so a prefix route cannot be side-stepped: RFC 3986 normalization
    # ("/a/../b", "%61"), "//" merged into "/", and "%2F" / "%5C" decoded into the slashes they stand for.
    hcm.normalize_path.value = True
    hcm.merge_slashes = True
    hcm.path_with_escaped_slashes_action = hcm_pb2.HttpConnectionManager.UNESCAPE_AND_FORWARD
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=any_of(router_pb2.Router()))
    if access_log:
        hcm.access_log.append(_access_log(access_log))
    if tracing:
        hcm.tracing.CopyFrom(build_tracing(tracing))
    return hcm


# The default line: what happened, which route and which upstream answered (docs/api.md explains each field).
DEFAULT_ACCESS_LOG = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(:AUTHORITY)%" "%REQ(X-REQUEST-ID)%" '
    "route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% upstream=%UPSTREAM_HOST%\n"
)


def _access_log(log: Logging) -> accesslog_pb2.AccessLog:
    config = file_pb2.FileAccessLog(path=log.access_log_path)
    if log.json_format:
        for key, command in log.json_format:
            config.log_format.json_format.fields[key].string_value = command
    else:
        config.log_format.text_format_source.inline_string = log.text_format or DEFAULT_ACCESS_LOG
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=any_of(config))


def _listener(
    name: str, address: str, port: int, filter_name: str, config: any_pb2.Any, *, bind: bool = True
) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
    )
    if not bind:
        listener.bind_to_port.value = False
    listener.filter_chains.append(
        listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name=filter_name, typed_config=config)]
        )
    )
    return listener
