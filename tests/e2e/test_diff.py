"""``meshctl diff``: what applying manifests would change at the proxy level, against a running control plane."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.e2e.test_shift import ROUTE_FILE, meshctl, reviews_mesh
from tests.manifests import route


def canary(**match) -> dict:
    """Without a priority, after Route demo/reviews (same rank: by name)."""
    return route("sticky", "reviews", {"reviews-v2": 100}, match=match or {"prefix": "/"})


async def test_diff_reports_groups_route_changes_traffic_moves_and_new_shadowing(mesh_factory, tmp_path: Path):
    m, _, admin = await reviews_mesh(mesh_factory)
    served_before = await m.admin("/api/v1/routes?service=demo/reviews")

    same = tmp_path / "same"
    same.mkdir()
    (same / "route.yaml").write_text(ROUTE_FILE)
    code, out, err = await meshctl("diff", "-f", str(same), "--admin", admin)
    assert (code, out.strip()) == (0, "no change at the proxy level"), err

    changed = tmp_path / "changed.yaml"
    doc = yaml.safe_load(ROUTE_FILE)
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][0]["weight"] = 75
    doc["spec"]["httpRoute"]["action"]["weightedTargets"][1]["weight"] = 25
    header = {"prefix": "/", "headers": [{"name": "x-canary", "match": {"exact": "1"}}]}
    changed.write_text(yaml.safe_dump_all([doc, canary(**header)]))
    code, out, err = await meshctl("diff", "-f", str(changed), "--admin", admin)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[:2] == ["node groups that change:", "  demo/frontend (RDS)"]
    assert lines[2] == "demo/reviews:"
    assert "  + demo/sticky (/* x-canary exact '1') at position 2" in lines
    assert "  ~ /* (demo/reviews): reviews-v1 100% -> 75%, reviews-v2 0% -> 25%" in lines
    assert any(
        line.startswith("  ! demo/sticky becomes SHADOWED: shadowed by demo/reviews") and "-H 'x-canary: 1'" in line
        for line in lines
    )

    code, out, _ = await meshctl("diff", "-f", str(changed), "--admin", admin, "-o", "json")
    (svc,) = json.loads(out)["services"]
    assert svc["traffic"][0]["moves"] == [
        {"target": "demo/reviews-v1", "before": 100, "after": 75},
        {"target": "demo/reviews-v2", "before": 0, "after": 25},
    ]

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(route("broken", "reviews", {"reviews-v9": 100})))
    code, out, _ = await meshctl("diff", "-f", str(bad), "--admin", admin)
    assert code == 2
    assert out.splitlines()[0].startswith("would be rejected: Route demo/broken: ")
    assert "VirtualNode demo/reviews-v9 not found" in out.splitlines()[0]

    code, _, err = await meshctl("diff", "-f", str(tmp_path / "missing.yaml"), "--admin", admin)
    assert code == 2 and err.strip() == f"meshctl: -f {tmp_path / 'missing.yaml'}: no such file or directory"
    # Nothing was applied.
    assert await m.admin("/api/v1/routes?service=demo/reviews") == served_before
