"""Snapshot cache: built resources (serialized once), per-group snapshots, wire encoding."""

from meshctl.xds.cache.builder import SnapshotBuilder
from meshctl.xds.cache.cache import InconsistentSnapshot, SnapshotCache, prepare
from meshctl.xds.cache.resource import CachedResource, set_version
from meshctl.xds.cache.snapshot import Snapshot

__all__ = [
    "CachedResource",
    "InconsistentSnapshot",
    "Snapshot",
    "SnapshotBuilder",
    "SnapshotCache",
    "prepare",
    "set_version",
]
