"""The ADS server on grpc.aio: state-of-the-world (StreamAggregatedResources) and incremental
(DeltaAggregatedResources) streams, one ``StreamState`` each.

Responses go out as pre-spliced bytes (a generic handler with an identity serializer), so a resource's
bytes are built once per version whatever the number of streams. The server asks the controller above it only
for what ``NodeGroups`` names; mutual TLS, when on, checks each proxy's certificate against its node id.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from meshctl.model import ObjectKey
from meshctl.translate.ir import SidecarParams
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.envoy.types import SHORT_NAMES
from meshctl.xds.pacing import PerIteration
from meshctl.xds.server.blame import blame
from meshctl.xds.server.metrics import XdsMetrics
from meshctl.xds.server.nack import Nack
from meshctl.xds.server.node import client_version, is_proxyless, sidecar_params, stats_port
from meshctl.xds.server.registry import ProxyRegistry
from meshctl.xds.server.stream import StreamState
from meshctl.xds.server.tls import XdsTls, authorize, peer_identity

__all__ = ["AdsServer", "Keepalive", "NodeGroups"]

log = logging.getLogger(__name__)
_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_END = object()
_A = TypeVar("_A")
_R = TypeVar("_R")
# A proxy holding more resources than this (a gateway calling thousands of Services) has its requests applied and
# responses computed in the streams thread: each is O(resources) of Python (20,000 subscribed names to compare,
# 20,000 clusters to resend), tens of milliseconds that would stall every other stream, /healthz and the lease.
_LARGE = 2000
_OPENINGS_PER_TURN = 32  # new streams starting per loop iteration (as SnapshotCache wakes 32 per iteration)


def _check_free(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise OSError(f"xDS: cannot listen on {address}:{port}: {exc.strerror or exc}") from None


class NodeGroups(Protocol):
    """What the server needs of the controller above it: the snapshots it serves, a group for each proxy that
    connects (built before ``attach`` returns), and where to report objects a NACK blamed."""

    cache: SnapshotCache

    async def attach(self, params: SidecarParams) -> str: ...

    def detach(self, group: str) -> None: ...

    def reject_from_envoy(self, nack: Nack) -> None: ...

    async def pod_refusal(self, pod: ObjectKey, virtual_node: ObjectKey) -> str | None:
        """Why ``pod`` may not stream as ``virtual_node`` (it does not exist, or the node does not select it)."""
        ...


@dataclass(frozen=True, slots=True)
class Keepalive:
    """HTTP/2 keepalive and connection age for proxies' connections (Istio's values by default).

    A proxy that vanished without closing its connection (node lost, network partition) is noticed by the
    unanswered ping and its stream is closed, so it stops holding its group alive. Connections are also recycled
    after ``max_age`` so proxies spread again over replicas added since they connected; Envoy reconnects at once."""

    time: float = 30.0  # seconds between pings on an idle connection
    timeout: float = 10.0  # a ping unanswered for this long closes the connection
    max_age: float = 30 * 60.0
    max_age_grace: float = 10.0  # in-flight responses may finish for this long after the GOAWAY
    min_client_ping_interval: float = 10.0  # Envoy's own keepalive pings are accepted this often

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", int(self.time * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.timeout * 1000)),
            ("grpc.http2.ping_timeout_ms", int(self.timeout * 1000)),  # newer gRPC cores time pings out by this
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", int(self.min_client_ping_interval * 1000)),
            ("grpc.max_connection_age_ms", int(self.max_age * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.max_age_grace * 1000)),
        ]


def _request_size(req: DiscoveryRequest | DeltaDiscoveryRequest) -> int:
    if isinstance(req, DiscoveryRequest):
        return len(req.resource_names)
    return len(req.resource_names_subscribe) + len(req.resource_names_unsubscribe) + len(req.initial_resource_versions)


def _unbox(box: list[_A]) -> _A:
    """Takes a message out of the one-element list it travels in. grpc.aio keeps the last message of each
    direction in its frames until the next one, so an idle stream would hold its last response (~8 KiB at 1,000
    streams) and request; in a box they hold an empty list."""
    return box.pop()


def _frozen_after(fn: Callable[[_A], _R], arg: _A) -> _R:
    """``fn(arg)``, then what it made moved out of the collector's sight: a large stream's state (sets of 20,000
    names, kept until the next change) was rescanned by every collection on the serving loop (issue 14)."""
    try:
        return fn(arg)
    finally:
        gc.freeze()


async def _next_request(requests: AsyncIterator[_A]) -> Any:
    """The proxy's next request, or ``_END`` once its side of the stream is over (closed, cancelled, broken)."""
    try:
        return await anext(requests)
    except StopAsyncIteration:
        return _END
    except grpc.RpcError as exc:  # the proxy went away mid-read; the stream ends as if it had closed
        log.debug("reading an xDS stream ended: %s", exc)
        return _END


