"""What one proxy's NACK says: who sent it, what it rejected (the exact resources sent), Envoy's message, and the
objects new in that update (``blame``). The server reports it; the controller decides whether to believe it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from meshctl.model import ObjectKey
from meshctl.xds.cache import CachedResource

__all__ = ["Nack"]


@dataclass(frozen=True, slots=True)
class Nack:
    node_id: str
    group: str
    type_url: str
    version: str  # of what was rejected
    message: str  # the proxy's error_detail
    owners: frozenset[ObjectKey]  # the objects new in the rejected update, none of them ACKed by another proxy
    sent: Mapping[str, CachedResource]  # the rejected resources, as sent

    @property
    def key(self) -> tuple[str, str, str]:
        return self.group, self.type_url, self.version
