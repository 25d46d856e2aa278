"""Real Envoy, real HTTP: weighted split, live shift with zero errors, make-before-break (state-of-the-world and
incremental xDS alike), retries, timeouts, circuit breaking."""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
import pytest

from tests.conftest import Mesh, Sidecar, eventually
from tests.manifests import route, service, virtual_node, workload, write
from tests.stats import assert_split


async def basic_mesh(
    mesh_factory, weights: dict[str, int], *, delta: bool = False, **route_http
) -> tuple[Mesh, Sidecar]:
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("v1")
    _, p2 = await m.app("v2")
    write(
        m.dir / "workloads.yaml",
        service("reviews"),
        workload("reviews", "v1", p1),
        workload("reviews", "v2", p2),
        virtual_node("frontend", backends=["reviews"]),
    )
    write(m.dir / "route.yaml", route("reviews", "reviews", weights, **route_http))
    await m.start()
    sidecar = await m.sidecar("demo/frontend", delta=delta)
    await m.wait_routable(sidecar, "reviews")
    return m, sidecar


async def wait_converged(m: Mesh, sidecar: Sidecar, old_route_version: str | None = None) -> None:
    """Until the served routes changed (if an old version is given) and the proxy ACKed the clusters and routes
    served now: read from the admin API, as `meshctl get proxies` does."""

    async def done() -> bool:
        proxy = await m.proxy()
        served = await m.served_versions(proxy["group"])
        if old_route_version is not None and served["rds"] == old_route_version:
            return False
        return all(
            proxy["types"][t]["acked_version"] == served[t] and not proxy["types"][t]["pending"] for t in ("cds", "rds")
        )

    await eventually(done, timeout=15)


async def route_version(m: Mesh) -> str:
    """The route version served to the frontend's group (admin API)."""
    return (await m.served_versions((await m.proxy())["group"]))["rds"]


class LoadClient:
    """Sends requests back to back until stopped (bounded by max_requests); counts non-2xx and errors."""

    def __init__(self, m: Mesh, sidecar: Sidecar, host: str, max_requests: int = 50_000) -> None:
        self.m, self.sidecar, self.host, self.max_requests = m, sidecar, host, max_requests
        self.statuses: collections.Counter = collections.Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _worker(self) -> None:
        while not self._stop.is_set() and sum(self.statuses.values()) < self.max_requests:
            try:
                status, _, _ = await self.m.get(self.sidecar, self.host)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            self.statuses[status] += 1

    def start(self, concurrency: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(concurrency)]

    async def stop(self) -> collections.Counter:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


PROTOCOLS = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])


async def acked_types(m: Mesh, delta: bool) -> dict:
    """The frontend's proxy as `meshctl get proxies -o json` shows it: its per-type state; it speaks what it asked."""
    proxy = await m.proxy()
    assert proxy["protocol"] == ("delta" if delta else "sotw")
    return proxy["types"]


@PROTOCOLS
async def test_weighted_split_then_live_shift_without_errors(mesh_factory, delta: bool):
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 80, "reviews-v2": 20}, delta=delta)
    counts = await m.split(sidecar, "reviews", 2000)
    assert_split(counts, {"v1": 80, "v2": 20})

    envoy_pid = sidecar.envoy.process.pid
    load = LoadClient(m, sidecar, "reviews")
    load.start()
    old = await route_version(m)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 50, "reviews-v2": 50}))
    await wait_converged(m, sidecar, old)
    counts = await m.split(sidecar, "reviews", 2000)
    statuses = await load.stop()

    assert_split(counts, {"v1": 50, "v2": 50})
    assert sidecar.envoy.process.returncode is None and sidecar.envoy.process.pid == envoy_pid  # no restart
    assert sum(statuses.values()) > 100, statuses
    assert set(statuses) == {200}, f"non-2xx responses during the shift: {statuses}"
    await acked_types(m, delta)


