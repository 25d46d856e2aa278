"""The state of one ADS stream, state-of-the-world or delta (``delta=True``), and what to send next. No grpc
here: pure logic.

Rules (docs/design.md, "Protocol rules" and "Delta xDS"):
- A request whose ``response_nonce`` is not the latest we sent for that type is stale and ignored.
- ACK: the in-flight set becomes the accepted set. NACK (``error_detail``): recorded, and that exact
  version is never resent (no resend storm); the proxy keeps its last good config until the desired
  set changes again.
- One response in flight per type. EDS and RDS responses carry only the resources that changed.
- Make-before-break: clusters first; listeners and routes only once every cluster they reference has
  been ACKed with its endpoints; a cluster still referenced by delivered routes is kept (retained) until
  routes that no longer use it are ACKed. So a change never sends traffic to a cluster Envoy lacks.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from meshctl.xds.cache import CachedResource, Snapshot, set_version
from meshctl.xds.cache.proxyless import api_listener
from meshctl.xds.cache.resource import replace_in_version
from meshctl.xds.cache.wire import (
    encode_delta_discovery_response,
    encode_delta_resource,
    encode_discovery_response_pieces,
)
from meshctl.xds.envoy.tls import FILE_SECRET_PREFIX
from meshctl.xds.envoy.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, SERVED_TYPES, SHORT_NAMES

__all__ = ["Held", "Rejection", "StreamState", "TypeState"]

_NAMED_TYPES = (ENDPOINT, ROUTE, SECRET)  # subscribed by name; CDS and LDS are wildcard


class _SharedNameSets:
    """One frozenset object for equal sets of names, across streams. The proxies of one group subscribe to the
    same names and use the same clusters, but each request brings its own strings: 1,000 streams kept ~8 MiB of
    equal sets. Bounded by the names it holds, not the sets: a gateway re-subscribing to 20,000 names as services
    come and go makes a new large set each time, and a count of sets would keep thousands of them. The oldest set
    goes first (it then simply stops being shared); a set over a tenth of the budget is never kept. Streams of large
    proxies run in the streams thread, hence the lock."""

    def __init__(self, max_names: int = 100_000) -> None:
        self._sets: dict[frozenset[str], frozenset[str]] = {}
        self._names = 0  # in the sets held
        self._max_names = max_names
        self._lock = threading.Lock()

    def __call__(self, names: frozenset[str]) -> frozenset[str]:
        if len(names) > self._max_names // 10:
            return names
        with self._lock:
            shared = self._sets.setdefault(names, names)
            if shared is names:
                self._names += len(names)
                while self._names > self._max_names:
                    self._names -= len(self._sets.pop(next(iter(self._sets))))
            return shared


_shared_names = _SharedNameSets()


@dataclass
class Rejection:
    type_url: str
    version: str
    message: str
    at: float  # unix time


@dataclass(frozen=True, slots=True)
class Held:
    """What Envoy holds of one type, and the version of exactly that set.

    The only record of Envoy's state a stream keeps: every change goes through ``of`` or ``without``, which
    derive the version from the content, so a shortcut that compares versions can never trust a version
    that no longer describes the resources (the "lost endpoints" bug: names dropped, version kept)."""

    resources: Mapping[str, CachedResource]
    version: str

    @staticmethod
    def of(resources: Mapping[str, CachedResource], version: str | None = None) -> Held:
        """``version`` may be passed when the caller already computed it for this very mapping."""
        return Held(resources, set_version(resources) if version is None else version)

    def without(self, names: set[str] | frozenset[str] | list[str]) -> Held:
        gone = [n for n in names if n in self.resources]
        if not gone:
            return self
        version = self.version
        for name in gone:
            version = replace_in_version(version, name, self.resources[name], None)
        return Held({n: r for n, r in self.resources.items() if n not in gone}, version)

    def only(self, names: frozenset[str]) -> Held:
        return self if self.resources.keys() <= names else self.without([n for n in self.resources if n not in names])


_NOTHING = Held({}, set_version({}))


@dataclass(slots=True)
class TypeState:
    subscribed: bool = False
    names: frozenset[str] | None = None  # requested names for EDS/RDS; None = wildcard
    ever_sent: bool = False
    sent: Mapping[str, CachedResource] = field(default_factory=dict)
    sent_version: str = ""
    nonce: str = ""  # of the latest response sent
    inflight: bool = False
    held: Held = _NOTHING  # what Envoy has ACKed (and not dropped since)
    rejection: Rejection | None = None  # the latest NACK, cleared by the next ACK
    initial_versions: dict[str, str] | None = None  # delta: what a reconnecting proxy says it has
    # Names unsubscribed while a response was in flight: Envoy drops them, so they are not held after the ACK even
    # when subscribed again before it.
    dropped: frozenset[str] = frozenset()
    last_sent: tuple[int, int] = (0, 0)  # resources and removed names in the latest response
    sent_at: float = 0.0  # wall clock of the latest response
    acked_at: float = 0.0  # wall clock of the latest ACK

    @property
    def acked(self) -> Mapping[str, CachedResource]:
        return self.held.resources

    @property
    def acked_version(self) -> str:
        """'' until Envoy ACKed something of this type."""
        return self.held.version if self.held is not _NOTHING else ""


class StreamState:
    _ids = itertools.count(1)

    def __init__(self, node_id: str, group: str, *, delta: bool = False) -> None:
        self.delta = delta  # incremental xDS (DeltaAggregatedResources) instead of state-of-the-world
        self.stream_id = next(self._ids)
        self.node_id = node_id
        self.group = group
        self.connected_at = time.time()
        self.peer = ""  # gRPC's peer string, e.g. ipv4:10.0.3.7:53422
        self.stats_port: int | None = None  # the proxy's Prometheus port (node metadata meshctl.stats_port)
        self.proven_identity: str | None = None  # the identity its xDS client certificate proved; None: no secrets
        self.proxyless = False  # a gRPC client's own XdsClient, not an Envoy (node.is_proxyless)
        self.client = ""  # what it says it is: "envoy 1.40.0", "gRPC C-core 1.85.0" (node.user_agent_*)
        self.types: dict[str, TypeState] = {t: TypeState() for t in SERVED_TYPES}
        self._nonces = itertools.count(1)
        self._in_use_key: tuple[tuple[str, str | bool], ...] | None = None
        self._in_use: frozenset[str] = frozenset()
        self._all_in_use_present: tuple[object, object] | None = None  # (in use, clusters) with nothing retained
        # (names, the snapshot's clusters, the clusters sent, their version): see _named_clusters
        self._named_clusters_memo: tuple[object, object, Mapping[str, CachedResource], str] | None = None

    # --- requests --------------------------------------------------------------------------------

    def on_request(self, req: DiscoveryRequest | DeltaDiscoveryRequest) -> str:
        """Applies one request; returns what it was: 'ack', 'nack', 'stale', 'subscribe' or 'unknown-type'."""
        st = self.types.get(req.type_url)
        if st is None:
            return "unknown-type"
        kind = "subscribe"
        if req.response_nonce:
            if req.response_nonce != st.nonce:
                if not self.delta:
                    return "stale"
                kind = "stale"  # delta: the ACK part is stale, subscription changes still count
            elif st.inflight:
                kind = self._settle(st, req)
        first = not st.subscribed
        st.subscribed = True
        if isinstance(req, DeltaDiscoveryRequest):
            if first and req.initial_resource_versions:
                st.initial_versions = dict(req.initial_resource_versions)
            if self._named(req.type_url):
                names = (st.names or frozenset()) | set(req.resource_names_subscribe)
                self._subscribe(st, names - set(req.resource_names_unsubscribe))
            # Envoy's CDS and LDS are always wildcard ("*" or an empty first subscription): names stay None.
        elif self._named(req.type_url):
            self._subscribe(st, frozenset(req.resource_names))
        return kind

    def _named(self, type_url: str) -> bool:
        """Subscribed by name: EDS, RDS, SDS; and for a proxyless gRPC client LDS (the targets it dials) and CDS (the
        clusters its routes name): gRPC asks for those by name and ignores any other resource in a response."""
        return type_url in _NAMED_TYPES or (self.proxyless and type_url in (LISTENER, CLUSTER))

    def _settle(self, st: TypeState, req: DiscoveryRequest | DeltaDiscoveryRequest) -> str:
        st.inflight = False
        if req.HasField("error_detail"):
            st.dropped = frozenset()  # (already gone from ``held``: see _subscribe)
            st.rejection = Rejection(req.type_url, st.sent_version, req.error_detail.message, time.time())
            return "nack"
        held = Held.of(st.sent, st.sent_version)
        st.acked_at = time.time()
        # Names unsubscribed while the response was in flight were dropped by Envoy on arrival.
        held = held.without(st.dropped) if st.dropped else held
        st.held, st.rejection, st.dropped = held if st.names is None else held.only(st.names), None, frozenset()
        return "ack"

    @staticmethod
    def _subscribe(st: TypeState, names: frozenset[str]) -> None:
        if names == st.names:
            return
        if st.inflight and st.names is not None:
            st.dropped |= st.names - names
        st.names = names = _shared_names(names)
        # Envoy forgets what it unsubscribed from; if it subscribes again, it must be sent again.
        st.held = st.held.only(names)
        if not st.inflight and not st.sent.keys() <= names:
            st.sent = {n: r for n, r in st.sent.items() if n in names}

    # --- responses -------------------------------------------------------------------------------

    def next_responses(self, snap: Snapshot | None) -> list[tuple[str, bytes]]:
        """Responses to send now, in make-before-break order; each marks its type in flight."""
        if snap is None:
            return []
        out: list[tuple[str, bytes]] = []
        retained = self._retained_clusters(snap)
        for type_url in SERVED_TYPES:
            st = self.types[type_url]
            if not st.subscribed or st.inflight:
                continue
            desired, version = self._desired(type_url, snap, retained)
            if st.rejection is not None and version == st.rejection.version:
                continue  # exactly what Envoy just rejected: wait for a new snapshot
            removed: list[str] = []
            payload: Mapping[str, CachedResource]
            if self.delta or type_url in _NAMED_TYPES:
                # Delta sends only changes. So does state-of-the-world for EDS and RDS, whose responses are
                # incremental: a resource left out is unchanged, not removed.
                if st.initial_versions is not None:
                    # A reconnecting proxy told us what it has; equal content has equal versions.
                    held = {n: r for n, r in desired.items() if st.initial_versions.get(n) == r.version}
                    # What it has that is no longer served must be removed by name: delta never implies removal.
                    held.update(
                        (n, CachedResource.reported(type_url, n, v))
                        for n, v in st.initial_versions.items()
                        if n not in desired
                    )
                    st.held = Held.of(held)
                    st.initial_versions = None
                payload = self._changed(st, type_url, desired, snap)
                if self.delta:
                    removed = sorted(n for n in st.acked if n not in desired)
                if not payload and not removed and st.ever_sent:
                    continue  # Envoy has all of it already
            else:
                payload = desired
                if st.ever_sent and version == st.sent_version:
                    continue  # nothing new
            # (a proxyless gRPC client asks for clusters only once it has the routes: it cannot wait for them first)
            if type_url in (LISTENER, ROUTE) and not self.proxyless and not self._ready_for(desired):
                continue
            if type_url == CLUSTER:
                self._rewarm_endpoints(st, payload)
            out.append((type_url, self._send(st, type_url, desired, payload, removed, version)))
        return out

    def _rewarm_endpoints(self, cds: TypeState, clusters: Mapping[str, CachedResource]) -> None:
        """A modified EDS cluster is re-warmed by Envoy, which then waits for its ClusterLoadAssignment
        again: forget that Envoy has those endpoints, so the EDS response right after this CDS resends them
        (Envoy never ACKs the CDS update otherwise)."""
        acked = cds.acked
        modified = []
        for name, res in clusters.items():
            held = acked.get(name)
            # The same object is unchanged (the common case: compare identities before versions).
            if (
                held is not None
                and held is not res
                and held.version != res.version
                and (ENDPOINT, name) in res.references
            ):
                modified.append(name)
        if not modified:
            return
        eds = self.types[ENDPOINT]
        eds.held = eds.held.without(modified)

    @staticmethod
    def _changed(
        st: TypeState, type_url: str, desired: Mapping[str, CachedResource], snap: Snapshot
    ) -> dict[str, CachedResource]:
        if desired is snap.resources[type_url] and st.acked_version == snap.parent_versions.get(type_url):
            # The proxy holds exactly the snapshot this one patched: the patch is the change.
            return {n: desired[n] for n in snap.changed[type_url]}
        acked = st.acked
        changed = {}
        for name, res in desired.items():
            held = acked.get(name)
            # The very same resource object is unchanged: compare versions only when it is not.
            if held is not res and (held is None or held.version != res.version):
                changed[name] = res
        return changed

    def _send(
        self,
        st: TypeState,
        type_url: str,
        desired: Mapping[str, CachedResource],
        payload: Mapping[str, CachedResource],
        removed: list[str],
        version: str,
    ) -> bytes:
        st.nonce = str(next(self._nonces))
        st.sent, st.sent_version, st.inflight, st.ever_sent = desired, version, True, True
        st.last_sent = (len(payload), len(removed))
        st.sent_at = time.time()
        if self.delta:
            # Each entry wraps the shared Any bytes; building it here costs one copy, which the final
            # join makes anyway, and keeps no second copy of every resource in memory.
            resources = [encode_delta_resource(n, payload[n].version, payload[n].any_bytes) for n in sorted(payload)]
            return encode_delta_discovery_response(version, type_url, st.nonce, resources, removed)
        pieces: list[bytes] = []
        for name in sorted(payload):
            res = payload[name]
            pieces += (res.field_header, res.any_bytes)
        return encode_discovery_response_pieces(version, type_url, st.nonce, pieces)

    def _delivered(self, type_url: str) -> dict[str, CachedResource]:
        st = self.types[type_url]
        return {**st.acked, **st.sent} if st.inflight else dict(st.acked)

    def _clusters_in_use(self) -> frozenset[str]:
        """Clusters referenced by the listeners and routes Envoy has or is receiving (memoized by version)."""
        key = tuple(
            (st.acked_version, st.inflight and st.sent_version) for st in (self.types[LISTENER], self.types[ROUTE])
        )
        if key != self._in_use_key:
            in_use: set[str] = set()
            for t in (LISTENER, ROUTE):
                st = self.types[t]
                # Both what Envoy has and what is on its way: during the switch either may be in use.
                for res in [*st.acked.values(), *(st.sent.values() if st.inflight else ())]:
                    in_use.update(name for ref_type, name in res.references if ref_type == CLUSTER)
            self._in_use_key, self._in_use = key, _shared_names(frozenset(in_use))
        return self._in_use

    def _retained_clusters(self, snap: Snapshot) -> dict[str, CachedResource]:
        """Clusters the proxy's current listeners/routes still use but the new snapshot dropped."""
        new = snap.resources[CLUSTER]
        in_use = self._clusters_in_use()
        memo = self._all_in_use_present
        if memo is not None and memo[0] is in_use and memo[1] is new:
            return {}  # checked for these very objects already (a gateway has 20,000 clusters to look up)
        gone = [name for name in in_use if name not in new]
        if not gone:
            self._all_in_use_present = (in_use, new)
            return {}
        known = self._delivered(CLUSTER)
        return {name: known[name] for name in gone if name in known}

    def _desired(
        self, type_url: str, snap: Snapshot, retained: Mapping[str, CachedResource]
    ) -> tuple[Mapping[str, CachedResource], str]:
        """What the proxy should have of this type, and its version. Returns the snapshot's own mapping
        (and precomputed version) whenever nothing needs adding or filtering: the common, cheap case."""
        current: Mapping[str, CachedResource] = snap.resources[type_url]
        if type_url == SECRET and self.proven_identity is None:
            # Nothing with a key: only the secrets that name files on the proxy's own file system.
            current = {n: r for n, r in current.items() if n.startswith(FILE_SECRET_PREFIX)}
        if type_url == LISTENER and self.proxyless:
            listeners = self._api_listeners()
            return listeners, set_version(listeners)
        if type_url == CLUSTER and self.proxyless:
            return self._named_clusters(current, retained)
        if type_url in (CLUSTER, LISTENER):
            if type_url == LISTENER or not retained:
                return current, snap.version(type_url)
            desired = {**retained, **current}
            return desired, set_version(desired)
        names = self.types[type_url].names or frozenset()
        if type_url == ENDPOINT and not retained.keys() & names and names == current.keys():
            return current, snap.version(type_url)
        out = {name: current[name] for name in names if name in current}
        if type_url == ENDPOINT:
            old = self._delivered(ENDPOINT)
            out.update((n, old[n]) for n in names if n not in current and n in retained and n in old)
        return out, set_version(out)

    def _named_clusters(
        self, current: Mapping[str, CachedResource], retained: Mapping[str, CachedResource]
    ) -> tuple[Mapping[str, CachedResource], str]:
        """A proxyless client's CDS: every cluster it asked for, in each response (state of the world: one left out
        is deleted), those its held routes still use included until the routes that replace them are held
        (make-before-break). Kept while the names and the snapshot's clusters are the same objects: this runs for
        every stream on every new snapshot and request, and most changes leave the clusters alone."""
        asked = self.types[CLUSTER].names or frozenset()
        memo = self._named_clusters_memo
        if not retained and memo is not None and memo[0] is asked and memo[1] is current:
            return memo[2], memo[3]
        clusters = {n: r for n in sorted(asked) if (r := current.get(n) or retained.get(n)) is not None}
        version = set_version(clusters)
        self._named_clusters_memo = None if retained else (asked, current, clusters, version)
        return clusters, version

    def _api_listeners(self) -> dict[str, CachedResource]:
        """A proxyless client's LDS: an API listener for each target it asked for."""
        return {n: api_listener(n) for n in sorted(self.types[LISTENER].names or ())}

    def _ready_for(self, desired: Mapping[str, CachedResource]) -> bool:
        """Listeners/routes wait until every cluster they use is ACKed, with endpoints if it is EDS."""
        cds, eds = self.types[CLUSTER], self.types[ENDPOINT]
        if cds.inflight or eds.inflight:
            return False
        clusters, endpoints = cds.acked, eds.acked
        for res in desired.values():
            # Set operations in C: a gateway's RouteConfiguration references 20,000 clusters.
            names = res.cluster_refs
            if not names <= clusters.keys():
                return False
            if any(clusters[name].references for name in names - endpoints.keys()):
                return False  # an EDS cluster whose endpoints Envoy does not have yet
        return True

    # --- reporting -------------------------------------------------------------------------------

    def sync_state(self, type_url: str, snap: Snapshot | None, now: float) -> dict[str, Any]:
        """Where this proxy stands for one type against the group's latest snapshot, as ``get proxies`` shows it:
        SYNCED (ACKed what the snapshot holds for it), STALE (behind it: in flight, or held back until the clusters
        it needs are ACKed), NACKED (rejected the latest version sent; Envoy's message), NOT SENT, or IGNORED (never
        subscribed). ``age``: seconds since the response still waiting for an ACK was sent, or since the last ACK.
        Reads only: safe beside the streams thread (clusters retained for make-before-break are not counted)."""
        st = self.types[type_url]
        if not st.subscribed:
            return {"state": "IGNORED"}
        if snap is None or not st.ever_sent:
            return {"state": "NOT SENT", "age": round(now - self.connected_at, 3)}
        current = snap.resources[type_url]
        if type_url == LISTENER and self.proxyless:
            version = set_version(self._api_listeners())
        elif type_url in _NAMED_TYPES:
            names = st.names or frozenset()
            version = set_version({n: current[n] for n in names if n in current})
        else:
            version = snap.version(type_url)
        if st.rejection is not None:
            return {
                "state": "NACKED",
                "version": st.rejection.version,
                "message": st.rejection.message,
                "age": round(now - st.rejection.at, 3),
            }
        if st.acked_version == version:
            return {"state": "SYNCED", "version": version, "age": round(now - st.acked_at, 3)}
        since = st.sent_at if st.inflight else st.acked_at
        return {"state": "STALE", "version": version, "acked": st.acked_version, "age": round(now - since, 3)}

    @property
    def stats_url(self) -> str | None:
        """Where this proxy's Prometheus stats can be scraped: its address as we see it, its stats port."""
        if not self.stats_port or not self.peer.startswith(("ipv4:", "ipv6:")):
            return None
        host = self.peer.split(":", 1)[1].rsplit(":", 1)[0]
        return f"http://{host}:{self.stats_port}/stats/prometheus"

    def describe(self) -> dict[str, Any]:
        return {
            "stream": self.stream_id,
            "node_id": self.node_id,
            "group": self.group,
            "protocol": "delta" if self.delta else "sotw",
            "kind": "grpc" if self.proxyless else "envoy",
            "client": self.client,
            "connected_at": self.connected_at,
            "peer": self.peer,
            "statsUrl": self.stats_url,
            "identity": self.proven_identity,  # what the proxy proved on the xDS stream (None: nothing)
            "types": {
                SHORT_NAMES[t]: {
                    "acked_version": st.acked_version,
                    "sent_version": st.sent_version,
                    "pending": st.inflight,
                    "last_response": {"resources": st.last_sent[0], "removed": st.last_sent[1]},
                    "resources": sorted(st.acked),
                    "rejected": None
                    if st.rejection is None
                    else {"version": st.rejection.version, "error": st.rejection.message, "at": st.rejection.at},
                }
                for t, st in self.types.items()
            },
        }
