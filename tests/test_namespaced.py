"""NamespacedMap behaves as a dict keyed by ObjectKey, and its copies never see each other's writes."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshctl.model import ObjectKey
from meshctl.model.namespaced import NamespacedMap, by_namespace, names_in

keys = st.builds(ObjectKey, st.just("Pod"), st.sampled_from(["a", "b", "c"]), st.sampled_from(["p1", "p2", "p3"]))
ops = st.lists(st.tuples(st.sampled_from(["set", "del", "copy"]), keys, st.integers(0, 3)), max_size=40)


@given(ops)
def test_same_as_a_dict_and_copies_are_independent(operations) -> None:
    live, expected = NamespacedMap[int]("Pod"), {}
    snapshots: list[tuple[NamespacedMap[int], dict[ObjectKey, int]]] = []
    for op, key, value in operations:
        if op == "set":
            live[key] = expected[key] = value
        elif op == "del":
            if key in expected:
                del live[key], expected[key]
            else:
                with pytest.raises(KeyError):
                    del live[key]
        else:
            snapshots.append((live, dict(expected)))
            live = live.copy()
        assert len(live) == len(expected) and dict(live.items()) == expected and live == expected
    for held, contents in snapshots:  # a map handed out (to a model) never changed afterwards
        assert dict(held.items()) == contents
    for key in {k for _, k, _ in operations}:
        assert live.get(key) == expected.get(key) and (key in live) == (key in expected)
        assert names_in(live, "Pod", key.namespace).get(key.name) == expected.get(key)
        assert names_in(expected, "Pod", key.namespace).get(key.name) == expected.get(key)


def test_keys_of_another_kind_are_not_in_it() -> None:
    pods = NamespacedMap[int]("Pod")
    pods[ObjectKey("Pod", "a", "x")] = 1
    assert ObjectKey("Service", "a", "x") not in pods and pods.get(ObjectKey("Service", "a", "x")) is None
    with pytest.raises(ValueError):
        pods[ObjectKey("Service", "a", "x")] = 2


def test_by_namespace_reads_a_plain_map_and_a_namespaced_map_alike() -> None:
    plain = {
        ObjectKey("Pod", "a", "p1"): 1,
        ObjectKey("Pod", "b", "p2"): 2,
        ObjectKey("Service", "a", "p1"): 3,  # another kind: not a Pod
    }
    namespaced: NamespacedMap[int] = NamespacedMap("Pod")
    for key, value in plain.items():
        if key.kind == "Pod":
            namespaced[key] = value
    for source in (plain, namespaced):
        pods = by_namespace(source, "Pod")
        assert dict(pods("a")) == {"p1": 1} and dict(pods("b")) == {"p2": 2} and dict(pods("c")) == {}


def test_a_write_after_a_copy_does_not_copy_the_namespace() -> None:
    # Each model of the Kubernetes source is a copy; a Pod change then wrote to a namespace of 100,000 Pods, and
    # the namespace's dict was copied: a 5 MiB table per model, ~200 models in a 1,000-Pod burst (issue 14).
    pods = NamespacedMap[int]("Pod")
    for i in range(100_000):
        pods[ObjectKey("Pod", "bench", f"pod-{i}")] = i % 7
    held = pods.copy()
    tracemalloc.start()
    try:
        pods[ObjectKey("Pod", "bench", "pod-5")] = 99
        del pods[ObjectKey("Pod", "bench", "pod-6")]
        allocated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert allocated < 64 * 1024, allocated
    assert held[ObjectKey("Pod", "bench", "pod-5")] == 5 and ObjectKey("Pod", "bench", "pod-6") in held
    assert len(held) == 100_000 and len(pods) == 99_999
