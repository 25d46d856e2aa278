"""``meshctl shift``: weights changed where the Route lives, shown first, and ``--wait`` proven against real Envoys."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from kubernetes import client

from meshctl.controlplane.plane import ControlPlane
from meshctl.devtools.envoy_process import free_port, loopback_sidecar
from meshctl.sources.kubernetes import KubernetesSource
from tests.apiserver import ApiServer, kubeconfig_for
from tests.conftest import Mesh, eventually
from tests.e2e.test_kubernetes import cluster_with
from tests.manifests import route, service, virtual_node, workload, write

MESHCTL = [sys.executable, "-m", "meshctl"]

ROUTE_FILE = """\
# The reviews split. Comments like this one survive a shift.
apiVersion: mesh.meshctl.dev/v1alpha1
kind: Route
metadata:
  name: reviews
  namespace: demo
spec:
  serviceRef:
    name: reviews
  httpRoute:
    match:
      prefix: /
    action:
      weightedTargets:
        - virtualNodeRef:
            name: reviews-v1   # stable
          weight: 100
        - virtualNodeRef:
            name: reviews-v2   # canary
          weight: 0
"""


async def meshctl(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *MESHCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def answers(m: Mesh, sidecar, n: int = 20) -> set[str]:
    seen = set()
    for _ in range(n):
        status, body, _ = await m.get(sidecar, "reviews")
        seen.add(body if status == 200 else str(status))
    return seen


async def reviews_mesh(mesh_factory, callers: int = 2, stats: bool = False, **v2_behavior) -> tuple[Mesh, list, str]:
    """reviews v1 and v2 behind ROUTE_FILE (all to v1) in its own file, ``callers`` frontend sidecars; the admin URL."""
    m: Mesh = await mesh_factory()
    _, p1 = await m.app("v1")
    _, p2 = await m.app("v2", **v2_behavior)
    write(
        m.dir / "mesh.yaml",
        service("reviews"),
        workload("reviews", "v1", p1),
        workload("reviews", "v2", p2),
        virtual_node("frontend", backends=["reviews"]),
    )
    (m.dir / "route.yaml").write_text(ROUTE_FILE)
    await m.start()
    sidecars = [await m.sidecar("demo/frontend", f"demo/frontend/pod-{i}", stats=stats) for i in range(callers)]
    for s in sidecars:
        await m.wait_routable(s, "reviews")
    return m, sidecars, f"http://127.0.0.1:{m.plane.admin_port}"


async def test_shift_waits_for_every_proxy_and_keeps_the_file_intact(mesh_factory):
    m, sidecars, admin = await reviews_mesh(mesh_factory)
    code, out, err = await meshctl(
        "shift", "reviews", "-n", "demo", "--to", "reviews-v2=100", "--dry-run", "--admin", admin
    )
    assert code == 0, err
    assert out.splitlines() == [
        "Route demo/reviews (demo/reviews, /*): reviews-v1 100% -> 0%, reviews-v2 0% -> 100%",
        "dry run: nothing written",
    ]
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE

    code, out, err = await meshctl(
        "shift", "reviews", "-n", "demo", "--to", "reviews-v1=0,reviews-v2=100", "--wait", "--admin", admin
    )
    assert code == 0, (out, err)
    assert "written to " + str(m.dir / "route.yaml") in out
    assert "2 proxies ACKed the change" in out
    # Only the weights changed: comments, order and indentation are the user's.
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE.replace("weight: 100", "weight: X").replace(
        "weight: 0", "weight: 100"
    ).replace("weight: X", "weight: 0")
    for s in sidecars:
        # ACKed: the proxies hold the new routes (workers pick them up within moments).
        await eventually(lambda s=s: _only(answers(m, s), {"v2"}), timeout=5)


async def test_shift_wait_names_a_proxy_that_does_not_ack(mesh_factory):
    _, sidecars, admin = await reviews_mesh(mesh_factory)
    stuck = sidecars[1].envoy.process
    stuck.send_signal(signal.SIGSTOP)  # connected, but it will never ACK
    try:
        code, out, _ = await meshctl(
            "shift", "reviews", "-n", "demo", "--to", "reviews-v2=100", "--wait", "--timeout", "3", "--admin", admin
        )
        assert code == 1
        report = out.splitlines()[-1]
        assert report.startswith("timed out after 3s; not ACKed by: demo/frontend/pod-1 (")
        assert "demo/frontend/pod-0" not in report and "STALE" in report
    finally:
        stuck.send_signal(signal.SIGCONT)


async def _only(result, expected: set[str]) -> bool:
    return await result == expected


async def test_shift_in_a_cluster_patches_with_the_resource_version(apiserver: ApiServer, tmp_path: Path):
    docs = [
        service("reviews"),
        *workload("reviews", "v1", 9080),
        *workload("reviews", "v2", 9081),
        virtual_node("frontend", backends=["reviews"]),
        route("reviews", "reviews", {"reviews-v1": 80, "reviews-v2": 20}),
    ]
    api = await cluster_with(apiserver, docs)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(apiserver.url))
    plane = ControlPlane(KubernetesSource(apiserver.controller_client()))
    await plane.start()
    envoy = loopback_sidecar(plane.xds_port, "demo/frontend", "demo/frontend/k8s", egress_port=free_port())
    custom = client.CustomObjectsApi(api)

    def weights() -> tuple[str, list[int]]:
        obj = custom.get_namespaced_custom_object("mesh.meshctl.dev", "v1alpha1", "demo", "routes", "reviews")
        targets = obj["spec"]["httpRoute"]["action"]["weightedTargets"]
        return obj["metadata"]["resourceVersion"], [t["weight"] for t in targets]

    try:
        await plane.wait_synced()
        await envoy.start()
        await eventually(lambda: envoy.ready(), timeout=30)
        admin = f"http://127.0.0.1:{plane.admin_port}"
        before, _ = await asyncio.to_thread(weights)
        code, out, err = await meshctl(
            "shift", "demo/reviews", "--to", "reviews-v1=50,reviews-v2=50", "--wait", "--kubeconfig", str(kubeconfig),
            "--admin", admin,
        )  # fmt: skip
        assert code == 0, (out, err)
        assert "written to routes.mesh.meshctl.dev/reviews in namespace demo" in out
        assert "1 proxies ACKed the change" in out
        after, new = await asyncio.to_thread(weights)
        assert new == [50, 50] and int(after) > int(before)
        served = json.loads((await meshctl("get", "routes", "demo/reviews", "--admin", admin, "-o", "json"))[1])
        assert [t["probability"] for t in served["virtualHosts"][0]["routes"][0]["targets"]] == [0.5, 0.5]
        # The other commands against a cluster.
        about = json.loads((await meshctl("status", "--admin", admin, "-o", "json"))[1])
        assert about["source"] == {"kind": "kubernetes", "server": apiserver.url, "namespaces": ["*"]}
        code, out, _ = await meshctl("explain", "--admin", admin, "--from", "demo/frontend", "GET", "reviews.demo/")
        assert code == 0 and "route demo/reviews: targets demo/reviews-v1/9080 50%" in out
        code, out, _ = await meshctl("get", "proxies", "--admin", admin)
        assert code == 0 and out.splitlines()[1].split()[:6] == ["demo/frontend/k8s", "demo/frontend", *["SYNCED"] * 4]
    finally:
        await envoy.stop()
        await plane.stop()
        api.close()


async def test_shift_bad_input_is_one_line_and_a_nonzero_exit(mesh_factory):
    m, _, admin = await reviews_mesh(mesh_factory)
    cases = [
        (["reviews", "--to", "reviews-v2=60,reviews-v1=30"], "weights sum to 90, not 100"),
        (["reviews", "--to", "reviews-v3=100"], "VirtualNode demo/reviews-v3 not found"),
        (["nothing", "--to", "reviews-v2=100"], "Route demo/nothing not found"),
        (["reviews", "--to", "reviews-v2"], "expected NODE=WEIGHT[,NODE=WEIGHT...] with whole-number weights"),
    ]
    for args, message in cases:
        code, out, err = await meshctl("shift", *args, "-n", "demo", "--admin", admin)
        assert code != 0 and message in err and len(err.splitlines()) == 1 and not out, (args, err)
    code, _, err = await meshctl("shift", "reviews", "--to", "reviews-v2=100", "--admin", "http://127.0.0.1:9")
    assert code == 2 and err.startswith("meshctl: cannot reach the control plane at http://127.0.0.1:9")
    assert (m.dir / "route.yaml").read_text() == ROUTE_FILE


HTTPROUTE_FILE = """\
# Gateway API: the reviews Service's callers, split by Service (each version has its own)
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: demo
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: reviews
  rules:
    - backendRefs:
        - name: reviews-v1   # stable
          port: 80
          weight: 100
        - name: reviews-v2
          port: 80
          weight: 0
