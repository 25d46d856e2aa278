"""Client policies and the mesh/namespace default TLS mode (issue 28): how they parse, which wins, and what each
caller's clusters become. The Envoy side is in tests/e2e/test_mtls.py and the golden case
mtls-client-policies-and-defaults."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from meshctl.model import TLS_MODE_LABEL, ClientPolicy, ObjectKey, TlsMode
from meshctl.parse.documents import InvalidObject, parse_keyed
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from tests.manifests import route, service, virtual_node, workload, write


def _namespace(name: str, mode: str | None) -> dict:
    labels = {TLS_MODE_LABEL: mode} if mode else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def _mesh(root: Path, *, namespace_mode: str | None = None, caller: dict | None = None, **listener) -> Path:
    pod, eps, vn = workload("reviews", "v1", 8080, **listener)
    frontend = virtual_node("frontend", backends=["reviews"])
    frontend["spec"].update(caller or {})
    docs = [_namespace("demo", namespace_mode), service("reviews"), pod, eps, vn, frontend]
    write(root / "mesh.yaml", *docs, route("reviews", "reviews", {"reviews-v1": 100}))
    return root


def _modes(root: Path, default: TlsMode | None = None) -> tuple[TlsMode | None, object]:
    """(the reviews listener's mode as served, the TLS frontend originates to it)."""
    mesh = translate_mesh(load_manifests(root), default_tls_mode=default)
    (listener,) = mesh.virtual_nodes[ObjectKey("VirtualNode", "demo", "reviews-v1")].listeners
    sidecar = translate_sidecar(mesh, SidecarParams(virtual_node=ObjectKey("VirtualNode", "demo", "frontend")))
    (cluster,) = [c for c in sidecar.clusters if c.name == "demo/reviews-v1/8080"]
    return (listener.tls.mode if listener.tls else None), cluster.tls


def test_client_policy_parses_app_mesh_fields() -> None:
    policy = {
        "tls": {
            "enforce": False,
            "ports": [8080],
            "certificate": {"file": {"certificateChain": "/c.pem", "privateKey": "/k.pem"}},
            "validation": {
                "trust": {"sds": {"secretName": "spiffe://td"}},
                "subjectAlternativeNames": {"match": {"exact": ["spiffe://td/ns/a/sa/b"]}},
            },
        }
    }
    doc = virtual_node("web", backends=["reviews"])
    doc["spec"]["backendDefaults"] = {"clientPolicy": policy}
    doc["spec"]["backends"][0]["virtualService"]["clientPolicy"] = {"tls": {"ports": [9090]}}
    parsed = parse_keyed(doc)
    assert parsed is not None and parsed.obj.spec is not None, parsed
    assert not parsed.obj.warnings
    spec = parsed.obj.spec
    assert spec.backend_defaults == ClientPolicy(
        enforce=False,
        ports=(8080,),
        certificate_chain_file="/c.pem",
        private_key_file="/k.pem",
        trust_sds="spiffe://td",
        subject_alt_names=("spiffe://td/ns/a/sa/b",),
    )
    assert spec.backends[0].client_policy == ClientPolicy(ports=(9090,))  # enforce defaults to true


@pytest.mark.parametrize(
    ("tls", "path"),
    [
        ({"ports": [0]}, "spec.backendDefaults.clientPolicy.tls.ports"),
        ({"ports": "8080"}, "spec.backendDefaults.clientPolicy.tls.ports"),
        ({"enforce": "yes"}, "spec.backendDefaults.clientPolicy.tls.enforce"),
        (
            {"certificate": {"file": {"certificateChain": "/c", "privateKey": "/k"}, "sds": {"secretName": "x"}}},
            "spec.backendDefaults.clientPolicy.tls.certificate.sds",
        ),
        (
            {"validation": {"trust": {"sds": {}}}},
            "spec.backendDefaults.clientPolicy.tls.validation.trust.sds.secretName",
        ),
    ],
)
def test_a_bad_client_policy_names_its_field(tls: dict, path: str) -> None:
    doc = virtual_node("web")
    doc["spec"]["backendDefaults"] = {"clientPolicy": {"tls": tls}}
    parsed = parse_keyed(doc)
    assert parsed is not None and parsed.obj.spec is None
    assert path in [e.path for e in parsed.obj.errors], parsed.obj.errors


def test_namespace_default_then_mesh_default_a_listener_of_its_own_wins(tmp_path: Path) -> None:
    root = _mesh(tmp_path)
    assert _modes(root) == (None, None)  # no default anywhere: plaintext, as before
    mode, tls = _modes(root, TlsMode.PERMISSIVE)  # the mesh's
    assert mode is TlsMode.PERMISSIVE and tls is not None and tls.namespace == "demo"
    _mesh(tmp_path, namespace_mode="STRICT")
    assert _modes(root, TlsMode.PERMISSIVE)[0] is TlsMode.STRICT  # the namespace's beats the mesh's
    _mesh(tmp_path, namespace_mode="DISABLED")
    assert _modes(root, TlsMode.STRICT) == (TlsMode.DISABLED, None)  # DISABLED is a mode too: it beats the mesh's
    _mesh(tmp_path, namespace_mode="STRICT", tls={"mode": "DISABLED"})
    assert _modes(root) == (TlsMode.DISABLED, None)  # the listener's own tls beats both


def test_client_policies_shape_each_callers_cluster(tmp_path: Path) -> None:
    root = tmp_path
    sans = {"subjectAlternativeNames": {"match": {"exact": ["spiffe://meshctl.local/ns/demo/sa/reviews"]}}}
    # A policy narrows the server names the caller accepts.
    _mesh(root, tls={"mode": "STRICT"}, caller={"backendDefaults": {"clientPolicy": {"tls": {"validation": sans}}}})
    _, tls = _modes(root)
    assert tls.subject_alt_names == ("spiffe://meshctl.local/ns/demo/sa/reviews",)
    # Not covering the port: the mesh's default mTLS.
    _mesh(root, tls={"mode": "STRICT"}, caller={"backendDefaults": {"clientPolicy": {"tls": {"ports": [9]}}}})
    assert _modes(root)[1].subject_alt_names == ()
    # enforce: false calls in plaintext; a backend's own policy beats the defaults.
    caller = virtual_node("x", backends=["reviews"])["spec"]
    caller["backends"][0]["virtualService"]["clientPolicy"] = {"tls": {"enforce": False}}
    caller["backendDefaults"] = {"clientPolicy": {"tls": {"validation": sans}}}
    _mesh(root, tls={"mode": "PERMISSIVE"}, caller=caller)
    assert _modes(root)[1] is None
    # enforce (the default) originates TLS even to a listener that declares none.
    _mesh(root, caller={"backendDefaults": {"clientPolicy": {"tls": {"enforce": True}}}})
    assert _modes(root) == (None, _modes(root)[1]) and _modes(root)[1] is not None


def test_a_bad_namespace_label_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidObject, match=rf"metadata.labels.{TLS_MODE_LABEL}: must be one of STRICT"):
        parse_keyed(_namespace("demo", "strict"))


