"""Tolerances for random outcomes, from the binomial distribution instead of a guess (issue 9).

A weighted split of n requests gives a binomial count. ``binomial_bounds`` returns the narrowest [lo, hi] that
holds the count with probability at least 1 - alpha (alpha = 1e-6: a correct split fails once in a million runs),
computed exactly from the distribution, so a test is neither flaky nor loose by accident.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["assert_split", "binomial_bounds"]


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    if p <= 0 or p >= 1:
        return (0, 0) if p <= 0 else (n, n)
    log_pmf = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)
        for k in range(n + 1)
    ]
    pmf = [math.exp(v) for v in log_pmf]
    lo, tail = 0, 0.0
    while tail + pmf[lo] <= alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while tail + pmf[hi] <= alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


def assert_split(counts: Mapping[str, int], weights: Mapping[str, float], alpha: float = 1e-6) -> None:
    """Every key's count is within its binomial bounds; nothing else was seen."""
    n = sum(counts.values())
    total = sum(weights.values())
    assert set(counts) <= {k for k, w in weights.items() if w > 0}, counts
    for key, weight in weights.items():
        lo, hi = binomial_bounds(n, weight / total, alpha)
        assert lo <= counts.get(key, 0) <= hi, f"{key}: {counts.get(key, 0)} of {n}, expected {lo}..{hi} ({counts})"
