"""The App Mesh objects an import reads, and the facts about App Mesh the conversion modules share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIENT_POLICY_DROPPED", "CLUSTER_DNS", "KIND_ORDER", "LISTENER_FIELDS", "AppMeshObject"]

# A cluster DNS name: name[.namespace][.svc[.cluster.local]].
CLUSTER_DNS = re.compile(
    r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)(?:\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?))?(?:\.svc(?:\.cluster\.local)?)?"
)
# The order an import's objects are written in, within a namespace (the cluster-scoped GatewayClass first).
KIND_ORDER = {
    "GatewayClass": -2,
    "Gateway": -1,
    "Service": 0,
    "VirtualNode": 1,
    "Route": 2,
    "HTTPRoute": 3,
    "GRPCRoute": 4,
}
LISTENER_FIELDS = ("portMapping", "connectionPool", "outlierDetection", "healthCheck", "timeout")
CLIENT_POLICY_DROPPED = (
    "not needed: meshed callers originate mTLS to every listener that takes it, with the mesh CA's identity and roots"
)


@dataclass(frozen=True)
class AppMeshObject:
    kind: str
    namespace: str
    name: str
    spec: dict[str, Any]
    origin: str

    @property
    def subject(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"
