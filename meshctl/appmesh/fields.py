"""Copying App Mesh fields into ours, reporting every field that has no equivalent.

App Mesh's v1beta2 names and ours are the same where the meaning is the same (docs/api.md); ``copy_known``
copies those and records a finding for anything else, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from meshctl.appmesh.findings import Finding, Level

__all__ = ["Report", "dns_label"]


class Report:
    """The findings of one import, in the order they were found (inputs are read in a sorted order)."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, level: Level, subject: str, path: str, message: str, action: str = "") -> None:
        self.findings.append(Finding(subject, path, level, message, action))

    def error(self, subject: str, path: str, message: str, action: str = "not converted") -> None:
        self.add(Level.ERROR, subject, path, message, action)

    def lossy(self, subject: str, path: str, message: str, action: str) -> None:
        self.add(Level.LOSSY, subject, path, message, action)

    def note(self, subject: str, path: str, message: str) -> None:
        self.add(Level.NOTE, subject, path, message)

    def copy_known(
        self, source: Any, known: Iterable[str], subject: str, path: str, dropped: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The keys of ``source`` we support, copied; each other key is one finding. ``dropped`` gives the
        reason (and what happens instead) for keys known to have no equivalent."""
        if not isinstance(source, dict):
            if source is not None:
                self.error(subject, path, f"must be an object, got {type(source).__name__}", "ignored")
            return {}
        known = set(known)
        out: dict[str, Any] = {}
        for key, value in source.items():
            where = f"{path}.{key}" if path else key
            if key in known:
                out[key] = value
            elif dropped is not None and key in dropped:
                self.lossy(subject, where, "has no meshctl equivalent", dropped[key])
            else:
                self.lossy(subject, where, "is not a field meshctl knows", "dropped")
        return out


_INVALID = re.compile(r"[^a-z0-9-]+")


def dns_label(*parts: str) -> str:
    """A Kubernetes object name from App Mesh names (which may hold upper case and underscores)."""
    name = _INVALID.sub("-", "-".join(parts).lower()).strip("-")
    return name[:63].rstrip("-") or "unnamed"
