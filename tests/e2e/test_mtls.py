"""Workload mTLS for real (issue 28): in two network namespaces made here, a callee pod (its app, iptables capture
and a captured Envoy) and a peer host (the control plane, a meshed caller's Envoy, unmeshed clients). Both Envoys
prove their VirtualNode on the xDS stream with a client certificate; the control plane issues each its workload
certificate over SDS.

- STRICT: the meshed caller gets through over mTLS (the callee's Envoy counts TLS handshakes, the app is told the
  caller's SPIFFE ID); a plaintext client and a client with another CA's certificate are refused, and the app
  sees neither.
- PERMISSIVE: the same port takes both the meshed caller (mTLS) and the plaintext client.

Needs root (``ip netns``) and iptables (scripts/setup installs it)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from meshctl.devtools.envoy_process import envoy_binary
from meshctl.inject.pki import KeyPair, issue, new_ca, spiffe_identity
from meshctl.xds.bootstrap import DRAIN_ARGS
from tests.conftest import eventually
from tests.manifests import route, service, virtual_node, write
from tests.netns import NetNs, make_pair, remove

PY = sys.executable
MESHCTL = str(Path(sys.executable).with_name("meshctl"))
NAME = "meshctl.meshctl-system.svc"
PEER, POD = "10.201.0.1", "10.201.0.2"
APP_PORT = 8080


def _mesh(
    directory: Path,
    mode: str | None,
    *,
    tls: dict | None = None,
    frontend: dict | None = None,
    namespace_mode: str | None = None,
    namespace_labels: dict | None = None,
    protocol: str = "http",
) -> None:
    """reviews (``tls``, else ``{mode}``, else none) called by frontend (``frontend``: fields added to its spec);
    ``namespace_mode``: the shop Namespace's default TLS mode label."""
    labels = {"app": "reviews", "version": "v1"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reviews-0", "namespace": "shop", "labels": labels},
        "spec": {"serviceAccountName": "reviews"},
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "reviews-v1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": APP_PORT, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [POD], "conditions": {"ready": True}, "targetRef": {"kind": "Pod", "name": "reviews-0"}}
        ],
    }
    listener: dict = {"portMapping": {"port": APP_PORT, "protocol": protocol}}
    if tls or mode:
        listener["tls"] = tls or {"mode": mode}
    caller = virtual_node("frontend", "shop", backends=["reviews"])
    caller["spec"].update(frontend or {})
    labels_ns = {"mesh.meshctl.dev/tls-mode": namespace_mode} if namespace_mode else {}
    labels_ns |= namespace_labels or {}
    write(
        directory / "mesh.yaml",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": labels_ns}},
        service("reviews", "shop", port=80),
        pod,
        eps,
        virtual_node("reviews-v1", "shop", selector=labels, listeners=[listener]),
        caller,
        route("reviews", "reviews", {"reviews-v1": 100}, ns="shop"),
    )


def _files(directory: Path, name: str, pair: KeyPair) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o644)  # Envoy runs as uid 1337 in the pod
    return str(cert), str(key)


def _tool(ns: NetNs, *args: str) -> dict:
    done = ns.run(PY, "-m", "tests.capture_tool", *args, check=False)
    return json.loads(done.stdout) if done.stdout.strip() else {"error": done.stderr[-300:]}


def _stats(ns: NetNs, admin: int) -> dict[str, int]:
    done = ns.run(PY, "-m", "tests.capture_tool", "get", f"http://127.0.0.1:{admin}/stats?format=json", check=False)
    if done.returncode != 0:
        return {}
    return {s["name"]: s["value"] for s in json.loads(done.stdout)["stats"] if isinstance(s.get("value"), int)}


@pytest.fixture
def namespaces():
    pod, peer = make_pair("mtls", subnet="10.201.0")
    yield pod, peer
    remove(pod, peer)


