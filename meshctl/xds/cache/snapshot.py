"""One node group's resources, per type, with consistency checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from meshctl.xds.cache.resource import CachedResource, replace_in_version, set_version
from meshctl.xds.envoy.types import CLUSTER, LISTENER, ROUTE, SERVED_TYPES

if TYPE_CHECKING:
    from meshctl.translate.ir import SidecarIR

__all__ = ["Snapshot"]


class Snapshot:
    """``parent_versions``/``changed``: when this snapshot is a patch of another, the other's versions and
    the names replaced per type, so a stream that has the parent can send just the change. ``ir``: what its
    listeners, routes and clusters were built from, so a Route change can patch the RouteConfiguration alone;
    kept without its endpoints, which patches change (the ENDPOINT resources say them): a kept copy would be
    stale after the first patch and hold the replaced endpoints (a gateway's: 20,000 clusters' worth)."""

    __slots__ = ("_versions", "changed", "group", "ir", "parent_versions", "resources")

    def __init__(
        self,
        group: str,
        resources: Mapping[str, Mapping[str, CachedResource]],
        *,
        versions: Mapping[str, str] | None = None,
        parent_versions: Mapping[str, str] | None = None,
        changed: Mapping[str, frozenset[str]] | None = None,
        ir: SidecarIR | None = None,
    ) -> None:
        self.group = group
        self.ir = replace(ir, endpoints={}) if ir is not None and ir.endpoints else ir
        self.resources = MappingProxyType({t: _frozen(resources.get(t, {})) for t in SERVED_TYPES})
        self._versions: dict[str, str] = dict(versions or {})
        self.parent_versions: Mapping[str, str] = parent_versions or {}
        self.changed: Mapping[str, frozenset[str]] = changed or {}

    def version(self, type_url: str) -> str:
        if type_url not in self._versions:
            self._versions[type_url] = set_version(self.resources[type_url])
        return self._versions[type_url]

    def patched(self, type_url: str, updates: Mapping[str, CachedResource], ir: SidecarIR | None = None) -> Snapshot:
        """A copy with some resources of one type replaced (and ``ir``, if given); its version is updated in
        O(updates)."""
        current = self.resources[type_url]
        version = self.version(type_url)
        for name, res in updates.items():
            version = replace_in_version(version, name, current.get(name), res)
        versions = {t: self.version(t) for t in SERVED_TYPES} | {type_url: version}
        return Snapshot(
            self.group,
            {**self.resources, type_url: {**current, **updates}},
            versions=versions,
            parent_versions={type_url: self.version(type_url)},
            changed={type_url: frozenset(updates)},
            ir=ir or self.ir,
        )

    def inconsistencies(self) -> list[str]:
        """Every reference from a listener/route/cluster must resolve within the snapshot."""
        problems = []
        for type_url in (LISTENER, ROUTE, CLUSTER):
            for res in self.resources[type_url].values():
                for ref_type, ref_name in sorted(res.references):
                    if ref_name not in self.resources[ref_type]:
                        problems.append(f"{res.name} references missing {ref_type.rsplit('.', 1)[-1]} {ref_name}")
        # (An EDS cluster references its endpoints resource, so the loop above covers that too.)

        return problems


def _frozen(resources: Mapping[str, CachedResource]) -> Mapping[str, CachedResource]:
    # A patch shares the unchanged types' maps with its parent instead of copying them.
    return resources if isinstance(resources, MappingProxyType) else MappingProxyType(dict(resources))