@PROTOCOLS
async def test_shift_to_a_new_version_and_drop_the_old_is_make_before_break(mesh_factory, delta: bool):
    """A new cluster must reach Envoy before the route using it, and the old one leave only after."""
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100}, delta=delta)
    _, p3 = await m.app("v3")
    ports = {"v1": m.ports["v1"], "v3": p3}
    load = LoadClient(m, sidecar, "reviews")
    load.start()
    for _ in range(3):  # back and forth, each time a cluster appears and another disappears
        for target in ("v3", "v1"):
            old = await route_version(m)
            write(m.dir / "v3.yaml", workload("reviews", "v3", p3))
            write(m.dir / "route.yaml", route("reviews", "reviews", {f"reviews-{target}": 100}))
            if target == "v1":
                (m.dir / "v3.yaml").unlink()
            await wait_converged(m, sidecar, old)
            only = {f"demo/reviews-{target}/{ports[target]}"}

            async def holds_only(only: set[str] = only) -> bool:  # the old cluster is gone from the proxy
                return set((await acked_types(m, delta))["cds"]["resources"]) == only

            await eventually(holds_only)
            assert (await m.get(sidecar, "reviews"))[1] == target
    statuses = await load.stop()
    assert sum(statuses.values()) > 100, statuses
    assert set(statuses) == {200}, f"non-2xx responses during the switches: {statuses}"
    if delta:  # incremental xDS removes clusters by name
        assert (await acked_types(m, delta))["cds"]["last_response"]["removed"] >= 1


async def test_delta_one_endpoint_change_sends_one_resource(mesh_factory):
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("v1")
    _, p2 = await m.app("v2")
    await m.app("v1-second", port=p1, host="127.0.0.2")
    v1 = workload("reviews", "v1", p1)
    rest = [
        workload("reviews", "v2", p2),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    ]
    write(m.dir / "w.yaml", service("reviews"), v1, *rest)
    await m.start()
    sidecar = await m.sidecar("demo/frontend", delta=True)
    await m.wait_routable(sidecar, "reviews")
    assert (await m.split(sidecar, "reviews", 50)) == {"v1": 50}

    eds_before = (await acked_types(m, True))["eds"]["acked_version"]
    v1[1]["endpoints"].append(
        {
            "addresses": ["127.0.0.2"],
            "conditions": {"ready": True},
            "targetRef": {"kind": "Pod", "name": "reviews-v1-0"},
        }
    )
    write(m.dir / "w.yaml", service("reviews"), v1, *rest)  # the same manifests, one more endpoint

    async def converged() -> bool:
        proxy = await m.proxy()
        version = (await m.served_versions(proxy["group"]))["eds"]
        return version != eds_before and proxy["types"]["eds"]["acked_version"] == version

    await eventually(converged, timeout=15)
    # One ClusterLoadAssignment, nothing removed.
    assert (await acked_types(m, True))["eds"]["last_response"] == {"resources": 1, "removed": 0}
    counts = await m.split(sidecar, "reviews", 200)
    assert set(counts) == {"v1", "v1-second"}, counts


async def test_retry_policy_turns_a_first_503_into_200(mesh_factory):
    retry = {"retryPolicy": {"httpRetryEvents": ["server-error"], "maxRetries": 2}}
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100}, **retry)
    v1 = m.apps["v1"]
    v1.seen.clear()
    v1.fail_first = 1
    status, body, _ = await m.get(sidecar, "reviews", "/retry-me")
    assert (status, body) == (200, "v1")
    assert v1.seen["/retry-me"] == 2  # the first attempt failed with 503, the retry succeeded

    # A Route without a policy gets the default one (App Mesh's implicit policy): a 503 is retried too.
    old = await route_version(m)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100}))
    await wait_converged(m, sidecar, old)
    v1.seen.clear()
    v1.fail_first = 1
    assert (await m.get(sidecar, "reviews", "/default-retry"))[:2] == (200, "v1")
    assert v1.seen["/default-retry"] == 2

    # With retries turned off ({maxRetries: 0}) the same failure reaches the client.
    old = await route_version(m)
    write(m.dir / "route.yaml", route("reviews", "reviews", {"reviews-v1": 100}, retryPolicy={"maxRetries": 0}))
    await wait_converged(m, sidecar, old)
    v1.seen.clear()
    v1.fail_first = 1
    status, _, _ = await m.get(sidecar, "reviews", "/no-retry")
    assert status == 503 and v1.seen["/no-retry"] == 1


