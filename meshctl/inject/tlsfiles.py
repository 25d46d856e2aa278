"""The controller's serving certificate as files (tls.crt, tls.key, ca.crt in one directory, the layout of a
kubernetes.io/tls Secret with cert-manager's ca.crt): whoever writes them (our Secret keeper, or kubelet mounting a
cert-manager Secret), the webhook and xDS servers pick up a new certificate without a restart."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

__all__ = ["TlsDir"]

log = logging.getLogger(__name__)


class TlsDir:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._context: ssl.SSLContext | None = None
        self._loaded: tuple[float, ...] = ()

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    def complete(self) -> bool:
        return all(p.is_file() and p.stat().st_size for p in (self.cert, self.key, self.ca))

    def ca_pem(self) -> str | None:
        try:
            return self.ca.read_text() or None
        except OSError:
            return None

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(os.stat(p).st_mtime for p in (self.cert, self.key))

    def server_context(self) -> ssl.SSLContext:
        """One context for the life of the server; ``reload`` swaps the certificate inside it."""
        if self._context is None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self.cert, self.key)
            self._loaded = self._mtimes()
            self._context = context
        return self._context

    def reload(self) -> bool:
        """Loads the files again if they changed since; True if it did. A half-written pair is retried later."""
        if self._context is None:
            return False
        try:
            if self._mtimes() == self._loaded:
                return False
            self._context.load_cert_chain(self.cert, self.key)
            self._loaded = self._mtimes()
        except (OSError, ssl.SSLError) as exc:
            log.warning("webhook TLS: cannot load %s yet: %s", self.directory, exc)
            return False
        log.info("webhook TLS: loaded a new certificate from %s", self.directory)
        return True
