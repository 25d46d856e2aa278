"""The state-of-the-world ADS server on grpc.aio.

Responses go out as pre-spliced bytes (a generic handler with an identity serializer), so a resource's
bytes are built once per version whatever the number of streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from meshctl.xds.controller import Controller
from meshctl.xds.envoy.types import SHORT_NAMES
from meshctl.xds.metrics import Metrics
from meshctl.xds.server.blame import blame
from meshctl.xds.server.node import sidecar_params
from meshctl.xds.server.registry import ProxyRegistry
from meshctl.xds.server.stream import StreamState

__all__ = ["AdsServer"]

log = logging.getLogger(__name__)
_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_END = object()


class AdsServer:
    def __init__(self, controller: Controller, registry: ProxyRegistry, metrics: Metrics) -> None:
        self.controller = controller
        self.registry = registry
        self.metrics = metrics
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self, address: str, port: int) -> int:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])
        sotw = grpc.stream_stream_rpc_method_handler(
            self._sotw_stream,
            request_deserializer=DiscoveryRequest.FromString,
            response_serializer=lambda raw: raw,  # responses are already wire bytes
        )
        delta = grpc.stream_stream_rpc_method_handler(
            self._delta_stream,
            request_deserializer=DeltaDiscoveryRequest.FromString,
            response_serializer=lambda raw: raw,
        )
        methods = {"StreamAggregatedResources": sotw, "DeltaAggregatedResources": delta}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, methods),))
        self.port = server.add_insecure_port(f"{address}:{port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float = 0.2) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    # grpc.aio recognises streaming handlers by being async generator functions, hence the delegation.
    async def _sotw_stream(self, requests: AsyncIterator[DiscoveryRequest], context) -> AsyncIterator[bytes]:
        async for raw in self._stream(requests, delta=False):
            yield raw

    async def _delta_stream(self, requests: AsyncIterator[DeltaDiscoveryRequest], context) -> AsyncIterator[bytes]:
        async for raw in self._stream(requests, delta=True):
            yield raw

    async def _stream(self, requests: AsyncIterator, *, delta: bool) -> AsyncIterator[bytes]:
        inbox: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for req in requests:
                    await inbox.put(req)
            finally:
                await inbox.put(_END)

        reader = asyncio.create_task(read())
        state: StreamState | None = None
        cache = self.controller.cache
        generation = cache.generation
        change = asyncio.ensure_future(cache.wait_for_change(generation))
        incoming = asyncio.ensure_future(inbox.get())
        try:
            while True:
                done, _ = await asyncio.wait({change, incoming}, return_when=asyncio.FIRST_COMPLETED)
                if incoming in done:
                    req = incoming.result()
                    if req is _END:
                        return
                    incoming = asyncio.ensure_future(inbox.get())
                    if state is None:
                        state = await self._open(req, delta)
                    self._apply(state, req)
                if change in done:
                    generation = change.result()
                    change = asyncio.ensure_future(cache.wait_for_change(generation))
                if state is not None:
                    for type_url, raw in state.next_responses(cache.get(state.group)):
                        self.metrics.responses[SHORT_NAMES[type_url]] += 1
                        if log.isEnabledFor(logging.DEBUG):
                            st = state.types[type_url]
                            log.debug(
                                "%s -> %s nonce=%s version=%s %s",
                                state.node_id,
                                SHORT_NAMES[type_url],
                                st.nonce,
                                st.sent_version,
                                sorted(st.sent),
                            )
                        yield raw
        except Exception:
            # A bug while serving one proxy must be loud; the proxy reconnects and retries.
            log.exception("ADS stream of %s failed", state.node_id if state else "a new proxy")
            raise
        finally:
            for task in (change, incoming, reader):
                task.cancel()
            if state is not None:
                self._close(state)

    async def _open(self, first: DiscoveryRequest | DeltaDiscoveryRequest, delta: bool) -> StreamState:
        params = sidecar_params(first.node)
        group = await self.controller.attach(params)
        state = StreamState(first.node.id, group, delta=delta)
        self.registry.add(state)
        self.metrics.connected_streams += 1
        log.info("proxy %s connected (group %s, %s)", first.node.id, group, "delta" if delta else "sotw")
        return state

    def _close(self, state: StreamState) -> None:
        self.registry.remove(state)
        self.controller.detach(state.group)
        self.metrics.connected_streams -= 1
        log.info("proxy %s disconnected", state.node_id)

    def _apply(self, state: StreamState, req: DiscoveryRequest | DeltaDiscoveryRequest) -> None:
        kind = state.on_request(req)
        short = SHORT_NAMES.get(req.type_url, req.type_url)
        if log.isEnabledFor(logging.DEBUG):
            names = list(req.resource_names_subscribe) if state.delta else list(req.resource_names)
            log.debug("%s <- %s %s nonce=%s names=%s", state.node_id, short, kind, req.response_nonce, names)
        if kind == "ack":
            self.metrics.acks[short] += 1
        elif kind == "nack":
            self.metrics.nacks[short] += 1
            rejection = state.types[req.type_url].rejection
            assert rejection is not None
            self.registry.record_rejection(state, rejection)
            log.warning(
                "proxy %s rejected %s version %s: %s", state.node_id, short, rejection.version, rejection.message
            )
            st = state.types[req.type_url]
            others = (s.types[req.type_url].acked for s in self.registry.streams() if s is not state)
            owners = blame(st.sent, st.acked, others)
            if owners:
                self.controller.reject_from_envoy(owners, short, rejection.message)
        elif kind == "unknown-type":
            log.warning("proxy %s asked for unsupported type %s", state.node_id, req.type_url)
