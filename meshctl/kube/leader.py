"""Leader election with a coordination.k8s.io/v1 Lease, for everything that writes (status, ingress).

Every replica serves xDS; only the lease holder writes. The holder renews every ``retry_period``; another
replica takes over when the lease has not been renewed for ``lease_duration``. Every write to the Lease carries
the resourceVersion just read, so two replicas racing for an expired lease cannot both win (the loser gets 409).
A replica that stops cleanly releases the lease, so the next one takes over at once.

Clocks are never compared across machines (client-go's rule): a lease counts as expired when *we* have seen
the same record, unchanged, for ``lease_duration`` on our monotonic clock, whatever its renewTime says. The
holder stops claiming leadership ``renew_deadline`` after its last successful renewal started, which is before
any other replica can see the lease expire.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from meshctl.kube.conflicts import unless_conflict

__all__ = ["LeaderElector"]

log = logging.getLogger(__name__)


def _micro(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str = "meshctl-system",
        name: str = "meshctl-leader",
        identity: str | None = None,
        lease_duration: float = 15.0,
        retry_period: float = 2.0,
        renew_deadline: float | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name = namespace, name
        self.identity = identity or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.lease_duration, self.retry_period = lease_duration, retry_period
        # client-go's defaults are 15 s lease / 10 s renew deadline: stop well before others may take over.
        self.renew_deadline = renew_deadline if renew_deadline is not None else lease_duration * 2 / 3
        self.now = now  # only for the timestamps we write, never to judge expiry
        self.monotonic = monotonic
        self._leading = False
        self.holder = ""  # the lease holder as last read: who leads (for meshctl status)
        self._renewed_at = -float("inf")  # monotonic start of our last successful renewal
        self._observed: tuple[object, ...] | None = None  # the lease record as last read, and when we first saw it
        self._observed_at = 0.0
        self.on_change: Callable[[bool], None] | None = None

    @property
    def is_leader(self) -> bool:
        """True only while our last renewal is recent enough: writers check it before every write, so a replica
        that cannot renew (API server away, loop stalled) stops writing before another can take over."""
        return self._leading and self.monotonic() - self._renewed_at < self.renew_deadline

    async def run(self) -> None:
        try:
            while True:
                started = self.monotonic()
                try:
                    holding: bool | None = await asyncio.to_thread(self._try)
                except ApiException as exc:
                    log.warning("lease %s/%s: %s %s", self.namespace, self.name, exc.status, exc.reason)
                    holding = None
                except (HTTPError, OSError) as exc:  # API server unreachable: try again next period
                    log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
                    holding = None
                if holding:
                    self._renewed_at = started
                self._set(self.is_leader if holding is None else holding)
                await asyncio.sleep(self.retry_period)
        finally:
            if self._leading:
                await asyncio.to_thread(self._release)
                self._set(False)

    def _set(self, leading: bool) -> None:
        if leading != self._leading:
            log.info("%s %s leadership", self.identity, "acquired" if leading else "lost")
            self._leading = leading
            if self.on_change:
                self.on_change(leading)

    def _expired(self, spec: client.V1LeaseSpec) -> bool:
        """Expired when the record has not changed for lease_duration as *we* measure it (no clock comparison)."""
        record = (spec.holder_identity, str(spec.renew_time), spec.lease_transitions, spec.lease_duration_seconds)
        now = self.monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        return now - self._observed_at >= (spec.lease_duration_seconds or 0)

    def _body(self, spec: dict[str, Any], resource_version: str | None = None) -> Any:
        """A Lease; with the resourceVersion just read, a write fails with 409 if anyone wrote in between.
        (A plain dict: the client takes one, though its type hints ask for a V1Lease.)"""
        metadata = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _spec(self, acquire: bool, transitions: int) -> dict[str, Any]:
        now = _micro(self.now())
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        if acquire:
            spec["acquireTime"] = now
        return spec

    def _try(self) -> bool:
        """One round: create, renew or take over the lease. True when we hold it afterwards."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = self._body(self._spec(True, 0))
            # False: another replica created it first.
            return unless_conflict(lambda: self.leases.create_namespaced_lease(self.namespace, body))
        spec, meta = lease.spec, lease.metadata
        assert spec is not None and meta is not None  # the API server always returns both
        holder = spec.holder_identity or ""
        self.holder = holder
        if holder and holder != self.identity and not self._expired(spec):
            return False
        taking_over = holder != self.identity
        transitions = (spec.lease_transitions or 0) + (1 if taking_over else 0)
        body = self._body(self._spec(taking_over, transitions), meta.resource_version)
        if not taking_over and spec.acquire_time:
            acquired = spec.acquire_time
            body["spec"]["acquireTime"] = acquired if isinstance(acquired, str) else _micro(acquired)
        # False: someone else wrote the lease since we read it.
        return unless_conflict(lambda: self.leases.replace_namespaced_lease(self.name, self.namespace, body))

    def _release(self) -> None:
        """Give the lease up so another replica can take over without waiting for it to expire."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
            spec, meta = lease.spec, lease.metadata
            assert spec is not None and meta is not None
            if spec.holder_identity != self.identity:
                return
            expired = {
                "holderIdentity": "",
                "leaseDurationSeconds": 1,
                "renewTime": _micro(self.now() - timedelta(days=1)),
                "leaseTransitions": spec.lease_transitions or 0,
            }
            body = self._body(expired, meta.resource_version)
            self.leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            log.warning("could not release the lease: %s", exc.status)
        except (HTTPError, OSError) as exc:  # API server unreachable: the lease expires on its own
            log.warning("could not release the lease: %s", exc)
