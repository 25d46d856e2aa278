"""Writes to the benchmark apiserver from its own process, as other clients of a cluster do (a write loop in the
control plane's process would compete with it for the GIL and distort what is measured).

    python -m bench.kubewrite KUBECONFIG relabel COUNT SERVICES VERSION
"""

from __future__ import annotations

import sys

from kubernetes import client, config

from bench import kubemesh


def relabel(core: client.CoreV1Api, i: int, version: str) -> None:
    """Pod svc-i-v1-0 gets the labels of ``version``: its endpoint moves to that VirtualNode."""
    labels = {"app": f"svc-{i}", "version": version}
    core.patch_namespaced_pod(f"svc-{i}-v1-0", kubemesh.NS, {"metadata": {"labels": labels}})


def main() -> int:
    kubeconfig, action, count, services, version = sys.argv[1:6]
    assert action == "relabel", action
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    for i in range(int(count)):
        relabel(core, i % int(services), version)
    return 0


if __name__ == "__main__":
    sys.exit(main())
