"""An Envoy bootstrap for a sidecar that points at the control plane over ADS.

Envoy's documented xDS behaviour: node sent only on the first message, an HTTP/2 xDS cluster, V3 ADS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from meshctl.translate.ir import SDS_AGENT_CLUSTER

__all__ = ["DRAIN_ARGS", "BootstrapOptions", "render_bootstrap"]

# Envoy's command-line flags for every proxy meshctl runs or injects. A listener change (a new authorization
# policy, a TLS mode) applies to new connections; the old listener's open connections are drained. Envoy's default
# drain is gradual over 600 s, so a caller's pooled connection could keep the old rules for minutes. Immediate:
# each open connection is told to close at its next response (HTTP/1.1 "Connection: close", HTTP/2 GOAWAY), and
# closed after 10 s at the latest.
DRAIN_ARGS = ("--drain-strategy", "immediate", "--drain-time-s", "10")

XDS_CLUSTER = "meshctl-xds"


@dataclass(frozen=True, slots=True, kw_only=True)
class BootstrapOptions:
    node_id: str
    virtual_node: str | None = None  # "namespace/name"; defaults to the first two segments of node_id
    xds_address: str = "127.0.0.1"
    xds_port: int = 18000
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    egress_port: int | None = None
    ingress_port: int | None = None
    bind_address: str | None = None
    delta: bool = False  # incremental xDS (DELTA_GRPC) instead of state-of-the-world
    stats_port: int | None = 15090  # serves only /stats/prometheus and /ready (probes); None: off
    statsd_address: str | None = None  # "host:port": also push stats over UDP StatsD
    capture: bool = False  # iptables sends the pod's traffic to the egress/ingress ports (``meshctl capture``)
    # xDS over TLS: the CA (PEM, inlined) that signed the control plane's certificate, and the name it must carry
    # (default: xds_address). With a client certificate and key (file paths), mutual TLS.
    xds_ca_pem: str | None = None
    xds_server_name: str | None = None
    xds_client_cert: str | None = None
    xds_client_key: str | None = None
    service_account: str | None = None  # the workload identity's service account (Kubernetes: the pod's)
    # A file holding a token sent on the xDS stream (``authorization: Bearer``; in a pod its projected
    # ServiceAccount token, re-read for each new stream). Needs xDS over TLS (xds_ca_pem).
    xds_token_file: str | None = None
    # The node's SDS agent (SPIRE agent's Workload API socket): secrets named by ``sds`` certificate and trust
    # sources of listeners and client policies are fetched from it (App Mesh: APPMESH_SDS_SOCKET_PATH).
    sds_socket: str | None = None
    # DNS servers ("address:port") Envoy resolves DNS-discovered VirtualNodes with, instead of the host's
    # (/etc/resolv.conf): a VPC or corporate resolver, or a test's.
    dns_resolvers: tuple[str, ...] = ()
    # "namespace/name": the proxy is an edge gateway serving that Gateway (``meshctl bootstrap --gateway``), not a
    # VirtualNode's sidecar.
    gateway: str | None = None


def _dns_resolver(servers: tuple[str, ...]) -> dict[str, Any]:
    """c-ares (Envoy's default resolver) asking only these servers, names taken as given (no search domains)."""
    resolvers = []
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"DNS resolver {server!r}: expected address:port, e.g. 10.0.0.2:53")
        resolvers.append(_socket(host.strip("[]"), int(port)))
    return {
        "name": "envoy.network.dns_resolver.cares",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig",
            "resolvers": resolvers,
            "dns_resolver_options": {"no_default_search_domain": True},
        },
    }


def _virtual_node(opts: BootstrapOptions) -> str:
    if opts.virtual_node:
        return opts.virtual_node
    parts = opts.node_id.split("/")
    return "/".join(parts[:2]) if len(parts) >= 2 else f"default/{opts.node_id}"


def _socket(address: str, port: int, protocol: str | None = None) -> dict[str, Any]:
    socket: dict[str, Any] = {"address": address, "port_value": port}
    if protocol:
        socket["protocol"] = protocol
    return {"socket_address": socket}


