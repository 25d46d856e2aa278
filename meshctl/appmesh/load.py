"""Read App Mesh manifests: files and directories, multi-document YAML, ``${VAR}`` placeholders.

A file that is not valid YAML is one finding (with YAML's own position) and the other files are still read.
Placeholders left in by templates (App Mesh's examples are ``envsubst`` templates) are substituted from ``values``
when given, else reported once per file and kept as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshctl.appmesh.findings import Finding, Level

__all__ = ["SourceDoc", "load_paths"]

_SUFFIXES = (".yaml", ".yml", ".json", ".template")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class SourceDoc:
    origin: str  # file#index, for messages
    data: Any


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
    return [path]


def load_paths(paths: Iterable[Path], values: Mapping[str, str] | None = None) -> tuple[list[SourceDoc], list[Finding]]:
    docs: list[SourceDoc] = []
    findings: list[Finding] = []
    values = values or {}
    for root in paths:
        if not root.exists():
            findings.append(Finding(str(root), "", Level.ERROR, "no such file or directory"))
            continue
        for file in _files(root):
            shown = str(file.relative_to(root)) if root.is_dir() else str(file)
            try:
                text = file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                findings.append(Finding(shown, "", Level.ERROR, f"cannot read: {exc}"))
                continue
            missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - values.keys())
            text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
            if missing:
                names = ", ".join(f"${{{n}}}" for n in missing)
                findings.append(
                    Finding(
                        shown,
                        "",
                        Level.LOSSY,
                        f"placeholders left in: {names}",
                        "kept as written; pass --set NAME=VALUE (or run envsubst) before applying",
                    )
                )
            try:
                loaded = list(yaml.safe_load_all(text))
            except yaml.YAMLError as exc:
                findings.append(Finding(shown, "", Level.ERROR, f"not valid YAML: {_yaml_error(exc)}"))
                continue
            name = str(file.relative_to(root)) if root.is_dir() else file.name
            docs.extend(SourceDoc(f"{name}#{i}", d) for i, d in enumerate(loaded) if d is not None)
    return docs, findings


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else str(problem)
