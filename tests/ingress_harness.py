"""Drives the ingress reconciler the way `meshctl serve --kubernetes --ingress` does, one pass at a time: the real
Kubernetes source on the test apiserver feeds models; passes run the real reconciler against moto over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from kubernetes import client

from meshctl.ingress.aws import IngressMetrics, make_clients
from meshctl.ingress.deploy import Subnets
from meshctl.ingress.kube import KubeWriter
from meshctl.ingress.reconciler import IngressReconciler, ReconcileSettings
from meshctl.model import Model
from meshctl.sources.kubernetes import KubernetesSource
from tests.apiserver import ApiServer
from tests.aws import Moto, Network, seed_network
from tests.conftest import eventually
from tests.test_apiserver import install_crds

CLUSTER = "test"


class Calls:
    """Every ELBv2 (and EC2) API call the clients make, in order (botocore before-call hook: once per call, not per
    retry)."""

    def __init__(self, elbv2: Any, ec2: Any = None) -> None:
        self.names: list[str] = []
        elbv2.meta.events.register("before-call.elastic-load-balancing-v2.*", self._record)
        if ec2 is not None:
            ec2.meta.events.register("before-call.ec2.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.names.append(model.name)

    def mutating(self) -> list[str]:
        return [n for n in self.names if not n.startswith("Describe")]

    def clear(self) -> None:
        self.names.clear()


class Harness:
    def __init__(self, apiserver: ApiServer, moto: Moto) -> None:
        self.apiserver, self.moto = apiserver, moto
        self.api = apiserver.client()  # the test's own (kubelet's, the user's) view
        self.controller_api = apiserver.controller_client()
        install_crds(self.api)
        self.network: Network = seed_network(moto)
        self.elbv2 = moto.client("elbv2")  # the test's own view of AWS
        self.model: Model | None = None
        self._task: asyncio.Task[None] | None = None

    def seed(self, docs: list[dict]) -> None:
        """Creates the objects; a status in a doc is then written through the status subresource, as kubelet would
        (creating an object never sets its status)."""
        statuses = [(d["kind"], d["metadata"], d.get("status")) for d in docs]  # seed drops them from the docs
        self.apiserver.seed(docs)
        core = client.CoreV1Api(self.api)
        for kind, meta, status in statuses:
            if status and kind == "Pod":
                core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
            elif status and kind == "Node":
                core.patch_node_status(meta["name"], {"status": status})

    async def start(self) -> None:
        source = KubernetesSource(self.controller_api, ingress=True)

        async def sink(model: Model) -> None:
            self.model = model

        self._task = asyncio.create_task(source.run(sink))
        await eventually(lambda: self.model is not None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def model_where(self, check: Callable[[Model], bool], timeout: float = 10) -> Model:
        await eventually(lambda: self.model is not None and check(self.model), timeout)
        assert self.model is not None
        return self.model

    def reconciler(self, health: Any = None, **settings: Any) -> tuple[IngressReconciler, Calls]:
        """A new reconciler, as after a restart: fresh clients and no memory."""
        metrics = IngressMetrics()
        clients = make_clients(metrics=metrics, max_attempts=5)
        if health is not None:
            clients.health = health(clients.elbv2)
        calls = Calls(clients.elbv2, clients.ec2)
        reconciler = IngressReconciler(
            clients=clients,
            kube=KubeWriter(self.controller_api),
            settings=ReconcileSettings(cluster=CLUSTER, **settings),
            subnets=Subnets(clients.ec2),
            metrics=metrics,
        )
        return reconciler, calls

    async def reconcile(self, reconciler: IngressReconciler) -> bool:
        assert self.model is not None
        return (await asyncio.to_thread(reconciler.reconcile, self.model)).settled

    # --- reading AWS -------------------------------------------------------------------------------------------

    def balancers(self) -> list[dict]:
        return self.elbv2.describe_load_balancers()["LoadBalancers"]

    def target_groups(self) -> list[dict]:
        return self.elbv2.describe_target_groups()["TargetGroups"]

    def tags(self, arn: str) -> dict[str, str]:
        (entry,) = self.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
        return {t["Key"]: t["Value"] for t in entry["Tags"]}

    def targets(self, arn: str) -> set[tuple[str, int]]:
        described = self.elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        return {(d["Target"]["Id"], d["Target"]["Port"]) for d in described if d["TargetHealth"]["State"] != "draining"}

    def group_by_resource(self, resource_id: str) -> dict:
        (found,) = [
            g
            for g in self.target_groups()
            if self.tags(g["TargetGroupArn"]).get("elbv2.meshctl.dev/resource") == resource_id
        ]
        return found

    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)