def _stats_listener(opts: BootstrapOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """A listener that exposes only Envoy's Prometheus endpoint and /ready: the admin API stays on loopback."""
    admin = "meshctl-admin"
    cluster = {
        "name": admin,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": admin,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(opts.admin_address, opts.admin_port)}}]}],
        },
    }
    # Prometheus scrapes /stats/prometheus; kubelet probes /ready (200 once Envoy has its config and its workers run).
    routes = [{"match": {"path": path}, "route": {"cluster": admin}} for path in ("/stats/prometheus", "/ready")]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
        "HttpConnectionManager",
        "stat_prefix": "prometheus",
        "route_config": {"virtual_hosts": [{"name": "prometheus", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    listener = {
        "name": "prometheus",
        "address": _socket(opts.bind_address or "0.0.0.0", opts.stats_port or 0),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    return listener, cluster


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _xds_tls(opts: BootstrapOptions) -> dict[str, Any]:
    """Envoy verifies the control plane's certificate against the CA and the server name (an IP SAN when the
    name is an address: what a CA issues for one; no SNI then, which names hosts only); optionally presents its
    own certificate (mutual TLS)."""
    name = opts.xds_server_name or opts.xds_address
    ip = _is_ip(name)
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {
            "trusted_ca": {"inline_string": opts.xds_ca_pem},
            "match_typed_subject_alt_names": [
                {
                    "san_type": "IP_ADDRESS" if ip else "DNS",
                    "matcher": {"exact": str(ipaddress.ip_address(name)) if ip else name},
                }
            ],
        },
    }
    if opts.xds_client_cert and opts.xds_client_key:
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": opts.xds_client_cert}, "private_key": {"filename": opts.xds_client_key}}
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            **({} if ip else {"sni": name}),
            "common_tls_context": common,
        },
    }


def _token_grpc_service(opts: BootstrapOptions) -> dict[str, Any]:
    """ADS through Envoy's Google gRPC client, whose call credentials read the token file for each new stream
    (Envoy's own client sends only fixed metadata, and a projected token is rotated by the kubelet)."""
    name = opts.xds_server_name or opts.xds_address
    credentials: dict[str, Any] = {"root_certs": {"inline_string": opts.xds_ca_pem}}
    if opts.xds_client_cert and opts.xds_client_key:
        credentials["cert_chain"] = {"filename": opts.xds_client_cert}
        credentials["private_key"] = {"filename": opts.xds_client_key}
    return {
        "google_grpc": {
            "target_uri": f"{opts.xds_address}:{opts.xds_port}",
            "stat_prefix": XDS_CLUSTER,
            "channel_credentials": {"ssl_credentials": credentials},
            "channel_args": {
                "args": {
                    "grpc.ssl_target_name_override": {"string_value": name},
                    # The same liveness checks as Envoy's own client: a vanished control plane is noticed.
                    "grpc.keepalive_time_ms": {"int_value": 30000},
                    "grpc.keepalive_timeout_ms": {"int_value": 10000},
                    # Back within ~0.5 s of a restarted control plane, as with Envoy's client (restart test).
                    "grpc.initial_reconnect_backoff_ms": {"int_value": 100},
                    "grpc.max_reconnect_backoff_ms": {"int_value": 500},
                }
            },
            "credentials_factory_name": "envoy.grpc_credentials.file_based_metadata",
            "call_credentials": [
                {
                    "from_plugin": {
                        "name": "envoy.grpc_credentials.file_based_metadata",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                            "secret_data": {"filename": opts.xds_token_file},
                            "header_prefix": "Bearer ",
                        },
                    }
                }
            ],
        }
    }


