"""Benchmark 15 (issue 33): Cloud Map discovery of 1,000 services against moto_server, calls counted.

1,000 Cloud Map services (2 instances each) named by 1,000 VirtualNodes; the control plane's discovery
(``DiscoveringSource`` with the real boto3 client, as ``meshctl serve`` runs it) discovers them all, then polls for a
steady-state window. Counted, by boto3's own ``before-call`` event: DiscoverInstancesRevision and DiscoverInstances
per second, against Cloud Map's limits per account and Region (3,000/s and 1,000/s, bucket 2,000). Also: how long
until every service is discovered, a registration seen (p50/p99 over 20), and the event loop's longest stall (boto3
runs in worker threads)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

from bench.common import OnceSource, Ticker, percentile
from meshctl.model import CloudMapDiscovery, Listener, Meta, Model, ObjectKey, Protocol, VirtualNode, VirtualNodeSpec
from meshctl.sources.discovery import DiscoveringSource
from meshctl.sources.dns import DnsResolver
from tests.aws import Moto

SERVICES = 1_000
WINDOW = 30.0  # steady state measured over this long (one full listing period)
NAMESPACE = "bench.local"


def _model() -> Model:
    nodes = {}
    for i in range(SERVICES):
        key = ObjectKey("VirtualNode", "bench", f"svc-{i}")
        spec = VirtualNodeSpec(
            pod_selector={},
            listeners=(Listener(port=8080, protocol=Protocol.HTTP),),
            cloud_map=CloudMapDiscovery(namespace_name=NAMESPACE, service_name=f"svc-{i}"),
        )
        nodes[key] = VirtualNode(meta=Meta(name=key.name, namespace="bench", origin="bench"), spec=spec)
    return Model(virtual_nodes=nodes)


async def _measure(moto: Moto) -> str:
    sd = moto.client("servicediscovery")
    sd.create_http_namespace(Name=NAMESPACE)
    namespace_id = sd.list_namespaces()["Namespaces"][0]["Id"]
    service_ids = []
    for i in range(SERVICES):
        service_ids.append(sd.create_service(Name=f"svc-{i}", NamespaceId=namespace_id)["Service"]["Id"])
        for n in range(2):
            attributes = {"AWS_INSTANCE_IPV4": f"10.{i // 250}.{i % 250}.{n + 1}", "AWS_INSTANCE_PORT": "8080"}
            sd.register_instance(ServiceId=service_ids[-1], InstanceId=f"i-{n}", Attributes=attributes)

    calls: Counter[str] = Counter()
    latest: dict[str, Model] = {}

    async def sink(model: Model) -> None:
        latest["model"] = model

    source = DiscoveringSource(OnceSource(_model()), DnsResolver(["127.0.0.1:53"]))
    client = source.cloud_map._api()  # type: ignore[attr-defined]
    client.meta.events.register("before-call.servicediscovery", lambda model, **_: calls.update([model.name]))
    ticker = Ticker()
    ticker.start()
    started = time.monotonic()
    task = asyncio.create_task(source.run(sink))
    try:
        while len(latest.get("model", Model()).cloud_map) < SERVICES or any(
            not a.instances for a in latest["model"].cloud_map.values()
        ):
            await asyncio.sleep(0.1)
            if time.monotonic() - started > 300:
                raise TimeoutError("not every service was discovered in 300 s")
        all_found = time.monotonic() - started
        calls.clear()
        window_start = time.monotonic()
        seen: list[float] = []
        for k in range(20):  # a registration, seen through the model, while the window runs
            i = k * (SERVICES // 20)
            at = time.monotonic()
            attributes = {"AWS_INSTANCE_IPV4": f"10.9.{k}.9", "AWS_INSTANCE_PORT": "8080"}
            await asyncio.to_thread(
                sd.register_instance, ServiceId=service_ids[i], InstanceId="i-new", Attributes=attributes
            )
            key = f"{NAMESPACE}/svc-{i}"
            while len(latest["model"].cloud_map[key].instances) < 3:
                await asyncio.sleep(0.05)
            seen.append(time.monotonic() - at)
        await asyncio.sleep(max(0.0, WINDOW - (time.monotonic() - window_start)))
        window = time.monotonic() - window_start
        stall, stall_p99 = ticker.longest(window_start, time.monotonic())
    finally:
        task.cancel()
        ticker.stop()
    revision = calls["DiscoverInstancesRevision"] / window
    listing = calls["DiscoverInstances"] / window
    rows = [
        "| services | all discovered s | registration seen p50 / p99 s | DiscoverInstancesRevision /s (limit 3,000) "
        "| DiscoverInstances /s (limit 1,000) | loop stall max / p99 ms |",
        "|---|---|---|---|---|---|",
        f"| {SERVICES} | {all_found:.1f} | {percentile(seen, 50):.2f} / {percentile(seen, 99):.2f} | {revision:.0f} "
        f"| {listing:.0f} | {stall * 1e3:.0f} / {stall_p99 * 1e3:.0f} |",
    ]
    return "\n".join(rows)


def run() -> str:
    moto = Moto()
    moto.start()
    saved = dict(os.environ)
    try:
        os.environ.update(moto.env())
        return asyncio.run(_measure(moto))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        moto.stop()
