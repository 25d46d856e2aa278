"""What callers' Envoys saw per target cluster: requests, 5xx and latency, from their Prometheus stats port.

A window is the difference of two scrapes of every caller, so counters that started before the window (or a
proxy that restarted: its counters went down) never count. p99 comes from the merged ``upstream_rq_time``
histogram buckets, as Prometheus' histogram_quantile does (the upper bound of the bucket holding the 99th
percentile), so it is conservative by at most one bucket.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ClusterWindow", "Scrape", "scrape", "window"]


@dataclass
class Scrape:
    """Per caller URL, per cluster: requests, 5xx responses, latency buckets (upper bound ms -> cumulative count)."""

    total: dict[tuple[str, str], float] = field(default_factory=dict)
    errors: dict[tuple[str, str], float] = field(default_factory=dict)
    buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    unreachable: list[str] = field(default_factory=list)


def scrape(urls: list[str], clusters: set[str], timeout: float = 2) -> Scrape:
    out = Scrape()
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                text = resp.read().decode()
        except OSError:
            out.unreachable.append(url)
            continue
        for family in text_string_to_metric_families(text):
            if family.name not in (
                "envoy_cluster_upstream_rq_completed",
                "envoy_cluster_upstream_rq_xx",
                "envoy_cluster_upstream_rq_time",
            ):
                continue
            for s in family.samples:
                cluster = s.labels.get("envoy_cluster_name", "")
                if cluster not in clusters:
                    continue
                key = (url, cluster)
                if family.name == "envoy_cluster_upstream_rq_completed":
                    out.total[key] = s.value
                elif family.name == "envoy_cluster_upstream_rq_xx":
                    if s.labels.get("envoy_response_code_class") == "5":
                        out.errors[key] = s.value
                elif s.name.endswith("_bucket"):
                    out.buckets[key][float(s.labels["le"])] = s.value
    return out


@dataclass(frozen=True)
class ClusterWindow:
    requests: int
    errors: int
    p99_ms: float | None  # None: no requests

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def window(before: Scrape, after: Scrape, clusters: set[str]) -> ClusterWindow:
    """Requests, 5xx and p99 to ``clusters`` between two scrapes, summed over every caller seen in both."""
    requests = errors = 0.0
    merged: dict[float, float] = defaultdict(float)
    for key, total in after.total.items():
        if key[1] not in clusters:
            continue
        start = before.total.get(key, 0.0)
        if total < start:  # the proxy restarted: its counters began again
            start = 0.0
        requests += total - start
        errors += max(0.0, after.errors.get(key, 0.0) - (before.errors.get(key, 0.0) if total >= start else 0.0))
        for le, count in after.buckets.get(key, {}).items():
            merged[le] += max(0.0, count - before.buckets.get(key, {}).get(le, 0.0))
    p99 = None
    if merged:
        counted = merged.get(math.inf, max(merged.values()))
        if counted > 0:
            p99 = next(le for le in sorted(merged) if merged[le] >= 0.99 * counted)
    return ClusterWindow(int(requests), int(errors), p99)
