"""A mapping ``ObjectKey -> value`` for one kind, stored as namespace -> name -> value.

The Kubernetes source keeps 100,000 Pods at 10,000 services. Keyed by ``ObjectKey`` each Pod costs a key tuple of
its own (80 bytes) and a general dict entry; stored by namespace and then by name (the strings the parser already
interned), it costs one str-keyed dict entry: ~9 MiB less (issue 14). Keys are made when iterated, which only a
relist or a full comparison does; lookups by key or by (namespace, name) make none.

Each namespace is a persistent map (``immutables.Map``, a hash array mapped trie in C): a write makes a new map
that shares all but a few small nodes with the old one, so ``copy`` copies only the namespace -> map dict, a model
handed out never changes, and a change costs microseconds. A namespace had been a dict copied on its first write
after each copy: 1.5 ms and a new 5 MiB table per model at 100,000 Pods in one namespace, ~200 times during a
1,000-Pod burst (on the serving loop, and glibc kept much of the churn resident). Lookups cost ~1.3x a dict's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from functools import partial
from typing import Any, TypeVar, overload

import immutables

from meshctl.model import ObjectKey

__all__ = ["NamespacedMap", "by_namespace", "names_in"]

_V = TypeVar("_V")
_D = TypeVar("_D")

_EMPTY: immutables.Map[str, Any] = immutables.Map()


class NamespacedMap(MutableMapping[ObjectKey, _V]):
    __slots__ = ("_by_namespace", "_len", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._by_namespace: dict[str, immutables.Map[str, _V]] = {}
        self._len = 0

    def in_namespace(self, namespace: str) -> Mapping[str, _V]:
        """name -> value in ``namespace``, as it is now (later writes to this map make new ones)."""
        names: Mapping[str, _V] = self._by_namespace.get(namespace, _EMPTY)
        return names

    def __getitem__(self, key: ObjectKey) -> _V:
        if key.kind != self.kind:
            raise KeyError(key)
        try:
            return self._by_namespace[key.namespace][key.name]
        except KeyError:
            raise KeyError(key) from None

    @overload
    def get(self, key: ObjectKey, /) -> _V | None: ...
    @overload
    def get(self, key: ObjectKey, /, default: _V | _D) -> _V | _D: ...
    def get(self, key: ObjectKey, /, default: object = None) -> object:
        names = self._by_namespace.get(key.namespace)
        if names is None or key.kind != self.kind:
            return default
        return names.get(key.name, default)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, ObjectKey) or key.kind != self.kind:
            return False
        names = self._by_namespace.get(key.namespace)
        return names is not None and key.name in names

    def __iter__(self) -> Iterator[ObjectKey]:
        kind = self.kind
        for namespace, names in self._by_namespace.items():
            for name in names:
                yield ObjectKey(kind, namespace, name)

    def __len__(self) -> int:
        return self._len

    def __setitem__(self, key: ObjectKey, value: _V) -> None:
        if key.kind != self.kind:
            raise ValueError(f"a {key.kind} key in a map of {self.kind}")
        names = self._by_namespace.get(key.namespace, _EMPTY)
        if key.name not in names:
            self._len += 1
        self._by_namespace[key.namespace] = names.set(key.name, value)

    def __delitem__(self, key: ObjectKey) -> None:
        if key not in self:
            raise KeyError(key)
        names = self._by_namespace[key.namespace].delete(key.name)
        self._len -= 1
        if names:
            self._by_namespace[key.namespace] = names
        else:
            del self._by_namespace[key.namespace]

    def copy(self) -> NamespacedMap[_V]:
        """Independent of this map from now on; O(namespaces)."""
        other: NamespacedMap[_V] = NamespacedMap(self.kind)
        other._by_namespace = dict(self._by_namespace)
        other._len = self._len
        return other

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NamespacedMap):
            return self.kind == other.kind and self._by_namespace == other._by_namespace
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"NamespacedMap({self.kind!r}, {self._len} entries)"


_new_key = partial(tuple.__new__, ObjectKey)  # ObjectKey(...) without the Python-level __new__ of a NamedTuple


class _ByKey(Mapping[str, _V]):
    """name -> value in one namespace of any ``ObjectKey`` mapping (a plain dict in tests and benchmarks)."""

    def __init__(self, mapping: Mapping[ObjectKey, _V], kind: str, namespace: str) -> None:
        self._mapping, self._kind, self._namespace = mapping, kind, namespace

    def __getitem__(self, name: str) -> _V:
        return self._mapping[ObjectKey(self._kind, self._namespace, name)]

    def get(self, name: str, default: Any = None) -> Any:
        # Mapping.get goes through __getitem__ and a KeyError for each miss: twice the cost, once per endpoint.
        return self._mapping.get(_new_key((self._kind, self._namespace, name)), default)

    def __iter__(self) -> Iterator[str]:
        return (k.name for k in self._mapping if k.kind == self._kind and k.namespace == self._namespace)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def names_in(mapping: Mapping[ObjectKey, _V], kind: str, namespace: str) -> Mapping[str, _V]:
    """name -> value of ``kind`` in ``namespace``, without a key per lookup when ``mapping`` is a NamespacedMap."""
    if isinstance(mapping, NamespacedMap) and mapping.kind == kind:
        return mapping.in_namespace(namespace)
    return _ByKey(mapping, kind, namespace)


def by_namespace(mapping: Mapping[ObjectKey, _V], kind: str) -> Callable[[str], Mapping[str, _V]]:
    """namespace -> name -> value of ``kind``, for many lookups: a NamespacedMap is that already; any other mapping
    is regrouped once (one pass), where ``names_in`` would make a key per lookup (100,000 endpoints' Pods)."""
    if isinstance(mapping, NamespacedMap) and mapping.kind == kind:
        return mapping.in_namespace
    grouped: dict[str, dict[str, _V]] = {}
    for key, value in mapping.items():
        if key.kind == kind:
            grouped.setdefault(key.namespace, {})[key.name] = value
    empty: dict[str, _V] = {}
    return lambda namespace: grouped.get(namespace, empty)
