"""The snapshot cache wakes only the streams whose group changed (issue 14)."""

from __future__ import annotations

import asyncio
from itertools import pairwise

from meshctl.xds.cache import CachedResource, Snapshot, SnapshotCache
from meshctl.xds.envoy.types import CLUSTER


def _snapshot(group: str, version: str) -> Snapshot:
    resource = CachedResource.reported(CLUSTER, "c", version)
    return Snapshot(group, {CLUSTER: {"c": resource}})


async def test_a_publish_wakes_only_the_streams_of_the_groups_that_changed() -> None:
    cache = SnapshotCache()
    await cache.publish({"a": _snapshot("a", "1"), "b": _snapshot("b", "1")})
    seen_a, seen_b = cache.generation("a"), cache.generation("b")
    waiting_a = [asyncio.ensure_future(cache.wait_for_change("a", seen_a)) for _ in range(3)]
    waiting_b = [asyncio.ensure_future(cache.wait_for_change("b", seen_b)) for _ in range(5)]
    await asyncio.sleep(0)
    woken_before = cache.wakeups

    assert await cache.publish({"a": _snapshot("a", "2"), "b": _snapshot("b", "1")}) == ["a"]
    assert [await w for w in waiting_a] == [seen_a + 1] * 3
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting_b)
    assert cache.wakeups - woken_before == 3

    for w in waiting_b:
        w.cancel()
    await asyncio.gather(*waiting_b, return_exceptions=True)
    assert not cache._waiters  # cancelled waiters leave nothing behind


async def test_a_change_published_before_the_wait_starts_is_not_missed() -> None:
    cache = SnapshotCache()
    seen = cache.generation("a")
    await cache.publish({"a": _snapshot("a", "1")})
    assert await asyncio.wait_for(cache.wait_for_change("a", seen), 1) == seen + 1


async def test_a_publish_wakes_at_most_a_batch_of_streams_per_loop_iteration() -> None:
    from meshctl.xds.cache.cache import _WAKE_BATCH

    cache = SnapshotCache()
    await cache.publish({"a": _snapshot("a", "1")})
    seen = cache.generation("a")
    waiting = [asyncio.ensure_future(cache.wait_for_change("a", seen)) for _ in range(3 * _WAKE_BATCH + 5)]
    await asyncio.sleep(0)
    await cache.publish({"a": _snapshot("a", "2")})
    woken = [sum(w.done() for w in waiting)]
    while woken[-1] < len(waiting):
        await asyncio.sleep(0)  # one loop iteration
        woken.append(sum(w.done() for w in waiting))
    # (a woken waiter's task finishes one iteration after its future is resolved)
    assert max(b - a for a, b in pairwise(woken)) == _WAKE_BATCH, woken
    assert {w.result() for w in waiting} == {seen + 1} and cache.wakeups == len(waiting)
