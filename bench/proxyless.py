"""Benchmark 14 (issue 34): benchmark 3's fan-out with 1,000 simulated proxyless gRPC clients instead of Envoys.

The load client's streams speak as grpcio's XdsClient does (gRPC's user agent, LDS by name, then RDS, CDS, EDS:
``bench/adsload.py --grpc``); a change to svc-0 (an endpoint change, then a Route weight change) reaches every one
of them. Real grpcio processes are one xDS stream each: 1,000 of them do not fit on the benchmark machine.
"""

from __future__ import annotations

from bench.fanout import run_proxyless


def run() -> str:
    return run_proxyless(1_000, 1000, 10)
