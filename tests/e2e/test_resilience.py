"""Resilience features observed in a real Envoy: outlier ejection, active health checks, zero weights."""

from __future__ import annotations

import collections
import socket
import time

import pytest

from meshctl.xds.envoy.types import CLUSTER
from tests.conftest import Mesh, eventually
from tests.manifests import route, service, virtual_node, workload, write
from tests.stats import assert_split


def two_endpoint_workload(port: int, **listener) -> list[dict]:
    """reviews-v1 with two pods: 127.0.0.1:port and 127.0.0.2:port (same port, two loopback addresses)."""
    docs = workload("reviews", "v1", port, **listener)
    pod2 = {**docs[0], "metadata": {**docs[0]["metadata"], "name": "reviews-v1-1"}}
    docs[1]["endpoints"].append(
        {
            "addresses": ["127.0.0.2"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": "reviews-v1-1"},
        }
    )
    return [*docs, pod2]


def host_flags(m: Mesh, sidecar, cluster: str) -> dict[str, str]:
    """Envoy's /clusters view: address -> health_flags, for one cluster."""
    flags = {}
    for line in sidecar.envoy.admin_get("/clusters").splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[0] == cluster and parts[2] == "health_flags":
            flags[parts[1]] = parts[3]
    return flags


async def start(m: Mesh, port: int, **listener):
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        two_endpoint_workload(port, **listener),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    return sidecar


async def test_outlier_detection_ejects_a_failing_endpoint(mesh_factory):
    m: Mesh = await mesh_factory()
    _, port = await m.app("good")
    await m.app("bad", port=port, host="127.0.0.2", status=503)
    outlier = {
        "maxServerErrors": 3,
        "interval": {"unit": "s", "value": 1},
        "baseEjectionDuration": {"unit": "s", "value": 60},
        "maxEjectionPercent": 50,
    }
    sidecar = await start(m, port, outlierDetection=outlier)
    cluster = f"demo/reviews-v1/{port}"

    # Traffic until Envoy itself reports the ejection (bounded): ejection is asynchronous, so a few more requests
    # may reach the bad host after its third failure; Envoy's counters, not request counts, say what happened.
    stat = f"cluster.{cluster}.outlier_detection.ejections_enforced_consecutive_5xx"
    for _ in range(20):
        if sidecar.envoy.stats().get(stat, 0) >= 1:
            break
        await m.split(sidecar, "reviews", 10, concurrency=1)
    stats = sidecar.envoy.stats()
    flags = host_flags(m, sidecar, cluster)
    assert stats[stat] == 1 and stats[f"cluster.{cluster}.outlier_detection.ejections_active"] == 1, (
        stats[stat],
        flags,
    )
    assert flags[f"127.0.0.2:{port}"] == "/failed_outlier_check", flags
    assert flags[f"127.0.0.1:{port}"] == "healthy", flags
    bad_before = sum(m.apps["bad"].seen.values())
    assert await m.split(sidecar, "reviews", 100) == {"good": 100}
    assert sum(m.apps["bad"].seen.values()) == bad_before  # ejected: it gets nothing more


async def test_active_health_check_keeps_traffic_off_an_unhealthy_endpoint(mesh_factory):
    m: Mesh = await mesh_factory()
    _, port = await m.app("good")
    await m.app("sick", port=port, host="127.0.0.2", health_status=503)
    check = {
        "protocol": "http",
        "path": "/health",
        "intervalMillis": 5000,
        "timeoutMillis": 2000,
        "healthyThreshold": 2,
        "unhealthyThreshold": 2,
    }
    sidecar = await start(m, port, healthCheck=check)
    cluster = f"demo/reviews-v1/{port}"

    def checked() -> bool:
        flags = host_flags(m, sidecar, cluster)
        return flags.get(f"127.0.0.2:{port}") == "/failed_active_hc" and flags.get(f"127.0.0.1:{port}") == "healthy"

    await eventually(checked, timeout=15)
    assert await m.split(sidecar, "reviews", 100) == {"good": 100}
    assert m.apps["sick"].seen == collections.Counter()  # never received a request, only health checks


async def test_three_way_split_and_a_zero_weight_gets_nothing(mesh_factory):
    m: Mesh = await mesh_factory()
    ports = {v: (await m.app(v))[1] for v in ("v1", "v2", "v3")}
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        *(workload("reviews", v, p) for v, p in ports.items()),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2": 50, "reviews-v3": 0}),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    counts = await m.split(sidecar, "reviews", 1000)
    assert counts["v3"] == 0 and m.apps["v3"].seen == collections.Counter(), counts
    assert_split(counts, {"v1": 50, "v2": 50, "v3": 0})


async def test_retry_budget_bounds_retries(mesh_factory):
    m: Mesh = await mesh_factory()
    app, port = await m.app("v1")
    retry = {
        "httpRetryEvents": ["server-error"],
        "maxRetries": 2,
        "backoff": {"baseInterval": {"unit": "ms", "value": 10}, "maxInterval": {"unit": "ms", "value": 50}},
    }

    def mesh(budget_percent: int) -> None:
        pool = {"http": {"retryBudget": {"budgetPercent": budget_percent, "minRetryConcurrency": 0}}}
        write(
            m.dir / "mesh.yaml",
            service("reviews"),
            workload("reviews", "v1", port, connectionPool=pool),
            virtual_node("frontend", backends=["reviews"]),
            route("reviews", "reviews", {"reviews-v1": 100}, retryPolicy=retry),
        )

    mesh(budget_percent=0)
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")

    def overflow() -> int:
        stats = sidecar.envoy.admin_get("/stats?filter=upstream_rq_retry_overflow")
        return sum(int(line.rsplit(": ", 1)[1]) for line in stats.splitlines() if f"reviews-v1/{port}" in line)

    app.seen.clear()
    app.fail_first = 1
    assert (await m.get(sidecar, "reviews", "/no-budget"))[0] == 503  # a 0% budget allows no retry ...
    assert app.seen["/no-budget"] == 1 and overflow() == 1  # ... and Envoy counts the refused one

    (stream,) = m.plane.registry.streams()
    before = m.plane.cache.get(stream.group).version(CLUSTER)
    mesh(budget_percent=100)

    def new_clusters_acked() -> bool:
        snap = m.plane.cache.get(stream.group)
        return snap.version(CLUSTER) != before and stream.types[CLUSTER].acked_version == snap.version(CLUSTER)

    try:
        await eventually(new_clusters_acked)
    except AssertionError:
        raise AssertionError(
            f"{m.plane.registry.describe()} snapshot {m.plane.cache.get(stream.group).version(CLUSTER)} before {before}"
        ) from None
    app.seen.clear()
    app.fail_first = 1
    assert (await m.get(sidecar, "reviews", "/with-budget"))[:2] == (200, "v1")
    assert app.seen["/with-budget"] == 2


async def test_per_retry_timeout_retries_a_slow_attempt(mesh_factory):
    m: Mesh = await mesh_factory()
    app, port = await m.app("v1")
    retry = {"httpRetryEvents": ["server-error"], "maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 200}}
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", port),
        virtual_node("frontend", backends=["reviews"]),
        route(
            "reviews",
            "reviews",
            {"reviews-v1": 100},
            retryPolicy=retry,
            timeout={"perRequest": {"unit": "s", "value": 5}},
        ),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    app.seen.clear()
    app.delay, app.slow_first = 3.0, 1  # the first attempt hangs, the retry is fast
    started = time.monotonic()
    assert (await m.get(sidecar, "reviews", "/slow-once"))[:2] == (200, "v1")
    assert 0.15 <= time.monotonic() - started < 2.8  # the retry answered before the hung attempt would (3 s)
    assert app.seen["/slow-once"] == 2
    assert sidecar.envoy.stats()[f"cluster.demo/reviews-v1/{port}.upstream_rq_per_try_timeout"] == 1


async def test_connect_timeout_and_zone_metadata(mesh_factory):
    m: Mesh = await mesh_factory()
    # A listener that never accepts, with its accept queue full: new SYNs are dropped, connects hang.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)

    def connect_hangs() -> bool:
        """The precondition itself: a new connection attempt gets no answer (the queue is full)."""
        with socket.socket() as probe:
            probe.settimeout(0.2)
            try:
                probe.connect(("127.0.0.1", port))
            except TimeoutError:
                return True
            fillers.append(probe.dup())  # it got queued: keep it, it fills the queue too
            return False

    await eventually(connect_hangs, timeout=10)
    try:
        docs = workload(
            "reviews", "v1", port, connectionPool={"http": {"connectTimeout": {"unit": "ms", "value": 300}}}
        )
        docs[1]["endpoints"][0]["zone"] = "zone-a"
        write(
            m.dir / "mesh.yaml",
            service("reviews"),
            docs,
            virtual_node("frontend", backends=["reviews"]),
            # No retries: one request, one connect attempt (the default policy would retry the timeout).
            route("reviews", "reviews", {"reviews-v1": 100}, retryPolicy={"maxRetries": 0}),
        )
        await m.start()
        sidecar = await m.sidecar("demo/frontend")  # returns once Envoy's workers listen (its /ready)
        cluster = f"demo/reviews-v1/{port}"
        assert f"{cluster}::127.0.0.1:{port}::zone::zone-a" in sidecar.envoy.admin_get("/clusters")
        started = time.monotonic()
        status, _, _ = await m.get(sidecar, "reviews")
        elapsed = time.monotonic() - started
        # Envoy's counter proves the connect timed out; the time only has to show it was our 300 ms, not the
        # 5 s default (a generous bound: this is wall-clock time on a loaded machine).
        assert status == 503 and 0.25 <= elapsed < 4.0, (status, elapsed)
        assert f"cluster.{cluster}.upstream_cx_connect_timeout: 1" in sidecar.envoy.admin_get(
            "/stats?filter=upstream_cx_connect_timeout"
        )
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


@pytest.mark.parametrize("with_retry", [True, False], ids=["connection-error-retried", "no-retry"])
async def test_connection_error_retry_moves_to_a_live_endpoint(mesh_factory, with_retry: bool):
    m: Mesh = await mesh_factory()
    _, port = await m.app("good")  # 127.0.0.1:port answers; 127.0.0.2:port refuses connections
    http: dict = {"match": {"prefix": "/"}}
    if with_retry:
        http["retryPolicy"] = {"tcpRetryEvents": ["connection-error"], "maxRetries": 2}
    else:
        http["retryPolicy"] = {"maxRetries": 0}  # the default policy would retry connection errors too
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        two_endpoint_workload(port),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}, **http),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")
    counts = await m.split(sidecar, "reviews", 40, concurrency=1)
    if with_retry:
        assert counts == {"good": 40}
    else:
        assert counts["good"] < 40 and counts[503] > 0, counts  # the same traffic without the policy fails
