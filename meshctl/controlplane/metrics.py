"""The controller's metrics (prometheus_client): builds and how long they take, by path (a full translation, an
endpoint patch or a Route patch), build errors, and the objects currently rejected."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["BuildMetrics"]

# A Route patch at 10,000 services takes ~5 ms, a full translation ~0.8 s (docs/benchmarks.md).
_BUILD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BuildMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._builds = Counter("meshctl_snapshot_builds", "Model changes translated and built.", registry=self.registry)
        self._full_builds = Counter(
            "meshctl_snapshot_full_builds",
            "Builds that translated the whole mesh (not an endpoint or route patch).",
            registry=self.registry,
        )
        self._route_patches = Counter(
            "meshctl_snapshot_route_patches",
            "Node groups a Route change reached by patching only their RouteConfiguration (no group rebuild).",
            registry=self.registry,
        )
        self._build_seconds = Counter(
            "meshctl_snapshot_build_seconds", "Time spent translating and building.", registry=self.registry
        )
        self._build_duration = Histogram(
            "meshctl_snapshot_build_duration_seconds",
            "One build, from the model's arrival to its snapshots published, by path (full, endpoints, routes).",
            ["path"],
            buckets=_BUILD_BUCKETS,
            registry=self.registry,
        )
        self._build_errors = Counter(
            "meshctl_build_errors",
            "Builds or node groups that failed for a reason no single object explains (their last config is kept).",
            registry=self.registry,
        )
        self._nack_verdicts = Counter(
            "meshctl_nack_verdicts",
            "Proxy NACKs judged by Envoy's validator, by verdict (confirmed: blocked for everyone; not-confirmed: "
            "that proxy's alone; superseded; unknown).",
            ["verdict"],
            registry=self.registry,
        )
        self._background_errors = Counter(
            "meshctl_background_errors",
            "Failures of work done in the background (each logged with its traceback), by task.",
            ["task"],
            registry=self.registry,
        )
        self._rejected = Gauge(
            "meshctl_rejected_objects", "VirtualNodes and Routes currently rejected.", registry=self.registry
        )

    def observe_build(self, path: str, seconds: float) -> None:
        self._builds.inc()
        self._build_seconds.inc(seconds)
        self._build_duration.labels(path).observe(seconds)

    def full_build_started(self) -> None:
        self._full_builds.inc()

    def route_patched(self) -> None:
        self._route_patches.inc()

    def build_failed(self) -> None:
        self._build_errors.inc()

    def nack_judged(self, verdict: str) -> None:
        if verdict != "pending":
            self._nack_verdicts.labels(verdict).inc()

    def background_failed(self, task: str) -> None:
        self._background_errors.labels(task).inc()

    def background_errors(self) -> dict[str, int]:
        """Failures so far by task (``meshctl status``)."""
        return {
            s.labels["task"]: int(s.value)
            for metric in self._background_errors.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }

    def count_rejected(self, count: Callable[[], int]) -> None:
        """The gauge reads ``count()`` at every scrape (the controller's current statuses)."""
        self._rejected.set_function(count)

    def _value(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    # Read by tests, benchmarks and the admin API.
    @property
    def builds(self) -> int:
        return int(self._value("meshctl_snapshot_builds_total"))

    @property
    def full_builds(self) -> int:
        return int(self._value("meshctl_snapshot_full_builds_total"))

    @property
    def route_patches(self) -> int:
        return int(self._value("meshctl_snapshot_route_patches_total"))

    @property
    def build_errors(self) -> int:
        return int(self._value("meshctl_build_errors_total"))
