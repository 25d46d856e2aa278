"""The control plane's reading of Envoy's Prometheus text and the windows taken between two readings."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from meshctl.admin.traffic import Reading, _edges, _sum_rounds, counters, parse_cluster_stats, window

TEXT = """\
# TYPE envoy_cluster_upstream_rq_completed counter
envoy_cluster_upstream_rq_completed{envoy_cluster_name="demo/reviews-v1/8080"} 10
envoy_cluster_upstream_rq_completed{envoy_cluster_name="demo/reviews-v2/8080"} 4
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="demo/reviews-v2/8080"} 2
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="demo/reviews-v2/8080"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="demo/reviews-v2/8080",le="5"} 1
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="demo/reviews-v2/8080",le="+Inf"} 4
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="demo/reviews-v2/8080",le="10"} 3
envoy_cluster_external_upstream_rq_completed{envoy_cluster_name="demo/reviews-v1/8080"} 99
"""


def test_counters_per_cluster_with_sorted_buckets():
    got = parse_cluster_stats(TEXT)
    assert got == {
        "demo/reviews-v1/8080": counters(10, 0),
        "demo/reviews-v2/8080": counters(4, 2, (5.0, 10.0, math.inf), (1.0, 3.0, 4.0)),
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TEXT.splitlines()) | st.text(max_size=80), max_size=30))
def test_any_text_parses_without_raising(lines):
    parsed = parse_cluster_stats("\n".join(lines))  # never raises: a line it cannot read is skipped
    assert all(len(c) == 4 and not math.isnan(c[0]) for c in parsed.values())


def test_a_window_counts_only_what_happened_in_it_and_survives_a_restart():
    before = {("a", "c"): counters(10, 1, (5.0, math.inf), (8.0, 10.0)), ("b", "c"): counters(50, 0)}
    after = {
        ("a", "c"): counters(30, 3, (5.0, math.inf), (20.0, 30.0)),  # +20, 2 of them 5xx
        ("b", "c"): counters(5, 0),  # restarted: its 5 since then count
        ("new", "c"): counters(1000, 1000),  # not read before: its history is not this window's
    }
    w = window(before, after, {"c"}, read_before={"a", "b"})
    assert (w.requests, w.errors) == (25, 2)
    assert w.p99_ms == math.inf  # 8 of 20 above 5 ms: the 99th percentile is in the last bucket


def test_graph_figures_sum_the_rounds_of_the_window():
    r0 = Reading(0.0, 0.1, {("a", "c"): counters(0, 0)}, {"a": "demo/frontend"}, ())
    r1 = Reading(5.0, 5.1, {("a", "c"): counters(50, 5)}, {"a": "demo/frontend"}, ())
    r2 = Reading(10.0, 10.1, {("a", "c"): counters(100, 5)}, {"a": "demo/frontend"}, ())
    summed = _sum_rounds([(5.0, _edges(r0, r1)), (5.0, _edges(r1, r2))])
    assert summed == {("demo/frontend", "c"): (100.0, 5.0, 10.0, (), ())}


def test_histograms_with_other_bounds_are_merged_by_bound():
    w = window(
        {},
        {
            ("a", "c"): counters(10, 0, (5.0, math.inf), (9.0, 10.0)),
            ("b", "c"): counters(90, 0, (1.0, math.inf), (90.0, 90.0)),
        },
        {"c"},
    )
    assert (w.requests, w.p99_ms) == (100, 5.0)  # 99 of 100 at or under 5 ms


def test_made_up_bucket_bounds_do_not_grow_the_control_planes_memory():
    from meshctl.admin import traffic

    for i in range(1500):  # a stats port answering with new bounds each time
        text = (
            'envoy_cluster_upstream_rq_completed{envoy_cluster_name="c"} 1\n'
            f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="c",le="{i + 0.5}"}} 1\n'
        )
        assert parse_cluster_stats(text)["c"][2] == (i + 0.5,)
    assert len(traffic._BOUNDS) <= 1000 and len(traffic._LE) <= 1000
