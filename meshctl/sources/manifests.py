"""The manifest-directory source: ordinary Kubernetes YAML files, re-read when they change.

The embedded default of ``meshctl serve``: the same objects a cluster would hold, no cluster needed.
Change detection polls file stats (name, size, mtime_ns), which is portable and cheap; a change is picked up within
one poll interval. Only the files that changed are read again (``ManifestDirectory``), and the model that follows
says what changed (a ``ModelDelta`` when only EndpointSlices and Pods, or only Routes, changed) and keeps the maps of
kinds that did not change, as the Kubernetes source does: an EndpointSlice file rewritten takes the endpoint fast
path, a Route file the Route patch, with no full translation and no re-read of the other files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshctl.model import EndpointSlice, Model, ModelDelta, ObjectKey, Pod, Route
from meshctl.parse.documents import MeshObject, Parsed, UnsupportedDocument, parse_keyed
from meshctl.sources.base import MODEL_FIELDS, ModelSink
from meshctl.sources.files import ManifestError, manifest_files, read_documents

__all__ = ["ManifestDirectory", "ManifestSource", "load_manifests"]

log = logging.getLogger(__name__)
_SETTLE_ROUNDS = 5
Stamps = dict[Path, tuple[int, int]]  # relative path -> (size, mtime_ns)


@dataclass(frozen=True, slots=True)
class _File:
    stamp: tuple[int, int]
    objects: tuple[Parsed, ...]  # in document order
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True, order=True)
class _Definition:
    """Where an object is defined: the first definition (file order, then document order) wins."""

    rel: Path
    position: int
    origin: str


def scan(root: Path) -> Stamps:
    stamps: Stamps = {}
    for path in manifest_files(root):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        stamps[_relative(root, path)] = (st.st_size, st.st_mtime_ns)
    return stamps


def _relative(root: Path, path: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) and path != root else path


def read_file(root: Path, rel: Path, *, strict: bool = False) -> tuple[list[Parsed], list[str]]:
    """One file's objects and problems; a broken file or document is reported, never fatal."""
    path = root / rel if rel != root else rel
    objects: list[Parsed] = []
    try:
        docs = read_documents(path)
    except ManifestError as exc:
        return [], [f"{rel}: {exc}"]
    errors = []
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        origin = str(rel) if len(docs) == 1 else f"{rel}#{index}"
        try:
            parsed = parse_keyed(doc, origin=origin, strict=strict)
        except UnsupportedDocument as exc:
            errors.append(f"{origin}: {exc}")
            continue
        if parsed is not None:
            objects.append(parsed)
    return objects, errors


