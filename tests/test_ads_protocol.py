"""The ADS protocol against a real grpc.aio server: ACK/NACK, nonces, ordering, shared bytes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.route.v3.route_pb2 import RouteConfiguration

from meshctl.controlplane.plane import ControlPlane
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.ads_client import AdsClient
from tests.conftest import eventually

EXAMPLES = Path(__file__).parent.parent / "examples" / "demo"


@pytest.fixture
async def plane(tmp_path):
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    async with ControlPlane.from_manifests(tmp_path) as cp:
        await cp.wait_synced()
        cp.dir = tmp_path
        yield cp


async def handshake(client: AdsClient):
    """The order Envoy 1.40 follows on a fresh stream; returns the responses by type."""
    await client.send(CLUSTER)
    cds = await client.recv()
    assert cds.type_url == CLUSTER
    eds_names = sorted(c.name for c in (Cluster.FromString(a.value) for a in cds.resources) if c.type == Cluster.EDS)
    await client.send(ENDPOINT, eds_names)
    eds = await client.recv()
    await client.ack(cds)
    await client.send(LISTENER)
    await client.ack(eds, eds_names)
    lds = await client.recv()
    await client.send(ROUTE, ["outbound"])
    await client.ack(lds)
    rds = await client.recv()
    await client.ack(rds, ["outbound"])
    return {CLUSTER: cds, ENDPOINT: eds, LISTENER: lds, ROUTE: rds}


async def test_handshake_answers_exactly_the_requested_names(plane):
    client = AdsClient(plane.xds_port, "demo/frontend/p1", "demo/frontend")
    try:
        got = await handshake(client)
        assert [a.type_url for a in got[ENDPOINT].resources] == [ENDPOINT, ENDPOINT]
        rds = RouteConfiguration.FromString(got[ROUTE].resources[0].value)
        assert rds.name == "outbound"
        assert [vh.name for vh in rds.virtual_hosts] == ["demo/reviews"]
        await eventually(lambda: plane.registry.streams()[0].types[ROUTE].acked_version == got[ROUTE].version_info)
    finally:
        await client.close()


async def test_nack_is_recorded_and_the_rejected_version_is_not_resent(plane):
    client = AdsClient(plane.xds_port, "demo/frontend/p1", "demo/frontend")
    try:
        got = await handshake(client)
        # Pretend Envoy rejected the routes: NACK carries the last accepted version and the error.
        # (A fresh RDS response must come first, so change the model: the route's weights.)
        route_file = plane.dir / "reviews-route.yaml"
        route_file.write_text(
            route_file.read_text().replace("weight: 80", "weight: 70").replace("weight: 20", "weight: 30")
        )
        rds2 = await client.recv()
        assert rds2.type_url == ROUTE and rds2.version_info != got[ROUTE].version_info
        await client.send(
            ROUTE, ["outbound"], version=got[ROUTE].version_info, nonce=rds2.nonce, error="boom: bad route"
        )
        stream = plane.registry.streams()[0]
        await eventually(lambda: stream.types[ROUTE].rejection is not None)
        assert stream.types[ROUTE].rejection.message == "boom: bad route"
        assert stream.types[ROUTE].acked_version == got[ROUTE].version_info
        assert plane.xds_metrics.count("nacks", "rds") == 1

        # An endpoint-only change: the next response must be EDS, never the rejected RDS again.
        slice_file = plane.dir / "reviews-v1.yaml"
        slice_file.write_text(slice_file.read_text().replace("ready: true", "ready: false"))
        nxt = await client.recv()
        assert nxt.type_url == ENDPOINT
        assert [ClusterLoadAssignment.FromString(a.value).cluster_name for a in nxt.resources] == [
            "demo/reviews-v1/18081"
        ]
        responses_before = plane.xds_metrics.count("responses", "rds")
        await client.ack(nxt, [r for r in stream.types[ENDPOINT].names])
        await eventually(lambda: stream.types[ENDPOINT].acked_version == nxt.version_info)
        assert plane.xds_metrics.count("responses", "rds") == responses_before

        # A new version is sent: the NACK parked only the version it rejected.
        route_file.write_text(
            route_file.read_text().replace("weight: 70", "weight: 60").replace("weight: 30", "weight: 40")
        )
        rds3 = await client.recv()
        assert rds3.type_url == ROUTE and rds3.version_info not in (got[ROUTE].version_info, rds2.version_info)
    finally:
        await client.close()


async def test_stale_nonce_is_ignored(plane):
    client = AdsClient(plane.xds_port, "demo/frontend/p1", "demo/frontend")
    try:
        got = await handshake(client)
        stream = plane.registry.streams()[0]
        acks = plane.xds_metrics.count("acks", "cds")
        await client.send(CLUSTER, version="old", nonce="not-a-nonce-we-sent", error="late NACK of something old")
        # Round trip another request so the server has surely processed the stale one.
        names = ["outbound", "not-there"]
        await client.send(ROUTE, names, version=got[ROUTE].version_info, nonce=got[ROUTE].nonce)
        await eventually(lambda: stream.types[ROUTE].names == frozenset(names))
        assert stream.types[CLUSTER].rejection is None
        assert plane.xds_metrics.count("acks", "cds") == acks
    finally:
        await client.close()


async def test_each_resource_is_serialized_once_however_many_streams(plane):
    clients = [AdsClient(plane.xds_port, f"demo/frontend/p{i}", "demo/frontend") for i in range(12)]
    try:
        await asyncio.gather(*(c.send(CLUSTER) for c in clients))
        responses = await asyncio.gather(*(c.recv() for c in clients))
        assert len({tuple(a.SerializeToString() for a in r.resources) for r in responses}) == 1
        snap = plane.cache.get("demo/frontend")
        assert snap is not None
        counts = [res.serializations for res in snap.resources[CLUSTER].values()]
        assert counts and all(c == 1 for c in counts), counts
        assert len(plane.registry.streams()) == 12
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_large_streams_are_served_from_the_streams_thread_with_the_same_protocol(plane, monkeypatch):
    """Issue 14: a proxy above ads._LARGE resources has its requests applied and responses computed off the serving
    loop. Here every stream counts as large: the handshake, a NACK and a change behave exactly as inline."""
    import threading

    from meshctl.xds.server import ads, stream

    monkeypatch.setattr(ads, "_LARGE", 0)
    threads: set[str] = set()
    real = stream.StreamState.next_responses

    def recording(self, snap):
        threads.add(threading.current_thread().name)
        return real(self, snap)

    monkeypatch.setattr(stream.StreamState, "next_responses", recording)
    await test_handshake_answers_exactly_the_requested_names(plane)
    await test_nack_is_recorded_and_the_rejected_version_is_not_resent(plane)
    assert threads and all(name.startswith("meshctl-streams") for name in threads), threads

    # What a large stream's step makes (sets of 20,000 names at 10,000 services) is frozen out of the collector's
    # sight: every collection on the serving loop rescanned it.
    client = AdsClient(plane.xds_port, "demo/frontend/frozen", "demo/frontend")
    try:
        await handshake(client)
        (state,) = [s for s in plane.registry.streams() if s.node_id == "demo/frontend/frozen"]
        import gc

        assert id(state.types) not in {id(o) for o in gc.get_objects()}
    finally:
        await client.close()


def _held_bytes(*needles: bytes) -> list[str]:
    """Types of the live objects that refer to a bytes object containing every needle."""
    import gc

    gc.unfreeze()  # frozen objects are alive too, but gc.get_objects() leaves them out
    gc.collect()
    return [
        type(holder).__name__
        for holder in gc.get_objects()
        for ref in gc.get_referents(holder)
        if type(ref) is bytes and all(n in ref for n in needles)
    ]


async def test_idle_streams_keep_no_last_response_and_share_name_sets(plane):
    """Issue 14 (memory per stream): grpc.aio kept each stream's last response and request in its frames (~8 KiB
    per idle stream), and every stream kept its own equal sets of subscribed names and clusters in use."""
    clients = [AdsClient(plane.xds_port, f"demo/frontend/p{i}", "demo/frontend") for i in range(2)]
    try:
        got = [await handshake(c) for c in clients]
        streams = plane.registry.streams()
        await eventually(lambda: all(s.types[ROUTE].acked_version == got[0][ROUTE].version_info for s in streams))
        for type_url, response in got[0].items():
            assert not _held_bytes(type_url.encode(), response.version_info.encode()), type_url
        first, second = (s.types[ENDPOINT].names for s in streams)
        assert first == second and first is second
        assert streams[0]._clusters_in_use() is streams[1]._clusters_in_use()
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_new_streams_start_a_few_per_loop_iteration():
    """Issue 14: a thousand proxies reconnecting at once opened their streams in one loop iteration (23 ms). At
    most ``per_turn`` pass per iteration, in arrival order; one cancelled while waiting takes no turn."""
    from itertools import pairwise

    from meshctl.xds.pacing import PerIteration

    turns: PerIteration[None] = PerIteration(2)
    passed: list[int] = []

    async def opening(i: int) -> None:
        await turns.turn()
        passed.append(i)

    tasks = [asyncio.create_task(opening(i)) for i in range(7)]
    await asyncio.sleep(0)  # every task has asked: two passed, five wait
    tasks[3].cancel()
    seen = [len(passed)]
    for _ in range(12):
        await asyncio.sleep(0)  # one loop iteration
        seen.append(len(passed))
    assert passed == [0, 1, 2, 4, 5, 6]
    assert all(b - a <= 2 for a, b in pairwise([0, *seen])), seen
    assert not turns._waiting
