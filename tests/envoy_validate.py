"""Validate served xDS resources with Envoy itself: ``envoy --mode validate`` on a bootstrap that holds them.

Envoy's validate mode builds every listener, cluster and route (all the checks a NACK would make) without
binding or connecting. ADS indirections are inlined so one static bootstrap holds a node group's whole config:
EDS clusters get their ClusterLoadAssignment as ``load_assignment``, RDS listeners their RouteConfiguration.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from meshctl.devtools.envoy_process import envoy_binary

__all__ = ["envoy_validate", "inline_group"]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def inline_group(group: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A group's resources (JSON, as in the golden files: cds/eds/lds/rds lists) -> a static bootstrap."""
    assignments = {cla["cluster_name"]: cla for cla in group.get("eds", [])}
    routes = {rc["name"]: rc for rc in group.get("rds", [])}
    clusters = []
    for cluster in copy.deepcopy(group.get("cds", [])):
        if cluster.get("type") == "EDS":
            del cluster["eds_cluster_config"]
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = assignments.get(cluster["name"], {"cluster_name": cluster["name"]})
        clusters.append(cluster)
    listeners = copy.deepcopy(group.get("lds", []))
    for listener in listeners:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                config = f.get("typed_config", {})
                if config.get("@type") == _HCM and "rds" in config:
                    config["route_config"] = routes[config.pop("rds")["route_config_name"]]
    return {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": {"clusters": clusters, "listeners": listeners},
    }


def envoy_validate(bootstrap: dict[str, Any], timeout: float = 60) -> tuple[bool, str]:
    """(True, '') when Envoy accepts the bootstrap, else (False, Envoy's error lines)."""
    with tempfile.TemporaryDirectory(prefix="meshctl-validate-") as tmp:
        config = Path(tmp) / "bootstrap.json"
        config.write_text(json.dumps(bootstrap))
        result = subprocess.run(
            [str(envoy_binary()), "--mode", "validate", "-c", str(config), "-l", "error", "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output
