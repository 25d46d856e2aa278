"""The manifest-directory source: ordinary Kubernetes YAML files, re-read when they change.

The embedded default of ``meshctl serve``: the same objects a cluster would hold, no cluster needed. A watcher
(inotify) names the files that changed, and scans of file stats (size, mtime_ns) catch what it missed (or do all the
work where no watcher can be had). Only the files that changed are read again (``ManifestDirectory``); the model
that follows keeps the maps of kinds that did not change and says what changed (a ``ModelDelta`` when only
EndpointSlices, Pods and Routes did), as the Kubernetes source does: an EndpointSlice file rewritten takes the
endpoint fast path, a Route file the Route patch, with no full translation and no re-read of the other files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import watchfiles

from meshctl.model import EndpointSlice, Model, ModelDelta, ObjectKey, Pod, Route
from meshctl.model.gateway import HTTPRoute
from meshctl.parse.documents import MeshObject, Parsed, UnsupportedDocument, parse_keyed
from meshctl.sources.base import MODEL_FIELDS, ModelSink
from meshctl.sources.files import SUFFIXES, ManifestError, Stamps, read_documents, relative_order, scan

__all__ = ["ManifestDirectory", "ManifestSource", "load_manifests", "scan"]

log = logging.getLogger(__name__)
_SETTLE_ROUNDS = 3  # under sustained churn the stamps never hold still: the model reflects the last round


@dataclass(frozen=True, slots=True)
class _File:
    stamp: tuple[int, int]
    objects: tuple[Parsed, ...]  # in document order
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Definition:
    """Where an object is defined: the first definition (file order, then document order) wins."""

    rel: str
    position: int
    origin: str

    def order(self) -> tuple[tuple[str, ...], int]:
        return relative_order(self.rel), self.position


def _path(root: Path, rel: str) -> Path:
    return root if rel == str(root) else root / rel


def read_file(root: Path, rel: str, *, strict: bool = False) -> tuple[list[Parsed], list[str]]:
    """One file's objects and problems; a broken file or document is reported, never fatal."""
    path = _path(root, rel)
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
        self._files: dict[str, _File] = {}
        self._stores: dict[str, dict[ObjectKey, MeshObject]] = {name: {} for name in MODEL_FIELDS.values()}
        self._in_model: set[str] = set()  # stores a model holds: copied before their next change
        self._definitions: dict[ObjectKey, list[tuple[_Definition, MeshObject]]] = defaultdict(list)
        self._field_of: dict[ObjectKey, str] = {}
        self._errors: tuple[str, ...] = ()
        self._errors_stale = True  # recomputed only when a file with problems or a duplicate definition changed
        self._duplicated: set[ObjectKey] = set()

    def update(self, stamps: Stamps, *, newer: Collection[str] = ()) -> dict[str, set[ObjectKey]]:
        """Reads the files that are new or changed, forgets the removed ones; the keys that changed, by field. A
        file gone between its scan and its read is left as it was: the next scan sees it gone. ``newer``: files a
        watcher reported after the scan began, already read as they are now: the scan's older view of them (or
        its not seeing a file created meanwhile) is ignored."""
        changed_files = {
            rel: st
            for rel, st in stamps.items()
            if rel not in newer and ((f := self._files.get(rel)) is None or f.stamp != st)
        }
        removed = [rel for rel in self._files if rel not in stamps and rel not in newer]
        return self._apply(changed_files, removed, vanished_later=True)

    def update_paths(self, rels: set[str]) -> dict[str, set[ObjectKey]]:
        """``update`` for the files a watcher named (events arrive in order, so a file gone now is removed)."""
        changed_files: Stamps = {}
        removed = []
        for rel in rels:
            try:
                st = _path(self.root, rel).stat()
            except OSError:
                if rel in self._files:
                    removed.append(rel)
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if (f := self._files.get(rel)) is None or f.stamp != stamp:
                changed_files[rel] = stamp
        return self._apply(changed_files, removed, vanished_later=False)

    def _apply(self, changed_files: Stamps, removed: list[str], *, vanished_later: bool) -> dict[str, set[ObjectKey]]:
        touched: set[ObjectKey] = set()
        for rel in removed:
            touched |= self._forget(rel)
            self._errors_stale |= bool(self._files.pop(rel).errors)
        for rel, stamp in changed_files.items():
            if not _path(self.root, rel).exists():
                if not vanished_later and rel in self._files:  # a watcher's news: it is gone
                    touched |= self._forget(rel)
                    self._errors_stale |= bool(self._files.pop(rel).errors)
                continue  # (after a scan: the next scan sees it gone)
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
            winner = min(definitions, key=lambda d: d[0].order())[1] if definitions else None
            if not definitions:
                del self._field_of[key]
                self._definitions.pop(key, None)
            current = self._stores[field].get(key)
            if current is winner or (winner is not None and current == winner):
                continue  # re-read but equal (another object of its file changed): keep the one the model holds
            store = self._writable(field)
            if winner is None:
                del store[key]
            else:
                store[key] = winner
            changed[field].add(key)
        return changed

    def _forget(self, rel: str) -> set[ObjectKey]:
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
        errors = [e for rel in sorted(self._files, key=relative_order) for e in self._files[rel].errors]
        duplicates = []
        for key, definitions in self._definitions.items():
            if len(definitions) > 1:
                first, *rest = sorted((d for d, _ in definitions), key=_Definition.order)
                duplicates += [(d, f"{d.origin}: {key} is already defined in {first.origin}; ignored") for d in rest]
        return (*errors, *(message for _, message in sorted(duplicates, key=lambda d: d[0].order())))

    def next_model(
        self,
        stamps: Stamps,
        revision: int,
        previous: Model | None,
        *,
        settle: bool = True,
        newer: Collection[str] = (),
    ) -> tuple[Model | None, Stamps]:
        """``update`` then ``model`` (None when nothing the model holds changed), and the stamps it reflects. Runs in
        a worker thread.

        Files are read after they were stamped: one that changed meanwhile is read again, until a scan finds every
        stamp as read (a few rounds at most), so the model is the directory as it was at one moment, not a mix (a
        Route read after its new target's file was removed, but before its own new version was seen: a 404)."""
        changed: dict[str, set[ObjectKey]] = defaultdict(set)
        for _ in range(_SETTLE_ROUNDS if settle else 1):
            for field, keys in self.update(stamps, newer=newer).items():
                changed[field] |= keys
            again = scan(self.root)
            if again == {rel: f.stamp for rel, f in self._files.items()}:
                break
            stamps = again
        if previous is not None and not any(changed.values()) and self.load_errors() == previous.load_errors:
            return None, stamps
        return self.model(revision, previous, changed), stamps

    def next_model_for_paths(self, rels: set[str], revision: int, previous: Model) -> Model | None:
        """``update_paths`` then ``model``; None when nothing the model holds changed. Runs in a worker thread."""
        changed = self.update_paths(rels)
        if not any(changed.values()) and self.load_errors() == previous.load_errors:
            return None
        return self.model(revision, previous, changed)

    def model(self, revision: int, previous: Model | None, changed: dict[str, set[ObjectKey]]) -> Model:
        """The next model: unchanged fields keep the previous mapping objects (compared by identity first), and a
        delta when only EndpointSlices, Pods, Routes and HTTPRoutes changed since ``previous`` (the controller
        patches them)."""
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
        http_routes = MODEL_FIELDS[HTTPRoute]
        if previous is not None and kinds and kinds <= {slices, pods, routes, http_routes}:
            delta = ModelDelta(
                base_revision=previous.revision,
                endpoint_slices=frozenset(changed.get(slices, ())),
                pods=frozenset(changed.get(pods, ())),
                routes=frozenset(changed.get(routes, ())),
                http_routes=frozenset(changed.get(http_routes, ())),
            )
        return Model(**fields, load_errors=self.load_errors(), revision=revision, delta=delta)


