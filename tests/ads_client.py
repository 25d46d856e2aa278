"""A minimal ADS client over a real grpc.aio channel, speaking as an Envoy would."""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.protobuf import struct_pb2
from google.rpc import status_pb2


class AdsClient:
    def __init__(
        self,
        port: int,
        node_id: str,
        virtual_node: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        server_name: str | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``credentials``: over TLS, checking the server's certificate for ``server_name``."""
        target = f"127.0.0.1:{port}"
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target)
        else:
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.aio.secure_channel(target, credentials, options=options)
        self.node = Node(id=node_id, cluster=virtual_node, metadata=struct_pb2.Struct())
        self.raw: list[bytes] = []
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._first = True
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.call = stub.StreamAggregatedResources(self._requests(), metadata=metadata or None)

    async def _requests(self):
        while True:
            req = await self._outbox.get()
            if req is None:
                return
            yield req

    async def send(self, type_url: str, names=(), version: str = "", nonce: str = "", error: str | None = None) -> None:
        req = DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version, response_nonce=nonce
        )
        if self._first:
            req.node.CopyFrom(self.node)
            self._first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self._outbox.put(req)

    async def recv(self, timeout: float = 5) -> DiscoveryResponse:
        resp = await asyncio.wait_for(self.call.read(), timeout)
        assert resp is not grpc.aio.EOF
        return resp

    async def ack(self, resp: DiscoveryResponse, names=()) -> None:
        await self.send(resp.type_url, names, resp.version_info, resp.nonce)

    async def close(self) -> None:
        await self._outbox.put(None)
        await self.channel.close()