@pytest.fixture
def readable_dir():
    """A directory Envoy's uid (1337) can read: pytest's tmp_path is its owner's alone."""
    path = Path(tempfile.mkdtemp(prefix="meshctl-mtls-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Rig:
    """The two namespaces set up: the control plane and a meshed caller on the peer, the callee pod captured."""

    def __init__(self, pod: NetNs, peer: NetNs, files: Path, tmp_path: Path) -> None:
        self.pod, self.peer, self.files = pod, peer, files
        self.ca, self.clients = new_ca(), new_ca("meshctl xDS clients")
        (files / "ca.crt").write_bytes(self.ca.cert_pem)
        (files / "clients.crt").write_bytes(self.clients.cert_pem)
        self.manifests = tmp_path / "mesh"
        self.manifests.mkdir()
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.ca_dir = tmp_path / "mesh-ca"
        self.bootstrap_flags: list[str] = []  # for both proxies
        self.callee_stats_port = 0  # its Prometheus port (the control plane scrapes it for policy counters)

    def client_files(self, name: str, vn: str) -> tuple[str, str]:
        return _files(self.files, name, issue(self.clients, name, uris=(spiffe_identity("shop", vn),), client=True))

    def bootstrap(self, name: str, node: str, xds: tuple[str, str], *extra: str) -> Path:
        args = ["bootstrap", "--node-id", node, "--xds-address", PEER, "--xds-ca", str(self.files / "ca.crt")]
        args += ["--xds-server-name", NAME, "--xds-client-cert", xds[0], "--xds-client-key", xds[1], "-o", "json"]
        done = self.peer.run(MESHCTL, *args, *extra, *self.bootstrap_flags)
        path = self.files / f"{name}.json"
        path.write_text(done.stdout)
        path.chmod(0o644)
        return path

    async def start(self, *serve_flags: str) -> None:
        server = _files(self.files, "xds", issue(self.ca, NAME, dns_names=(NAME,)))
        serve = ["serve", "--manifests", str(self.manifests), "--address", "0.0.0.0", "--xds-port", "18000"]
        serve += ["--admin-port", "19000", "--trust-domain", "shop.test", "--xds-tls-cert", server[0]]
        serve += ["--xds-tls-key", server[1], "--xds-tls-client-ca", str(self.files / "clients.crt"), *serve_flags]
        await self.peer.start(MESHCTL, *serve, log=self.logs / "plane.log")
        await self.pod.start(
            PY, "-m", "meshctl.devtools.sample_app", "--host", "0.0.0.0", "--port", str(APP_PORT), "--name", "reviews",
            log=self.logs / "app.log",
        )  # fmt: skip
        self.pod.run(MESHCTL, "capture", "--proxy-uid", "1337", "--app-ports", str(APP_PORT))
        callee = self.bootstrap(
            "callee", "shop/reviews-v1/reviews-0", self.client_files("reviews", "reviews-v1"), "--capture",
            "--service-account", "reviews", "--admin-port", "9901", "--stats-port", str(self.callee_stats_port),
        )  # fmt: skip
        await self.pod.start(
            str(envoy_binary()),
            "-c",
            str(callee),
            "--base-id",
            "11",
            *DRAIN_ARGS,
            uid=1337,
            log=self.logs / "callee.log",
        )
        caller = self.bootstrap(
            "caller", "shop/frontend/web-0", self.client_files("frontend", "frontend"), "--service-account", "web",
            "--bind-address", "127.0.0.1", "--admin-port", "9902", "--stats-port", "0",
        )  # fmt: skip
        await self.peer.start(
            str(envoy_binary()), "-c", str(caller), "--base-id", "12", *DRAIN_ARGS, log=self.logs / "caller.log"
        )
        await eventually(lambda: _tool(self.peer, *THROUGH_MESH).get("status") == 200, timeout=60, interval=0.5)

    def admin(self, path: str) -> dict:
        done = self.peer.run(PY, "-m", "tests.capture_tool", "get", f"http://127.0.0.1:19000{path}")
        return json.loads(done.stdout)

    def acked(self, node_prefix: str, type_: str) -> str | None:
        """The version of ``type_`` (cds, lds, ...) the proxy acknowledged; None while a response is pending."""
        (proxy,) = [p for p in self.admin("/api/v1/proxies")["proxies"] if p["node_id"].startswith(node_prefix)]
        state = proxy["types"][type_]
        return None if state["pending"] else state["acked_version"]

    def dump_logs(self) -> None:
        for log in sorted(self.logs.iterdir()):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")

    async def stop(self) -> None:
        await self.pod.stop()
        await self.peer.stop()


THROUGH_MESH = ("peek", "http://127.0.0.1:15001/whoami", "reviews.shop")


async def test_sidecars_talk_mtls_strict_refuses_others_permissive_takes_both(namespaces, tmp_path, readable_dir):
    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    stranger = _files(
        readable_dir,
        "stranger",
        issue(new_ca("someone else"), "s", uris=("spiffe://shop.test/ns/shop/sa/x",), client=True),
    )
    _mesh(rig.manifests, "STRICT")
    try:
        await rig.start()
        through_mesh = THROUGH_MESH
        answer = _tool(peer, *through_mesh)
        # The app is told who called: the caller's workload identity, proven by its certificate.
        assert "URI=spiffe://shop.test/ns/shop/sa/web" in answer["client_cert"], answer
        stats = _stats(pod, 9901)
        handshakes = stats.get("listener.0.0.0.0_15000.ssl.handshake", 0)
        assert handshakes >= 1, {k: v for k, v in stats.items() if "ssl" in k}
        served = stats["cluster.inbound|shop/reviews-v1|8080.upstream_rq_total"]

        # explain says the call is mTLS and who presents what (the identities the proxies proved).
        explained = peer.run(
            MESHCTL,
            "explain",
            "GET",
            "http://reviews.shop/",
            "--from",
            "shop/frontend",
            "--admin",
            "http://127.0.0.1:19000",
        ).stdout
        assert (
            "mTLS: the caller presents spiffe://shop.test/ns/shop/sa/web; "
            "the callee presents spiffe://shop.test/ns/shop/sa/reviews" in " ".join(explained.split())
        ), explained

        # STRICT: plaintext to the pod's port, and a client with another CA's certificate: refused, the app sees none.
        plain = _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews")
        assert "error" in plain, plain
        foreign = _tool(
            peer, "peek", f"https://{POD}:{APP_PORT}/", "reviews", "--cert", stranger[0], "--key", stranger[1]
        )
        assert "error" in foreign, foreign
        stats = _stats(pod, 9901)
        assert stats["cluster.inbound|shop/reviews-v1|8080.upstream_rq_total"] == served
        assert (
            stats.get("listener.0.0.0.0_15000.ssl.fail_verify_error", 0) >= 1
            or stats.get("listener.0.0.0.0_15000.ssl.connection_error", 0) >= 1
        )

        # PERMISSIVE: the plaintext client gets in on the same port; the meshed caller still uses mTLS.
        _mesh(rig.manifests, "PERMISSIVE")
        await eventually(
            lambda: _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews").get("status") == 200,
            timeout=30,
            interval=0.5,
        )
        answer = _tool(peer, *through_mesh)
        assert answer["status"] == 200 and "spiffe://shop.test/ns/shop/sa/web" in answer["client_cert"], answer
        plain = _tool(peer, "peek", f"http://{POD}:{APP_PORT}/whoami", "reviews")
        assert plain["status"] == 200 and not plain["client_cert"], plain  # nothing claimed for a plaintext caller
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()


async def test_rotations_under_load_lose_no_request(namespaces, tmp_path, readable_dir):
    """300 req/s over mTLS while workload certificates of 10 s are renewed (about every 5 s: three renewals and
    more) and the root is rotated in its three stages: every request answered 200, no reset, a new serial each
    time, and Envoy swapped its TLS context on SDS updates (ssl_context_update_by_sds)."""
    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    _mesh(rig.manifests, "STRICT")
    peer.run(MESHCTL, "ca", "init", "--ca-dir", str(rig.ca_dir), "--trust-domain", "shop.test")
    rate, seconds = 300, 30
    try:
        await rig.start("--ca-dir", str(rig.ca_dir), "--workload-cert-lifetime", "10")
        load = await peer.start(
            PY, "-m", "tests.capture_tool", "load", "http://127.0.0.1:15001/", "reviews.shop", str(rate), str(seconds),
            log=rig.logs / "load.json",
        )  # fmt: skip

        def serial() -> str:
            (ident,) = [i for i in rig.admin("/api/v1/identities")["identities"] if i["serviceAccount"] == "reviews"]
            return str(ident["serial"])

        serials = [serial()]

        def renewed() -> bool:
            now = serial()
            if now != serials[-1]:
                serials.append(now)
            return len(serials) >= 4

        await eventually(renewed, timeout=25, interval=0.2)  # three renewals

        def sds_versions() -> dict[str, str | None]:
            proxies = rig.admin("/api/v1/proxies")["proxies"]
            return {
                p["node_id"]: None if p["types"]["sds"]["pending"] else p["types"]["sds"]["acked_version"]
                for p in proxies
            }

        for stage in ("trust", "sign", "finish"):
            before = sds_versions()
            roots = rig.admin("/api/v1/identities")["trustedRoots"]
            peer.run(MESHCTL, "ca", "rotate", "--ca-dir", str(rig.ca_dir), "--stage", stage)
            await eventually(lambda roots=roots: rig.admin("/api/v1/identities")["trustedRoots"] != roots, timeout=10)

            def every_proxy_has_it(before: dict[str, str | None] = before) -> bool:
                now = sds_versions()
                return len(now) == 2 and all(v is not None and v != before.get(n) for n, v in now.items())

            await eventually(every_proxy_has_it, timeout=10, interval=0.1)  # only then the next stage
        assert len(rig.admin("/api/v1/identities")["trustedRoots"]) == 1

        assert await asyncio.wait_for(load.wait(), seconds + 30) == 0
        counts = json.loads((rig.logs / "load.json").read_text())
        assert counts == {"200": rate * seconds}, counts
        assert len(set(serials)) == len(serials)
        caller, callee = _stats(peer, 9902), _stats(pod, 9901)
        cluster = "cluster.shop/reviews-v1/8080"
        assert caller.get(f"{cluster}.upstream_rq_rx_reset", 0) == 0
        assert caller.get(f"{cluster}.upstream_cx_destroy_remote_with_active_rq", 0) == 0
        assert caller.get(f"{cluster}.upstream_rq_5xx", 0) == 0
        assert callee["listener.0.0.0.0_15000.server_ssl_socket_factory.ssl_context_update_by_sds"] >= 6
        assert caller[f"{cluster}.client_ssl_socket_factory.ssl_context_update_by_sds"] >= 6
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()


def _sds_tls(identity: str) -> dict:
    """App Mesh's ``sds`` sources: the workload certificate and the bundle from the node's SDS agent (SPIRE)."""
    return {
        "certificate": {"sds": {"secretName": f"spiffe://shop.test/ns/shop/sa/{identity}"}},
        "validation": {"trust": {"sds": {"secretName": "spiffe://shop.test"}}},
    }


def _client_policy(**tls: object) -> dict:
    return {"backendDefaults": {"clientPolicy": {"tls": tls}}}


async def test_sds_agent_sources_client_policies_and_a_namespace_default(namespaces, tmp_path, readable_dir):
    """App Mesh's other certificate source and its client policies, with real Envoys:
    - ``sds`` (SPIRE's agent): both proxies take their certificates and roots from a node agent on a Unix socket
      (a stand-in serving SDS as SPIRE does, with a CA of its own), not from the control plane;
    - a client policy's ``subjectAlternativeNames`` is enforced by the caller (another name: refused);
    - ``enforce: false`` calls in plaintext (a STRICT callee refuses it, a PERMISSIVE one takes it);
    - a Namespace labelled ``mesh.meshctl.dev/tls-mode: STRICT`` makes a listener without ``tls`` take only mTLS,
      and meshed callers switch to mTLS with the mesh identities on their own."""
    from tests.sds_agent import SdsAgent

    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    socket = readable_dir / "agent.sock"
    rig.bootstrap_flags = ["--sds-socket", str(socket)]
    agent = SdsAgent(socket, "shop.test")
    await agent.start()
    socket.chmod(0o777)  # the pod's Envoy runs as uid 1337
    policy = _sds_tls("web") | {
        "validation": {
            "trust": {"sds": {"secretName": "spiffe://shop.test"}},
            "subjectAlternativeNames": {"match": {"exact": ["spiffe://shop.test/ns/shop/sa/reviews"]}},
        }
    }
    _mesh(rig.manifests, None, tls={"mode": "STRICT", **_sds_tls("reviews")}, frontend=_client_policy(**policy))
    cluster = "cluster.shop/reviews-v1/8080"
    try:
        await rig.start()
        answer = _tool(peer, *THROUGH_MESH)
        assert "URI=spiffe://shop.test/ns/shop/sa/web" in answer["client_cert"], answer
        assert {"spiffe://shop.test/ns/shop/sa/reviews", "spiffe://shop.test/ns/shop/sa/web"} <= set(agent.requested)
        # The callee presents the agent's certificate: its chain ends at the agent's root, not the mesh CA's.
        certs = json.loads(pod.run(PY, "-m", "tests.capture_tool", "get", "http://127.0.0.1:9901/certs").stdout)
        roots = {int(c["serial_number"], 16) for e in certs["certificates"] for c in e["ca_cert"]}
        assert agent.ca.root.serial_number in roots, certs
        assert rig.admin("/api/v1/identities")["identities"] == []  # the mesh CA issued nothing

        # The caller checks the server's name: a policy naming another identity refuses the callee.
        policy["validation"]["subjectAlternativeNames"]["match"]["exact"] = ["spiffe://shop.test/ns/shop/sa/other"]
        _mesh(rig.manifests, None, tls={"mode": "STRICT", **_sds_tls("reviews")}, frontend=_client_policy(**policy))
        await eventually(
            lambda: (
                _tool(peer, *THROUGH_MESH).get("status") == 503
                and _stats(peer, 9902).get(f"{cluster}.ssl.fail_verify_san", 0) >= 1
            ),
            timeout=30,
            interval=0.5,
        )

        # enforce: false -> plaintext: refused by STRICT (the app sees none), taken by PERMISSIVE (told of no
        # caller). (STRICT first: a listener change applies to new connections, and only a change of the caller's
        # cluster makes it open new ones; Envoy drains the old listener's connections over minutes.)
        before = rig.acked("shop/frontend", "cds")
        _mesh(rig.manifests, "STRICT", frontend=_client_policy(enforce=False))
        await eventually(lambda: rig.acked("shop/frontend", "cds") not in (None, before), timeout=30, interval=0.2)
        served = _stats(pod, 9901).get("cluster.inbound|shop/reviews-v1|8080.upstream_rq_total", 0)
        assert [_tool(peer, *THROUGH_MESH).get("status") for _ in range(3)] == [503] * 3
        assert _stats(pod, 9901).get("cluster.inbound|shop/reviews-v1|8080.upstream_rq_total", 0) == served
        _mesh(rig.manifests, "PERMISSIVE", frontend=_client_policy(enforce=False))
        await eventually(lambda: _tool(peer, *THROUGH_MESH).get("status") == 200, timeout=30, interval=0.5)
        assert not _tool(peer, *THROUGH_MESH)["client_cert"]

        # The namespace's default: reviews sets no tls, shop is STRICT -> mTLS with the mesh CA's identities.
        _mesh(rig.manifests, None, namespace_mode="STRICT")
        await eventually(
            lambda: "URI=spiffe://shop.test/ns/shop/sa/web" in (_tool(peer, *THROUGH_MESH).get("client_cert") or ""),
            timeout=30,
            interval=0.5,
        )
        assert "error" in _tool(peer, "peek", f"http://{POD}:{APP_PORT}/", "reviews")  # plaintext refused
        identities = {i["serviceAccount"] for i in rig.admin("/api/v1/identities")["identities"]}
        assert identities == {"reviews", "web"}
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()
        await agent.stop()


def _swap_in(directory: Path, files: dict[str, bytes]) -> None:
    """Replace the files as the kubelet and csi-driver-spiffe do: a new timestamped directory, then ``..data`` (a
    symlink the file names point through) renamed over in one step."""
    stamp = directory / f"..{time.monotonic_ns()}"
    stamp.mkdir()
    for name, data in files.items():
        (stamp / name).write_bytes(data)
        (stamp / name).chmod(0o644)
    stamp.chmod(0o755)
    link = directory / "..data_tmp"
    link.symlink_to(stamp.name)
    link.rename(directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_file_certificates_rotated_in_place_are_picked_up(namespaces, tmp_path, readable_dir):
    """App Mesh's ``file`` source, as cert-manager's csi-driver-spiffe serves it: certificate files replaced in place
    (an atomic ``..data`` symlink swap). Envoy is sent them as SDS secrets naming the files, so it watches them and
    swaps its TLS context: the callee presents the new certificate on new connections without any config change."""
    from meshctl.identity.ca import MeshCA

    pod, peer = namespaces
    rig = Rig(pod, peer, readable_dir, tmp_path)
    files_ca = MeshCA.generate("shop.test")
    certs = readable_dir / "certs"
    certs.mkdir()
    certs.chmod(0o755)

    def issued(sa: str) -> dict[str, bytes]:
        cert = files_ca.issue("shop", sa)
        return {"tls.crt": cert.chain_pem, "tls.key": cert.key_pem, "ca.crt": files_ca.bundle_pem}

    _swap_in(certs, issued("reviews"))
    file_tls = {
        "certificate": {"file": {"certificateChain": f"{certs}/tls.crt", "privateKey": f"{certs}/tls.key"}},
        "validation": {"trust": {"file": {"certificateChain": f"{certs}/ca.crt"}}},
    }
    # The caller keeps the mesh identity but trusts the files' CA for this callee (its client policy).
    caller_policy = {"validation": {"trust": {"file": {"certificateChain": f"{certs}/ca.crt"}}}}
    # The callee trusts the files' CA; the caller presents a certificate of that CA too (files as well).
    caller_policy["certificate"] = file_tls["certificate"]
    _mesh(rig.manifests, None, tls={"mode": "STRICT", **file_tls}, frontend=_client_policy(**caller_policy))

    def presented_serials() -> set[int]:
        """The leaf certificates the callee's Envoy holds (its chains also list the intermediate, which stays)."""
        done = pod.run(PY, "-m", "tests.capture_tool", "get", "http://127.0.0.1:9901/certs")
        chains = [e["cert_chain"] for e in json.loads(done.stdout)["certificates"] if e["cert_chain"]]
        return {int(chain[0]["serial_number"], 16) for chain in chains}

    try:
        await rig.start()
        first = presented_serials()
        _swap_in(certs, issued("reviews"))  # renewed in place, as csi-driver-spiffe does
        await eventually(lambda: bool(presented_serials() - first), timeout=30)  # a leaf it did not hold before
        stats = _stats(pod, 9901)
        assert stats["listener.0.0.0.0_15000.server_ssl_socket_factory.ssl_context_update_by_sds"] >= 1
        # New connections get through with the new certificates (the caller reloaded them too).
        await eventually(lambda: _tool(peer, *THROUGH_MESH).get("status") == 200, timeout=30, interval=0.5)
        assert rig.admin("/api/v1/identities")["identities"] == []  # no key of the mesh CA was needed
    except BaseException:
        rig.dump_logs()
        raise
    finally:
        await rig.stop()
