"""Conflicts (409) through the one helper (meshctl/kube/conflicts.py), against the test API server: the ingress's
patches read again and retry, a shift refuses to write over a Route someone changed since it was read."""

from __future__ import annotations

import pytest
from kubernetes import client

from meshctl.cli.client import CliError
from meshctl.cli.writers import KubernetesWriter
from meshctl.kube.conflicts import retry_on_conflict, unless_conflict
from tests.manifests import route
from tests.test_apiserver import install_crds

ARGS = ("mesh.meshctl.dev", "v1alpha1", "demo", "routes")


@pytest.fixture
def api(apiserver):
    with apiserver.client() as api_client:
        install_crds(api_client)
        yield api_client


def test_a_read_modify_write_that_meets_a_conflict_reads_again(api) -> None:
    crs = client.CustomObjectsApi(api)
    crs.create_namespaced_custom_object(*ARGS, route("r", "svc", {"a": 100}))
    attempts = []

    def bump_priority() -> int:
        obj = crs.get_namespaced_custom_object(*ARGS, "r")
        if not attempts:  # someone writes between our read and our write, once
            other = crs.get_namespaced_custom_object(*ARGS, "r")
            crs.replace_namespaced_custom_object(*ARGS, "r", {**other, "spec": {**other["spec"], "priority": 1}})
        attempts.append(obj["metadata"]["resourceVersion"])
        obj["spec"]["priority"] = obj["spec"].get("priority", 0) + 10
        return crs.replace_namespaced_custom_object(*ARGS, "r", obj)["spec"]["priority"]

    conflicts = []
    assert retry_on_conflict(bump_priority, what="Route demo/r", on_conflict=lambda: conflicts.append(1)) == 11
    assert len(attempts) == 2 and attempts[0] != attempts[1] and conflicts == [1]


def test_a_conflict_that_keeps_coming_gives_up_with_a_409(api) -> None:
    crs = client.CustomObjectsApi(api)
    crs.create_namespaced_custom_object(*ARGS, route("r", "svc", {"a": 100}))
    stale = crs.get_namespaced_custom_object(*ARGS, "r")
    fresh = crs.get_namespaced_custom_object(*ARGS, "r")
    crs.replace_namespaced_custom_object(*ARGS, "r", {**fresh, "spec": {**fresh["spec"], "priority": 2}})
    with pytest.raises(client.ApiException) as exc:
        retry_on_conflict(lambda: crs.replace_namespaced_custom_object(*ARGS, "r", stale), what="Route demo/r")
    assert exc.value.status == 409 and "still conflicting after 5 attempts" in str(exc.value.reason)
    assert not unless_conflict(lambda: crs.replace_namespaced_custom_object(*ARGS, "r", stale))


def test_a_shift_does_not_write_over_a_route_changed_since_it_was_read(api, apiserver, tmp_path) -> None:
    crs = client.CustomObjectsApi(api)
    crs.create_namespaced_custom_object(*ARGS, route("r", "svc", {"a": 80, "b": 20}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(apiserver.kubeconfig())
    writer = KubernetesWriter(str(kubeconfig), "demo", "r")
    writer.read()
    other = crs.get_namespaced_custom_object(*ARGS, "r")
    crs.replace_namespaced_custom_object(*ARGS, "r", {**other, "spec": {**other["spec"], "priority": 3}})
    targets = [{"virtualNodeRef": {"name": "a"}, "weight": 50}, {"virtualNodeRef": {"name": "b"}, "weight": 50}]
    with pytest.raises(CliError, match="changed since it was read"):
        writer.write(targets)
    assert crs.get_namespaced_custom_object(*ARGS, "r")["spec"]["priority"] == 3  # theirs, untouched
    writer.read()
    writer.write(targets)  # read again: goes through
    weights = crs.get_namespaced_custom_object(*ARGS, "r")["spec"]["httpRoute"]["action"]["weightedTargets"]
    assert [t["weight"] for t in weights] == [50, 50]
