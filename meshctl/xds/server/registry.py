"""Which proxies are connected, what they accepted and what they rejected: what the admin API shows."""

from __future__ import annotations

from collections import deque
from typing import Any

from meshctl.xds.server.stream import Rejection, StreamState

__all__ = ["ProxyRegistry"]


class ProxyRegistry:
    def __init__(self, history: int = 100) -> None:
        self._streams: dict[int, StreamState] = {}
        self.rejections: deque[tuple[str, str, Rejection]] = deque(maxlen=history)  # (node_id, group, rejection)

    def add(self, stream: StreamState) -> None:
        self._streams[stream.stream_id] = stream

    def remove(self, stream: StreamState) -> None:
        self._streams.pop(stream.stream_id, None)

    def record_rejection(self, stream: StreamState, rejection: Rejection) -> None:
        self.rejections.append((stream.node_id, stream.group, rejection))

    def streams(self) -> list[StreamState]:
        return [self._streams[k] for k in sorted(self._streams)]

    def describe(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.streams()]