"""


async def httproute_mesh(
    mesh_factory, callers: int = 2, stats: bool = False, **v2_behavior
) -> tuple[Mesh, list, str]:
    """reviews v1 and v2 as Services of their own behind HTTPROUTE_FILE (all to v1), ``callers`` frontend sidecars
    (no backends declared: the producer route reaches them); the admin URL."""
    m: Mesh = await mesh_factory()
    docs = [service("reviews"), virtual_node("frontend")]
    for version in ("v1", "v2"):
        _, port = await m.app(version, **(v2_behavior if version == "v2" else {}))
        pod, eps, vn = workload("reviews", version, port)
        eps["metadata"]["labels"]["kubernetes.io/service-name"] = f"reviews-{version}"
        docs += [service(f"reviews-{version}"), pod, eps, vn]
    write(m.dir / "mesh.yaml", *docs)
    (m.dir / "route.yaml").write_text(HTTPROUTE_FILE)
    await m.start()
    sidecars = [await m.sidecar("demo/frontend", f"demo/frontend/pod-{i}", stats=stats) for i in range(callers)]
    for s in sidecars:
        await m.wait_routable(s, "reviews")
    return m, sidecars, f"http://127.0.0.1:{m.plane.admin_port}"


async def test_shift_moves_an_httproute_s_backend_weights_and_waits(mesh_factory):
    """``meshctl shift httproute/NAME``: a rule's backendRefs (Services) are shifted in the file they came from,
    every calling proxy ACKs, traffic follows."""
    m, sidecars, admin = await httproute_mesh(mesh_factory)
    for s in sidecars:
        assert await answers(m, s) == {"v1"}

    code, out, err = await meshctl(
        "shift", "httproute/reviews", "-n", "demo", "--to", "reviews-v2=100", "--dry-run", "--admin", admin
    )
    assert code == 0, err
    assert (
        out.splitlines()[0]
        == "HTTPRoute demo/reviews rule 0 (demo/reviews, /*): reviews-v1 100% -> 0%, reviews-v2 0% -> 100%"
    )

    code, out, err = await meshctl(
        "shift", "httproute/demo/reviews", "--to", "reviews-v1=0,reviews-v2=100", "--wait", "--admin", admin
    )
    assert code == 0, (out, err)
    assert "2 proxies ACKed the change" in out
    # Only the weights changed: the comment beside the backend stays.
    assert (m.dir / "route.yaml").read_text() == HTTPROUTE_FILE.replace("weight: 100", "weight: X").replace(
        "weight: 0", "weight: 100"
    ).replace("weight: X", "weight: 0")
    for s in sidecars:
        await eventually(lambda s=s: _only(answers(m, s), {"v2"}), timeout=5)

    code, _, err = await meshctl("shift", "httproute/reviews", "-n", "demo", "--to", "reviews-v9=100", "--admin", admin)
    assert code == 1 and err.strip() == "meshctl: Service demo/reviews-v9 not found", err
