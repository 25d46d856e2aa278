"""What the callers' Envoys saw per target cluster, as the control plane collected it (``GET /api/v1/traffic``):
the CLI needs only the admin address, never a route to each caller's stats port (meshctl/admin/traffic.py).

A window is the difference of two readings (``meshctl.admin.traffic.window``), both taken by the control plane
with its own clock, so the laptop's clock never matters."""

from __future__ import annotations

import time
from dataclasses import dataclass

from meshctl.admin.traffic import Counters, counters_from_json
from meshctl.cli.client import AdminClient, CliError

__all__ = ["TrafficReading", "next_round", "read_traffic"]


@dataclass(frozen=True)
class TrafficReading:
    now: float  # the control plane's clock when it answered
    started_at: float | None  # when its latest round began (None: none yet)
    interval: float  # seconds between its rounds
    counters: dict[tuple[str, str], Counters]  # (caller node id, cluster) -> cumulative counts
    read: frozenset[str]  # callers that round read
    unreachable: tuple[str, ...]  # callers it could not read


def read_traffic(client: AdminClient, clusters: set[str]) -> TrafficReading:
    doc = client.get("/api/v1/traffic", cluster=",".join(sorted(clusters)))
    try:
        counters = {
            (p["node_id"], cluster): counters_from_json(c)
            for p in doc["proxies"]
            for cluster, c in p.get("clusters", {}).items()
        }
        return TrafficReading(
            now=float(doc["now"]),
            started_at=None if doc["startedAt"] is None else float(doc["startedAt"]),
            interval=float(doc["interval"]),
            counters=counters,
            read=frozenset(doc["read"]),
            unreachable=tuple(doc["unreachable"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"the control plane's /api/v1/traffic answered what this meshctl cannot read: {exc!r}") from None


def next_round(client: AdminClient, clusters: set[str], after: float, timeout: float) -> TrafficReading | None:
    """The first reading of a round the control plane began at or after ``after`` (its clock), or None if none came
    within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        reading = read_traffic(client, clusters)
        if reading.started_at is not None and reading.started_at >= after:
            return reading
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(0.25, reading.interval / 4))