async def _unboxed(requests: AsyncIterator[list[_A]]) -> AsyncIterator[_A]:
    async for box in requests:
        yield _unbox(box)


# The authorization metadata of a stream -> (namespace, service account, pod) it proves, or why not. The pod is ""
# when the token is bound to none (a pod's projected token always is).
TokenAuthenticator = Callable[[str | None], Awaitable[tuple[str, str, str] | str]]


class Unauthorized(Exception):
    """A proxy's client certificate does not allow the VirtualNode it asked for."""


class AdsServer:
    def __init__(
        self,
        controller: NodeGroups,
        registry: ProxyRegistry,
        metrics: XdsMetrics,
        keepalive: Keepalive | None = None,
        tls: XdsTls | None = None,
        token_auth: TokenAuthenticator | None = None,
    ) -> None:
        """``tls``: serve over TLS; with its client CA, mutual TLS and each proxy's identity checked.
        ``token_auth``: every stream must carry a token it accepts (``authorization: Bearer``), for the namespace
        and service account the node then claims (in a cluster: ``meshctl.kube.reviews.XdsTokenReviewer``)."""
        self.tls = tls
        self.token_auth = token_auth
        self.controller = controller
        self.registry = registry
        self.metrics = metrics
        self.keepalive = keepalive or Keepalive()
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None
        # One thread for large streams' protocol work. A stream's state is only ever touched by its own coroutine,
        # one step at a time, so handing a step to this thread and awaiting it keeps that true.
        self._large_streams = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meshctl-streams")
        self._openings: PerIteration[None] = PerIteration(_OPENINGS_PER_TURN)

    async def start(self, address: str, port: int) -> int:
        options = [("grpc.max_send_message_length", 256 * 1024 * 1024), *self.keepalive.options()]
        server = grpc.aio.server(options=options)
        sotw = grpc.stream_stream_rpc_method_handler(
            self._sotw_stream,
            request_deserializer=lambda data: [DiscoveryRequest.FromString(data)],
            response_serializer=_unbox,  # responses are already wire bytes
        )
        delta = grpc.stream_stream_rpc_method_handler(
            self._delta_stream,
            request_deserializer=lambda data: [DeltaDiscoveryRequest.FromString(data)],
            response_serializer=_unbox,
        )
        methods = {"StreamAggregatedResources": sotw, "DeltaAggregatedResources": delta}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, methods),))
        if port:
            _check_free(address, port)  # before grpc, which would also log its own multi-line error
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(f"{address}:{port}", self.tls.credentials())
            else:
                self.port = server.add_insecure_port(f"{address}:{port}")
        except RuntimeError:  # grpc's "Failed to bind": the port is taken, or the address is not this host's
            await server.stop(None)
            raise OSError(f"xDS: cannot listen on {address}:{port} (in use, or not an address of this host)") from None
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float = 0.2) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        self._large_streams.shutdown(wait=False, cancel_futures=True)

    # grpc.aio recognises streaming handlers by being async generator functions, hence the delegation.
    async def _sotw_stream(
        self, requests: AsyncIterator[list[DiscoveryRequest]], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[list[bytes]]:
        async for raw in self._guarded(_unboxed(requests), context, delta=False):
            yield [raw]
            del raw  # an idle stream must not hold its last response (1,000 streams: ~8 MiB)

    async def _delta_stream(
        self, requests: AsyncIterator[list[DeltaDiscoveryRequest]], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[list[bytes]]:
        async for raw in self._guarded(_unboxed(requests), context, delta=True):
            yield [raw]
            del raw

    async def _guarded(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any], *, delta: bool
    ) -> AsyncIterator[bytes]:
        identity = peer_identity(context) if self.tls is not None and self.tls.mutual else None
        try:
            account = None
            if self.token_auth is not None:
                metadata = dict(context.invocation_metadata() or ())
                header = metadata.get("authorization")
                verdict = await self.token_auth(header if isinstance(header, str) else None)
                if isinstance(verdict, str):
                    raise Unauthorized(verdict)
                account = verdict
            async for raw in self._stream(
                requests, delta=delta, peer=context.peer(), identity=identity, account=account
            ):
                yield raw
                del raw
        except Unauthorized as exc:
            self.metrics.unauthorized_streams.inc()
            log.warning("refused an xDS stream from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    async def _stream(
        self,
        requests: AsyncIterator[DiscoveryRequest | DeltaDiscoveryRequest],
        *,
        delta: bool,
        peer: str = "",
        identity: str | None = None,
        account: tuple[str, str, str] | None = None,
    ) -> AsyncIterator[bytes]:
        # One read at a time, each in a small task the loop below waits on together with its group's change;
        # gRPC flow control holds back what the proxy sends meanwhile (Envoy sends one request per response).
        state: StreamState | None = None
        cache = self.controller.cache
        generation = 0
        change: asyncio.Future[int] | None = None  # the next change of this stream's group, once it has one
        await self._openings.turn()
        incoming = asyncio.ensure_future(_next_request(requests))
        try:
            while True:
                waiting = {incoming} if change is None else {incoming, change}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                requested, changed = incoming in done, change is not None and change in done
                del done  # it holds the request it completed with, until the next wait returns
                if requested:
                    req = incoming.result()
                    if req is _END:
                        return
                    incoming = asyncio.ensure_future(_next_request(requests))
                    if state is None:
                        state = await self._open(req, delta, peer, identity, account)
                        generation = cache.generation(state.group)
                    kind = await self._step(_request_size(req), state.on_request, req)
                    self._apply(state, req, kind)
                    del req  # nor its last request (the node's metadata included) while it waits
                if changed:
                    assert change is not None
                    generation, change = change.result(), None
                if state is not None:
                    if change is None:
                        change = asyncio.ensure_future(cache.wait_for_change(state.group, generation))
                    snap = cache.get(state.group)
                    size = sum(map(len, snap.resources.values())) if snap is not None else 0
                    responses = await self._step(size, state.next_responses, snap)
                    while responses:
                        type_url, raw = responses.pop(0)
                        short = SHORT_NAMES[type_url]
                        self.metrics.responses.labels(short).inc()
                        if changed:  # pushed because a snapshot was published, not asked for
                            self.metrics.push_latency.labels(short).observe(cache.since_published(state.group))
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
                        del raw
        except Unauthorized:
            raise
        except Exception:
            # A bug while serving one proxy must be loud; the proxy reconnects and retries.
            log.exception("ADS stream of %s failed", state.node_id if state else "a new proxy")
            raise
        finally:
            for task in (change, incoming):
                if task is not None:
                    task.cancel()
            if state is not None:
                self._close(state)

    async def _step(self, size: int, fn: Callable[[_A], _R], arg: _A) -> _R:
        """``fn(arg)`` on the loop, or in the streams thread when it is O(``size``) and ``size`` is large."""
        if size > _LARGE:
            return await asyncio.get_running_loop().run_in_executor(self._large_streams, _frozen_after, fn, arg)
        return fn(arg)

    async def _open(
        self,
        first: DiscoveryRequest | DeltaDiscoveryRequest,
        delta: bool,
        peer: str,
        identity: str | None,
        account: tuple[str, str, str] | None = None,
    ) -> StreamState:
        """Raises Unauthorized when mutual TLS is on and ``identity`` may not stream as the node's VirtualNode, or
        when tokens are checked and the node claims another namespace or service account than ``account``, or
        (a pod-bound token) another pod, or a VirtualNode that does not select that pod."""
        params = sidecar_params(first.node)
        if self.tls is not None and self.tls.mutual and (refused := authorize(identity, params)):
            raise Unauthorized(refused)
        if self.token_auth is not None:
            assert account is not None
            owner = params.gateway or params.virtual_node  # (a gateway's proxy claims its Gateway)
            if owner is None or owner.namespace != account[0] or params.service_account != account[1]:
                claimed = f"{owner.kind} {owner.namespace}/{owner.name}" if owner else "no VirtualNode"
                raise Unauthorized(
                    f"ServiceAccount {account[0]}/{account[1]} may not stream as {claimed} "
                    f"(service account {params.service_account})"
                )
            if pod := account[2]:
                node_pod = first.node.id.split("/")[2] if first.node.id.count("/") == 2 else ""
                if node_pod != pod:
                    raise Unauthorized(
                        f"the token of pod {owner.namespace}/{pod} may not stream as node {first.node.id}"
                    )
                if refusal := await self.controller.pod_refusal(ObjectKey("Pod", owner.namespace, pod), owner):
                    raise Unauthorized(refusal)
        port = stats_port(first.node)  # read before attaching: nothing after the attach may fail and leak the group
        group = await self.controller.attach(params)
        state = StreamState(first.node.id, group, delta=delta)
        state.peer = peer
        state.stats_port = port
        state.proxyless = is_proxyless(first.node)
        state.client = client_version(first.node)
        # Workload keys go only to a proxy that proved it may stream as its VirtualNode (its xDS client
        # certificate names it); any other stream is sent no Secret at all, whatever it claims.
        state.proven_identity = identity if self.tls is not None and self.tls.mutual else None
        if account is not None:
            state.proven_identity = f"system:serviceaccount:{account[0]}:{account[1]}"
        self.registry.add(state)
        self.metrics.connected_streams.inc()
        log.info("proxy %s connected (group %s, %s)", first.node.id, group, "delta" if delta else "sotw")
        return state

    def _close(self, state: StreamState) -> None:
        self.registry.remove(state)
        self.controller.detach(state.group)
        self.metrics.connected_streams.dec()
        log.info("proxy %s disconnected", state.node_id)

    def _apply(self, state: StreamState, req: DiscoveryRequest | DeltaDiscoveryRequest, kind: str) -> None:
        """Acts on a request ``state.on_request`` applied (``kind`` is what it returned): counts, logs, blames."""
        short = SHORT_NAMES.get(req.type_url, req.type_url)
        if log.isEnabledFor(logging.DEBUG):
            names = list(req.resource_names_subscribe) if state.delta else list(req.resource_names)
            log.debug("%s <- %s %s nonce=%s names=%s", state.node_id, short, kind, req.response_nonce, names)
        if kind == "ack":
            self.metrics.acks.labels(short).inc()
            self.metrics.time_to_ack.labels(short).observe(max(0.0, time.time() - state.types[req.type_url].sent_at))
        elif kind == "nack":
            self.metrics.nacks.labels(short).inc()
            self.metrics.time_to_ack.labels(short).observe(max(0.0, time.time() - state.types[req.type_url].sent_at))
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
                self.controller.reject_from_envoy(
                    Nack(
                        node_id=state.node_id,
                        group=state.group,
                        type_url=req.type_url,
                        version=rejection.version,
                        message=rejection.message,
                        owners=frozenset(owners),
                        sent=st.sent,
                    )
                )
        elif kind == "unknown-type":
            log.warning("proxy %s asked for unsupported type %s", state.node_id, req.type_url)
