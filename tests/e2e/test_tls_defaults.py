"""A namespace's default TLS mode, from its label through the Kubernetes API (issue 28): labelling a Namespace
``mesh.meshctl.dev/tls-mode: STRICT`` makes its listeners without ``tls`` take only mTLS; relabelling it is
picked up by the watch; the controller needs only list and watch on namespaces (the apiserver fixture checks every
call against the shipped RBAC)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from kubernetes import client

from meshctl.controlplane.plane import ControlPlane
from meshctl.model import TLS_MODE_LABEL
from meshctl.sources.kubernetes import KubernetesSource
from meshctl.xds.envoy.types import CLUSTER
from tests.ads_client import AdsClient
from tests.conftest import eventually
from tests.e2e.test_kubernetes import cluster_with
from tests.manifests import service, workload

_DOWNSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


async def test_a_namespace_label_sets_the_default_mode_and_a_relabel_is_watched(apiserver):
    api = await cluster_with(apiserver, [service("reviews"), *workload("reviews", "v1", 8080)])
    core = client.CoreV1Api(api)
    namespace = {"metadata": {"name": "demo", "labels": {TLS_MODE_LABEL: "STRICT"}}}
    await asyncio.to_thread(core.create_namespace, namespace)
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    ads = AdsClient(plane.xds_port, "demo/reviews-v1/p1", "demo/reviews-v1")
    try:
        await plane.wait_synced()
        await ads.send(CLUSTER)
        await ads.recv()
        async with aiohttp.ClientSession() as session:

            async def inbound_tls() -> bool | None:
                async with session.get(f"http://127.0.0.1:{plane.admin_port}/api/v1/config_dump") as r:
                    groups = (await r.json())["groups"]
                listeners = [g["lds"]["resources"] for name, g in groups.items() if name.startswith("demo/reviews")]
                if not listeners:
                    return None
                return _DOWNSTREAM_TLS in json.dumps(listeners)

            await eventually(lambda: inbound_tls(), timeout=10)
            patch = {"metadata": {"labels": {TLS_MODE_LABEL: "DISABLED"}}}
            await asyncio.to_thread(core.patch_namespace, "demo", patch)

            async def plaintext() -> bool:
                return await inbound_tls() is False

            await eventually(plaintext, timeout=10)
    finally:
        await ads.close()
        await plane.stop()
