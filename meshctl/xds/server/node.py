"""Envoy node identity -> SidecarParams (which VirtualNode, which ports).

The VirtualNode comes from node metadata ``meshctl.virtual_node`` ("namespace/name") if set, else from
``node.cluster`` in the same form (what ``meshctl bootstrap`` writes). Ports come from metadata
``meshctl.egress_port`` / ``meshctl.ingress_port`` / ``meshctl.bind_address``, defaulting to App Mesh's
15001 / 15000 / 0.0.0.0. ``meshctl.capture: "true"`` says iptables sends the pod's traffic to those ports.
"""

from __future__ import annotations

import math
import re

from envoy.config.core.v3.base_pb2 import Node

from meshctl.model import ObjectKey
from meshctl.translate.ir import SidecarParams

__all__ = ["client_version", "is_proxyless", "sidecar_params", "stats_port"]

_DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _meta(node: Node, key: str) -> str | None:
    field = node.metadata.fields.get(key)
    if field is None:
        return None
    kind = field.WhichOneof("kind")
    if kind == "string_value":
        return str(field.string_value)
    if kind == "number_value":
        number = field.number_value
        return str(int(number)) if math.isfinite(number) and number == int(number) else None
    return None


def _port(node: Node, key: str) -> int | None:
    """A port from metadata; anything else a client sends (text, NaN, 10**20) reads as absent."""
    value = _meta(node, key)
    return int(value) if value and value.isdigit() and 0 < int(value) < 65536 else None


def is_proxyless(node: Node) -> bool:
    """A gRPC library's own XdsClient (grpc-core and the languages on it say ``gRPC C-core``, grpc-java
    ``gRPC Java``, grpc-go ``gRPC Go``): it asks LDS for the targets it dials and xDS in gRPC's order."""
    return str(node.user_agent_name).lower().startswith("grpc")


def client_version(node: Node) -> str:
    """What the client says it is, e.g. ``envoy 1.40.0`` or ``gRPC C-core 1.85.0`` (bounded: it is only shown)."""
    version = node.user_agent_version or ".".join(
        str(getattr(node.user_agent_build_version.version, f)) for f in ("major_number", "minor_number", "patch")
    )
    if version == "0.0.0":
        version = ""
    return f"{node.user_agent_name} {version}".strip()[:80]


def stats_port(node: Node) -> int | None:
    """The port serving the proxy's Prometheus stats (``meshctl.stats_port``), if it announces one."""
    return _port(node, "meshctl.stats_port")


def sidecar_params(node: Node) -> SidecarParams:
    """A sidecar's params; an edge gateway's proxy (metadata ``meshctl.gateway: namespace/name``) names its Gateway
    instead of a VirtualNode."""
    gateway_ref = _meta(node, "meshctl.gateway")
    if gateway_ref and gateway_ref.count("/") == 1 and all(_name(part) for part in gateway_ref.split("/")):
        ns, _, name = gateway_ref.partition("/")
        return SidecarParams(
            virtual_node=None,
            gateway=ObjectKey("Gateway", ns, name),
            bind_address=_meta(node, "meshctl.bind_address") or "0.0.0.0",
            service_account=_name(_meta(node, "meshctl.service_account")) or "default",
        )
    ref = _meta(node, "meshctl.virtual_node") or node.cluster
    vn = None
    if ref and "/" in ref:
        ns, _, name = ref.partition("/")
        vn = ObjectKey("VirtualNode", ns, name)
    defaults = SidecarParams(virtual_node=vn)
    egress, ingress = _port(node, "meshctl.egress_port"), _port(node, "meshctl.ingress_port")
    return SidecarParams(
        virtual_node=vn,
        egress_port=defaults.egress_port if egress is None else egress,
        ingress_port=defaults.ingress_port if ingress is None else ingress,
        bind_address=_meta(node, "meshctl.bind_address") or defaults.bind_address,
        capture=(_meta(node, "meshctl.capture") or "").lower() == "true",
        service_account=_name(_meta(node, "meshctl.service_account")) or defaults.service_account,
    )


def _name(value: str | None) -> str | None:
    """A Kubernetes name (DNS-1123 subdomain), or None: anything else a client sends reads as absent."""
    if value and len(value) <= 253 and _DNS1123.fullmatch(value):
        return value
    return None
