"""AWS Cloud Map discovery (issue 33) against moto_server over HTTP with real boto3: a VirtualNode's endpoints are the
instances of a Cloud Map service (``serviceDiscovery.awsCloudMap``), discovered by the control plane and served to a
real Envoy over EDS. Registered, marked unhealthy and deregistered instances reach Envoy and leave it; throttling and
a 500 from Cloud Map keep the last endpoints and show on the VirtualNode.

Stated times: a registration or deregistration moves the revision, polled every 5 s (here 0.5 s); a health change
does not, and is seen at the next full listing, every 30 s (here 2 s) — both shortened for the test through the
module's constants, nothing else."""

from __future__ import annotations

import re
from typing import Any

import pytest

import meshctl.sources.cloudmap as cloudmap
from meshctl.devtools.envoy_process import free_port
from tests.conftest import Mesh, Sidecar, eventually
from tests.manifests import API, route, service, virtual_node, write

NAMESPACE, SERVICE = "shop.local", "backend"


def cloud_map_node(port: int) -> dict:
    return {
        "apiVersion": API,
        "kind": "VirtualNode",
        "metadata": {"name": "backend-cm", "namespace": "demo"},
        "spec": {
            "serviceDiscovery": {
                "awsCloudMap": {
                    "namespaceName": NAMESPACE,
                    "serviceName": SERVICE,
                    "attributes": [{"key": "stage", "value": "prod"}],
                }
            },
            "listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
        },
    }


def hosts_of(sidecar: Sidecar, cluster: str) -> dict[str, str]:
    """address -> health flags, as Envoy's admin /clusters lists them."""
    text = sidecar.envoy.admin_get("/clusters")
    return dict(re.findall(rf"^{re.escape(cluster)}::([0-9.]+):\d+::health_flags::(\S+)", text, re.M))


async def served_by(m: Mesh, sidecar: Sidecar, n: int) -> set[str]:
    seen = set()
    for _ in range(n):
        status, body, _ = await m.get(sidecar, "backend")
        assert status == 200, (status, body)
        seen.add(body)
    return seen


async def resolved(m: Mesh) -> dict:
    status = {o["name"]: o for o in (await m.admin("/api/v1/status"))["objects"]}
    return next(c for c in status["backend-cm"]["conditions"] if c["type"] == "Resolved")


async def test_cloud_map_instances_reach_envoy_and_leave_it_and_faults_keep_them(mesh_factory, moto, monkeypatch):
    monkeypatch.setattr(cloudmap, "POLL_SECONDS", 0.5)
    monkeypatch.setattr(cloudmap, "RESYNC_SECONDS", 2.0)
    sd = moto.client("servicediscovery")
    sd.create_http_namespace(Name=NAMESPACE)
    namespace_id = sd.list_namespaces()["Namespaces"][0]["Id"]
    service_id = sd.create_service(
        Name=SERVICE, NamespaceId=namespace_id, HealthCheckCustomConfig={"FailureThreshold": 1}
    )["Service"]["Id"]
    port = free_port()

    def register(instance: str, address: str, stage: str = "prod") -> None:
        attributes = {"AWS_INSTANCE_IPV4": address, "AWS_INSTANCE_PORT": str(port), "stage": stage}
        sd.register_instance(ServiceId=service_id, InstanceId=instance, Attributes=attributes)

    register("i-1", "127.0.0.2")
    register("i-9", "127.0.0.9", stage="canary")  # not asked for: attributes filter it out
    m: Mesh = await mesh_factory()
    for host in ("127.0.0.2", "127.0.0.3"):
        await m.app(host, port=port, host=host)
    write(
        m.dir / "mesh.yaml",
        service("backend"),
        cloud_map_node(port),
        route("backend", "backend", {"backend-cm": 100}),
        virtual_node("client", backends=["backend"]),
    )
    await m.start()
    sidecar = await m.sidecar("demo/client", stats=True)
    cluster = f"demo/backend-cm/{port}"
    await eventually(lambda: hosts_of(sidecar, cluster) == {"127.0.0.2": "healthy"}, timeout=15)
    assert await served_by(m, sidecar, 5) == {"127.0.0.2"}
    assert (await resolved(m))["message"] == f"{NAMESPACE}/{SERVICE}?stage=prod: 1 instances (1 healthy)"

    register("i-2", "127.0.0.3")  # registered: joins
    await eventually(lambda: set(hosts_of(sidecar, cluster)) == {"127.0.0.2", "127.0.0.3"}, timeout=15)
    assert await served_by(m, sidecar, 10) == {"127.0.0.2", "127.0.0.3"}

    sd.update_instance_custom_health_status(ServiceId=service_id, InstanceId="i-1", Status="UNHEALTHY")
    await eventually(lambda: hosts_of(sidecar, cluster).get("127.0.0.2", "") != "healthy", timeout=15)
    assert await served_by(m, sidecar, 10) == {"127.0.0.3"}  # unhealthy: no traffic

    # Faults from Cloud Map: throttled, then a 500; the last endpoints stay, the VirtualNode says why.
    boto_client: Any = m.plane.source.cloud_map._api()
    faults = {"left": 0, "code": "ThrottlingException", "status": 400}

    def fail(**kwargs: Any) -> Any:
        if faults["left"] <= 0:
            return None
        faults["left"] -= 1
        from botocore.awsrequest import AWSResponse

        error = {"Error": {"Code": faults["code"], "Message": "injected"}, "ResponseMetadata": {}}
        return AWSResponse("https://x", int(faults["status"]), {}, None), error

    boto_client.meta.events.register("before-call.servicediscovery", fail)
    for code, status in (("ThrottlingException", 400), ("InternalFailure", 500)):
        faults.update(left=1_000, code=code, status=status)

        async def failing(code: str = code) -> bool:
            condition = await resolved(m)
            return condition["status"] == "False" and code in condition["message"]

        await eventually(failing, timeout=15)
        assert set(hosts_of(sidecar, cluster)) == {"127.0.0.2", "127.0.0.3"}
        assert await served_by(m, sidecar, 5) == {"127.0.0.3"}
        faults["left"] = 0

        async def recovered() -> bool:
            return (await resolved(m))["status"] == "True"

        await eventually(recovered, timeout=15)

    sd.deregister_instance(ServiceId=service_id, InstanceId="i-1")  # deregistered: leaves
    await eventually(lambda: set(hosts_of(sidecar, cluster)) == {"127.0.0.3"}, timeout=15)
    assert (await resolved(m))["message"].endswith("1 instances (1 healthy)")


@pytest.mark.parametrize(
    ("attributes", "preference", "expected"),
    [
        ({"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_IPV6": "fd00::1"}, None, "10.0.0.1"),
        ({"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_IPV6": "fd00::1"}, "IPv6_PREFERRED", "fd00::1"),
        ({"AWS_INSTANCE_IPV4": "10.0.0.1"}, "IPv6_PREFERRED", "10.0.0.1"),
        ({"AWS_INSTANCE_IPV4": "10.0.0.1"}, "IPv6_ONLY", None),
        ({"AWS_INSTANCE_IPV4": "10.0.0.1", "AWS_INSTANCE_PORT": "http"}, None, None),
    ],
)
def test_instance_addresses_by_preference(attributes: dict, preference: str | None, expected: str | None) -> None:
    from meshctl.model import IpPreference

    found = cloudmap.instances_of(
        [{"InstanceId": "i", "Attributes": attributes}], IpPreference(preference) if preference else None
    )
    assert [i.address for i in found] == ([expected] if expected else [])
