"""The manifest source re-reads only changed files (issue 27, part 6) and must still give exactly the model a
from-scratch read gives: a differential test over random edits (files added, changed, removed, duplicated objects,
broken files), and the delta it hands over names every object that changed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshctl.model import Model
from meshctl.sources.manifests import ManifestDirectory, load_manifests, scan
from tests.manifests import http_route, route, service, virtual_node, workload

EXAMPLES = int(os.environ.get("MESHCTL_DIFF_EXAMPLES", "40"))
FIELDS = ("services", "endpoint_slices", "pods", "virtual_nodes", "routes", "http_routes")


def _content(draw: st.DrawFn) -> str:
    choice = draw(
        st.sampled_from(["workload", "workload", "route", "httproute", "service", "node", "broken", "duplicate"])
    )
    i = draw(st.integers(0, 3))
    port = draw(st.sampled_from([8080, 9080]))
    if choice == "workload":
        docs = workload("svc", f"v{i}", port)
    elif choice == "route":
        docs = [route("svc", "svc", {f"svc-v{i}": 100})]
    elif choice == "httproute":
        docs = [http_route("svc", "svc", {f"svc-v{i}": 1}, backend_port=port)]
    elif choice == "service":
        docs = [service("svc")]
    elif choice == "node":
        docs = [virtual_node(f"caller-{i}", backends=["svc"])]
    elif choice == "duplicate":
        docs = [service("svc"), service("svc")]
    else:
        return "kind: Service\nmetadata: {name: [unclosed\n"
    return yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])


@st.composite
def edits(draw: st.DrawFn) -> list[tuple[str, str | None]]:
    return [
        (
            draw(st.sampled_from(["a.yaml", "b.yaml", "c/d.yaml", "e.yml", "f.json"])),
            None if draw(st.booleans()) and draw(st.booleans()) else _content(draw),
        )
        for _ in range(draw(st.integers(1, 10)))
    ]


def _same(a: Model, b: Model) -> None:
    for name in FIELDS:
        assert dict(getattr(a, name)) == dict(getattr(b, name)), name
    assert a.load_errors == b.load_errors


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=bool(os.environ.get("CI")),
)
@given(steps=edits())
def test_incremental_reads_equal_a_fresh_read(tmp_path_factory, steps) -> None:
    root = tmp_path_factory.mktemp("m")
    directory = ManifestDirectory(root)
    model = directory.model(1, None, directory.update(scan(root)))
    for i, (name, content) in enumerate(steps):
        path = root / name
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            os.utime(path, ns=(i * 10**9, i * 10**9 + 1))  # a new stamp even within one clock tick
        new, _ = directory.next_model(scan(root), model.revision + 1, model)
        if new is None:
            _same(model, load_manifests(root))
            continue
        if new.delta is not None:  # the delta names every object that changed
            assert new.delta.base_revision == model.revision
            named = new.delta.endpoint_slices | new.delta.pods | new.delta.routes | new.delta.http_routes
            for field in FIELDS:
                before, after = getattr(model, field), getattr(new, field)
                moved = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
                assert moved <= named, (field, moved - named)
        model = new
        _same(model, load_manifests(root))


async def _follows_edits(tmp_path: Path) -> None:

    from meshctl.sources.manifests import ManifestSource
    from tests.conftest import eventually

    (tmp_path / "svc.yaml").write_text(yaml.safe_dump(service("a")))
    models: list[Model] = []

    async def sink(model: Model) -> None:
        models.append(model)

    task = asyncio.create_task(ManifestSource(tmp_path).run(sink))
    try:
        await eventually(lambda: models and len(models[-1].services) == 1)
        (tmp_path / "more.yaml").write_text(yaml.safe_dump(service("b")))
        await eventually(lambda: len(models[-1].services) == 2)
        (tmp_path / "svc.yaml").unlink()
        await eventually(lambda: [k.name for k in models[-1].services] == ["b"])
        assert not task.done()
    finally:
        task.cancel()


async def test_the_source_follows_edits_with_a_watcher(tmp_path: Path) -> None:
    await _follows_edits(tmp_path)


async def test_without_a_watcher_it_polls(tmp_path: Path, monkeypatch, caplog) -> None:
    def no_inotify(*args, **kwargs):
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr("meshctl.sources.manifests.watchfiles.awatch", no_inotify)
    await _follows_edits(tmp_path)
    assert "polling it instead" in caplog.text


def test_a_safety_scan_does_not_undo_what_the_watcher_read_meanwhile(tmp_path: Path) -> None:
    """A safety scan runs beside the watcher's batches: a file created (or changed) after the scan went by is
    absent (or older) in its stamps. The files the watcher read meanwhile are kept as read, not forgotten."""
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(service("a")))
    directory = ManifestDirectory(tmp_path)
    directory.update(scan(tmp_path))
    old_stamps = scan(tmp_path)  # the scan went by before b.yaml was written
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(service("b")))
    directory.update_paths({"b.yaml"})  # the watcher's batch, read while the scan was still running

    assert directory.update(old_stamps, newer={"b.yaml"}) == {}
    model = directory.model(2, None, {})
    assert sorted(k.name for k in model.services) == ["a", "b"]
    # Without ``newer`` the scan's older view wins, and b.yaml is forgotten until the next scan.
    assert directory.update(old_stamps) != {}
    assert sorted(k.name for k in directory.model(3, None, {}).services) == ["a"]


async def test_a_route_edit_is_not_kept_waiting_by_a_safety_scan(tmp_path: Path, monkeypatch) -> None:
    """The safety scan (every file's stat: ~0.3 s at 20,000 files) held the watcher's batches until it ended: a
    Route edit during one took 250 ms to reach Envoy (benchmark 9). Here a scan is held open until the edit has
    reached the model: the edit must get through while it is blocked."""
    import threading

    from meshctl.sources import manifests
    from meshctl.sources.manifests import ManifestSource
    from tests.conftest import eventually

    write = lambda name, docs: (tmp_path / name).write_text(yaml.safe_dump_all(docs))  # noqa: E731
    write("mesh.yaml", [service("svc"), *workload("svc", "v1", 8080), *workload("svc", "v2", 8080)])
    write("route.yaml", [route("svc", "svc", {"svc-v1": 100})])
    real_scan = manifests.scan
    scan_began, release = threading.Event(), threading.Event()

    def held_scan(root: Path, *, gentle: bool = False):
        if gentle:  # the safety scan
            scan_began.set()
            release.wait(30)
        return real_scan(root, gentle=gentle)

    monkeypatch.setattr(manifests, "scan", held_scan)
    models: list[Model] = []

    async def sink(model: Model) -> None:
        models.append(model)

    def target() -> str | None:
        routes = models[-1].routes if models else {}
        return next((t.virtual_node for r in routes.values() for t in r.spec.http_route.weighted_targets), None)

    task = asyncio.create_task(ManifestSource(tmp_path, rescan_interval=0.05).run(sink))
    try:
        await eventually(lambda: target() == "svc-v1")
        await eventually(scan_began.is_set)
        write("route.yaml", [route("svc", "svc", {"svc-v2": 100})])
        await eventually(lambda: target() == "svc-v2", timeout=10)
        assert not release.is_set() and not task.done()
    finally:
        release.set()
        task.cancel()
