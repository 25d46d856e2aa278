"""The benchmarks still run (at toy sizes, so the suite stays fast); numbers live in docs/benchmarks.md."""

from __future__ import annotations

import asyncio

from bench import fanout, incremental, translation


def test_translation_and_incremental_benchmarks_run() -> None:
    assert "| 20 |" in translation.run(sizes=(20,))
    assert "| 20 | 3 |" in incremental.run(sizes=(20,), changes=3)


def test_fanout_benchmark_runs_with_a_few_streams() -> None:
    rows = asyncio.run(fanout._run(60, streams=50, delta=True, changes=2))
    assert [r[3] for r in rows] == ["eds", "rds"]
    assert all(r[5] == r[5] for r in rows)  # p50 is a number, not NaN: every stream got every change
