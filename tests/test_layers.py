"""The layer contracts (pyproject.toml, [tool.importlinter]) hold, and a planted violation breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the copy of the package in ``tree`` (first on the path, so it is the one analysed)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), str(tree / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "meshctl", tree / "meshctl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_its_layers_and_a_planted_violation_breaks_them(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    clean = _lint(tree)
    assert clean.returncode == 0, clean.stdout + clean.stderr

    # The model reaching up into the xDS server: the kind of shortcut the contracts exist to stop.
    meta = tree / "meshctl" / "model" / "meta.py"
    meta.write_text(meta.read_text() + "\nimport meshctl.xds.server.ads  # noqa: E402,F401\n")
    planted = _lint(tree)
    assert planted.returncode != 0
    assert "meshctl.model is not allowed to import meshctl.xds" in planted.stdout, planted.stdout


def test_the_pure_core_may_not_import_a_network_library(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    ir = tree / "meshctl" / "translate" / "ir.py"
    ir.write_text(ir.read_text() + "\nimport grpc  # noqa: E402,F401\n")
    planted = _lint(tree)
    assert planted.returncode != 0
    assert "meshctl.translate is not allowed to import grpc" in planted.stdout, planted.stdout
