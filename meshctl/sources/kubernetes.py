"""The Kubernetes source: list+watch of Services, EndpointSlices, Pods, VirtualNodes and Routes.

One informer thread per kind (the `kubernetes` client is synchronous): list in pages of ``_PAGE`` (client-go's
reflector does the same: one JSON decode of 100,000 Pods would hold the GIL for a second), then watch from the
list's resourceVersion with bookmarks; a 410 Gone relists; a broken stream re-watches from the last
resourceVersion; errors back off with jitter. Objects are parsed in the informer thread (through the same parser
as manifest files, so both sources build the same model) and flow to the asyncio side, where a burst is drained at
once and turned into one Model, with a ModelDelta when only EndpointSlices/Pods or only Routes changed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from meshctl.model import API_GROUP, Model, ModelDelta, ObjectKey
from meshctl.model.gateway import GATEWAY_GROUP
from meshctl.model.ingress import ELBV2_GROUP
from meshctl.model.namespaced import NamespacedMap
from meshctl.parse.documents import InvalidObject, MeshObject, Parsed, UnsupportedDocument, parse_keyed
from meshctl.parse.secret import TLS_SECRET_TYPE
from meshctl.sources.base import MODEL_FIELDS, ModelSink

__all__ = ["KubernetesSource"]

log = logging.getLogger(__name__)
# What an informer thread hands the event loop: ("SYNC", kind, namespace, {key: object}) or (watch event type, kind,
# namespace, Parsed).
_Event = tuple[Any, ...]
# One store per kind; Pods by namespace and name, without a key object each (100,000 at 10,000 services).
_Store = dict[ObjectKey, MeshObject] | NamespacedMap[MeshObject]
_VERSION = "v1alpha1"
# One informer parses at a time (a list page's JSON decode included; a watch event's one line is decoded before).
# Their CPU work cannot run in parallel under the GIL anyway, but each runnable thread is one more the serving loop
# waits behind for its turn: five informers parsing their initial lists at once stalled it up to 77 ms at 10,000
# services, one at a time ~30 ms (issue 14). Fetching stays parallel.
_DECODING = threading.Lock()
_PAGE = 500
_ABSENT_RETRY = 30.0  # seconds between looks for a kind the API server does not serve
_TLS_SECRETS = f"type={TLS_SECRET_TYPE}"


@dataclass(frozen=True)
class _Kind:
    name: str  # model kind: Service, EndpointSlice, Pod, VirtualNode, Route (+ the ingress reconciler's kinds)
    api_version: str  # set on list items, which the API server sends without it
    list_all: Callable[..., object]
    list_namespaced: Callable[..., object] | None  # None: cluster-scoped, listed once whatever the namespaces


# The kinds only the ingress reconciler reads (see ingress_model); watched with --ingress.
_INGRESS_KINDS = frozenset(
    {
        "Ingress",
        "IngressClass",
        "IngressClassParams",
        "Node",
        "TargetGroupBinding",
        "TCPRoute",
        "UDPRoute",
        "TLSRoute",
        "LoadBalancerConfiguration",
        "TargetGroupConfiguration",
        "ListenerRuleConfiguration",
    }
)
_L4_ROUTE_KINDS = ("TCPRoute", "UDPRoute", "TLSRoute")  # one model map (l4_routes), keyed by kind


def _ingress_kinds(api: client.ApiClient) -> list[_Kind]:
    networking, core, custom = client.NetworkingV1Api(api), client.CoreV1Api(api), client.CustomObjectsApi(api)

    def namespaced(group: str, version: str, plural: str) -> tuple[Callable[..., object], Callable[..., object]]:
        return (
            lambda **kw: custom.list_cluster_custom_object(group, version, plural, **kw),
            lambda ns, **kw: custom.list_namespaced_custom_object(group, version, ns, plural, **kw),
        )

    return [
        # Gateways of our ALB/NLB classes: the L4 routes NLBs serve, LBC's configuration kinds (ours).
        *(_Kind(k, f"{GATEWAY_GROUP}/v1", *namespaced(GATEWAY_GROUP, "v1", f"{k.lower()}s")) for k in _L4_ROUTE_KINDS),
        _Kind(
            "LoadBalancerConfiguration",
            f"{ELBV2_GROUP}/v1beta1",
            *namespaced(ELBV2_GROUP, "v1beta1", "loadbalancerconfigurations"),
        ),
        _Kind(
            "TargetGroupConfiguration",
            f"{ELBV2_GROUP}/v1beta1",
            *namespaced(ELBV2_GROUP, "v1beta1", "targetgroupconfigurations"),
        ),
        _Kind(
            "ListenerRuleConfiguration",
            f"{ELBV2_GROUP}/v1beta1",
            *namespaced(ELBV2_GROUP, "v1beta1", "listenerruleconfigurations"),
        ),
        _Kind(
            "Ingress",
            "networking.k8s.io/v1",
            networking.list_ingress_for_all_namespaces,
            networking.list_namespaced_ingress,
        ),
        _Kind("IngressClass", "networking.k8s.io/v1", networking.list_ingress_class, None),
        _Kind(
            "IngressClassParams",
            f"{ELBV2_GROUP}/v1beta1",
            lambda **kw: custom.list_cluster_custom_object(ELBV2_GROUP, "v1beta1", "ingressclassparams", **kw),
            None,
        ),
        _Kind("Node", "v1", core.list_node, None),
        _Kind(
            "TargetGroupBinding",
            f"{ELBV2_GROUP}/v1beta1",
            lambda **kw: custom.list_cluster_custom_object(ELBV2_GROUP, "v1beta1", "targetgroupbindings", **kw),
            lambda ns, **kw: custom.list_namespaced_custom_object(
                ELBV2_GROUP, "v1beta1", ns, "targetgroupbindings", **kw
            ),
        ),
    ]


def _kinds(api: client.ApiClient) -> list[_Kind]:
    core, discovery, custom = client.CoreV1Api(api), client.DiscoveryV1Api(api), client.CustomObjectsApi(api)

    def crd(plural: str) -> tuple[Callable[..., object], Callable[..., object]]:
        return (
            lambda **kw: custom.list_cluster_custom_object(API_GROUP, _VERSION, plural, **kw),
            lambda ns, **kw: custom.list_namespaced_custom_object(API_GROUP, _VERSION, ns, plural, **kw),
        )

    def gateway(version: str, plural: str) -> tuple[Callable[..., object], Callable[..., object]]:
        return (
            lambda **kw: custom.list_cluster_custom_object(GATEWAY_GROUP, version, plural, **kw),
            lambda ns, **kw: custom.list_namespaced_custom_object(GATEWAY_GROUP, version, ns, plural, **kw),
        )

    return [
        _Kind("Service", "v1", core.list_service_for_all_namespaces, core.list_namespaced_service),
        _Kind(
            "EndpointSlice",
            "discovery.k8s.io/v1",
            discovery.list_endpoint_slice_for_all_namespaces,
            discovery.list_namespaced_endpoint_slice,
        ),
        _Kind("Pod", "v1", core.list_pod_for_all_namespaces, core.list_namespaced_pod),
        _Kind("VirtualNode", f"{API_GROUP}/{_VERSION}", *crd("virtualnodes")),
        _Kind("Route", f"{API_GROUP}/{_VERSION}", *crd("routes")),
        _Kind("AuthorizationPolicy", f"{API_GROUP}/{_VERSION}", *crd("authorizationpolicies")),
        # Cluster-scoped, listed once: a namespace's default TLS mode (its TLS_MODE_LABEL).
        _Kind("Namespace", "v1", core.list_namespace, None),
        # Gateway API (GAMMA): routes attached to Services, and the grants for cross-namespace backends.
        _Kind("HTTPRoute", f"{GATEWAY_GROUP}/v1", *gateway("v1", "httproutes")),
        _Kind("GRPCRoute", f"{GATEWAY_GROUP}/v1", *gateway("v1", "grpcroutes")),
        _Kind("ReferenceGrant", f"{GATEWAY_GROUP}/v1beta1", *gateway("v1beta1", "referencegrants")),
        # Edge gateways: Gateways, their classes, and the TLS Secrets their HTTPS listeners name (only that type is
        # listed: the API server filters, the rest is never read).
        _Kind("Gateway", f"{GATEWAY_GROUP}/v1", *gateway("v1", "gateways")),
        _Kind(
            "GatewayClass",
            f"{GATEWAY_GROUP}/v1",
            lambda **kw: custom.list_cluster_custom_object(GATEWAY_GROUP, "v1", "gatewayclasses", **kw),
            None,
        ),
        _Kind(
            "Secret",
            "v1",
            lambda **kw: core.list_secret_for_all_namespaces(field_selector=_TLS_SECRETS, **kw),
            lambda ns, **kw: core.list_namespaced_secret(ns, field_selector=_TLS_SECRETS, **kw),
        ),
    ]


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class _Informer:
    """List+watch of one kind in one namespace (or all), in a thread; calls ``emit`` from that thread."""

    def __init__(
        self,
        kind: _Kind,
        namespace: str | None,
        emit: Callable[[_Event], object],
        stop: threading.Event,
        watch_timeout: int = 300,
    ) -> None:
        self.kind, self.namespace, self.emit, self.stop, self.watch_timeout = kind, namespace, emit, stop, watch_timeout
        self._invalid_listed: list[tuple[ObjectKey, str | None]] = []

    def _call(self, **kw: Any) -> Any:
        if self.namespace is None or self.kind.list_namespaced is None:
            return self.kind.list_all(_preload_content=False, **kw)
        return self.kind.list_namespaced(self.namespace, _preload_content=False, **kw)

    def run(self) -> None:
        backoff = 0.2
        absent_reported = False
        while not self.stop.is_set():
            try:
                objects, rv = self._list()
                self.emit(("SYNC", self.kind.name, self.namespace, objects))
                for key, message in self._invalid_listed:
                    self.emit(("INVALID", self.kind.name, self.namespace, (key, message, self.kind.api_version)))
                self._invalid_listed = []
                del objects  # the store's until its first change; kept here, every copy since would add one
                while not self.stop.is_set():
                    rv = self._watch(rv)
                    backoff = 0.2
            except _Gone:
                log.info("%s: resourceVersion expired, relisting", self.kind.name)
            except ApiException as exc:
                if exc.status != 404:
                    backoff = self._retry(exc, backoff)
                    continue
                # The kind is not served (its CRD is not installed yet): there are none of it. Say so once, count
                # it as synced so the rest of the mesh is served, and look again now and then.
                if not absent_reported:
                    log.warning("%s: not served by the API server (CRD not installed?); none yet", self.kind.name)
                    self.emit(("SYNC", self.kind.name, self.namespace, _new_store(self.kind.name)))
                    absent_reported = True
                self.stop.wait(_ABSENT_RETRY)
            except Exception as exc:  # network errors, server restarts: retry with jittered back-off
                if self.stop.is_set():
                    return
                backoff = self._retry(exc, backoff)

    def _retry(self, exc: Exception, backoff: float) -> float:
        """Waits a jittered ``backoff``; returns the next one."""
        delay = backoff * (0.5 + random.random())
        log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.kind.name, exc, delay)
        self.stop.wait(delay)
        return min(backoff * 2, 10.0)

    def _parse(self, item: dict[str, Any]) -> Parsed | None:
        """Lists and watch events carry items without kind and apiVersion: ours fill them in for the parser."""
        item.setdefault("kind", self.kind.name)
        item.setdefault("apiVersion", self.kind.api_version)
        return _parse(item)

    def _parse_or_report(self, item: dict[str, Any], event_type: str | None = None) -> Parsed | None:
        """``_parse``, an object it cannot read reported (INVALID events: the source lists them as load errors
        until the object is fixed or deleted) and left out: its last readable version stays in the store."""
        try:
            return self._parse(item)
        except InvalidObject as exc:
            meta: dict[str, Any] = item["metadata"] if isinstance(item.get("metadata"), dict) else {}
            namespace = meta.get("namespace")
            key = ObjectKey(self.kind.name, namespace if isinstance(namespace, str) else "", str(meta.get("name")))
            message = None if event_type == "DELETED" else str(exc)
            if event_type is None:
                self._invalid_listed.append((key, message))
            else:
                self.emit(("INVALID", self.kind.name, self.namespace, (key, message, self.kind.api_version)))
            return None

    def _list(self) -> tuple[_Store, str]:
        """Every object, parsed and keyed, and the resourceVersion to watch from (the first page's)."""
        objects = _new_store(self.kind.name)
        token, rv = None, None
        while True:
            response = self._call(limit=_PAGE, **({"_continue": token} if token else {}))
            body = response.data
            with _DECODING:
                listed = json.loads(body)
                rv = rv or listed["metadata"]["resourceVersion"]
                for item in listed["items"]:
                    if (parsed := self._parse_or_report(item)) is not None:
                        objects[parsed.key] = parsed.obj
                # What was just parsed lives as long as the model: out of the collector's sight with it. Otherwise
                # each automatic full collection during a large initial list rescans everything parsed so far (up
                # to 0.25 s with the GIL held at 100,000 Pods, stalling the serving loop). Cycles are rare here and
                # collected by the controller's periodic full collection.
                gc.freeze()
            del body
            token = listed["metadata"].get("continue")
            if not token:
                return objects, rv

    def _watch(self, rv: str) -> str:
        response = self._call(
            watch=True, resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout
        )
        try:
            for event in _lines(response):
                if self.stop.is_set():
                    break
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if event.get("type") == "BOOKMARK":
                    continue
                with _DECODING:
                    parsed = self._parse_or_report(obj, event["type"])
                if parsed is not None:
                    self.emit((event["type"], self.kind.name, self.namespace, parsed))
        finally:
            response.release_conn()
        return rv


def _lines(response: Any) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in response.stream(4096, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
    if buffer.strip():
        yield json.loads(buffer)


class KubernetesSource:
    def __init__(self, api: client.ApiClient, namespaces: list[str] | None = None, *, ingress: bool = False) -> None:
        """``ingress``: also watch Ingresses, IngressClasses, Nodes and TargetGroupBindings for the reconciler."""
        self.api = api
        self.namespaces: list[str | None] = list(namespaces) if namespaces else [None]
        self._stop = threading.Event()
        self._objects: dict[str, _Store] = {}
        # Kinds whose store a model now holds: copied before their next change (copy on write), so the store and
        # the model share one dict between changes instead of keeping two (100,000 Pods: ~5 MiB each).
        self._in_model: set[str] = set()
        self.ignored_events = 0  # watch events that changed nothing the model holds
        # Objects the parser cannot read, by key: the model's load errors until each is fixed or deleted.
        self._invalid: dict[ObjectKey, str] = {}
        self._invalid_changed = False
        self._reported: dict[ObjectKey, str] = {}  # what on_invalid was told, so a relist does not repeat it
        # Told of each object it cannot read (key, apiVersion, message): the status writer records a Warning Event.
        self.on_invalid: Callable[[ObjectKey, str, str], None] | None = None
        # Now, not in run(): the client's API and model modules load lazily, ~0.5 s of imports that would stall
        # the serving loop on the first list.
        self._kinds = _kinds(api) + (_ingress_kinds(api) if ingress else [])

    def describe(self) -> dict[str, Any]:
        host = self.api.configuration.host
        return {"kind": "kubernetes", "server": host, "namespaces": [n for n in self.namespaces if n] or ["*"]}

    async def run(self, sink: ModelSink) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Event] = asyncio.Queue()
        kinds = self._kinds
        self._objects = {k.name: _new_store(k.name) for k in kinds}
        informers = [
            _Informer(k, ns, lambda e: loop.call_soon_threadsafe(queue.put_nowait, e), self._stop)
            for k in kinds
            for ns in (self.namespaces if k.list_namespaced is not None else [None])
        ]
        threads = [threading.Thread(target=i.run, name=f"watch-{i.kind.name}", daemon=True) for i in informers]
        for thread in threads:
            thread.start()
        synced: set[tuple[str, str | None]] = set()
        model: Model | None = None
        revision = 0
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty():  # a burst becomes one model
                    batch.append(queue.get_nowait())
                if (new := self._next_model(batch, synced, len(informers), model, revision + 1)) is not None:
                    model, revision = new, revision + 1
                    await sink(model)
                del batch  # the events (a whole initial list) are not kept while waiting for the next
        finally:
            self._stop.set()

    def _next_model(
        self,
        batch: list[_Event],
        synced: set[tuple[str, str | None]],
        informers: int,
        model: Model | None,
        revision: int,
    ) -> Model | None:
        """The model after ``batch``, or None when there is none to emit yet or nothing the mesh uses changed. A method
        of its own so that the changed keys (every object's, after the initial lists) are not kept after it."""
        changed, listed = self._apply(batch, synced)
        if len(synced) < informers:
            return None  # build only after the initial sync of every kind
        invalid_changed, self._invalid_changed = self._invalid_changed, False
        if model is not None and not any(changed.values()) and not listed and not invalid_changed:
            self.ignored_events += len(batch)
            return None
        new = self._model(revision, model, changed, listed)
        # The model and the stores it shares live until the next change, and a change copies the store of its kind
        # (20,000 EndpointSlices; Pods, persistent maps, take a few new nodes): out of the collector's sight, or
        # young collections on the serving loop rescan each copy until it ages out (11-16 ms each during a
        # 1,000-Pod burst when a Pod change copied its namespace, issue 14). Cheap: freezing moves lists, it visits
        # nothing.
        gc.freeze()
        return new

    def _apply(
        self, batch: list[_Event], synced: set[tuple[str, str | None]]
    ) -> tuple[dict[str, set[ObjectKey]], set[str]]:
        """Updates the store; returns the changed keys by kind, and the kinds whose store an initial list filled
        (every object of it changed; their keys are not gathered: 100,000 Pods would take ~50 ms on the loop)."""
        changed: dict[str, set[ObjectKey]] = {}
        listed: set[str] = set()
        for event_type, kind, namespace, payload in batch:
            store = self._objects[kind]  # read here; written only through _writable (a model may hold it)
            keys = changed.setdefault(kind, set())
            if event_type == "INVALID":
                bad_key, message, api_version = payload
                if message is None:
                    self._invalid_changed |= self._invalid.pop(bad_key, None) is not None
                    self._reported.pop(bad_key, None)
                    continue
                if self._invalid.get(bad_key) != message:
                    self._invalid[bad_key] = message
                    self._invalid_changed = True
                if self._reported.get(bad_key) != message and self.on_invalid is not None:
                    self.on_invalid(bad_key, api_version, message)  # a Warning Event, once per message
                self._reported[bad_key] = message
                continue
            if event_type == "SYNC":
                synced.add((kind, namespace))
                for bad_key in [k for k in self._invalid if k.kind == kind and namespace in (None, k.namespace)]:
                    del self._invalid[bad_key]  # reported again after this SYNC if still unreadable
                    self._invalid_changed = True
                fresh: _Store = payload
                if not store:  # the initial list: nothing to compare (100,000 Pods would take ~0.1 s on the loop)
                    self._objects[kind] = fresh
                    self._in_model.discard(kind)
                    if fresh:
                        listed.add(kind)
                    continue
                stale = {k for k in store if namespace is None or k.namespace == namespace}
                for key in stale - fresh.keys():
                    del self._writable(kind)[key]
                    keys.add(key)
                for key, obj in fresh.items():
                    if store.get(key) != obj:  # a relist after a 410 mostly finds what we had
                        self._writable(kind)[key] = obj
                        keys.add(key)
                continue
            key, obj, _ = payload
            if key in self._invalid:  # readable again (or deleted)
                del self._invalid[key]
                self._reported.pop(key, None)
                self._invalid_changed = True
            if event_type == "DELETED":
                if key in store:
                    del self._writable(kind)[key]
                    keys.add(key)
            elif store.get(key) != obj:
                # Only what the model holds counts: a Pod status update or a resourceVersion bump parses to an equal
                # object and changes nothing, so it never reaches the controller (issue 14).
                self._writable(kind)[key] = obj
                keys.add(key)
        return changed, listed

    def _writable(self, kind: str) -> _Store:
        """The store of ``kind``, copied first if a model holds it (once per change, not per event)."""
        if kind in self._in_model:
            self._objects[kind] = self._objects[kind].copy()
            self._in_model.discard(kind)
        return self._objects[kind]

    def _model(
        self, revision: int, previous: Model | None, changed: dict[str, set[ObjectKey]], listed: set[str]
    ) -> Model:
        def current(kind: str, attr: str) -> Any:
            # Unchanged kinds keep the previous mapping object: the controller compares by identity first.
            if previous is not None and not changed.get(kind) and kind not in listed:
                return getattr(previous, attr)
            self._in_model.add(kind)
            return self._objects[kind]

        delta = None
        kinds_changed = {k for k, keys in changed.items() if keys} - _INGRESS_KINDS  # translation never reads them
        if listed - _INGRESS_KINDS:
            delta = None  # which objects changed is not known: the controller compares (safe by construction)
        elif previous is not None and kinds_changed and kinds_changed <= {"EndpointSlice", "Pod"}:
            delta = ModelDelta(
                base_revision=previous.revision,
                endpoint_slices=frozenset(changed.get("EndpointSlice", ())),
                pods=frozenset(changed.get("Pod", ())),
            )
        elif previous is not None and kinds_changed == {"Route"}:
            delta = ModelDelta(base_revision=previous.revision, routes=frozenset(changed["Route"]))
        elif previous is not None and kinds_changed and kinds_changed <= {"HTTPRoute", "GRPCRoute"}:
            keys = changed.get("HTTPRoute", set()) | changed.get("GRPCRoute", set())
            delta = ModelDelta(base_revision=previous.revision, http_routes=frozenset(keys))
        watched = {
            attr: current(kind.__name__, attr) for kind, attr in MODEL_FIELDS.items() if kind.__name__ in self._objects
        }
        if "GRPCRoute" in self._objects:  # one model map holds HTTPRoutes and GRPCRoutes (keyed by kind)
            kinds = ("HTTPRoute", "GRPCRoute")
            unchanged = previous is not None and not any(changed.get(k) or k in listed for k in kinds)
            if unchanged and previous is not None:
                watched["http_routes"] = previous.http_routes
            else:
                watched["http_routes"] = {**self._objects.get("HTTPRoute", {}), **self._objects["GRPCRoute"]}
        if "TCPRoute" in self._objects:
            if previous is not None and not any(changed.get(k) or k in listed for k in _L4_ROUTE_KINDS):
                watched["l4_routes"] = previous.l4_routes
            else:
                watched["l4_routes"] = {k: v for kind in _L4_ROUTE_KINDS for k, v in self._objects[kind].items()}
        load_errors = tuple(self._invalid[k] for k in sorted(self._invalid))
        return Model(**watched, revision=revision, delta=delta, load_errors=load_errors)


def _new_store(kind: str) -> _Store:
    return NamespacedMap(kind) if kind == "Pod" else {}


_WITH_ORIGIN = ("VirtualNode", "Route", "AuthorizationPolicy", "HTTPRoute", "GRPCRoute")


def _parse(item: dict[str, Any]) -> Parsed | None:
    meta = item.get("metadata") or {}
    origin = f"{item.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}"
    try:
        # Only our own kinds show their origin (in statuses); 100,000 Pods need not carry theirs.
        return parse_keyed(item, origin=origin if item.get("kind") in _WITH_ORIGIN else "")
    except InvalidObject:
        raise
    except UnsupportedDocument as exc:
        log.warning("%s: %s", origin, exc)
        return None
