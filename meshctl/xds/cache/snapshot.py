"""One node group's resources, per type, with consistency checks."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from meshctl.xds.cache.resource import CachedResource, set_version
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_ORDER

__all__ = ["Snapshot"]


class Snapshot:
    __slots__ = ("_versions", "group", "resources")

    def __init__(self, group: str, resources: Mapping[str, Mapping[str, CachedResource]]) -> None:
        self.group = group
        self.resources = MappingProxyType({t: MappingProxyType(dict(resources.get(t, {}))) for t in TYPE_ORDER})
        self._versions: dict[str, str] = {}

    def version(self, type_url: str) -> str:
        if type_url not in self._versions:
            self._versions[type_url] = set_version(self.resources[type_url])
        return self._versions[type_url]

    def inconsistencies(self) -> list[str]:
        """Every reference from a listener/route/cluster must resolve within the snapshot."""
        problems = []
        for type_url in (LISTENER, ROUTE, CLUSTER):
            for res in self.resources[type_url].values():
                for ref_type, ref_name in sorted(res.references):
                    if ref_name not in self.resources[ref_type]:
                        problems.append(f"{res.name} references missing {ref_type.rsplit('.', 1)[-1]} {ref_name}")
        for name, cluster in self.resources[CLUSTER].items():
            if cluster.message.HasField("eds_cluster_config") and name not in self.resources[ENDPOINT]:  # type: ignore[attr-defined]
                problems.append(f"cluster {name} has no endpoints resource")
        return problems