class ManifestDirectory:
    """A manifest directory's model, kept file by file: ``update`` re-reads only files whose stamp changed and
    returns the keys that changed, by model field; ``model`` makes the next model from that."""

    def __init__(self, root: Path, *, strict: bool = False) -> None:
        self.root = root
        self.strict = strict
        self._files: dict[Path, _File] = {}
        self._stores: dict[str, dict[ObjectKey, MeshObject]] = {name: {} for name in MODEL_FIELDS.values()}
        self._in_model: set[str] = set()  # stores a model holds: copied before their next change
        self._definitions: dict[ObjectKey, list[tuple[_Definition, MeshObject]]] = defaultdict(list)
        self._field_of: dict[ObjectKey, str] = {}
        self._errors: tuple[str, ...] = ()
        self._errors_stale = True  # recomputed only when a file with problems or a duplicate definition changed
        self._duplicated: set[ObjectKey] = set()

    def update(self, stamps: Stamps) -> dict[str, set[ObjectKey]]:
        """Reads the files that are new or changed, forgets the removed ones; the keys that changed, by field."""
        changed_files = {rel: st for rel, st in stamps.items() if (f := self._files.get(rel)) is None or f.stamp != st}
        removed = [rel for rel in self._files if rel not in stamps]
        touched: set[ObjectKey] = set()
        for rel in removed:
            touched |= self._forget(rel)
            self._errors_stale |= bool(self._files.pop(rel).errors)
        for rel, stamp in changed_files.items():
            if not (self.root / rel).exists():
                continue  # removed since it was stamped: the next scan sees it gone
            if rel in self._files:
                touched |= self._forget(rel)
            objects, errors = read_file(self.root, rel, strict=self.strict)
            self._errors_stale |= bool(errors) or (rel in self._files and bool(self._files[rel].errors))
            self._files[rel] = _File(stamp, tuple(objects), tuple(errors))
            for position, parsed in enumerate(objects):
                self._definitions[parsed.key].append((_Definition(rel, position, parsed.origin), parsed.obj))
                self._field_of[parsed.key] = MODEL_FIELDS[type(parsed.obj)]
                touched.add(parsed.key)
        changed: dict[str, set[ObjectKey]] = defaultdict(set)
        for key in touched:
            field = self._field_of[key]
            definitions = self._definitions.get(key) or []
            self._errors_stale |= len(definitions) > 1 or key in self._duplicated
            winner = min(definitions, key=lambda d: d[0])[1] if definitions else None
            if not definitions:
                del self._field_of[key]
                self._definitions.pop(key, None)
            if self._stores[field].get(key) is winner:
                continue
            store = self._writable(field)
            if winner is None:
                del store[key]
            else:
                store[key] = winner
            changed[field].add(key)
        return changed

    def _forget(self, rel: Path) -> set[ObjectKey]:
        keys = set()
        for parsed in self._files[rel].objects:
            keys.add(parsed.key)
            if len(self._definitions[parsed.key]) > 1:
                self._duplicated.add(parsed.key)  # it had duplicates: its errors change
            self._definitions[parsed.key] = [d for d in self._definitions[parsed.key] if d[0].rel != rel]
        return keys

    def _writable(self, field: str) -> dict[ObjectKey, MeshObject]:
        if field in self._in_model:
            self._stores[field] = dict(self._stores[field])
            self._in_model.discard(field)
        return self._stores[field]

    def load_errors(self) -> tuple[str, ...]:
        """Each file's problems in file order, then every definition a first one overrides (as ``build_model``)."""
        if self._errors_stale:
            self._errors, self._errors_stale = self._compute_errors(), False
            self._duplicated = {k for k, d in self._definitions.items() if len(d) > 1}
        return self._errors

    def _compute_errors(self) -> tuple[str, ...]:
        errors = [e for rel in sorted(self._files) for e in self._files[rel].errors]
        duplicates = []
        for key, definitions in self._definitions.items():
            if len(definitions) > 1:
                first, *rest = sorted(d for d, _ in definitions)
                duplicates += [(d, f"{d.origin}: {key} is already defined in {first.origin}; ignored") for d in rest]
        return (*errors, *(message for _, message in sorted(duplicates)))

    def next_model(self, stamps: Stamps, revision: int, previous: Model | None) -> tuple[Model | None, Stamps]:
        """``update`` then ``model`` (None when nothing the model holds changed), and the stamps it reflects. Runs in
        a worker thread.

        Files are read after they were stamped: one that changed meanwhile is read again, until a scan finds every
        stamp as read (a few rounds at most), so the model is the directory as it was at one moment, not a mix (a
        Route read after its new target's file was removed, but before its own new version was seen: a 404)."""
        changed: dict[str, set[ObjectKey]] = defaultdict(set)
        for _ in range(_SETTLE_ROUNDS):
            for field, keys in self.update(stamps).items():
                changed[field] |= keys
            again = scan(self.root)
            if again == {rel: f.stamp for rel, f in self._files.items()}:
                break
            stamps = again
        if previous is not None and not any(changed.values()) and self.load_errors() == previous.load_errors:
            return None, stamps
        return self.model(revision, previous, changed), stamps

    def model(self, revision: int, previous: Model | None, changed: dict[str, set[ObjectKey]]) -> Model:
        """The next model: unchanged fields keep the previous mapping objects (compared by identity first), and a
        delta when only EndpointSlices and Pods, or only Routes, changed since ``previous``."""
        fields: dict[str, Any] = {}
        for name in MODEL_FIELDS.values():
            if previous is not None and not changed.get(name):
                fields[name] = getattr(previous, name)
            else:
                fields[name] = self._stores[name]
                self._in_model.add(name)
        kinds = {name for name, keys in changed.items() if keys}
        delta = None
        slices, pods, routes = MODEL_FIELDS[EndpointSlice], MODEL_FIELDS[Pod], MODEL_FIELDS[Route]
        if previous is not None and kinds and kinds <= {slices, pods}:
            delta = ModelDelta(
                base_revision=previous.revision,
                endpoint_slices=frozenset(changed.get(slices, ())),
                pods=frozenset(changed.get(pods, ())),
            )
        elif previous is not None and kinds == {routes}:
            delta = ModelDelta(base_revision=previous.revision, routes=frozenset(changed[routes]))
        return Model(**fields, load_errors=self.load_errors(), revision=revision, delta=delta)


def load_manifests(root: Path, *, strict: bool = False) -> Model:
    """Reads every manifest under ``root``; a broken file or document is reported, never fatal. ``strict``: unknown
    fields of our kinds are errors (``meshctl validate --strict``)."""
    directory = ManifestDirectory(root, strict=strict)
    return directory.model(0, None, directory.update(scan(root)))


class ManifestSource:
    """Polls file stats every ``poll_interval`` seconds, or 5x the time one scan takes if that is longer,
    so a small directory is watched closely and a huge one costs at most ~20% of a core."""

    def __init__(self, root: Path, *, poll_interval: float = 0.01) -> None:
        self.root = root
        self.poll_interval = poll_interval

    def describe(self) -> dict[str, Any]:
        return {"kind": "manifests", "directory": str(self.root.resolve())}

    async def run(self, sink: ModelSink) -> None:
        directory = ManifestDirectory(self.root)
        last: Stamps | None = None
        model: Model | None = None
        revision = 0
        while True:
            started = time.perf_counter()
            stamps = await asyncio.to_thread(scan, self.root)
            took = time.perf_counter() - started
            if stamps != last:
                new, last = await asyncio.to_thread(directory.next_model, stamps, revision + 1, model)
                if new is not None:
                    model, revision = new, revision + 1
                    await sink(model)
            await asyncio.sleep(max(self.poll_interval, 5 * took))
