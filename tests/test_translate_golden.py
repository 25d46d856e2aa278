"""Golden files: tests/testdata/translate/<case>/in.yaml -> out.yaml (statuses + each sidecar's xDS).

Rewrite them with ``pytest tests/test_translate_golden.py --update-golden`` and review the diff.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from meshctl.xds.admin import status_to_dict
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.envoy.types import SHORT_NAMES
from meshctl.xds.model import ObjectKey
from meshctl.xds.sources import load_manifests
from meshctl.xds.translate import translate_mesh, translate_sidecar
from meshctl.xds.translate.ir import SidecarParams

CASES = Path(__file__).parent / "testdata" / "translate"


def render(case: Path) -> dict:
    mesh = translate_mesh(load_manifests(case / "input"))
    builder = SnapshotBuilder()
    groups = {}
    for key in sorted(mesh.virtual_nodes):
        snap = builder.build(
            translate_sidecar(mesh, SidecarParams(virtual_node=ObjectKey("VirtualNode", key.namespace, key.name)))
        )
        problems = snap.inconsistencies()
        assert not problems, problems
        groups[snap.group] = {
            SHORT_NAMES[t]: [
                json.loads(json.dumps(MessageToDict(r.message, preserving_proto_field_name=True)))
                for _, r in sorted(res.items())
            ]
            for t, res in snap.resources.items()
        }
    return {
        "loadErrors": list(mesh.load_errors),
        "statuses": [status_to_dict(s) for s in mesh.statuses],
        "groups": groups,
    }


@pytest.mark.parametrize("case", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_golden(case: Path, request: pytest.FixtureRequest) -> None:
    got = render(case)
    golden = case / "out.yaml"
    if request.config.getoption("--update-golden") or not golden.exists():
        golden.write_text(yaml.safe_dump(got, sort_keys=False))
        if not request.config.getoption("--update-golden"):
            pytest.fail(f"wrote missing golden file {golden}; review it and rerun")
    assert got == yaml.safe_load(golden.read_text())


def test_translation_is_deterministic() -> None:
    case = CASES / "route-weighted-backends"
    assert render(case) == render(case)
