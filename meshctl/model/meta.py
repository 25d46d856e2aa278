"""What every model object shares: its identity (ObjectKey), its metadata (Meta) and a rejected field (FieldError).

The mesh objects (``mesh``) and the ingress objects (``ingress``) both build on these; neither imports the other's
module for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

__all__ = ["API_GROUP", "API_VERSION", "EMPTY_LABELS", "FieldError", "LabelSelector", "Meta", "ObjectKey"]

API_GROUP = "mesh.meshctl.dev"
API_VERSION = f"{API_GROUP}/v1alpha1"

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


class ObjectKey(NamedTuple):
    """Identifies an object across sources: kind, namespace and name. A tuple, so hashing and comparing
    (done millions of times in a large mesh) run in C."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldError:
    """A rejected field: ``path`` is the dotted field path, e.g. ``spec.httpRoute.timeout.perRequest``."""

    path: str
    message: str
    unresolved_ref: bool = False  # the field is fine, but what it names does not exist (or is not valid)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Meta:
    """Only what translation reads. No resourceVersion or uid: they change (or differ) without changing anything the
    mesh does, and carrying them made every Pod status update look like a change (issue 14)."""

    namespace: str
    name: str
    generation: int = 1
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    origin: str = ""  # where the object came from, e.g. a manifest file path; shown in error messages


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelSelector:
    """A Kubernetes label selector: every ``match_labels`` pair and every expression (key, In|NotIn|Exists|
    DoesNotExist, values) must hold; an empty selector selects everything."""

    match_labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_LABELS)
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for key, operator, values in self.expressions:
            present = key in labels
            if (
                (operator == "In" and (not present or labels[key] not in values))
                or (operator == "NotIn" and present and labels[key] in values)
                or (operator == "Exists" and not present)
                or (operator == "DoesNotExist" and present)
            ):
                return False
        return True

    def __str__(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        parts += [f"{k} {op} ({','.join(v)})" if v else f"{k} {op}" for k, op, v in self.expressions]
        return ",".join(parts) or "everything"
