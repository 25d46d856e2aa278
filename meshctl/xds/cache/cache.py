"""The snapshot cache: the latest snapshot per node group, and a way to wait for the next one.

The ADS server and the controller meet only here (go-control-plane's ConfigWatcher idea): the
controller publishes, each stream waits on its group's change counter.
"""

from __future__ import annotations

import asyncio

from meshctl.xds.cache.snapshot import Snapshot

__all__ = ["InconsistentSnapshot", "SnapshotCache"]


class InconsistentSnapshot(ValueError):
    """A snapshot whose references do not resolve: a translator bug, never published."""


class SnapshotCache:
    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._changed = asyncio.Condition()
        self._generation = 0  # bumped on every publish; streams compare it to notice changes

    @property
    def generation(self) -> int:
        return self._generation

    def get(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group)

    def groups(self) -> list[str]:
        return sorted(self._snapshots)

    async def publish(self, snapshots: dict[str, Snapshot], *, check: bool = True) -> list[str]:
        """Stores the snapshots whose content changed; returns those groups. Wakes every waiting stream.

        ``check=False`` is for endpoint-only patches, which cannot break a reference."""
        changed = []
        for group, snap in snapshots.items():
            problems = snap.inconsistencies() if check else ()
            if problems:
                raise InconsistentSnapshot(f"group {group}: " + "; ".join(problems))
            old = self._snapshots.get(group)
            if old is None or any(old.version(t) != snap.version(t) for t in snap.resources):
                self._snapshots[group] = snap
                changed.append(group)
        if changed:
            async with self._changed:
                self._generation += 1
                self._changed.notify_all()
        return changed

    def forget(self, group: str) -> None:
        self._snapshots.pop(group, None)

    async def wait_for_change(self, seen_generation: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self._generation != seen_generation)
            return self._generation
