"""xDS type URLs, in the make-before-break order a push follows."""

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SHORT_NAMES", "TYPE_ORDER"]

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"

# Clusters and their endpoints before the listeners and routes that point at them.
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}
