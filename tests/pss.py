"""The Pod Security Standard "restricted" checks we design against (EKS best practices' list, kubernetes.io's
pod-security-standards): one function over a pod spec, used on every pod template we ship and on injected
containers."""

from __future__ import annotations

from typing import Any


def restricted_violations(pod_spec: dict[str, Any], *, only: set[str] | None = None) -> list[str]:
    """What in ``pod_spec`` breaks "restricted" (containers named in ``only``, default all)."""
    problems = []
    pod_ctx = pod_spec.get("securityContext") or {}
    containers = [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]
    if pod_spec.get("hostNetwork") or pod_spec.get("hostPID") or pod_spec.get("hostIPC"):
        problems.append("host namespaces")
    for c in containers:
        if only is not None and c["name"] not in only:
            continue
        ctx = c.get("securityContext") or {}
        name = c["name"]
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        if set((ctx.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if ctx.get("runAsUser", pod_ctx.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is not RuntimeDefault or Localhost")
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        # Not part of "restricted", but promised by the issue for everything we run: nothing written to the image.
        if ctx.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
    return problems
