"""IR -> Envoy protobuf messages (xds-protos). The only place outside the cache that touches Envoy types."""

from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "TYPE_ORDER"]
