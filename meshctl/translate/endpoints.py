"""Which endpoints belong to which VirtualNode, computed per EndpointSlice so that a slice change is
re-translated in time proportional to that slice, not to the mesh.

A slice *contributes* endpoints to every VirtualNode whose podSelector matches the labels of the slice
endpoints' Pods. A node's endpoints for listener port P are the union of its contributions on port P.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import partial
from operator import itemgetter
from typing import Any

from meshctl.model import EndpointSlice, ObjectKey, Pod, Service, VirtualNodeSpec
from meshctl.model.namespaced import by_namespace, names_in
from meshctl.translate.ir import EndpointIR

__all__ = [
    "EndpointIndex",
    "cluster_listener",
    "cluster_name",
    "index_endpoints",
    "is_service_cluster",
    "service_cluster_endpoints",
    "service_cluster_name",
    "service_of_cluster",
    "slices_by_service",
    "update_endpoints",
    "update_nodes",
]

# VirtualNode -> its endpoints from one slice, distinct and in a fixed order: a tuple takes a third of the memory of
# a frozenset of the same endpoints (20,000 slices at 10,000 services), and compares equal just as reliably.
Contribution = Mapping[ObjectKey, tuple[EndpointIR, ...]]
# (namespace, label, value) -> the nodes filed under that selector label (see _label_index).
_LabelIndex = Mapping[tuple[str, str, str], tuple[tuple[ObjectKey, VirtualNodeSpec], ...]]


def cluster_name(vn: ObjectKey, port: int) -> str:
    # Interned: the clusters, the endpoint index and every Route naming the cluster then hold one string, not
    # three (20,000 clusters at 10,000 services: ~2 MiB). Interned strings are freed when no longer used.
    return sys.intern(f"{vn.namespace}/{vn.name}/{port}")


def cluster_listener(name: str) -> tuple[ObjectKey, int]:
    """The VirtualNode and listener port a ``cluster_name`` reaches (its inverse)."""
    namespace, vn, port = name.rsplit("/", 2)
    return ObjectKey("VirtualNode", namespace, vn), int(port)


_SERVICE_CLUSTER = "service|"


def service_cluster_name(namespace: str, name: str, port: int) -> str:
    """The cluster of a Service port (an HTTPRoute backendRef, or a backend with no Route): its EndpointSlices'
    endpoints, as kube-proxy would pick them."""
    return sys.intern(f"{_SERVICE_CLUSTER}{namespace}/{name}|{port}")


def is_service_cluster(name: str) -> bool:
    return name.startswith(_SERVICE_CLUSTER)


def service_of_cluster(name: str) -> tuple[ObjectKey, int] | None:
    """The Service and port a ``service_cluster_name`` reaches; None for other clusters."""
    if not name.startswith(_SERVICE_CLUSTER):
        return None
    rest, _, port = name[len(_SERVICE_CLUSTER) :].rpartition("|")
    namespace, _, service = rest.partition("/")
    return ObjectKey("Service", namespace, service), int(port)


def slices_by_service(slices: Mapping[ObjectKey, EndpointSlice]) -> dict[tuple[str, str], list[EndpointSlice]]:
    """(namespace, Service name) -> its EndpointSlices: one pass, for the Service-port clusters of a full build."""
    out: dict[tuple[str, str], list[EndpointSlice]] = {}
    for key, es in slices.items():
        out.setdefault((key.namespace, es.service_name), []).append(es)
    return out


def service_cluster_endpoints(
    service: Service,
    port: int,
    slices: Mapping[ObjectKey, EndpointSlice],
    by_service: Mapping[tuple[str, str], list[EndpointSlice]] | None = None,
) -> tuple[EndpointIR, ...]:
    """The endpoints of one Service port: the EndpointSlices labelled with the Service's name, on the slice port
    named like the Service port (Kubernetes' own rule; an unnamed port matches the unnamed slice port).
    ``by_service``: ``slices_by_service(slices)``, when many Services are looked up at once."""
    wanted = next((p for p in service.ports if p.port == port), None)
    if wanted is None:
        return ()
    found: set[EndpointIR] = set()
    ns, name = service.meta.namespace, service.meta.name
    if by_service is not None:
        candidates: Iterable[EndpointSlice] = by_service.get((ns, name), ())
    else:
        candidates = names_in(slices, "EndpointSlice", ns).values()
    for es in candidates:
        if es.service_name != name:
            continue
        target = next((p.port for p in es.ports if p.name == wanted.name), None)
        if target is None:
            continue
        found.update(_endpoint_ir((ep.address, target, ep.ready, ep.zone or "")) for ep in es.endpoints)
    return tuple(sorted(found))


def virtual_node_of(cluster: str) -> str:
    """``namespace/virtualnode`` of a cluster named by ``cluster_name`` (``namespace/service`` of a Service port's)."""
    service = service_of_cluster(cluster)
    if service is not None:
        return f"{service[0].namespace}/{service[0].name}"
    return cluster.rsplit("/", 1)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointIndex:
    by_label: _LabelIndex
    contributions: Mapping[ObjectKey, Contribution]  # by EndpointSlice
    slices_of_node: Mapping[ObjectKey, tuple[ObjectKey, ...]]  # sorted (tuples: a third of a frozenset's memory)
    # Which slices name each Pod (endpoint targetRef), whether or not the Pod exists: a Pod change re-translates
    # exactly these slices, so a label change or a new Pod takes the endpoint fast path (issue 14). By namespace,
    # then by the Pod's name (the string the model already holds): no key object per Pod (100,000: 6 MiB).
    slices_of_pod: Mapping[str, Mapping[str, tuple[ObjectKey, ...]]]  # sorted
    endpoints: Mapping[str, tuple[EndpointIR, ...]]  # by cluster name
    # What it was computed from, so an unrelated change (a Route) can reuse it as it is.
    nodes: Mapping[ObjectKey, VirtualNodeSpec]
    slices: Mapping[ObjectKey, EndpointSlice]
    pods: Mapping[ObjectKey, Pod]

    def still_valid_for(
        self,
        nodes: Mapping[ObjectKey, VirtualNodeSpec],
        slices: Mapping[ObjectKey, EndpointSlice],
        pods: Mapping[ObjectKey, Pod],
    ) -> bool:
        return (
            (self.slices is slices or self.slices == slices)
            and (self.pods is pods or self.pods == pods)
            and (self.nodes == nodes)
        )


_RELEASED = ("by_label", "contributions", "slices_of_node", "endpoints")  # and each namespace's slices_of_pod


def release_gently(old: EndpointIndex, new: EndpointIndex) -> None:
    """Empties the containers of ``old`` that ``new`` does not share, one entry at a time. Dropping a whole index
    at once (100,000 endpoints at 10,000 services) is ~35 ms of deallocation in one C call, holding the GIL on
    whichever thread drops the last reference; entry by entry, the interpreter can switch threads in between.
    Run it where the last reference to ``old`` will then be dropped, after nothing uses it any more."""
    for name in _RELEASED:
        container = getattr(old, name)
        if container is not getattr(new, name) and isinstance(container, dict):
            _empty(container)
    for namespace, by_name in old.slices_of_pod.items():
        if by_name is not new.slices_of_pod.get(namespace) and isinstance(by_name, dict):
            _empty(by_name)


def _empty(container: dict[Any, Any]) -> None:
    while container:
        container.popitem()


def _label_index(nodes: Mapping[ObjectKey, VirtualNodeSpec]) -> _LabelIndex:
    # Each node is filed under one of its selector labels: an endpoint is checked only against nodes that
    # could select its pod, so matching is linear in endpoints, not endpoints x nodes.
    by_label: dict[tuple[str, str, str], list[tuple[ObjectKey, VirtualNodeSpec]]] = {}
    for key, spec in nodes.items():
        if spec.pod_selector:  # (a node found by DNS may select no pods)
            by_label.setdefault((key.namespace, *min(spec.pod_selector.items())), []).append((key, spec))
    return {k: tuple(v) for k, v in by_label.items()}


def _contribution(
    slice_key: ObjectKey,
    es: EndpointSlice,
    pods_here: Mapping[str, Pod],
    by_label: _LabelIndex,
    matches: dict[int, tuple[ObjectKey, ...]] | None = None,
) -> Contribution:
    """``pods_here``: the Pods of the slice's namespace by name. ``matches``: the nodes that select each Pod object
    of this namespace, by ``id`` (kept by the caller for as long as the Pods map keeps those objects alive). Pods
    alike are one shared object (parse/shared.py), so a Deployment's Pods are matched against the selectors once,
    not once each (100,000 endpoints: ~0.2 s)."""
    ns = slice_key.namespace
    if matches is None:
        matches = {}
    found: dict[ObjectKey, list[EndpointIR]] = {}
    pod_named = pods_here.get
    ports = [port.port for port in es.ports]
    for ep in es.endpoints:
        pod = pod_named(ep.pod_name or "")
        if pod is None:
            continue
        matched = matches.get(id(pod))
        if matched is None:
            matched = matches[id(pod)] = _selecting(ns, pod, by_label)
        if not matched:
            continue
        address, ready, zone = ep.address, ep.ready, ep.zone or ""
        eps: tuple[EndpointIR, ...]
        if len(ports) == 1:  # (most Services have one port: no comprehension, which is a function call in 3.11)
            eps = (_endpoint_ir((address, ports[0], ready, zone)),)
        else:
            eps = tuple(_endpoint_ir((address, port, ready, zone)) for port in ports)
        for key in matched:
            have = found.get(key)
            if have is None:
                found[key] = list(eps)
            else:
                have.extend(eps)
    if len(found) == 1:
        ((only, found_eps),) = found.items()
        return _OneNode(only, tuple(sorted(set(found_eps))))
    return {key: tuple(sorted(set(eps))) for key, eps in found.items()}


class _OneNode(Mapping[ObjectKey, tuple[EndpointIR, ...]]):
    """A contribution to one node (a slice feeds one VirtualNode, as a rule): 48 bytes where a dict of one
    entry takes 232 (20,000 slices at 10,000 services: ~3.5 MiB)."""

    __slots__ = ("_endpoints", "_key")

    def __init__(self, key: ObjectKey, endpoints: tuple[EndpointIR, ...]) -> None:
        self._key, self._endpoints = key, endpoints

    def __getitem__(self, key: ObjectKey) -> tuple[EndpointIR, ...]:
        if key == self._key:
            return self._endpoints
        raise KeyError(key)

    def get(self, key: ObjectKey, default: Any = None) -> Any:
        return self._endpoints if key == self._key else default

    def __contains__(self, key: object) -> bool:
        return key == self._key

    def __iter__(self) -> Iterator[ObjectKey]:
        yield self._key

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"{{{self._key!r}: {self._endpoints!r}}}"


# EndpointIR(...) without the Python-level __new__ a NamedTuple has: one per endpoint and port (100,000).
_endpoint_ir = partial(tuple.__new__, EndpointIR)


def _selecting(namespace: str, pod: Pod, by_label: _LabelIndex) -> tuple[ObjectKey, ...]:
    """The nodes of the namespace whose podSelector matches the Pod's labels."""
    labels = pod.labels.items()
    return tuple(
        key
        for item in labels
        for key, spec in by_label.get((namespace, *item), ())
        if spec.pod_selector.items() <= labels
    )


def _pods_named(es: EndpointSlice | None) -> frozenset[str]:
    """The names of the Pods a slice's endpoints point at (in the slice's namespace)."""
    if es is None:
        return frozenset()
    return frozenset(ep.pod_name for ep in es.endpoints if ep.pod_name)


def _node_endpoints(
    key: ObjectKey, spec: VirtualNodeSpec, slices: Iterable[ObjectKey], contributions: Mapping[ObjectKey, Contribution]
) -> dict[str, tuple[EndpointIR, ...]]:
    parts = [contributions[slice_key][key] for slice_key in slices]
    # Each contribution is sorted and distinct already: a node fed by one slice (the usual case) needs no merge.
    merged = parts[0] if len(parts) == 1 else tuple(sorted(set().union(*parts)))  # () when none
    out: dict[str, tuple[EndpointIR, ...]] = {}
    ports = set(map(_port_of, merged))
    for listener in spec.listeners:
        port = listener.port
        if port not in ports:
            out[cluster_name(key, port)] = ()
        elif len(ports) == 1:  # the same tuple as the contribution: stored once, not twice
            out[cluster_name(key, port)] = merged
        else:
            out[cluster_name(key, port)] = tuple(e for e in merged if e.port == port)
    return out


_port_of = itemgetter(1)  # EndpointIR.port, in C


def index_endpoints(
    nodes: Mapping[ObjectKey, VirtualNodeSpec], slices: Mapping[ObjectKey, EndpointSlice], pods: Mapping[ObjectKey, Pod]
) -> EndpointIndex:
    by_label = _label_index(nodes)
    matches: dict[str, dict[int, tuple[ObjectKey, ...]]] = {}  # by namespace, see _contribution
    pods_of = by_namespace(pods, "Pod")
    contributions = {
        k: _contribution(k, es, pods_of(k.namespace), by_label, matches.setdefault(k.namespace, {}))
        for k, es in slices.items()
    }
    # Slices in key order, so that every list and tuple below is built sorted. A tuple of one slice is shared by
    # every node and Pod that only that slice names (100,000 Pods and 20,000 nodes, a tuple each before).
    ordered = sorted(slices)
    alone = {slice_key: (slice_key,) for slice_key in ordered}
    slices_of_node: dict[ObjectKey, list[ObjectKey]] = {key: [] for key in nodes}
    for slice_key in ordered:
        for key in contributions[slice_key]:
            slices_of_node[key].append(slice_key)
    endpoints: dict[str, tuple[EndpointIR, ...]] = {}
    for key, spec in nodes.items():
        endpoints.update(_node_endpoints(key, spec, slices_of_node[key], contributions))
    slices_of_pod: dict[str, dict[str, tuple[ObjectKey, ...]]] = {}
    for slice_key in ordered:
        by_name = slices_of_pod.setdefault(slice_key.namespace, {})
        for ep in slices[slice_key].endpoints:
            pod = ep.pod_name
            if pod:
                have = by_name.get(pod)
                if have is None:
                    by_name[pod] = alone[slice_key]
                elif have[-1] != slice_key:  # (a slice naming a Pod twice)
                    by_name[pod] = (*have, slice_key)
    return EndpointIndex(
        by_label=by_label,
        contributions=contributions,
        slices_of_node={k: alone[v[0]] if len(v) == 1 else tuple(v) for k, v in slices_of_node.items()},
        slices_of_pod=slices_of_pod,
        endpoints=endpoints,
        nodes=nodes,
        slices=slices,
        pods=pods,
    )


def update_nodes(
    index: EndpointIndex,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    slices: Mapping[ObjectKey, EndpointSlice],
    pods: Mapping[ObjectKey, Pod],
) -> EndpointIndex | None:
    """The index after VirtualNode specs changed but not their selectors (listeners, backends, connection pools:
    the usual edit), with the same nodes, slices and Pods: which endpoints belong to which node is unchanged, so
    only the changed nodes' clusters are recomputed. A full index at 10,000 services is 1 s of work and, while the
    old one is alive, 40 MiB more memory that the allocator keeps. None when that does not hold."""
    old = index.nodes
    if old.keys() != nodes.keys():
        return None
    if not ((index.slices is slices or index.slices == slices) and (index.pods is pods or index.pods == pods)):
        return None
    changed = [key for key, spec in nodes.items() if old[key] is not spec and old[key] != spec]
    if any(old[key].pod_selector != nodes[key].pod_selector for key in changed):
        return None
    endpoints = dict(index.endpoints)
    for key in changed:
        for listener in old[key].listeners:
            endpoints.pop(cluster_name(key, listener.port), None)
        endpoints.update(_node_endpoints(key, nodes[key], index.slices_of_node[key], index.contributions))
    # by_label keeps the old specs of changed nodes: only their selectors are read, and those are the same.
    return replace(index, endpoints=endpoints, nodes=nodes)


def update_endpoints(
    index: EndpointIndex,
    nodes: Mapping[ObjectKey, VirtualNodeSpec],
    slices: Mapping[ObjectKey, EndpointSlice],
    pods: Mapping[ObjectKey, Pod],
    changed: Iterable[ObjectKey],
) -> tuple[EndpointIndex, set[str]]:
    """The index after some EndpointSlices and/or Pods changed (same nodes); also returns the changed cluster
    names. A changed Pod re-translates the slices that name it."""
    changed_slices: set[ObjectKey] = set()
    for key in changed:
        if key.kind == "Pod":
            changed_slices.update(index.slices_of_pod.get(key.namespace, {}).get(key.name, ()))
        else:
            changed_slices.add(key)
    contributions = dict(index.contributions)
    slices_of_node = dict(index.slices_of_node)
    # Copied (a namespace's map is large) only for the namespaces where a slice names other Pods than before.
    pod_index: dict[str, Mapping[str, tuple[ObjectKey, ...]]] = dict(index.slices_of_pod)
    copied: dict[str, dict[str, tuple[ObjectKey, ...]]] = {}
    affected: set[ObjectKey] = set()
    for slice_key in sorted(changed_slices):
        before, now = _pods_named(index.slices.get(slice_key)), _pods_named(slices.get(slice_key))
        if before != now:
            namespace = slice_key.namespace
            by_name = copied.get(namespace)
            if by_name is None:
                by_name = copied[namespace] = dict(pod_index.get(namespace, {}))
                pod_index[namespace] = by_name
            for pod in before - now:
                by_name[pod] = tuple(k for k in by_name[pod] if k != slice_key)
            for pod in now - before:
                by_name[pod] = tuple(sorted({*by_name.get(pod, ()), slice_key}))
        old = contributions.pop(slice_key, {})
        es = slices.get(slice_key)
        pods_here = names_in(pods, "Pod", slice_key.namespace)
        new = _contribution(slice_key, es, pods_here, index.by_label) if es is not None else {}
        if new:
            contributions[slice_key] = new
        for key in old.keys() | new.keys():
            if old.get(key) != new.get(key):
                affected.add(key)
            members = set(slices_of_node.get(key, ()))
            members.discard(slice_key)
            if key in new:
                members.add(slice_key)
            slices_of_node[key] = tuple(sorted(members))
    endpoints = dict(index.endpoints)
    clusters: set[str] = set()
    for key in affected:
        for name, eps in _node_endpoints(key, nodes[key], slices_of_node[key], contributions).items():
            if endpoints.get(name) != eps:
                endpoints[name] = eps
                clusters.add(name)
    return (
        EndpointIndex(
            by_label=index.by_label,
            contributions=contributions,
            slices_of_node=slices_of_node,
            slices_of_pod=index.slices_of_pod if not copied else pod_index,
            endpoints=endpoints,
            nodes=nodes,
            slices=slices,
            pods=pods,
        ),
        clusters,
    )
