"""Who meshctl says it is to the APIs it calls. The controller and a person's CLI carry different user agents, so
Kubernetes audit logs and CloudTrail tell them apart (and the least-privilege tests pick out the controller's calls)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["CLI_USER_AGENT", "CONTROLLER_USER_AGENT", "VERSION"]

try:
    VERSION = version("meshctl")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0.0.0"

CONTROLLER_USER_AGENT = f"meshctl-controller/{VERSION}"
CLI_USER_AGENT = f"meshctl/{VERSION}"
