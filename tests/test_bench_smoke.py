"""The benchmarks still run (at toy sizes, so the suite stays fast); numbers live in docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from bench import fanout, incremental, offcore, translation
from bench.common import pinned_to_first_core


def test_translation_and_incremental_benchmarks_run() -> None:
    assert "| 20 |" in translation.run(sizes=(20,))
    rows = incremental.run(sizes=(20,), changes=3).splitlines()[2:]
    assert [r.split(" | ")[1:3] for r in rows] == [["endpoint", "3"], ["pod", "3"]]
    assert all(r.endswith("| 0 |") for r in rows), rows  # no full translation: every change took the fast path


def test_fanout_benchmark_runs_with_a_few_streams() -> None:
    rows = asyncio.run(fanout._run(60, streams=50, delta=True, changes=2))
    assert [r[3] for r in rows] == ["eds", "rds"]
    # Column 5 is the p50; column 7 ("all streams") is NaN unless every stream got every change.
    assert all(math.isfinite(r[5]) and math.isfinite(r[7]) for r in rows), rows


def test_fanout_benchmark_runs_with_a_few_proxyless_grpc_streams() -> None:
    """Benchmark 14's load: streams in gRPC's order (named LDS first) get every change too."""
    rows = asyncio.run(fanout._run(60, streams=20, delta=False, changes=2, grpc_clients=True))
    assert [(r[2], r[3]) for r in rows] == [("gRPC (sotw)", "eds"), ("gRPC (sotw)", "rds")]
    assert all(math.isfinite(r[5]) and math.isfinite(r[7]) for r in rows), rows


def test_kubernetes_source_benchmarks_run_at_toy_size() -> None:
    from bench import churn, kubesource

    pods = asyncio.run(kubesource.pod_updates(20, 3))
    assert pods[2] == 3 and pods[5] == 0, pods  # every change seen, none took a full build
    rows, (rss, _), _ = asyncio.run(kubesource.stalls(20, 20, 10))
    assert [r[0].split(" ")[0] for r in rows] == ["list", "second", "config_dump", "burst"]
    assert all(math.isfinite(r[2]) for r in rows) and rss > 0
    assert "| 20 | 200 |" in churn.run(n=20, changes=200, baseline_after=50)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to move to")
def test_a_load_process_is_off_the_measured_core_before_its_first_import(tmp_path: Path) -> None:
    # Children inherit the control plane's pinning to core 0; a load process that moved itself in its __main__ had
    # imported grpc (or the kubernetes client) there first, on the core being measured.
    (tmp_path / "probe.py").write_text(
        "import json, os, sys\nprint(json.dumps([sorted(os.sched_getaffinity(0)), sys.argv, 'grpc' in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])])}
    with pinned_to_first_core():
        out = subprocess.run(offcore.command("probe", "--flag", "x"), env=env, capture_output=True, check=True)
    cores, argv, grpc_loaded = json.loads(out.stdout)
    assert 0 not in cores and cores
    assert argv[1:] == ["--flag", "x"] and not grpc_loaded


def test_manifest_churn_benchmark_runs_at_toy_size() -> None:
    from bench import manifestchurn

    out = manifestchurn.run(burst_services=20, sustained_services=20, burst=10, rate=20, seconds=3)
    assert "| 20 | burst of 10 EndpointSlice files |" in out and "slice files/s" in out, out


def test_identity_benchmark_runs_at_toy_size() -> None:
    from bench import identity

    out = identity.run(count=10, streams=10)
    assert "issue 10 workload certificates" in out and "rotation wave: 10 identities" in out
    assert "(20 SDS responses in all)" in out  # each stream: its first secrets, then the wave's


def test_token_reconnect_benchmark_runs_at_toy_size() -> None:
    from bench import tokenreconnect

    out = tokenreconnect.run(proxies=2, restarts=1)
    assert "| 2 | 1 |" in out, out


def test_authz_benchmark_runs_at_toy_size() -> None:
    from bench import authz

    out = authz.run(services=10, prop_services=3, flips=2)
    assert "10 services, 10 policies (20 listeners)" in out and "policy change -> callee LDS" in out, out


def test_traffic_collection_benchmark_runs_at_toy_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import traffic

    for name, value in (("SERVICES", 20), ("PROXIES", 10), ("CLUSTERS", 4), ("INTERVAL", 0.5)):
        monkeypatch.setattr(traffic, name, value)
    monkeypatch.setattr(traffic, "BASELINE", 1.0)
    monkeypatch.setattr(traffic, "WATCH", 2.5)
    row = asyncio.run(traffic._run())
    assert row[0] == 10 and row[3] >= 2 and row[-1] > 0  # rounds made, edges with traffic on the graph
