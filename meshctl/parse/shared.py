"""One shared copy of equal immutable values across parsed objects.

At 10,000 services a cluster has ~100,000 Pods whose labels are a handful of distinct maps (one per Deployment
version), and 20,000 VirtualNodes with a few distinct listener configurations. Parsed one by one, each object
carried its own copy (the JSON decoder makes new strings for every document): ~950 bytes per Pod. Sharing equal
values keeps the model's memory close to what is distinct (issue 14).

The tables only ever help: a value not found is used as it is, and a full table is emptied (never grows without
bound as objects churn). Strings go through ``sys.intern``, whose table forgets strings nothing uses.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from meshctl.model import Pod

__all__ = ["shared", "shared_labels", "shared_pod", "shared_str"]

_T = TypeVar("_T", bound=Hashable)
_LIMIT = 50_000
_values: dict[Hashable, Hashable] = {}
_labels: dict[frozenset[tuple[str, str]], Mapping[str, str]] = {}
_EMPTY: Mapping[str, str] = MappingProxyType({})
# By the identity of the (shared) label map: an entry holds its map, so the id cannot be reused while it is here.
_pods: dict[tuple[int, tuple[tuple[str, bool | None], ...], bool, str, str | None], Pod] = {}


def shared_str(value: str) -> str:
    return sys.intern(value)


def shared(value: _T) -> _T:
    """The shared copy of a hashable immutable value (a frozen dataclass, a tuple of them)."""
    found = _values.get(value)
    if found is not None:
        return found  # type: ignore[return-value]
    if len(_values) >= _LIMIT:
        _values.clear()
    _values[value] = value
    return value


def shared_labels(labels: Mapping[str, str] | Mapping[Any, Any]) -> Mapping[str, str]:
    """A read-only label map, shared with every equal one."""
    if not labels:
        return _EMPTY
    items = frozenset((sys.intern(str(k)), sys.intern(str(v))) for k, v in labels.items())
    found = _labels.get(items)
    if found is None:
        if len(_labels) >= _LIMIT:
            _labels.clear()
        found = _labels[items] = MappingProxyType(dict(sorted(items)))
    return found


def shared_pod(
    labels: Mapping[str, str],
    gates: tuple[tuple[str, bool | None], ...],
    containers_ready: bool,
    service_account: str = "default",
    branch_eni: str | None = None,
) -> Pod:
    """The one Pod object for Pods alike; ``labels`` must come from ``shared_labels``."""
    key = (id(labels), gates, containers_ready, service_account, branch_eni)
    found = _pods.get(key)
    if found is None:
        if len(_pods) >= _LIMIT:
            _pods.clear()
        found = _pods[key] = Pod(
            labels=labels,
            gates=gates,
            containers_ready=containers_ready,
            service_account=service_account,
            branch_eni=branch_eni,
        )
    return found
