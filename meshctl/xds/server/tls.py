"""xDS over TLS: the server certificate (re-read when its files change, so rotation needs no restart) and, with a
client CA, mutual TLS where each proxy's certificate names the VirtualNode it may stream as.

A client certificate's identity is its ``spiffe://<trust domain>/ns/<namespace>[/vn/<virtual node>][/sa/<service
account>]`` URI SAN: a proxy may only ask for a VirtualNode of that namespace (and of that name, when the identity
names one), and the workload identity of that service account (when it names one; its workload certificate
follows from it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from meshctl.translate.ir import SidecarParams

__all__ = ["XdsTls", "authorize", "peer_identity"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class XdsTls:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: mutual TLS, every proxy presents a certificate this CA signed
    _seen: tuple[float, ...] = field(default=(), init=False)

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def _files(self) -> tuple[Path, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())

    def _config(self) -> Any:
        self._seen = tuple(os.stat(f).st_mtime for f in self._files())
        pair = (self.key_file.read_bytes(), self.cert_file.read_bytes())
        ca = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def _fetch(self) -> Any:
        """Called by gRPC before each handshake: a new configuration only when a file changed."""
        try:
            if tuple(os.stat(f).st_mtime for f in self._files()) == self._seen:
                return None
            log.info("xDS TLS: certificate files changed, reloading")
            return self._config()
        except (OSError, ValueError) as exc:  # a half-written file: keep the current certificate, try next time
            log.warning("xDS TLS: cannot reload certificate files: %s", exc)
            return None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._config(), self._fetch, require_client_authentication=self.mutual
        )


def peer_identity(context: Any) -> str | None:
    """The spiffe:// URI SAN of the peer's certificate, if it presented one that carries it."""
    pems = context.auth_context().get("x509_pem_cert")
    if not pems:
        return None
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    return next(
        (u for u in names.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")), None
    )


def authorize(identity: str | None, params: SidecarParams) -> str | None:
    """Why a proxy with this certificate identity may not stream as ``params.virtual_node`` (or ``params.gateway``)
    (None: it may)."""
    if identity is None:
        return "the client certificate carries no spiffe:// identity"
    parts = identity.removeprefix("spiffe://").split("/")[1:]
    claims = dict(zip(parts[::2], parts[1::2], strict=False))
    vn = params.virtual_node
    if "ns" not in claims:
        return f"identity {identity} names no namespace (/ns/<namespace>)"
    if (gw := params.gateway) is not None:  # an edge gateway's proxy: its Gateway's namespace (and /gw/<name>)
        if gw.namespace != claims["ns"] or claims.get("gw", gw.name) != gw.name:
            return f"identity {identity} may not stream as Gateway {gw.namespace}/{gw.name}"
    elif vn is None or vn.namespace != claims["ns"] or claims.get("vn", vn.name) != vn.name:
        asked = f"{vn.namespace}/{vn.name}" if vn else "no VirtualNode"
        return f"identity {identity} may not stream as {asked}"
    if claims.get("sa", params.service_account) != params.service_account:
        return f"identity {identity} may not claim service account {params.service_account}"
    return None
