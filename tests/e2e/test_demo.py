"""The README's first command: the demo runs unattended, shifts traffic with zero errors, and cleans up."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_unattended_and_exits() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshctl", "demo", "--duration", "1", "--requests", "400"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "v1 80 / v2 20" in out and "after the shift, v1 50 / v2 50" in out and "v1 0 / v2 100" in out
    assert "non-2xx responses during all shifts: 0" in out
    assert "live  v1   0.0%   v2 100.0%   non-2xx 0" in out
    assert out.rstrip().endswith("all demo processes stopped.")
