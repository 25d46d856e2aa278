"""Which endpoints belong to which VirtualNode, computed per EndpointSlice so that a slice change is
re-translated in time proportional to that slice, not to the mesh.

A slice *contributes* endpoints to every VirtualNode whose podSelector matches the labels of the slice
endpoints' Pods. A node's endpoints for listener port P are the union of its contributions on port P.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from meshctl.xds.model import EndpointSlice, ObjectKey, Pod, VirtualNodeSpec
from meshctl.xds.namespaced import names_in
from meshctl.xds.translate.ir import EndpointIR

__all__ = ["EndpointIndex", "cluster_name", "index_endpoints", "update_endpoints", "update_nodes"]

# VirtualNode -> its endpoints from one slice, distinct and in a fixed order: a tuple takes a third of the memory of
# a frozenset of the same endpoints (20,000 slices at 10,000 services), and compares equal just as reliably.
Contribution = Mapping[ObjectKey, tuple[EndpointIR, ...]]
# (namespace, label, value) -> the nodes filed under that selector label (see _label_index).
_LabelIndex = Mapping[tuple[str, str, str], tuple[tuple[ObjectKey, VirtualNodeSpec], ...]]


def cluster_name(vn: ObjectKey, port: int) -> str:
    return f"{vn.namespace}/{vn.name}/{port}"


def virtual_node_of(cluster: str) -> str:
    """``namespace/virtualnode`` of a cluster named by ``cluster_name``."""
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


def _shared_tuples(
    by_namespace: Mapping[str, Mapping[str, set[ObjectKey]]],
) -> dict[str, dict[str, tuple[ObjectKey, ...]]]:
    """Sorted tuples (a frozenset of one is 216 bytes, a tuple 64), equal ones shared: the five Pods of a slice
    point at one tuple, not five (100,000 Pods)."""
    seen: dict[tuple[ObjectKey, ...], tuple[ObjectKey, ...]] = {}
    out: dict[str, dict[str, tuple[ObjectKey, ...]]] = {}
    for namespace, by_name in by_namespace.items():
        frozen_names = out[namespace] = {}
        for name, members in by_name.items():
            frozen = tuple(sorted(members))
            frozen_names[name] = seen.setdefault(frozen, frozen)
    return out


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
        by_label.setdefault((key.namespace, *min(spec.pod_selector.items())), []).append((key, spec))
    return {k: tuple(v) for k, v in by_label.items()}


def _contribution(
    slice_key: ObjectKey, es: EndpointSlice, pods: Mapping[ObjectKey, Pod], by_label: _LabelIndex
) -> Contribution:
    ns = slice_key.namespace
    pods_here = names_in(pods, "Pod", ns)
    found: dict[ObjectKey, set[EndpointIR]] = {}
    for ep in es.endpoints:
        pod = pods_here.get(ep.pod_name or "")
        if pod is None:
            continue
        labels = pod.labels.items()
        matched = [
            key for item in labels for key, spec in by_label.get((ns, *item), ()) if spec.pod_selector.items() <= labels
        ]
        if not matched:
            continue
        eps = [EndpointIR(address=ep.address, port=port.port, healthy=ep.ready, zone=ep.zone) for port in es.ports]
        for key in matched:
            found.setdefault(key, set()).update(eps)
    return {key: tuple(sorted(eps, key=_endpoint_order)) for key, eps in found.items()}


def _endpoint_order(e: EndpointIR) -> tuple[str, int, bool, str]:
    return (e.address, e.port, e.healthy, e.zone or "")


def _pods_named(es: EndpointSlice | None) -> frozenset[str]:
    """The names of the Pods a slice's endpoints point at (in the slice's namespace)."""
    if es is None:
        return frozenset()
    return frozenset(ep.pod_name for ep in es.endpoints if ep.pod_name)


def _node_endpoints(
    key: ObjectKey, spec: VirtualNodeSpec, slices: Iterable[ObjectKey], contributions: Mapping[ObjectKey, Contribution]
) -> dict[str, tuple[EndpointIR, ...]]:
    union: set[EndpointIR] = set()
    for slice_key in slices:
        union.update(contributions[slice_key].get(key, ()))
    out = {}
    for listener in spec.listeners:
        eps = [e for e in union if e.port == listener.port]
        out[cluster_name(key, listener.port)] = tuple(sorted(eps, key=lambda e: (e.address, e.port)))
    return out


def index_endpoints(
    nodes: Mapping[ObjectKey, VirtualNodeSpec], slices: Mapping[ObjectKey, EndpointSlice], pods: Mapping[ObjectKey, Pod]
) -> EndpointIndex:
    by_label = _label_index(nodes)
    contributions = {k: _contribution(k, es, pods, by_label) for k, es in slices.items()}
    slices_of_node: dict[ObjectKey, set[ObjectKey]] = {key: set() for key in nodes}
    for slice_key, contribution in contributions.items():
        for key in contribution:
            slices_of_node[key].add(slice_key)
    endpoints: dict[str, tuple[EndpointIR, ...]] = {}
    for key, spec in nodes.items():
        endpoints.update(_node_endpoints(key, spec, slices_of_node[key], contributions))
    slices_of_pod: dict[str, dict[str, set[ObjectKey]]] = {}
    for slice_key, es in slices.items():
        by_name = slices_of_pod.setdefault(slice_key.namespace, {})
        for pod in _pods_named(es):
            by_name.setdefault(pod, set()).add(slice_key)
    return EndpointIndex(
        by_label=by_label,
        contributions=contributions,
        slices_of_node={k: tuple(sorted(v)) for k, v in slices_of_node.items()},
        slices_of_pod=_shared_tuples(slices_of_pod),
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
        new = _contribution(slice_key, es, pods, index.by_label) if es is not None else {}
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