async def test_route_timeout_turns_a_slow_upstream_into_504(mesh_factory):
    m, sidecar = await basic_mesh(
        mesh_factory, {"reviews-v1": 100}, timeout={"perRequest": {"unit": "ms", "value": 300}}
    )
    m.apps["v1"].delay = 3.0
    started = time.monotonic()
    status, _, _ = await m.get(sidecar, "reviews")
    elapsed = time.monotonic() - started
    assert status == 504
    # Envoy's counter says the route timeout fired; the clock only has to show it fired before the 3 s answer.
    assert sidecar.envoy.stats()[f"cluster.demo/reviews-v1/{m.ports['v1']}.upstream_rq_timeout"] == 1
    assert 0.25 <= elapsed < 2.8, elapsed


async def test_circuit_breaker_rejects_overflow(mesh_factory):
    m: Mesh = await mesh_factory()
    _, port = await m.app("v1", delay=1.0)
    pool = {"connectionPool": {"http": {"maxConnections": 1, "maxPendingRequests": 1, "maxRequests": 1}}}
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", port, **pool),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 100}),
    )
    await m.start()
    sidecar = await m.sidecar("demo/frontend")
    await m.wait_routable(sidecar, "reviews")

    results = await asyncio.gather(*(m.get(sidecar, "reviews") for _ in range(20)))
    overloaded = [r for r in results if r[0] == 503 and r[2].get("x-envoy-overloaded") == "true"]
    served = [r for r in results if r[0] == 200]
    assert served, results
    assert len(overloaded) >= 15, [(s, h.get("x-envoy-overloaded")) for s, _, h in results]
    assert len(served) + len(overloaded) == 20

    async with m.session.get(
        f"http://127.0.0.1:{m.plane.admin_port}/api/v1/config_dump?group=demo/frontend;"
        f"egress={sidecar.egress_port};ingress={sidecar.ingress_port};bind=127.0.0.1"
    ) as r:
        dump = await r.json()
    (group,) = dump["groups"].values()
    cluster = next(c for c in group["cds"]["resources"] if c["name"] == "demo/reviews-v1/" + str(port))
    assert cluster["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 1,
        "max_pending_requests": 1,
        "max_requests": 1,
        "max_retries": 4294967295,  # not set by the VirtualNode: unlimited, so Route retry policies are honoured
    }


@pytest.mark.parametrize(("event", "status"), [("gateway-error", 502), ("client-error", 409), ("server-error", 500)])
async def test_each_http_retry_event_retries_its_status(mesh_factory, event: str, status: int):
    retry = {"retryPolicy": {"httpRetryEvents": [event], "maxRetries": 1}}
    m, sidecar = await basic_mesh(mesh_factory, {"reviews-v1": 100}, **retry)
    v1 = m.apps["v1"]
    v1.seen.clear()
    v1.fail_first, v1.fail_status = 1, status
    assert (await m.get(sidecar, "reviews", "/retried"))[:2] == (200, "v1")
    assert v1.seen["/retried"] == 2


async def test_route_idle_timeout_resets_a_stalled_response(mesh_factory):
    m, sidecar = await basic_mesh(
        mesh_factory,
        {"reviews-v1": 100},
        timeout={"perRequest": {"unit": "s", "value": 10}, "idle": {"unit": "ms", "value": 300}},
    )
    m.apps["v1"].stall_body = 3.0
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientPayloadError):
        await m.get(sidecar, "reviews", "/stalls")
    assert 0.25 <= time.monotonic() - started < 2.8  # before the stalled body would have resumed (3 s)
    assert sidecar.envoy.stats()["http.outbound.downstream_rq_idle_timeout"] == 1