def load_manifests(root: Path, *, strict: bool = False) -> Model:
    """Reads every manifest under ``root``; a broken file or document is reported, never fatal. ``strict``: unknown
    fields of our kinds are errors (``meshctl validate --strict``)."""
    directory = ManifestDirectory(root, strict=strict)
    return directory.model(0, None, directory.update(scan(root)))


class ManifestSource:
    """Watches the directory (inotify through ``watchfiles``: a change is read within ~10 ms, whatever the number of
    files) and reads what changed; a full scan after start-up and every ``rescan_interval`` catches anything a
    watcher missed (its queue overflowed, a change raced its start). Where no watcher can be had, it polls file
    stats every ``poll_interval`` seconds, or 5x the time one scan takes if that is longer."""

    def __init__(self, root: Path, *, poll_interval: float = 0.01, rescan_interval: float = 10.0) -> None:
        self.root = root
        self.poll_interval = poll_interval
        self.rescan_interval = rescan_interval

    def describe(self) -> dict[str, Any]:
        return {"kind": "manifests", "directory": str(self.root.resolve())}

    async def run(self, sink: ModelSink) -> None:
        directory = ManifestDirectory(self.root)
        state = _Emitter(sink)
        changes: asyncio.Queue[set[str] | None] = asyncio.Queue()
        watcher = asyncio.create_task(self._watch(changes), name="manifest-watcher")
        news: asyncio.Task[set[str] | None] | None = None
        safety_scan: asyncio.Task[Stamps] | None = None
        try:
            await asyncio.sleep(0.05)  # the watcher's inotify watches are set before the first scan
            await state.scanned(directory, self.root)
            await state.scanned(directory, self.root)  # what changed while the first read ran and the watcher started
            next_rescan = time.monotonic() + self.rescan_interval
            while True:
                if safety_scan is None and time.monotonic() >= next_rescan:
                    # The safety scan stats every file (~0.3 s at 20,000 files): it runs beside the watcher's
                    # batches, not before them, or a Route edit arriving meanwhile waits for it.
                    safety_scan = asyncio.create_task(asyncio.to_thread(partial(scan, self.root, gentle=True)))
                    state.scan_started()
                news = news or asyncio.create_task(changes.get())
                waiting: set[asyncio.Future[Any]] = {news} if safety_scan is None else {news, safety_scan}
                timeout = None if safety_scan else max(0.0, next_rescan - time.monotonic())
                done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if news in done:
                    batch, news = news.result(), None
                    if batch is None:  # no watcher here: poll
                        await self._poll(directory, state)
                        return
                    while not changes.empty() and (more := changes.get_nowait()) is not None:
                        batch |= more
                    if batch:
                        await state.watched(directory, batch)
                if safety_scan is not None and safety_scan.done():
                    await state.rescanned(directory, safety_scan.result())
                    safety_scan = None
                    next_rescan = time.monotonic() + self.rescan_interval
        finally:
            for task in (watcher, news, safety_scan):
                if task is not None:
                    task.cancel()

    async def _watch(self, changes: asyncio.Queue[set[str] | None]) -> None:
        root = str(self.root.resolve())
        try:
            # step: a batch ends after 5 ms without a change; debounce: or after 20 ms of changes that do not stop
            # (under steady churn every change waits for its batch: 50 ms made half the Route propagation budget).
            async for batch in watchfiles.awatch(root, debounce=20, step=5, recursive=True, watch_filter=None):
                rels = {os.path.relpath(path, root).replace(os.sep, "/") for _, path in batch}
                changes.put_nowait({rel for rel in rels if rel.endswith(SUFFIXES)})
        except (OSError, RuntimeError) as exc:  # no inotify (limits, platform): polling works everywhere
            log.warning("cannot watch %s (%s); polling it instead", self.root, exc)
            changes.put_nowait(None)
        except Exception:  # a bug: said with its traceback, and the directory is still followed, by polling
            log.exception("watching %s failed; polling it instead", self.root)
            changes.put_nowait(None)

    async def _poll(self, directory: ManifestDirectory, state: _Emitter) -> None:
        while True:
            started = time.perf_counter()
            await state.scanned(directory, self.root)
            await asyncio.sleep(max(self.poll_interval, 5 * (time.perf_counter() - started)))


