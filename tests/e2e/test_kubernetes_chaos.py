"""Chaos: 500 objects created, edited and deleted while the API server drops watches, forgets history (410 Gone)
and restarts. At the end the control plane serves exactly the translation of the final state, and every
VirtualNode and Route status carries its final generation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from meshctl.controlplane.plane import ControlPlane
from meshctl.kube.status_writer import StatusWriter
from meshctl.model import ObjectKey
from meshctl.sources import load_manifests
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.envoy.types import TYPE_ORDER
from tests.apiserver import ApiServer
from tests.conftest import eventually
from tests.e2e.test_kubernetes import create
from tests.manifests import route, service, virtual_node, write
from tests.test_apiserver import install_crds

NS = "chaos"
APPS = 100  # x 5 objects = 500
GATEWAY = SidecarParams(virtual_node=ObjectKey("VirtualNode", NS, "gateway"))
CRD = ("mesh.meshctl.dev", "v1alpha1", NS)


def app_objects(i: int) -> list[dict]:
    name = f"app-{i}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-0", "namespace": NS, "labels": {"app": name}},
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [f"10.9.{i // 250}.{i % 250 + 1}"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"{name}-0"},
            }
        ],
    }
    vn = virtual_node(name, NS, selector={"app": name}, listeners=[{"portMapping": {"port": 8080, "protocol": "http"}}])
    return [service(name, NS), pod, eps, vn, route(name, name, {name: 100}, ns=NS)]


def retried(fn, *args, attempts: int = 50):
    """The chaos script's own writes survive the restart: retry refused connections (bounded)."""
    for _ in range(attempts):
        try:
            return fn(*args)
        except (HTTPError, ConnectionError, OSError):
            time.sleep(0.05)
        except ApiException as exc:
            if exc.status not in (0, 500, 503):
                raise
            time.sleep(0.05)
    raise TimeoutError(f"{fn} kept failing")


def chaos_script(api: client.ApiClient, apiserver: ApiServer) -> None:
    core, discovery, crs = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    ops = 0

    def tick() -> None:
        nonlocal ops
        ops += 1
        if ops % 60 == 0:
            apiserver.drop_watches()
        if ops % 200 == 0:
            apiserver.compact()  # resuming watches get 410 Gone and must relist
        if ops == 450:
            apiserver.restart(downtime=0.3)

    for i in range(APPS):
        for doc in app_objects(i):
            retried(create, api, doc)
            tick()
    for k in range(200):  # edits: Route spec changes (new generations) and endpoint readiness flips
        i = k % APPS
        if k % 2 == 0:
            retried(crs.patch_namespaced_custom_object, *CRD, "routes", f"app-{i}", {"spec": {"priority": k % 1000}})
        else:
            eps = app_objects(i)[2]["endpoints"][0]
            patch = {"endpoints": [{**eps, "conditions": {"ready": k % 4 == 1}}]}
            retried(discovery.patch_namespaced_endpoint_slice, f"app-{i}", NS, patch)
        tick()
    for i in range(80, APPS):  # deletes: 20 whole apps
        retried(crs.delete_namespaced_custom_object, *CRD, "routes", f"app-{i}")
        retried(crs.delete_namespaced_custom_object, *CRD, "virtualnodes", f"app-{i}")
        retried(discovery.delete_namespaced_endpoint_slice, f"app-{i}", NS)
        retried(core.delete_namespaced_pod, f"app-{i}-0", NS)
        retried(core.delete_namespaced_service, f"app-{i}", NS)
        for _ in range(5):
            tick()


def final_state(api: client.ApiClient, directory: Path) -> list[dict]:
    """Everything the API server holds now, as manifests."""
    core, discovery, crs = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)
    docs = []
    for kind, listed in (
        ("Service", core.list_namespaced_service(NS, _preload_content=False)),
        ("Pod", core.list_namespaced_pod(NS, _preload_content=False)),
        ("EndpointSlice", discovery.list_namespaced_endpoint_slice(NS, _preload_content=False)),
    ):
        import json

        docs += [{**item, "kind": kind} for item in json.loads(listed.data)["items"]]
    docs += crs.list_namespaced_custom_object(*CRD, "virtualnodes")["items"]
    docs += crs.list_namespaced_custom_object(*CRD, "routes")["items"]
    write(directory / "final.yaml", *docs)
    return docs


async def test_served_config_and_statuses_converge_through_drops_410s_and_a_restart(apiserver, tmp_path: Path):
    api = apiserver.client(retries=False)
    try:
        install_crds(api)
        gateway = virtual_node("gateway", NS, backends=[f"app-{i}" for i in range(APPS)])
        create(api, gateway)
        controller = apiserver.controller_client(retries=False)
        writer = StatusWriter(controller)
        plane = ControlPlane(KubernetesSource(controller), status_writer=writer)
        await plane.start()
        try:
            await plane.wait_synced()
            await plane.controller.attach(GATEWAY)
            await asyncio.to_thread(chaos_script, api, apiserver)

            docs = await asyncio.to_thread(final_state, api, tmp_path)
            expected = SnapshotBuilder().build(translate_sidecar(translate_mesh(load_manifests(tmp_path)), GATEWAY))

            def served_equals_final() -> bool:
                snap = plane.cache.get(GATEWAY.group)
                return snap is not None and all(snap.version(t) == expected.version(t) for t in TYPE_ORDER)

            try:
                await eventually(served_equals_final, timeout=30)
            except AssertionError:
                snap = plane.cache.get(GATEWAY.group)
                diff = {}
                for t in TYPE_ORDER:
                    a, b = snap.resources[t], expected.resources[t]
                    diff[t.rsplit(".", 1)[-1]] = (
                        sorted(set(a) ^ set(b))[:5],
                        [n for n in a if n in b and a[n].version != b[n].version][:5],
                    )
                raise AssertionError(f"served differs from final state: {diff}") from None
            assert len(expected.resources[TYPE_ORDER[0]]) == 80  # the 80 surviving apps' clusters

            def statuses_final() -> bool:
                crs = client.CustomObjectsApi(api)
                for plural in ("virtualnodes", "routes"):
                    for item in crs.list_namespaced_custom_object(*CRD, plural)["items"]:
                        status = item.get("status") or {}
                        if status.get("observedGeneration") != item["metadata"]["generation"]:
                            return False
                return True

            await eventually(lambda: asyncio.to_thread(statuses_final), timeout=30)
            assert len([d for d in docs if d["kind"] == "Route"]) == 80
        finally:
            await plane.stop()
    finally:
        api.close()
