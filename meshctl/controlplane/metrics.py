"""Control-plane counters, rendered in the Prometheus text format (no client library needed)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Metrics"]


@dataclass
class Metrics:
    responses: Counter[str] = field(default_factory=Counter)  # by short type name
    acks: Counter[str] = field(default_factory=Counter)
    nacks: Counter[str] = field(default_factory=Counter)
    builds: int = 0
    full_builds: int = 0  # of which translated everything (the rest were endpoint or route patches)
    route_patches: int = 0  # node groups a Route change reached by patching their RouteConfiguration alone
    build_seconds_total: float = 0.0
    connected_streams: int = 0
    unauthorized_streams: int = 0  # mTLS: refused because the certificate does not allow the VirtualNode asked for
    rejected_objects: int = 0
    build_errors: int = 0  # groups left on their last config, or builds abandoned, because of a bug

    def observe_build(self, seconds: float) -> None:
        self.builds += 1
        self.build_seconds_total += seconds

    def render(self) -> str:
        lines = []

        def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {value}" for labels, value in samples)

        def by_type(counter: Counter[str]) -> list[tuple[str, float]]:
            return [(f'{{type="{t}"}}', counter[t]) for t in sorted(counter)] or [("", 0)]

        metric("meshctl_xds_responses_total", "counter", "xDS responses sent, by type.", by_type(self.responses))
        metric("meshctl_xds_acks_total", "counter", "xDS responses ACKed by Envoy, by type.", by_type(self.acks))
        metric(
            "meshctl_xds_nacks_total",
            "counter",
            "xDS responses rejected (NACKed) by Envoy, by type.",
            by_type(self.nacks),
        )
        metric("meshctl_xds_connected_streams", "gauge", "Open ADS streams.", [("", self.connected_streams)])
        metric(
            "meshctl_xds_unauthorized_streams_total",
            "counter",
            "ADS streams refused: the client certificate does not allow the VirtualNode asked for.",
            [("", self.unauthorized_streams)],
        )
        metric("meshctl_snapshot_builds_total", "counter", "Model changes translated and built.", [("", self.builds)])
        metric(
            "meshctl_snapshot_full_builds_total",
            "counter",
            "Builds that translated the whole mesh (not an endpoint or route patch).",
            [("", self.full_builds)],
        )
        metric(
            "meshctl_snapshot_route_patches_total",
            "counter",
            "Node groups a Route change reached by patching only their RouteConfiguration (no group rebuild).",
            [("", self.route_patches)],
        )
        metric(
            "meshctl_snapshot_build_seconds_total",
            "counter",
            "Time spent translating and building.",
            [("", round(self.build_seconds_total, 6))],
        )
        metric(
            "meshctl_build_errors_total",
            "counter",
            "Builds or node groups that failed for a reason no single object explains (their last config is kept).",
            [("", self.build_errors)],
        )
        metric(
            "meshctl_rejected_objects",
            "gauge",
            "VirtualNodes and Routes currently rejected.",
            [("", self.rejected_objects)],
        )
        return "\n".join(lines) + "\n"
