"""Sidecar listener ports never collide (issue 9, port collision), and what cannot be placed is reported."""

from __future__ import annotations

import json

from google.protobuf.json_format import MessageToDict

from meshctl.model import ObjectKey
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.envoy.types import LISTENER, SHORT_NAMES
from tests.envoy_validate import envoy_validate, inline_group
from tests.manifests import API, service, virtual_node, write

NODE = ObjectKey("VirtualNode", "demo", "app")


def _mesh(tmp_path, listener_ports: list[int], tcp_backend_port: int | None = None):
    docs = [
        virtual_node(
            "app",
            listeners=[{"portMapping": {"port": p, "protocol": "http"}} for p in listener_ports],
            backends=["db"] if tcp_backend_port else (),
        )
    ]
    if tcp_backend_port:
        docs += [
            service("db", port=tcp_backend_port),
            virtual_node("db-v1", listeners=[{"portMapping": {"port": 5432, "protocol": "tcp"}}]),
            {
                "apiVersion": API,
                "kind": "Route",
                "metadata": {"name": "db", "namespace": "demo"},
                "spec": {
                    "serviceRef": {"name": "db"},
                    "tcpRoute": {"action": {"weightedTargets": [{"virtualNodeRef": {"name": "db-v1"}, "weight": 1}]}},
                },
            },
        ]
    write(tmp_path / "mesh.yaml", *docs)
    return translate_mesh(load_manifests(tmp_path))


def _listener_ports(mesh, params: SidecarParams) -> dict[str, int]:
    ir = translate_sidecar(mesh, params)
    return {li.name: li.port for li in [ir.outbound, *ir.inbound, *ir.tcp_outbound] if li is not None}


def _envoy_accepts(mesh, params: SidecarParams) -> tuple[bool, str]:
    snap = SnapshotBuilder().build(translate_sidecar(mesh, params))
    group = {
        SHORT_NAMES[t]: [
            json.loads(json.dumps(MessageToDict(r.message, preserving_proto_field_name=True))) for r in res.values()
        ]
        for t, res in snap.resources.items()
    }
    return envoy_validate(inline_group(group))


def test_a_second_listener_does_not_take_the_egress_port(tmp_path) -> None:
    mesh = _mesh(tmp_path, [8080, 8081, 8082])
    params = SidecarParams(virtual_node=NODE)
    assert _listener_ports(mesh, params) == {
        "outbound": 15001,
        "inbound|8080": 15000,
        "inbound|8081": 15002,  # 15001 is the egress port
        "inbound|8082": 15003,
    }
    assert _envoy_accepts(mesh, params)[0]


def test_inbound_ports_skip_the_apps_own_ports(tmp_path) -> None:
    mesh = _mesh(tmp_path, [15002, 15000])
    ports = _listener_ports(mesh, SidecarParams(virtual_node=NODE))
    assert ports["inbound|15002"] == 15003 and ports["inbound|15000"] == 15004
    assert mesh.status_by_key[NODE].healthy


def test_custom_ports_from_the_proxy_are_respected(tmp_path) -> None:
    mesh = _mesh(tmp_path, [8080, 8081])
    params = SidecarParams(virtual_node=NODE, egress_port=20001, ingress_port=20000)
    assert _listener_ports(mesh, params) == {"outbound": 20001, "inbound|8080": 20000, "inbound|8081": 20002}


def test_a_tcp_backend_on_a_sidecar_port_is_left_out_and_reported(tmp_path) -> None:
    mesh = _mesh(tmp_path, [8080, 8081], tcp_backend_port=15002)
    params = SidecarParams(virtual_node=NODE)
    ports = _listener_ports(mesh, params)
    assert not any(name.startswith("outbound|tcp|") for name in ports), ports
    status = mesh.status_by_key[NODE]
    condition = next(c for c in status.conditions if c.type == "PortsAllocated")
    assert condition.status.value == "False" and condition.reason == "PortConflict"
    assert "backend TCP port 15002 is an inbound listener: its outbound listener is left out" in condition.message
    assert _envoy_accepts(mesh, params)[0]
    # On a free port the TCP listener is there and the node is healthy.
    free = _mesh(tmp_path, [8080, 8081], tcp_backend_port=5432)
    assert _listener_ports(free, params)["outbound|tcp|demo/db|5432"] == 5432
    assert free.status_by_key[NODE].healthy


def test_snapshot_listeners_never_share_a_port(tmp_path) -> None:
    mesh = _mesh(tmp_path, [8080, 8081, 15001], tcp_backend_port=15000)
    snap = SnapshotBuilder().build(translate_sidecar(mesh, SidecarParams(virtual_node=NODE)))
    ports = [r.message.address.socket_address.port_value for r in snap.resources[LISTENER].values()]
    assert len(ports) == len(set(ports)), ports
