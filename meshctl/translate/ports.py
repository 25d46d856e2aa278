"""Which port each sidecar listener binds: never two on one port, never the egress port or the app's own ports.

Pure; used by the sidecar translation (per proxy) and by the mesh translation, which reports what would not fit
with the default ports on the VirtualNode's status (condition PortsAllocated=False).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from meshctl.model import ObjectKey, Service, VirtualNodeSpec
from meshctl.translate.ir import RouteIR, SidecarParams

__all__ = ["BOOTSTRAP_PORTS", "PortPlan", "allocate_ports", "plan_ports", "tcp_backends"]

# The bootstrap's admin (9901) and Prometheus (15090) ports: Envoy binds them itself.
BOOTSTRAP_PORTS = frozenset({9901, 15090})


@dataclass(frozen=True, slots=True)
class PortPlan:
    inbound: tuple[int, ...]  # the port of each VirtualNode listener's inbound listener, in listener order
    tcp: frozenset[int]  # outbound TCP listener ports that are free to use
    conflicts: tuple[str, ...]  # what could not be placed, for the VirtualNode's status


def allocate_ports(params: SidecarParams, spec: VirtualNodeSpec, tcp_ports: list[int]) -> PortPlan:
    """See ``plan_ports``."""
    listener_ports = tuple(li.port for li in spec.listeners)
    return plan_ports(params.egress_port, params.ingress_port, listener_ports, tuple(tcp_ports))


@lru_cache(maxsize=1024)  # pure, and nodes alike ask alike: 20,000 nodes at 10,000 services, a handful of answers
def plan_ports(
    egress_port: int, ingress_port: int, listener_ports: tuple[int, ...], tcp_ports: tuple[int, ...]
) -> PortPlan:
    """Inbound listener i takes the i-th free port counting up from the ingress port, skipping the egress port,
    the ports the app itself listens on and the bootstrap's ports, so the node's own listeners are stable. Then
    each outbound TCP port must be free of all of those and the inbound ports; one that is not is left out.

    (Before issue 9 the second inbound listener took ingress+1, which is the default egress port: Envoy rejected
    the egress listener and the app could call nothing.)"""
    app_ports = set(listener_ports)
    taken = {egress_port} | app_ports | BOOTSTRAP_PORTS
    conflicts = []
    if egress_port in app_ports:
        conflicts.append(f"listener port {egress_port} is the sidecar's egress port")
    inbound = []
    candidate = ingress_port
    for _ in listener_ports:
        while candidate in taken:
            candidate += 1
        inbound.append(candidate)
        taken.add(candidate)
    tcp = set()
    for port in tcp_ports:
        if port in taken or port in tcp:
            what = (
                "an inbound listener"
                if port in inbound
                else "the egress port"
                if port == egress_port
                else ("a port the app listens on" if port in app_ports else "a port Envoy's bootstrap uses")
            )
            if port not in tcp:
                conflicts.append(f"backend TCP port {port} is {what}: its outbound listener is left out")
            continue
        tcp.add(port)
    if inbound and inbound[-1] > 65535:
        conflicts.append("no free port is left for every inbound listener")
    return PortPlan(tuple(inbound), frozenset(tcp), tuple(conflicts))


def tcp_backends(
    spec: VirtualNodeSpec,
    services: Mapping[ObjectKey, Service],
    routes_by_service: Mapping[ObjectKey, tuple[RouteIR, ...]],
) -> list[tuple[ObjectKey, int, RouteIR]]:
    """(Service, port, tcpRoute) of each backend reached over TCP, in backend order."""
    out: list[tuple[ObjectKey, int, RouteIR]] = []
    for backend in sorted(spec.backends, key=lambda b: (b.namespace, b.name)):
        svc_key = ObjectKey("Service", backend.namespace, backend.name)
        service = services.get(svc_key)
        tcp_routes = [r for r in routes_by_service.get(svc_key, ()) if r.tcp]
        if service is None or not tcp_routes:
            continue
        for port in sorted({p.port for p in service.ports if p.port}):
            # TCP cannot match: the first tcpRoute in order for the port (its match.port, or none) wins
            tcp_route = next((r for r in tcp_routes if r.match.port in (None, port)), None)
            if tcp_route is not None:
                out.append((svc_key, port, tcp_route))
    return out
