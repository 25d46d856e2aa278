"""The test apiserver speaks the real protocol: proven with the real `kubernetes` client and with kubectl."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.apiserver import ApiServer
from tests.manifests import route, service

ROOT = Path(__file__).parent.parent


@pytest.fixture
def api(apiserver) -> client.ApiClient:
    with apiserver.client() as api_client:
        yield api_client


def install_crds(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    for path in sorted((ROOT / "crds").glob("*.dev_*.yaml")):
        ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
    # The upstream Gateway API CRDs meshctl reads (deploy/gateway-api): a cluster with Gateway API installed.
    for path in sorted((ROOT / "deploy" / "gateway-api").glob("gateway.networking.k8s.io_*.yaml")):
        ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))


def test_list_then_watch_from_its_resource_version_sees_every_change_in_order(api, apiserver):
    core = client.CoreV1Api(api)
    core.create_namespaced_service("demo", service("a"))
    listed = core.list_namespaced_service("demo")
    assert [s.metadata.name for s in listed.items] == ["a"]
    rv = listed.metadata.resource_version

    core.create_namespaced_service("demo", service("b"))
    core.patch_namespaced_service("a", "demo", {"metadata": {"labels": {"tier": "web"}}})
    core.delete_namespaced_service("b", "demo")

    seen = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_service, "demo", resource_version=rv, timeout_seconds=5, allow_watch_bookmarks=True
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            stream.stop()
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]


def test_bookmarks_carry_the_current_resource_version(api, apiserver):
    core = client.CoreV1Api(api)
    core.create_namespaced_service("demo", service("a"))
    rv = core.list_namespaced_service("demo").metadata.resource_version
    core.create_namespaced_pod("other", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
    response = core.list_namespaced_service(
        "demo", watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=1, _preload_content=False
    )
    events = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) > int(rv)
    assert all(e["type"] == "BOOKMARK" for e in events)  # the pod in another kind is not an event here


def test_a_watch_from_compacted_history_gets_410_gone(api, apiserver):
    core = client.CoreV1Api(api)
    core.create_namespaced_service("demo", service("a"))
    old = core.list_namespaced_service("demo").metadata.resource_version
    core.create_namespaced_service("demo", service("b"))
    apiserver.compact()
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(core.list_namespaced_service, "demo", resource_version=old, timeout_seconds=2):
            pass
    assert gone.value.status == 410


def test_status_subresource_generation_and_conflicts(api, apiserver):
    install_crds(api)
    crs = client.CustomObjectsApi(api)
    args = ("mesh.meshctl.dev", "v1alpha1", "demo", "routes")
    created = crs.create_namespaced_custom_object(*args, route("r", "svc", {"a": 100}))
    assert created["metadata"]["generation"] == 1

    with_status = crs.patch_namespaced_custom_object_status(*args, "r", {"status": {"observedGeneration": 1}})
    assert with_status["status"] == {"observedGeneration": 1} and with_status["metadata"]["generation"] == 1

    edited = dict(with_status, spec={**with_status["spec"], "priority": 5})
    updated = crs.replace_namespaced_custom_object(*args, "r", edited)
    assert updated["metadata"]["generation"] == 2 and updated["status"] == {"observedGeneration": 1}

    stale = dict(with_status, spec={**with_status["spec"], "priority": 7})  # carries the old resourceVersion
    with pytest.raises(ApiException) as conflict:
        crs.replace_namespaced_custom_object(*args, "r", stale)
    assert conflict.value.status == 409

    # A status write cannot change the spec.
    sneaky = crs.patch_namespaced_custom_object_status(*args, "r", {"spec": {"priority": 9}, "status": {"x": 1}})
    assert sneaky["spec"]["priority"] == 5


def kubectl(apiserver: ApiServer, tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    config = tmp_path / "kubeconfig"
    config.write_text(apiserver.kubeconfig())
    base = ["kubectl", "--kubeconfig", str(config), "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60, check=True, **kw)


def test_kubectl_applies_lists_and_watches_what_the_python_client_sees(api, apiserver, tmp_path):
    applied = kubectl(apiserver, tmp_path, "apply", "--validate=false", "-k", str(ROOT / "crds"))
    assert "customresourcedefinition.apiextensions.k8s.io/virtualnodes.mesh.meshctl.dev created" in applied.stdout
    applied = kubectl(apiserver, tmp_path, "apply", "--validate=false", "-R", "-f", str(ROOT / "examples"))
    assert "route.mesh.meshctl.dev/reviews created" in applied.stdout

    crs = client.CustomObjectsApi(api)
    for plural in ("virtualnodes", "routes"):
        listed = json.loads(
            kubectl(apiserver, tmp_path, "get", f"{plural}.mesh.meshctl.dev", "-A", "-o", "json").stdout
        )
        via_python = crs.list_cluster_custom_object("mesh.meshctl.dev", "v1alpha1", plural)

        def names(items):
            return sorted((i["metadata"]["namespace"], i["metadata"]["name"]) for i in items)

        in_files = sorted(
            set(
                names(  # example sets are independent: two may define the same object
                    d
                    for p in sorted((ROOT / "examples").rglob("*.yaml"))
                    for d in yaml.safe_load_all(p.read_text())
                    if d and d["kind"] == {"virtualnodes": "VirtualNode", "routes": "Route"}[plural]
                )
            )
        )
        assert names(listed["items"]) == names(via_python["items"]) == in_files
    slices = json.loads(kubectl(apiserver, tmp_path, "get", "endpointslices", "-n", "demo", "-o", "json").stdout)
    assert len(slices["items"]) == 2

    config = tmp_path / "kubeconfig"
    watcher = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(config),
            "--cache-dir",
            str(tmp_path / "cache"),
            "get",
            "routes.mesh.meshctl.dev",
            "-n",
            "demo",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while apiserver.open_watches["routes"] < 1 and time.monotonic() < deadline:  # kubectl lists, then watches
            time.sleep(0.02)
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "mesh.meshctl.dev", "v1alpha1", "demo", "routes", "reviews", {"spec": {"priority": 7}}
        )
        events = []
        deadline = time.monotonic() + 20
        buffer = ""
        while time.monotonic() < deadline and not any(e["type"] == "MODIFIED" for e in events):
            line = watcher.stdout.readline()
            if not line:
                break
            buffer += line
            try:
                events.append(json.loads(buffer))
                buffer = ""
            except json.JSONDecodeError:
                continue
        modified = [e for e in events if e["type"] == "MODIFIED"]
        assert modified and modified[0]["object"]["spec"]["priority"] == 7, (events, watcher.stderr)
    finally:
        watcher.kill()
        watcher.wait()


def test_a_dropped_watch_resumes_from_its_resource_version_without_missing_events(api, apiserver):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_service("demo").metadata.resource_version
    seen: list[str] = []
    stream = watch.Watch()

    def consume() -> None:
        # No timeout: the client re-watches from the last resourceVersion whenever the server closes the stream.
        for event in stream.stream(core.list_namespaced_service, "demo", resource_version=rv):
            seen.append(event["object"].metadata.name)
            if len(seen) == 3:
                stream.stop()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while apiserver.open_watches["services"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    core.create_namespaced_service("demo", service("one"))
    apiserver.drop_watches()
    core.create_namespaced_service("demo", service("two"))  # lands while no watch is open
    apiserver.drop_watches()
    core.create_namespaced_service("demo", service("three"))
    reader.join(15)
    assert seen == ["one", "two", "three"]


def test_lists_are_paginated_with_limit_and_continue(api, apiserver):
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_service("demo", service(f"s{i}"))
    first = core.list_namespaced_service("demo", limit=3)
    assert [s.metadata.name for s in first.items] == ["s0", "s1", "s2"]
    core.delete_namespaced_service("s1", "demo")  # behind the cursor: the next pages are not shifted
    names, token = [], first.metadata._continue
    while token:
        page = core.list_namespaced_service("demo", limit=3, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version  # the first page's revision
        names += [s.metadata.name for s in page.items]
        token = page.metadata._continue
    assert names == ["s3", "s4", "s5", "s6"]
    assert [s.metadata.name for s in core.list_namespaced_service("demo").items] == ["s0", "s2", "s3", "s4", "s5", "s6"]

    apiserver.compact()
    with pytest.raises(ApiException) as gone:
        core.list_namespaced_service("demo", limit=3, _continue=first.metadata._continue)
    assert gone.value.status == 410
