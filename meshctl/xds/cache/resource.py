"""A built Envoy resource whose bytes and version are computed once and shared by every stream."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshctl.model import ObjectKey
from meshctl.xds.cache.wire import encode_any, resource_field_header
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

__all__ = ["CachedResource", "Origins", "replace_in_version", "set_version"]

# The user objects a resource was built from, each with the IR value taken from it: (VirtualNode or Route key,
# IR). When Envoy rejects an update, the pairs that are new in it name the objects to blame (server/blame.py).
Origins = frozenset[tuple[ObjectKey, Hashable]]

_MESSAGE_TYPES: dict[str, type[Message]] = {
    CLUSTER: Cluster,
    ENDPOINT: ClusterLoadAssignment,
    LISTENER: Listener,
    ROUTE: RouteConfiguration,
    SECRET: Secret,
}
REDACTED = "[redacted]"


class CachedResource:
    """One resource of one type. ``references`` names what it points at: ``(type_url, name)`` pairs.

    Built from a protobuf message, or directly from its serialized bytes (``value``). Once serialized the
    message is dropped: at 10,000 services the messages would double the memory, and only the admin
    API and tests look at them, so ``message`` parses the bytes again on demand.
    """

    __slots__ = (
        "_any_bytes",
        "_cluster_refs",
        "_field_header",
        "_message",
        "_value",
        "_version",
        "name",
        "origins",
        "references",
        "serializations",
        "type_url",
    )

    def __init__(
        self,
        type_url: str,
        name: str,
        message: Message | None = None,
        references: Iterable[tuple[str, str]] = (),
        *,
        value: bytes | None = None,
        origins: Origins = frozenset(),
    ) -> None:
        if (message is None) == (value is None):
            raise ValueError("give exactly one of message and value")
        self.type_url = type_url
        self.name = name
        self.references = frozenset(references)
        self.origins = origins
        self.serializations = 0  # observable proof that bytes are built once, however many streams send them
        self._message = message
        self._value = value
        self._any_bytes: bytes | None = None
        self._field_header: bytes | None = None
        self._cluster_refs: frozenset[str] | None = None
        self._version: str | None = None

    @classmethod
    def reported(cls, type_url: str, name: str, version: str) -> CachedResource:
        """A resource a reconnecting proxy says it holds (delta ``initial_resource_versions``): only its name and
        version are known, which is all a stream needs to tell it to remove it."""
        res = cls(type_url, name, value=b"")
        res._version = version
        return res

    @property
    def message(self) -> Message:
        """The resource as a message, for the admin API and tests: a Secret's private key is redacted (only the
        bytes sent to the proxy hold it)."""
        message: Message = self._message or _MESSAGE_TYPES[self.type_url].FromString(
            any_pb2.Any.FromString(self.any_bytes).value
        )
        if isinstance(message, Secret) and message.HasField("tls_certificate"):
            redacted = Secret()
            redacted.CopyFrom(message)
            key = redacted.tls_certificate.private_key
            if key.WhichOneof("specifier") in ("inline_bytes", "inline_string"):
                key.inline_string = REDACTED
            return redacted  # type: ignore[no-any-return]
        return message

    @property
    def any_bytes(self) -> bytes:
        if self._any_bytes is None:
            self.serializations += 1
            if self._value is not None:
                value = self._value
            else:
                assert self._message is not None
                value = self._message.SerializeToString(deterministic=True)
            self._any_bytes = encode_any(self.type_url, value)
            self._message = self._value = None
        return self._any_bytes

    @property
    def cluster_refs(self) -> frozenset[str]:
        """The names of the clusters it references."""
        if self._cluster_refs is None:
            self._cluster_refs = frozenset(name for t, name in self.references if t == CLUSTER)
        return self._cluster_refs

    @property
    def field_header(self) -> bytes:
        """What precedes ``any_bytes`` in a DiscoveryResponse (see ``wire.encode_discovery_response_pieces``)."""
        if self._field_header is None:
            self._field_header = resource_field_header(len(self.any_bytes))
        return self._field_header

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