def _sds_agent_cluster(path: str) -> dict[str, Any]:
    """A static HTTP/2 cluster to the SDS agent's Unix socket (static: SDS sources must exist before CDS)."""
    return {
        "name": SDS_AGENT_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_AGENT_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": path}}}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }


def render_grpc_bootstrap(opts: BootstrapOptions, *, ca_file: str | None = None) -> dict[str, Any]:
    """The bootstrap of a proxyless gRPC workload (``GRPC_XDS_BOOTSTRAP``, gRFC A27): gRPC's own XdsClient streams
    ADS from meshctl as the VirtualNode's sidecar would, and dials ``xds:///name.namespace:port``. With ``ca_file``
    (a path: gRPC reads certificates from files), xDS over TLS; with a client certificate and key, mutual TLS."""
    vn = _virtual_node(opts)
    creds: dict[str, Any] = {"type": "insecure"}
    if ca_file is not None:
        config = {"ca_certificate_file": ca_file}
        if opts.xds_client_cert and opts.xds_client_key:
            config |= {"certificate_file": opts.xds_client_cert, "private_key_file": opts.xds_client_key}
        creds = {"type": "tls", "config": config}
    metadata: dict[str, str] = {"meshctl.virtual_node": vn}
    if opts.service_account:
        metadata["meshctl.service_account"] = opts.service_account
    return {
        "xds_servers": [
            {
                "server_uri": f"{opts.xds_address}:{opts.xds_port}",
                "channel_creds": [creds],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": opts.node_id, "cluster": vn, "metadata": metadata, "locality": {}},
    }


def render_bootstrap(opts: BootstrapOptions) -> dict[str, Any]:
    vn = opts.gateway or _virtual_node(opts)
    metadata: dict[str, str] = {"meshctl.gateway": vn} if opts.gateway else {"meshctl.virtual_node": vn}
    for key, value in (
        ("meshctl.egress_port", opts.egress_port),
        ("meshctl.ingress_port", opts.ingress_port),
        ("meshctl.bind_address", opts.bind_address),
        ("meshctl.stats_port", opts.stats_port),  # where callers' metrics can be scraped (meshctl shift --steps)
        ("meshctl.capture", "true" if opts.capture else None),
        ("meshctl.service_account", opts.service_account),
    ):
        if value is not None:
            metadata[key] = str(value)
    ads = {"ads": {}, "resource_api_version": "V3"}
    bootstrap = {
        "node": {"id": opts.node_id, "cluster": vn, "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": opts.admin_address, "port_value": opts.admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if opts.delta else "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [
                    {
                        "envoy_grpc": {
                            "cluster_name": XDS_CLUSTER,
                            # Envoy waits a random time up to base * 2^attempt, capped at max, between attempts to
                            # reopen the ADS stream; its defaults (0.5 s, 30 s) left proxies 2-4 s behind a restarted
                            # control plane. Capped at 0.5 s, every proxy is back within ~0.5 s of it being ready.
                            "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}},
                        }
                    }
                ],
            },
            "cds_config": dict(ads),
            "lds_config": dict(ads),
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STRICT_DNS",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": opts.xds_address,
                                                    "port_value": opts.xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            # Envoy notices a control plane that vanished without closing the connection and
                            # reconnects (to another replica); pings every 30 s, within what the server accepts.
                            "explicit_http_config": {
                                "http2_protocol_options": {
                                    "connection_keepalive": {"interval": "30s", "timeout": "10s"}
                                }
                            },
                        }
                    },
                    "upstream_connection_options": {"tcp_keepalive": {}},
                }
            ]
        },
    }
    static: dict[str, Any] = bootstrap["static_resources"]  # type: ignore[assignment]
    if opts.xds_ca_pem:
        static["clusters"][0]["transport_socket"] = _xds_tls(opts)
    if opts.xds_token_file:
        if not opts.xds_ca_pem:
            raise ValueError("a token is sent only over TLS: give the control plane's CA too")
        ads_config: dict[str, Any] = bootstrap["dynamic_resources"]["ads_config"]  # type: ignore[index]
        ads_config["grpc_services"] = [_token_grpc_service(opts)]
    if opts.sds_socket:
        static["clusters"].append(_sds_agent_cluster(opts.sds_socket))
    if opts.dns_resolvers:
        bootstrap["typed_dns_resolver_config"] = _dns_resolver(opts.dns_resolvers)
    if opts.stats_port and opts.admin_port:
        listener, cluster = _stats_listener(opts)
        static["listeners"] = [listener]
        static["clusters"].append(cluster)
    if opts.statsd_address:
        host, _, port = opts.statsd_address.rpartition(":")
        bootstrap["stats_sinks"] = [
            {
                "name": "envoy.stat_sinks.statsd",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink",
                    "address": _socket(host or "127.0.0.1", int(port), "UDP"),
                },
            }
        ]
    return bootstrap
