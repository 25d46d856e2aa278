"""Resources only proxyless gRPC clients ask for: the API listener named after each target they dial.

They depend on the requested name alone (every client of every group asking for ``echo.rpc:50051`` gets the same
bytes), so each is built and serialized once and shared, as snapshot resources are."""

from __future__ import annotations

from functools import lru_cache

from meshctl.translate.sidecar import OUTBOUND_ROUTE_CONFIG
from meshctl.xds.cache.resource import CachedResource
from meshctl.xds.envoy.listener import build_api_listener
from meshctl.xds.envoy.types import LISTENER, ROUTE

__all__ = ["api_listener"]


@lru_cache(maxsize=10_000)
def api_listener(name: str) -> CachedResource:
    """The Listener a gRPC client resolving ``xds:///name`` asks for: its routes are the group's outbound
    RouteConfiguration, whose virtual hosts match the Services' names with their ports (``echo.rpc:50051``)."""
    message = build_api_listener(name, OUTBOUND_ROUTE_CONFIG)
    return CachedResource(LISTENER, name, message, [(ROUTE, OUTBOUND_ROUTE_CONFIG)])
