"""The manifest-directory source: ordinary Kubernetes YAML files, re-read when they change.

The embedded default of ``meshctl serve``: the same objects a cluster would hold, no cluster needed.
Change detection polls file stats (name, size, mtime_ns), which is portable and cheap for the few
hundred files a directory holds; a change is picked up within one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from meshctl.model import Model
from meshctl.parse.documents import Parsed, UnsupportedDocument, parse_keyed
from meshctl.sources.base import ModelSink, build_model
from meshctl.sources.files import ManifestError, manifest_files, read_documents

__all__ = ["ManifestSource", "load_manifests"]

log = logging.getLogger(__name__)
_Stamp = tuple[tuple[str, int, int], ...]


def _stamp(root: Path) -> _Stamp:
    stamps = []
    for path in manifest_files(root):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamps.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def load_manifests(root: Path, *, strict: bool = False) -> Model:
    """Reads every manifest under ``root``; a broken file or document is reported, never fatal. ``strict``: unknown
    fields of our kinds are errors (``meshctl validate --strict``)."""
    objects: list[Parsed] = []
    errors: list[str] = []
    for path in manifest_files(root):
        rel = str(path.relative_to(root)) if path.is_relative_to(root) and path != root else str(path)
        try:
            docs = read_documents(path)
        except ManifestError as exc:
            errors.append(f"{rel}: {exc}")
            continue
        for index, doc in enumerate(docs):
            if doc is None:
                continue
            origin = rel if len(docs) == 1 else f"{rel}#{index}"
            try:
                parsed = parse_keyed(doc, origin=origin, strict=strict)
            except UnsupportedDocument as exc:
                errors.append(f"{origin}: {exc}")
                continue
            if parsed is not None:
                objects.append(parsed)
    return build_model(objects, errors)


class ManifestSource:
    """Polls file stats every ``poll_interval`` seconds, or 5x the time one scan takes if that is longer,
    so a small directory is watched closely and a huge one costs at most ~20% of a core."""

    def __init__(self, root: Path, *, poll_interval: float = 0.01) -> None:
        self.root = root
        self.poll_interval = poll_interval

    def describe(self) -> dict[str, Any]:
        return {"kind": "manifests", "directory": str(self.root.resolve())}

    async def run(self, sink: ModelSink) -> None:
        last: _Stamp | None = None
        revision = 0
        while True:
            started = time.perf_counter()
            stamp = await asyncio.to_thread(_stamp, self.root)
            scan = time.perf_counter() - started
            if stamp != last:
                # The stamp is taken before loading: a write that lands mid-read is seen on the next poll.
                last = stamp
                revision += 1
                model = await asyncio.to_thread(load_manifests, self.root)
                log.info("loaded %d files from %s", len(stamp), self.root)
                await sink(replace(model, revision=revision))
            await asyncio.sleep(max(self.poll_interval, 5 * scan))
