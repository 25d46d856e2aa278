"""The injection webhook as the controller runs it: HTTPS on its own port, certificates from the TLS directory
(reloaded when they change), kept by the CertificateKeeper when the controller manages them itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from meshctl.inject.certificate_keeper import CertificateKeeper
from meshctl.inject.pod_patch import InjectConfig, VirtualNodeRef
from meshctl.inject.tlsfiles import TlsDir
from meshctl.inject.webhook import InjectionWebhook
from meshctl.model import Model

__all__ = ["InjectionServer", "virtual_node_refs"]

log = logging.getLogger(__name__)


def virtual_node_refs(model: Model | None, namespace: str) -> list[VirtualNodeRef]:
    """The VirtualNodes of ``namespace`` that pods can belong to (invalid ones have no spec and are left out)."""
    if model is None:
        return []
    return [
        VirtualNodeRef(vn.meta.name, dict(vn.spec.pod_selector), tuple(li.port for li in vn.spec.listeners))
        for key, vn in sorted(model.virtual_nodes.items())
        if key.namespace == namespace and vn.spec is not None
    ]


class InjectionServer:
    def __init__(
        self,
        tls_dir: TlsDir,
        config: InjectConfig,
        *,
        address: str = "0.0.0.0",
        port: int = 9443,
        keeper: CertificateKeeper | None = None,
        reload_seconds: float = 5.0,
        keep_seconds: float = 60.0,
    ) -> None:
        self.tls_dir = tls_dir
        self.keeper = keeper
        self.model: Callable[[], Model | None] = lambda: None  # the control plane's (``ControlPlane`` sets it)
        self.on_error: Callable[[str], None] = lambda task: None  # counts a background failure (the plane's)
        self.webhook = InjectionWebhook(config, lambda ns: virtual_node_refs(self.model(), ns), tls_dir.ca_pem)
        self.webhook.on_error = lambda task: self.on_error(task)
        self.address, self.requested_port = address, port
        self.port = 0
        self.reload_seconds, self.keep_seconds = reload_seconds, keep_seconds
        self._runner: web.AppRunner | None = None

    async def prepare(self) -> None:
        """Before any server starts: the certificate files exist (the keeper writes them, or they are mounted)."""
        if self.keeper is not None:
            await asyncio.to_thread(self.keeper.sync)
        if not self.tls_dir.complete():
            raise RuntimeError(f"{self.tls_dir.directory} lacks tls.crt, tls.key or ca.crt")

    async def start(self) -> None:
        runner = web.AppRunner(self.webhook.app(), access_log=None, shutdown_timeout=2.0)  # a stop never waits 60 s
        await runner.setup()
        site = web.TCPSite(runner, self.address, self.requested_port, ssl_context=self.tls_dir.server_context())
        await site.start()
        self._runner = runner
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("injection webhook on https://%s:%d", self.address, self.port)

    async def run(self) -> None:
        """Reloads renewed certificate files; as the keeper, renews them (leader) and copies the Secret."""
        loop = asyncio.get_running_loop()
        next_keep = loop.time() + self.keep_seconds
        while True:
            await asyncio.sleep(min(self.reload_seconds, self.keep_seconds))
            if self.keeper is not None and loop.time() >= next_keep:
                next_keep = loop.time() + self.keep_seconds
                try:
                    await asyncio.to_thread(self.keeper.sync)
                except (ApiException, HTTPError, OSError) as exc:  # the API server away for a while: try again
                    log.warning("certificate Secret sync failed: %s", exc)
                except Exception:  # a bug: keep serving with the files we have, but loudly
                    log.exception("certificate Secret sync failed")
                    self.on_error("certificate-sync")
            self.tls_dir.reload()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
