"""One reader for manifest files (meshctl/sources/files.py): the manifest source, `validate` and `diff` read the
same documents from the same files, including JSON, `kubectl get -o yaml` output (a List, with timestamps) and files
that are not text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from meshctl.cli.client import CliError
from meshctl.cli.diff import read_documents
from meshctl.model import ObjectKey
from meshctl.sources import load_manifests
from tests.manifests import route, service

KUBECTL_LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: ratings
    namespace: demo
    creationTimestamp: "2026-12-01T10:00:00Z"
    managedFields:
    - time: 2026-12-01T10:00:00Z
  spec:
    ports:
    - name: http
      port: 8080
metadata:
  resourceVersion: ""
"""


def _directory(tmp_path: Path) -> Path:
    root = tmp_path / "m"
    root.mkdir()
    (root / "reviews.json").write_text(json.dumps(service("reviews")))
    (root / "ratings.yaml").write_text(KUBECTL_LIST)
    (root / "route.yml").write_text(yaml.safe_dump(route("reviews", "reviews", {"reviews-v1": 100})))
    return root


def test_diff_and_the_source_read_the_same_documents(tmp_path: Path) -> None:
    root = _directory(tmp_path)
    documents = read_documents([str(root)])
    assert sorted((d["kind"], d["metadata"]["name"]) for d in documents) == [
        ("Route", "reviews"),
        ("Service", "ratings"),
        ("Service", "reviews"),
    ]
    json.dumps(documents)  # what diff posts: timestamps stayed strings
    ratings = next(d for d in documents if d["metadata"]["name"] == "ratings")
    assert ratings["metadata"]["managedFields"][0]["time"] == "2026-12-01T10:00:00Z"

    model = load_manifests(root)
    assert {ObjectKey("Service", "demo", "reviews"), ObjectKey("Service", "demo", "ratings")} == set(model.services)
    assert ObjectKey("Route", "demo", "reviews") in model.routes
    assert not model.load_errors


def test_a_file_that_is_not_text_is_named_not_fatal(tmp_path: Path) -> None:
    root = _directory(tmp_path)
    (root / "broken.yaml").write_bytes(b"kind: Service\nmetadata: {name: \xff\xfe}\n")
    model = load_manifests(root)
    assert len(model.load_errors) == 1 and model.load_errors[0].startswith("broken.yaml: cannot read:")
    assert ObjectKey("Service", "demo", "reviews") in model.services  # everything else still read
    with pytest.raises(CliError, match=r"broken.yaml: cannot read"):
        read_documents([str(root)])


def test_a_directory_link_is_not_walked(tmp_path: Path) -> None:
    """As Path.rglob did before the walker moved to os.scandir: a link back up the tree would list every file again
    (41 entries for one file, until the path grew too long)."""
    root = _directory(tmp_path)
    before = read_documents([str(root)])
    (root / "loop").symlink_to(root, target_is_directory=True)
    assert read_documents([str(root)]) == before
    assert len(load_manifests(root).services) == 2 and not load_manifests(root).load_errors
