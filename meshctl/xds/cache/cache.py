"""The snapshot cache: the latest snapshot per node group, and a way to wait for the next one.

The ADS server and the controller meet only here (go-control-plane's ConfigWatcher idea): the
controller publishes, each stream waits on its own group's change counter, so a publish wakes only the
streams whose group changed (a Route change for 20 groups does not run the other 980 streams' loops).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from meshctl.xds.cache.snapshot import Snapshot
from meshctl.xds.pacing import PerIteration

__all__ = ["InconsistentSnapshot", "SnapshotCache", "prepare"]

# Streams woken per event-loop iteration (pacing.py says why); the rest in later iterations, other work between.
_WAKE_BATCH = 32


class InconsistentSnapshot(ValueError):
    """A snapshot whose references do not resolve: a translator bug, never published."""


def prepare(snap: Snapshot) -> Snapshot:
    """Checks references and computes every type's version: the O(resources) part of publishing, which the
    controller does in its build thread so that ``publish`` on the loop is cheap."""
    problems = snap.inconsistencies()
    if problems:
        raise InconsistentSnapshot(f"group {snap.group}: " + "; ".join(problems))
    for type_url in snap.resources:
        snap.version(type_url)
    return snap


class SnapshotCache:
    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._generations: defaultdict[str, int] = defaultdict(int)  # per group, bumped when its snapshot changes
        self._waiters: defaultdict[str, set[asyncio.Future[int]]] = defaultdict(set)
        self._wakes: PerIteration[int] = PerIteration(_WAKE_BATCH)
        self._published_at: dict[str, float] = {}  # per group, monotonic time of its latest change

    @property
    def wakeups(self) -> int:
        """Streams woken by publishes: the cost of fan-out, for tests and metrics."""
        return self._wakes.resolved

    def generation(self, group: str) -> int:
        return self._generations.get(group, 0)

    def get(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    async def publish(self, snapshots: dict[str, Snapshot]) -> list[str]:
        """Stores the snapshots whose content changed; returns those groups. Wakes the streams of those groups.

        Snapshots come consistent: built ones ``prepare``d (which raises on a broken reference), patches by
        construction (an endpoint patch cannot break a reference; a Route patch keeps the set of clusters)."""
        changed = []
        for group, snap in snapshots.items():
            old = self._snapshots.get(group)
            if old is None or any(old.version(t) != snap.version(t) for t in snap.resources):
                self._snapshots[group] = snap
                changed.append(group)
        now = time.monotonic()
        for group in changed:
            self._published_at[group] = now
            generation = self._generations[group] = self._generations[group] + 1
            for waiter in self._waiters.pop(group, ()):
                self._wakes.resolve(waiter, generation)
        return changed

    def since_published(self, group: str) -> float:
        """Seconds since the group's snapshot last changed (push latency, measured where it is sent)."""
        return time.monotonic() - self._published_at.get(group, time.monotonic())

    def forget(self, group: str) -> None:
        self._snapshots.pop(group, None)
        self._published_at.pop(group, None)

    async def wait_for_change(self, group: str, seen_generation: int) -> int:
        """Returns the group's generation once it differs from ``seen_generation``."""
        current = self.generation(group)
        if current != seen_generation:
            return current
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiters = self._waiters[group]
        waiters.add(waiter)
        try:
            return await waiter
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(group) is waiters:
                del self._waiters[group]
