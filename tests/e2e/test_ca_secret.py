"""The mesh CA in a Secret (issue 28): every replica signs with the same CA (a per-replica CA would make proxies
of one replica refuse the certificates of the other's), the first to start creates it, and `meshctl ca rotate
--ca-secret` rewrites it for all of them, stage by stage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from kubernetes import client

from meshctl.controlplane.plane import ControlPlane
from meshctl.identity.ca_secret import SecretSource
from meshctl.identity.keeper import IdentityKeeper
from meshctl.sources.kubernetes import KubernetesSource
from tests.apiserver import kubeconfig_for
from tests.conftest import eventually
from tests.e2e.test_kubernetes import cluster_with
from tests.manifests import service

NAME = "meshctl-mesh-ca"
SYSTEM = "meshctl-system"  # where the controller may keep Secrets (its Role)


def _replica(apiserver) -> ControlPlane:
    api = apiserver.controller_client()
    source = SecretSource(api, SYSTEM, NAME, poll_interval=0.2)
    keeper = IdentityKeeper(source.load_or_create("shop.test"), ca_source=source)
    return ControlPlane(KubernetesSource(api), identities=keeper)


async def test_replicas_share_the_ca_secret_and_follow_its_rotation(apiserver, tmp_path: Path):
    api = await cluster_with(apiserver, [service("reviews")])
    first, second = _replica(apiserver), _replica(apiserver)  # the second reads what the first created
    keepers = [first.controller.identities, second.controller.identities]
    assert keepers[0].ca.root == keepers[1].ca.root and keepers[0].ca.trust_domain == "shop.test"
    secret = client.CoreV1Api(api).read_namespaced_secret(NAME, SYSTEM)
    assert set(secret.data) == {"root.crt", "ca.crt", "ca.key", "bundle.crt", "trust-domain"}
    old_root = keepers[0].ca.root

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(apiserver.url))
    async with first, second:
        await first.wait_synced()
        await second.wait_synced()
        for stage, roots in (("trust", 2), ("sign", 2), ("finish", 1)):
            cmd = [sys.executable, "-m", "meshctl", "ca", "rotate", "--ca-secret", f"{SYSTEM}/{NAME}", "--stage", stage]
            done = await asyncio.to_thread(
                subprocess.run, [*cmd, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            await eventually(lambda n=roots: all(len(k.ca.trusted_root_ids) == n for k in keepers), timeout=10)
            await eventually(lambda: keepers[0].ca.signer_id == keepers[1].ca.signer_id, timeout=10)
        assert keepers[0].ca.root != old_root and keepers[0].ca.root == keepers[1].ca.root
        wrong = await asyncio.to_thread(
            subprocess.run,
            [*cmd[:-2], "--stage", "sign", "--kubeconfig", str(kubeconfig)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode == 2 and "no rotation under way" in wrong.stderr and "Traceback" not in wrong.stderr
