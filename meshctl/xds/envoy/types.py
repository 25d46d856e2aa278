"""xDS type URLs, in the make-before-break order a push follows."""

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SECRET", "SERVED_TYPES", "SHORT_NAMES", "TYPE_ORDER"]

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = _PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Clusters and their endpoints before the listeners and routes that point at them: the config every proxy takes.
TYPE_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# And secrets (SDS, by name): Envoy asks for them only once a listener or cluster it received names them (they
# warm until the secret arrives); a proxy that uses no mTLS never does.
SERVED_TYPES = (*TYPE_ORDER, SECRET)
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds", SECRET: "sds"}
