"""Unknown fields are said, not silently accepted (issue 27, part 3): a typo or a field of App Mesh that meshctl
does not implement (here: an ACM certificate source, which gets the mesh CA's certificate instead) is a warning
naming its path (FieldsRecognized=False in the status, a `validate` line);
`validate --strict` makes it an error. The object is still served without it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from meshctl.controlplane.plane import ControlPlane
from meshctl.parse.documents import parse_keyed
from tests.manifests import virtual_node

EXAMPLES = Path(__file__).parent.parent / "examples" / "demo"


def _with_tls_and_a_typo(doc: dict) -> dict:
    listener = doc["spec"]["listeners"][0]
    listener["tls"] = {"mode": "STRICT", "certificate": {"acm": {"certificateARN": "arn:aws:acm:us-east-1:1:certificate/x"}}}
    listener["bogusField"] = 1
    return doc


def _demo_with_them(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    path = tmp_path / "reviews-v1.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    path.write_text(yaml.safe_dump_all([_with_tls_and_a_typo(d) if d["kind"] == "VirtualNode" else d for d in docs]))
    return tmp_path


def test_unknown_and_unimplemented_fields_are_warnings_with_their_paths() -> None:
    doc = _with_tls_and_a_typo(virtual_node("web", listeners=[{"portMapping": {"port": 8080, "protocol": "http"}}]))
    doc["extra"] = True
    parsed = parse_keyed(doc, origin="web.yaml")
    assert parsed is not None and parsed.obj.spec is not None  # served without them
    assert {(w.path, w.message) for w in parsed.obj.warnings} == {
        ("extra", "unknown field: ignored"),
        ("spec.listeners[0].bogusField", "unknown field: ignored"),
        (
            "spec.listeners[0].tls.certificate.acm",
            "ACM certificates are not read by meshctl: the mesh CA's certificate and roots are used (serve "
            "--acm-pca-arn makes AWS Private CA the mesh CA)",
        ),
    }
    strict = parse_keyed(doc, origin="web.yaml", strict=True)
    assert strict is not None and strict.obj.spec is None and len(strict.obj.errors) == 3


def test_validate_says_so_and_strict_fails(tmp_path: Path) -> None:
    root = _demo_with_them(tmp_path)
    run = [sys.executable, "-m", "meshctl", "validate", str(root)]
    lenient = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert lenient.returncode == 0, lenient.stdout
    (warning,) = [line for line in lenient.stdout.splitlines() if line.startswith("warning")]
    assert (
        "spec.listeners[0].bogusField: unknown field" in warning
        and "spec.listeners[0].tls.certificate.acm: ACM certificates are not read" in warning
    )
    strict = subprocess.run([*run, "--strict"], capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1
    assert "error VirtualNode demo/reviews-v1: reviews-v1.yaml#2: spec.listeners[0].bogusField" in strict.stdout


async def test_served_with_a_fields_recognized_condition(tmp_path: Path) -> None:
    root = _demo_with_them(tmp_path)
    async with ControlPlane.from_manifests(root) as plane, aiohttp.ClientSession() as session:
        await plane.wait_synced()
        async with session.get(f"http://127.0.0.1:{plane.admin_port}/api/v1/status") as r:
            objects = {o["name"]: o for o in (await r.json())["objects"]}
    node = objects["reviews-v1"]
    assert node["accepted"]
    (cond,) = [c for c in node["conditions"] if c["type"] == "FieldsRecognized"]
    assert cond["status"] == "False" and cond["reason"] == "UnknownFields"
    assert "spec.listeners[0].tls.certificate.acm" in cond["message"]
    assert all(c["type"] != "FieldsRecognized" for c in objects["reviews-v2"]["conditions"])
