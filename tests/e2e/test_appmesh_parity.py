"""Behavioural parity of ``meshctl import appmesh``: the imported color app, served by our control plane to a real
Envoy, routes requests the way its App Mesh configuration says (header matches in priority order, method + path +
query with an inverted header range, the 80/20 weighted default, App Mesh's implicit retry on a 503)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meshctl.proxy import free_port
from tests.conftest import Mesh
from tests.manifests import write
from tests.stats import assert_split

CASE = Path(__file__).parent.parent / "testdata" / "appmesh" / "color-app" / "input"
NS = "howto-k8s"
COLORS = ("white", "blue", "red", "yellow", "green")
HOST = f"color.{NS}.svc.cluster.local"


def pods_and_slices(port: int) -> list[dict]:
    """What the cluster would have: one pod per color version, on its own loopback address, and its slice."""
    docs: list[dict] = []
    for i, color in enumerate(COLORS):
        pod = f"color-{color}-0"
        labels = {"app": "color", "version": color}
        docs.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NS, "labels": labels}})
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"color-{color}",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": "color"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [f"127.0.0.{i + 2}"],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": pod},
                    }
                ],
            }
        )
    return docs


async def test_imported_color_app_routes_as_app_mesh_would(mesh_factory, tmp_path: Path):
    m: Mesh = await mesh_factory()
    port = free_port()
    source = tmp_path / "appmesh"
    source.mkdir()
    (source / "mesh.yaml").write_text((CASE / "mesh.yaml").read_text().replace("port: 8080", f"port: {port}"))
    cmd = [sys.executable, "-m", "meshctl", "import", "appmesh", "-f", str(source), "-o", str(m.dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    write(m.dir / "cluster.yaml", pods_and_slices(port))
    apps = {color: (await m.app(color, port=port, host=f"127.0.0.{i + 2}"))[0] for i, color in enumerate(COLORS)}
    await m.start()
    sidecar = await m.sidecar(f"{NS}/front")
    await m.wait_routable(sidecar, HOST)

    async def color_of(path: str = "/", method: str = "GET", **headers: str) -> str:
        assert m.session is not None
        async with m.session.request(method, sidecar.url + path, headers={"Host": HOST, **headers}) as r:
            assert r.status == 200, (path, headers, r.status)
            return await r.text()

    # Header routes, in App Mesh priority order: exact, regex, prefix, then "present" (no match given).
    assert await color_of(color_header="blue") == "blue"
    assert await color_of(color_header="dark-green-ish") == "green"
    assert await color_of(color_header="reddish") == "red"
    assert await color_of(color_header="purple") == "yellow"
    # POST /paint?shade=dark with x-tier outside [1, 3) (an inverted range: the header must be present, as in
    # Envoy, which App Mesh ran too) goes to red; anything else falls through to the weighted default route.
    assert await color_of("/paint?shade=dark", "POST", **{"x-tier": "5"}) == "red"
    for path, method, headers in [
        ("/paint?shade=dark", "POST", {"x-tier": "2"}),
        ("/paint?shade=dark", "POST", {}),
        ("/paint?shade=light", "POST", {"x-tier": "5"}),
        ("/paint?shade=dark", "GET", {"x-tier": "5"}),
    ]:
        assert await color_of(path, method, **headers) in ("white", "blue"), (path, method, headers)
    # No header: the weighted default route, 80/20, within binomial bounds.
    counts = await m.split(sidecar, HOST, 1000)
    assert_split(counts, {"white": 80, "blue": 20})
    # A route without a retryPolicy keeps App Mesh's implicit retry: a 503 from blue is retried.
    apps["blue"].seen.clear()
    apps["blue"].fail_first = 1
    assert await color_of("/retry", color_header="blue") == "blue"
    assert apps["blue"].seen["/retry"] == 2
