"""What proxyless gRPC clients cannot honour is said on the Route or VirtualNode (ProxylessCompatible=False,
advice: the object stays healthy and served), and only where gRPC clients can call."""

from __future__ import annotations

from meshctl.model import ObjectKey
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh
from tests.e2e.test_grpc import grpc_route
from tests.manifests import route, service, virtual_node, workload, write


def statuses(tmp_path, *docs):
    write(tmp_path / "mesh.yaml", *docs)
    return {s.key: s for s in translate_mesh(load_manifests(tmp_path)).statuses}


def condition(status, kind="ProxylessCompatible"):
    return next((c for c in status.conditions if c.type == kind), None)


def test_fields_grpc_clients_skip_are_named_on_the_route_and_the_virtual_node(tmp_path) -> None:
    retry = {
        "grpcRetryEvents": ["unavailable"],
        "httpRetryEvents": ["server-error"],
        "maxRetries": 6,
        "perRetryTimeout": {"unit": "ms", "value": 500},
    }
    pool = {"grpc": {"maxRequests": 100, "maxConnections": 10}}
    outlier = {"maxServerErrors": 5, "interval": {"unit": "s", "value": 10},
               "baseEjectionDuration": {"unit": "s", "value": 30}, "maxEjectionPercent": 50}  # fmt: skip
    got = statuses(
        tmp_path,
        service("echo", port=50051),
        workload(
            "echo",
            "v1",
            9000,
            portMapping={"port": 9000, "protocol": "grpc"},
            connectionPool=pool,
            outlierDetection=outlier,
        ),
        workload("echo", "v2", 9001, portMapping={"port": 9001, "protocol": "grpc"}),
        grpc_route("echo-service", 10, {"serviceName": "demo.Echo"}, {"echo-v1": 100}, retryPolicy=retry),
        grpc_route("echo-plain", 20, {"serviceName": "demo.Plain"}, {"echo-v2": 100}),
    )
    note = condition(got[ObjectKey("Route", "demo", "echo-service")])
    assert note is not None and note.status == "False" and note.reason == "IgnoredByGRPCClients"
    for said in ("retryPolicy: gRPC retries only on gRPC status codes", "server-error", "perRetryTimeout",
                 "maxRetries: gRPC makes at most 5 attempts"):  # fmt: skip
        assert said in note.message, note.message
    node = condition(got[ObjectKey("VirtualNode", "demo", "echo-v1")])
    assert node is not None and "maxConnections" in node.message and "outlierDetection" in node.message
    assert "maxRequests," not in node.message  # honoured: not listed
    # Advice, not a fault: served and healthy; nothing said where there is nothing to say.
    assert got[ObjectKey("Route", "demo", "echo-service")].healthy
    assert condition(got[ObjectKey("Route", "demo", "echo-plain")]) is None
    assert condition(got[ObjectKey("VirtualNode", "demo", "echo-v2")]) is None


def test_nothing_is_said_where_grpc_clients_cannot_call(tmp_path) -> None:
    """An httpRoute to HTTP/1 listeners, and an HTTP listener's pool: no gRPC client takes them."""
    got = statuses(
        tmp_path,
        service("web"),
        workload("web", "v1", 8080, connectionPool={"http": {"maxConnections": 10}}),
        virtual_node("client", backends=["web"]),
        route(
            "web",
            "web",
            {"web-v1": 100},
            retryPolicy={
                "httpRetryEvents": ["server-error"],
                "maxRetries": 2,
                "perRetryTimeout": {"unit": "ms", "value": 500},
            },
        ),
    )
    assert all(condition(s) is None for s in got.values()), got
