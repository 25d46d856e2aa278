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
from tests.manifests import route, service, virtual_node, workload

EXAMPLES = int(os.environ.get("MESHCTL_DIFF_EXAMPLES", "40"))
FIELDS = ("services", "endpoint_slices", "pods", "virtual_nodes", "routes")


def _content(draw: st.DrawFn) -> str:
    choice = draw(st.sampled_from(["workload", "workload", "route", "service", "node", "broken", "duplicate"]))
    i = draw(st.integers(0, 3))
    port = draw(st.sampled_from([8080, 9080]))
    if choice == "workload":
        docs = workload("svc", f"v{i}", port)
    elif choice == "route":
        docs = [route("svc", "svc", {f"svc-v{i}": 100})]
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
            named = new.delta.endpoint_slices | new.delta.pods | new.delta.routes
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