class _Emitter:
    """The models handed to the sink, numbered; reading and model-making run in a worker thread."""

    def __init__(self, sink: ModelSink) -> None:
        self.sink = sink
        self.model: Model | None = None
        self.revision = 0
        self.last: Stamps | None = None
        self.since_scan: set[str] | None = None  # while a safety scan runs: the files the watcher reported

    async def scanned(self, directory: ManifestDirectory, root: Path) -> None:
        """A scan and its reads, settled (the first ones, and every one when polling)."""
        stamps = await asyncio.to_thread(scan, root)
        if stamps != self.last:
            step = partial(directory.next_model, stamps, self.revision + 1, self.model)
            new, self.last = await asyncio.to_thread(step)
            await self._emit(new)

    def scan_started(self) -> None:
        """A safety scan began (its stamps go to ``rescanned``): from now on, remember what the watcher reads."""
        self.since_scan = set()

    async def rescanned(self, directory: ManifestDirectory, stamps: Stamps) -> None:
        """A safety scan's stamps, taken while the watcher's batches went on: the files those read are newer."""
        newer, self.since_scan = self.since_scan or set(), None
        step = partial(directory.next_model, stamps, self.revision + 1, self.model, settle=False, newer=newer)
        new, _ = await asyncio.to_thread(step)
        await self._emit(new)

    async def watched(self, directory: ManifestDirectory, rels: set[str]) -> None:
        assert self.model is not None  # a scan came first
        if self.since_scan is not None:
            self.since_scan |= rels
        self.last = None  # the next scan compares file by file anyway
        await self._emit(await asyncio.to_thread(directory.next_model_for_paths, rels, self.revision + 1, self.model))

    async def _emit(self, new: Model | None) -> None:
        if new is not None:
            self.model, self.revision = new, self.revision + 1
            await self.sink(new)
