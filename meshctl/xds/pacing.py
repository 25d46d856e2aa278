"""A bound on how many waiting coroutines one event-loop iteration resumes.

Each resumed ADS stream does its work in one step; a thousand resumed in the same iteration keep the loop from
anything else (health checks, the lease, a ticker) for tens of milliseconds (issue 14). Two things resume streams
by the thousand: a publish (``SnapshotCache`` wakes the streams of the changed groups) and a reconnect storm
(``AdsServer`` starting new streams after a control-plane restart: 23 ms in one iteration at 1,000 streams).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

__all__ = ["PerIteration"]

_T = TypeVar("_T")


class PerIteration(Generic[_T]):
    """Resolves futures at most ``per_turn`` per loop iteration, in the order given; the rest in later iterations.
    A future already done (cancelled while it waited) takes no turn."""

    def __init__(self, per_turn: int) -> None:
        self.per_turn = per_turn
        self.resolved = 0  # futures resolved so far
        self._passed = 0  # in this iteration
        self._waiting: deque[tuple[asyncio.Future[_T], _T]] = deque()
        self._turn_scheduled = False

    def resolve(self, future: asyncio.Future[_T], value: _T) -> None:
        """``future.set_result(value)`` now if this iteration has a turn left, else in a later one."""
        if self._waiting or self._passed >= self.per_turn:
            self._waiting.append((future, value))
        else:
            self._set(future, value)
        self._schedule_next_turn()

    async def turn(self: PerIteration[Any]) -> None:
        """Returns in this iteration if it has a turn left, else in the first later one that has."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.resolve(future, None)
        await future  # (a future already done returns without yielding)

    def _set(self, future: asyncio.Future[_T], value: _T) -> None:
        if not future.done():
            future.set_result(value)
            self._passed += 1
            self.resolved += 1

    def _schedule_next_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_scheduled, self._passed = False, 0
        while self._waiting and self._passed < self.per_turn:
            self._set(*self._waiting.popleft())
        if self._waiting or self._passed:
            self._schedule_next_turn()
