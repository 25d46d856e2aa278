"""A built Envoy resource whose bytes and version are computed once and shared by every stream."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from meshctl.xds.cache.wire import encode_any, encode_delta_resource

__all__ = ["CachedResource", "replace_in_version", "set_version"]


class CachedResource:
    """One resource of one type. ``references`` names what it points at: ``(type_url, name)`` pairs."""

    __slots__ = (
        "_any_bytes",
        "_delta_bytes",
        "_version",
        "message",
        "name",
        "references",
        "serializations",
        "type_url",
    )

    def __init__(self, type_url: str, name: str, message: Message, references: Iterable[tuple[str, str]] = ()) -> None:
        self.type_url = type_url
        self.name = name
        self.message = message
        self.references = frozenset(references)
        self.serializations = 0  # observable proof that bytes are built once, however many streams send them
        self._any_bytes: bytes | None = None
        self._version: str | None = None
        self._delta_bytes: bytes | None = None

    @property
    def any_bytes(self) -> bytes:
        if self._any_bytes is None:
            self.serializations += 1
            self._any_bytes = encode_any(self.type_url, self.message.SerializeToString(deterministic=True))
        return self._any_bytes

    @property
    def delta_bytes(self) -> bytes:
        """The resource as a delta ``Resource`` entry (name, version, Any), also built once."""
        if self._delta_bytes is None:
            self._delta_bytes = encode_delta_resource(self.name, self.version, self.any_bytes)
        return self._delta_bytes

    @property
    def version(self) -> str:
        """Content-addressed: equal content, equal version, across restarts too."""
        if self._version is None:
            self._version = hashlib.blake2b(self.any_bytes, digest_size=8).hexdigest()
        return self._version

    def __repr__(self) -> str:
        return f"CachedResource({self.name!r}, {self.version})"


def _entry(name: str, version: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{name}\0{version}".encode(), digest_size=8).digest(), "big")


def set_version(resources: Mapping[str, CachedResource]) -> str:
    """The version of a set of resources: XOR of per-(name, version) hashes. Content-addressed (a restart
    gives the same versions) and order-free, so replacing a few resources updates it in O(changes)."""
    acc = 0
    for name, res in resources.items():
        acc ^= _entry(name, res.version)
    return f"{acc:016x}"


def replace_in_version(version: str, name: str, old: CachedResource | None, new: CachedResource | None) -> str:
    acc = int(version, 16)
    if old is not None:
        acc ^= _entry(name, old.version)
    if new is not None:
        acc ^= _entry(name, new.version)
    return f"{acc:016x}"
