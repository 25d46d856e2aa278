"""Reading manifest files: one reader for the manifest source, ``meshctl validate`` and ``meshctl diff``.

``*.yaml``, ``*.yml`` and ``*.json`` (JSON is YAML), every document of a file, timestamps left as the strings they
are in the file (``kubectl get -o yaml`` output carries them; the model never reads them, and a ``datetime`` could
not be sent on as JSON), and the items of a ``List`` (``kubectl get -o yaml`` of several objects) as documents of
their own, as ``kubectl apply`` takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["SUFFIXES", "ManifestError", "manifest_files", "read_documents"]

SUFFIXES = (".yaml", ".yml", ".json")

try:  # A Rust parser, ~10x faster than libyaml-backed PyYAML on large directories (docs/benchmarks.md).
    import yaml_rs
except ImportError:  # pragma: no cover - PyYAML alone works, just slower
    yaml_rs = None  # type: ignore[assignment]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader without the timestamp resolver: timestamps stay strings, as with yaml_rs."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


class ManifestError(Exception):
    """A file that cannot be read or parsed; the message names the file and, for YAML, the line."""


def manifest_files(root: Path) -> list[Path]:
    """The manifest files under ``root`` (recursively, sorted), or ``root`` itself if it is a file."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def _parse_all(text: str) -> list[Any]:
    if yaml_rs is None:
        return list(yaml.load_all(text, Loader=_Loader))
    try:
        parsed = yaml_rs.loads(text, parse_datetime=False)
    except Exception as exc:  # its error types vary; PyYAML below gives the message users see
        raise yaml.YAMLError(str(exc)) from exc
    # One document comes back as itself, several as a list (a top-level list is never a Kubernetes object).
    return parsed if isinstance(parsed, list) else [parsed]


def _pure_python_error(text: str) -> str:
    """libyaml's messages lack the offending line; the pure-Python parser shows it (errors are rare)."""
    try:
        list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        return str(exc)
    return "invalid YAML"


def _flattened(docs: list[Any]) -> list[Any]:
    out: list[Any] = []
    for doc in docs:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            out.extend(doc["items"])
        else:
            out.append(doc)
    return out


def read_documents(path: Path) -> list[Any]:
    """Every document in the file, in order (empty ones as None, so positions stay those of the file), the items
    of Lists in their place. Raises ManifestError."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read: {exc}") from None
    try:
        return _flattened(_parse_all(text))
    except yaml.YAMLError:
        raise ManifestError(f"cannot read: {_pure_python_error(text)}") from None
