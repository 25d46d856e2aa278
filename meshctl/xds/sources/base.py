"""What every source shares: the sink it feeds and the one way to assemble a ``Model``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from meshctl.xds.model import EndpointSlice, Model, ObjectKey, Pod, Route, Service, VirtualNode
from meshctl.xds.parse.documents import MeshObject, object_key

__all__ = ["ModelSink", "Source", "build_model"]

ModelSink = Callable[[Model], Awaitable[None]]


class Source(Protocol):
    async def run(self, sink: ModelSink) -> None:
        """Feeds ``sink`` a full model after the initial sync and again after every change; runs until cancelled."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the model comes from, for ``meshctl status`` and for ``meshctl shift`` to know how to write."""
        ...


def build_model(objects: Iterable[MeshObject], load_errors: Iterable[str] = ()) -> Model:
    """Indexes objects by kind; the first object seen for a key wins, later duplicates become load errors."""
    buckets: dict[type, dict[ObjectKey, MeshObject]] = {
        Service: {},
        EndpointSlice: {},
        Pod: {},
        VirtualNode: {},
        Route: {},
    }
    errors = list(load_errors)
    for obj in objects:
        key = object_key(obj)
        bucket = buckets[type(obj)]
        if key in bucket:
            errors.append(f"{obj.meta.origin}: {key} is already defined in {bucket[key].meta.origin}; ignored")
            continue
        bucket[key] = obj
    return Model(
        services=buckets[Service],  # type: ignore[arg-type]
        endpoint_slices=buckets[EndpointSlice],  # type: ignore[arg-type]
        pods=buckets[Pod],  # type: ignore[arg-type]
        virtual_nodes=buckets[VirtualNode],  # type: ignore[arg-type]
        routes=buckets[Route],  # type: ignore[arg-type]
        load_errors=tuple(errors),
    )
