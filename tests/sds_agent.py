"""A stand-in for SPIRE's agent, as Envoy sees it: the SDS service (``StreamSecrets``) on a Unix socket, serving
each workload's certificate under its SPIFFE ID and the trust bundle under ``spiffe://<trust domain>`` — the names
SPIRE's Envoy SDS support uses. Its certificates come from a CA of its own (not the mesh's), so a test can tell
which source a proxy used. Real gRPC and real protobuf; only the attestation SPIRE does is left out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from meshctl.identity.ca import MeshCA

_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


class SdsAgent(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, socket: Path, trust_domain: str = "meshctl.local") -> None:
        self.socket = socket
        self.ca = MeshCA.generate(trust_domain)
        self.bundle_name = f"spiffe://{trust_domain}"
        self.requested: list[str] = []  # every secret name a proxy asked for
        self._server: grpc.aio.Server | None = None

    def _secret(self, name: str) -> Secret | None:
        secret = Secret(name=name)
        if name == self.bundle_name:
            secret.validation_context.trusted_ca.inline_bytes = self.ca.bundle_pem
            return secret
        prefix = f"{self.bundle_name}/ns/"
        if not name.startswith(prefix) or "/sa/" not in name:
            return None
        namespace, _, service_account = name[len(prefix) :].partition("/sa/")
        cert = self.ca.issue(namespace, service_account)
        secret.tls_certificate.certificate_chain.inline_bytes = cert.chain_pem
        secret.tls_certificate.private_key.inline_bytes = cert.key_pem
        return secret

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[DiscoveryResponse]:
        version = 0
        async for request in request_iterator:
            if request.response_nonce:  # an ACK or NACK of what was sent: nothing new to send
                continue
            self.requested.extend(request.resource_names)
            version += 1
            response = DiscoveryResponse(version_info=str(version), type_url=_SECRET_TYPE, nonce=str(version))
            for name in request.resource_names:
                if (secret := self._secret(name)) is not None:
                    packed = any_pb2.Any()
                    packed.Pack(secret)
                    response.resources.append(packed)
            yield response

    async def start(self) -> None:
        self._server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix:{self.socket}")
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)

    async def __aenter__(self) -> SdsAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())
