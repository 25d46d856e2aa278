"""The App Mesh objects an import reads, and the facts about App Mesh the conversion modules share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CLIENT_POLICY_DROPPED", "CLUSTER_DNS", "LISTENER_FIELDS", "AppMeshObject"]

# A cluster DNS name: name[.namespace][.svc[.cluster.local]].
CLUSTER_DNS = re.compile(
    r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)(?:\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?))?(?:\.svc(?:\.cluster\.local)?)?"
)
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