def test_validate_takes_the_mesh_default(tmp_path: Path) -> None:
    _mesh(tmp_path, tls={"mode": "PERMISSIVE"})
    done = subprocess.run(
        [sys.executable, "-m", "meshctl", "validate", str(tmp_path), "--default-tls-mode", "STRICT"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "ok    VirtualNode demo/reviews-v1" in done.stdout, done.stdout + done.stderr


def test_routes_view_shows_each_callers_tls_as_its_policy_has_it(tmp_path: Path) -> None:
    """What `meshctl routes --from` and `explain` read: the caller's own view of the cluster."""
    from meshctl.admin.routes_view import routes_document

    sans = {"subjectAlternativeNames": {"match": {"exact": ["spiffe://meshctl.local/ns/demo/sa/reviews"]}}}
    policy = {"certificate": {"sds": {"secretName": "spiffe://td/ns/demo/sa/web"}}, "validation": sans}
    _mesh(tmp_path, tls={"mode": "STRICT"}, caller={"backendDefaults": {"clientPolicy": {"tls": policy}}})
    mesh = translate_mesh(load_manifests(tmp_path))
    view = routes_document(mesh, {}, source="demo/frontend")["clusters"]["demo/reviews-v1/8080"]["mtls"]
    assert view["callerPresents"] == ["spiffe://td/ns/demo/sa/web (from the node's SDS agent)"]
    assert view["calleeMustMatch"] == "spiffe://meshctl.local/ns/demo/sa/reviews, signed by the mesh roots"
    _mesh(
        tmp_path, tls={"mode": "PERMISSIVE"}, caller={"backendDefaults": {"clientPolicy": {"tls": {"enforce": False}}}}
    )
    mesh = translate_mesh(load_manifests(tmp_path))
    assert routes_document(mesh, {}, source="demo/frontend")["clusters"]["demo/reviews-v1/8080"]["mtls"] is None
