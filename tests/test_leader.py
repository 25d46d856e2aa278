"""Leader election judges expiry by its own clock, and status writes stop as soon as leadership is lost (issue 9)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

from kubernetes import client

from meshctl.kube.leader import LeaderElector
from meshctl.kube.status_writer import StatusWriter
from meshctl.model import ObjectKey
from meshctl.translate.ir import Condition, ConditionStatus, ObjectStatus
from tests.conftest import eventually

NS, NAME = "meshctl-system", "meshctl-leader"


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _lease(holder: str, renew: datetime, duration: int = 1, rv: str | None = None) -> dict:
    metadata = {"name": NAME, "namespace": NS} | ({"resourceVersion": rv} if rv else {})
    spec = {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": _micro(renew)}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}


async def test_a_lease_renewed_by_a_clock_far_ahead_still_expires_by_our_clock(apiserver) -> None:
    """The holder's clock is an hour ahead and it died: comparing its renewTime with our clock would wait an hour."""
    api = apiserver.client()
    leases = client.CoordinationV1Api(api)
    leases.create_namespaced_lease(NS, _lease("skewed-dead-replica", datetime.now(UTC) + timedelta(hours=1)))
    elector = LeaderElector(apiserver.controller_client(), identity="me", lease_duration=1, retry_period=0.1)
    task = asyncio.create_task(elector.run())
    try:
        await eventually(lambda: elector.is_leader, timeout=10)
        assert leases.read_namespaced_lease(NAME, NS).spec.holder_identity == "me"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        api.close()


async def test_a_leader_stopping_while_the_api_server_is_gone_just_stops(apiserver, caplog) -> None:
    """Regression: releasing the lease on the way out raised the client's MaxRetryError when the API server was
    unreachable, so the task ended with an error (and a traceback in the log) instead of stopping."""
    elector = LeaderElector(apiserver.controller_client(), identity="me", lease_duration=1, retry_period=0.1)
    task = asyncio.create_task(elector.run())
    await eventually(lambda: elector.is_leader, timeout=10)
    apiserver.stop()
    task.cancel()
    [result] = await asyncio.gather(task, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError), result
    assert not elector.is_leader
    assert "could not release the lease" in caplog.text and "Traceback" not in caplog.text


async def test_a_live_holder_with_a_clock_far_behind_keeps_its_lease(apiserver) -> None:
    """The holder renews on time but its clock is an hour behind: its lease is not expired."""
    api = apiserver.client()
    leases = client.CoordinationV1Api(api)
    leases.create_namespaced_lease(NS, _lease("skewed-live-replica", datetime.now(UTC) - timedelta(hours=1)))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(0.2):
            current = leases.read_namespaced_lease(NAME, NS)
            body = _lease(
                "skewed-live-replica", datetime.now(UTC) - timedelta(hours=1), rv=current.metadata.resource_version
            )
            leases.replace_namespaced_lease(NAME, NS, body)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    elector = LeaderElector(apiserver.controller_client(), identity="me", lease_duration=1, retry_period=0.1)
    task = asyncio.create_task(elector.run())
    seen_leading = False
    try:
        for _ in range(25):  # 2.5 s: more than twice the lease duration
            await asyncio.sleep(0.1)
            seen_leading |= elector.is_leader
        assert not seen_leading
        assert leases.read_namespaced_lease(NAME, NS).spec.holder_identity == "skewed-live-replica"
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        renewer.join(5)
        api.close()


class _Elector:
    """Stands in for a LeaderElector whose lease is lost while the writer is part way through a batch."""

    def __init__(self) -> None:
        self.is_leader = True
        self.on_change = None


def _status(name: str) -> ObjectStatus:
    condition = Condition(type="Accepted", status=ConditionStatus.TRUE, reason="Accepted", message="valid")
    return ObjectStatus(key=ObjectKey("Route", "demo", name), observed_generation=1, origin="", conditions=(condition,))


def test_the_status_writer_stops_mid_batch_when_leadership_is_lost() -> None:
    elector = _Elector()
    writer = StatusWriter(client.ApiClient(client.Configuration()), elector=elector)  # type: ignore[arg-type]
    written = []

    def write(status: ObjectStatus) -> bool:
        written.append(status.key.name)
        elector.is_leader = False  # the lease is lost right after the first write
        return True

    writer.write = write  # type: ignore[method-assign]
    assert writer.write_all(tuple(_status(f"r{i}") for i in range(5))) is False
    assert written == ["r0"]


def test_leadership_lapses_without_a_renewal_within_the_deadline() -> None:
    clock = [100.0]
    elector = LeaderElector(
        client.ApiClient(client.Configuration()), lease_duration=15, retry_period=2, monotonic=lambda: clock[0]
    )
    elector._set(True)
    elector._renewed_at = 100.0
    assert elector.is_leader
    clock[0] = 109.9
    assert elector.is_leader
    clock[0] = 110.0  # renew deadline (2/3 of the lease) passed with no renewal: stop writing now
    assert not elector.is_leader
