"""The ADS server's metrics (prometheus_client): responses, ACKs and NACKs by type, open and refused streams,
how long a published snapshot takes to reach a stream, and how long a proxy takes to ACK what it was sent."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["XdsMetrics"]

# From a loop turn (~1 ms) to a stalled proxy (10 s): the SLOs we benchmark are 20-250 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TYPES = ("lds", "rds", "cds", "eds")


class XdsMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry = registry if registry is not None else CollectorRegistry()
        self.responses = Counter("meshctl_xds_responses", "xDS responses sent, by type.", ["type"], registry=registry)
        self.acks = Counter("meshctl_xds_acks", "xDS responses ACKed by Envoy, by type.", ["type"], registry=registry)
        self.nacks = Counter(
            "meshctl_xds_nacks", "xDS responses rejected (NACKed) by Envoy, by type.", ["type"], registry=registry
        )
        self.connected_streams = Gauge("meshctl_xds_connected_streams", "Open ADS streams.", registry=registry)
        self.unauthorized_streams = Counter(
            "meshctl_xds_unauthorized_streams",
            "ADS streams refused: the client certificate does not allow the VirtualNode asked for.",
            registry=registry,
        )
        self.push_latency = Histogram(
            "meshctl_xds_push_latency_seconds",
            "From a snapshot's publication to a response carrying it written to a stream, by type.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.time_to_ack = Histogram(
            "meshctl_xds_time_to_ack_seconds",
            "From a response written to its ACK (or NACK) from the proxy, by type.",
            ["type"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        for short in _TYPES:  # every type shows from the first scrape, at zero, as before
            for family in (self.responses, self.acks, self.nacks, self.push_latency, self.time_to_ack):
                family.labels(short)

    def count(self, family: str, short_type: str) -> int:
        """The current value of ``responses``, ``acks`` or ``nacks`` for one type (tests, benchmarks)."""
        return int(self._registry.get_sample_value(f"meshctl_xds_{family}_total", {"type": short_type}) or 0)

    @property
    def streams(self) -> int:
        return int(self._registry.get_sample_value("meshctl_xds_connected_streams") or 0)

    @property
    def refused_streams(self) -> int:
        return int(self._registry.get_sample_value("meshctl_xds_unauthorized_streams_total") or 0)
