"""Golden files: tests/testdata/translate/<case>/in.yaml -> out.yaml (statuses + each sidecar's xDS).

Rewrite them with ``pytest tests/test_translate_golden.py --update-golden`` (never in CI: it refuses there) and
review the diff; a run that rewrites fails, so a rewrite is never mistaken for a pass. Every golden output is also
validated by Envoy itself, so a golden file can never freeze a config Envoy would reject.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from google.protobuf.json_format import MessageToDict

from meshctl.admin.app import status_to_dict
from meshctl.model import ObjectKey
from meshctl.sources import load_manifests
from meshctl.translate import translate_mesh, translate_sidecar
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import SnapshotBuilder
from meshctl.xds.envoy.types import SHORT_NAMES, TYPE_ORDER
from tests.envoy_validate import envoy_validate, inline_group

CASES = Path(__file__).parent / "testdata" / "translate"


def render(case: Path) -> dict:
    """A case's ``params.yaml``, if any, holds SidecarParams fields every proxy of the case uses."""
    mesh = translate_mesh(load_manifests(case / "input"))
    params = yaml.safe_load((case / "params.yaml").read_text()) if (case / "params.yaml").exists() else {}
    builder = SnapshotBuilder()
    groups = {}
    for key in sorted(mesh.virtual_nodes):
        vn = ObjectKey("VirtualNode", key.namespace, key.name)
        snap = builder.build(translate_sidecar(mesh, SidecarParams(virtual_node=vn, **params)))
        problems = snap.inconsistencies()
        assert not problems, problems
        groups[snap.group] = {
            SHORT_NAMES[t]: [
                json.loads(json.dumps(MessageToDict(r.message, preserving_proto_field_name=True)))
                for _, r in sorted(res.items())
            ]
            for t, res in snap.resources.items()
            if t in TYPE_ORDER  # secrets come from the CA (keys, random), not from translation
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
        if os.environ.get("CI"):
            pytest.fail(f"golden files are never written in CI ({golden} missing or --update-golden given)")
        golden.write_text(yaml.safe_dump(got, sort_keys=False))
        pytest.fail(f"wrote {golden}; review the diff, then run again without --update-golden")
    assert got == yaml.safe_load(golden.read_text())


@pytest.mark.parametrize("case", sorted(p for p in CASES.iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_golden_output_is_accepted_by_envoy(case: Path) -> None:
    groups = yaml.safe_load((case / "out.yaml").read_text())["groups"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(groups, pool.map(lambda g: envoy_validate(inline_group(g)), groups.values()), strict=True))
    rejected = {group: output for group, (ok, output) in results.items() if not ok}
    assert not rejected, rejected


def test_translation_is_deterministic() -> None:
    case = CASES / "route-weighted-backends"
    assert render(case) == render(case)
