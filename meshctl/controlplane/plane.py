"""The control plane assembled: source -> controller -> cache -> ADS server, plus the admin API.

Everything is built here and passed down (no module-level singletons), so tests can run several
control planes in one process.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from meshctl.admin.app import Authorizer, build_admin_app
from meshctl.admin.traffic import Target, TrafficCollector
from meshctl.controlplane.controller import Controller
from meshctl.controlplane.metrics import BuildMetrics
from meshctl.identity.keeper import IdentityKeeper
from meshctl.model import Model
from meshctl.sources import ManifestSource, Source
from meshctl.sources.discovery import DiscoveringSource
from meshctl.sources.dns import DnsResolver, system_resolvers
from meshctl.xds.cache import SnapshotCache
from meshctl.xds.server.ads import AdsServer, Keepalive, TokenAuthenticator
from meshctl.xds.server.metrics import XdsMetrics
from meshctl.xds.server.registry import ProxyRegistry
from meshctl.xds.server.tls import XdsTls

if TYPE_CHECKING:
    from meshctl.ingress.reconciler import IngressReconciler
    from meshctl.inject.server import InjectionServer
    from meshctl.kube.leader import LeaderElector
    from meshctl.kube.status_writer import StatusWriter

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)
_STAGE_GRACE = 15.0  # seconds each stage of a stop may take (the status writer's last writes included)
_SHUTDOWN_GRACE = 2.0  # seconds the admin server waits for requests in flight when stopping


class ControlPlane:
    def __init__(
        self,
        source: Source,
        *,
        address: str = "127.0.0.1",
        xds_port: int = 0,
        admin_port: int = 0,
        status_writer: StatusWriter | None = None,
        keepalive: Keepalive | None = None,
        ingress: IngressReconciler | None = None,
        xds_tls: XdsTls | None = None,
        injection: InjectionServer | None = None,
        identities: IdentityKeeper | None = None,
        admin_authorizer: Authorizer | None = None,
        xds_token_auth: TokenAuthenticator | None = None,
        dns_resolvers: tuple[str, ...] = (),
        traffic_interval: float = 5.0,
    ) -> None:
        """``ingress``: also reconcile AWS load balancers from the same model (leader only, like status writes).
        ``xds_tls``: serve ADS over TLS (mutual with a client CA). ``injection``: the sidecar injection webhook;
        its certificate files are ready before xDS starts (they may be xDS's too). ``dns_resolvers``: DNS servers
        (address:port) for DNS-discovered VirtualNodes; default: the host's. ``traffic_interval``: seconds between
        two reads of the proxies' stats while the web view or a progressive shift wants them."""
        self.injection = injection
        self.admin_authorizer = admin_authorizer
        # VirtualNodes found by DNS: the control plane resolves them (sources/dns.py), with these servers or the
        # host's (/etc/resolv.conf).
        self.source: Source = DiscoveringSource(source, DnsResolver(dns_resolvers or system_resolvers()))
        self.ingress = ingress
        self.address = address
        self.metrics_registry = CollectorRegistry()  # /metrics; the ingress reconciler's is added beside it
        self.metrics = BuildMetrics(self.metrics_registry)
        self.xds_metrics = XdsMetrics(self.metrics_registry)
        self.cache = SnapshotCache()
        self.controller = Controller(self.cache, self.metrics, identities=identities)
        self.registry = ProxyRegistry()
        self.status_writer = status_writer
        if status_writer is not None:
            self.controller.on_statuses = status_writer.submit
        if injection is not None:
            injection.model = lambda: self.controller.model
            injection.on_error = self.metrics.background_failed
        self.traffic = TrafficCollector(self._traffic_targets, interval=traffic_interval)
        self.ads = AdsServer(self.controller, self.registry, self.xds_metrics, keepalive, xds_tls, xds_token_auth)
        self._requested_ports = (xds_port, admin_port)
        self.xds_port = 0
        self.admin_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.failures: list[str] = []
        self._admin_runner: web.AppRunner | None = None

    @classmethod
    def from_manifests(cls, directory: Path, **kwargs: Any) -> ControlPlane:
        return cls(ManifestSource(directory), **kwargs)

    async def start(self) -> None:
        xds_port, admin_port = self._requested_ports
        if self.injection is not None:
            await self.injection.prepare()
        self.xds_port = await self.ads.start(self.address, xds_port)
        if self.injection is not None:
            await self.injection.start()
        app = build_admin_app(
            self.controller,
            self.registry,
            self._metric_registries,
            health=self.health_problem,
            replica=self.replica,
            about=self.describe,
            ingresses=self._ingresses if self.ingress is not None else None,
            authorize=self.admin_authorizer,
            traffic=self.traffic,
        )
        # Stopping waits for requests in flight at most this long (aiohttp's default, 60 s, held a stop that long).
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        site = web.TCPSite(runner, self.address, admin_port)
        await site.start()
        self._admin_runner = runner
        self.admin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._tasks = [
            asyncio.create_task(self.controller.run(), name="controller"),
            asyncio.create_task(self.source.run(self._model_changed), name="source"),
            asyncio.create_task(self.controller.renew_identities(), name="identity-renewal"),
            asyncio.create_task(self.traffic.run(), name="traffic"),
        ]
        if self.ingress is not None:
            self._tasks.append(asyncio.create_task(self.ingress.run(), name="ingress"))
        if self.injection is not None:
            self._tasks.append(asyncio.create_task(self.injection.run(), name="injection-certificates"))
        if self.status_writer is not None:
            self._tasks.append(asyncio.create_task(self.status_writer.run(), name="status-writer"))
            if self.status_writer.elector is not None:
                self._tasks.append(asyncio.create_task(self.status_writer.elector.run(), name="leader-election"))
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        log.info("xDS on %s:%d, admin on http://%s:%d", self.address, self.xds_port, self.address, self.admin_port)

    async def _model_changed(self, model: Model) -> None:
        """One model, two consumers: the translator, and the ingress reconciler (which only takes the newest)."""
        if self.ingress is not None:
            self.ingress.submit(model)
        await self.controller.submit(model)

    def _traffic_targets(self) -> list[Target]:
        """The connected Envoys that serve their stats (proxyless gRPC clients have none)."""
        return [
            Target(s.node_id, s.group, url)
            for s in self.registry.streams()
            if not s.proxyless and (url := s.stats_url) is not None
        ]

    def _ingresses(self) -> list[dict[str, Any]]:
        assert self.ingress is not None
        return [self.ingress.views[k] for k in sorted(self.ingress.views)]

    def _metric_registries(self) -> list[CollectorRegistry]:
        if self.ingress is None:
            return [self.metrics_registry]
        return [self.metrics_registry, self.ingress.metrics.registry]

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A core task must run until stop(): if one ends, say why and fail /healthz so we get restarted."""
        if task.cancelled():
            return
        exc = task.exception()
        self.failures.append(f"{task.get_name()} stopped: {exc!r}")
        self.metrics.background_failed(task.get_name())
        log.error("%s task stopped", task.get_name(), exc_info=exc)

    @property
    def _elector(self) -> LeaderElector | None:
        return self.status_writer.elector if self.status_writer is not None else None

    @property
    def replica(self) -> str:
        """This replica's name: its leader-election identity, else the host name."""
        elector = self._elector
        return elector.identity if elector is not None else socket.gethostname()

    def describe(self) -> dict[str, Any]:
        """Who we are and where the model comes from (``meshctl status``)."""
        elector = self._elector
        describe_source = getattr(self.source, "describe", None)
        return {
            "replica": self.replica,
            "leader": None if elector is None else {"holder": elector.holder, "leading": elector.is_leader},
            "source": describe_source() if describe_source else {"kind": type(self.source).__name__},
            "health": self.health_problem() or "ok",
            # Failures of background work that kept running (each logged with its traceback), by task.
            "backgroundErrors": self.metrics.background_errors(),
        }

    def health_problem(self) -> str | None:
        return "; ".join(self.failures) or None

    async def wait_synced(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self.controller.wait_synced(), timeout)

    async def stop(self) -> None:
        """Graceful: stop the watches and the build loop, let the status writer finish what it has, and only
        then stop leader election, which releases the lease for the next replica."""
        by_name = {t.get_name(): t for t in self._tasks}
        stages = (
            ("source", "controller", "ingress", "injection-certificates", "traffic"),
            ("status-writer",),
            ("leader-election",),
        )
        for stage in stages:
            tasks = [by_name[n] for n in stage if n in by_name]
            for task in tasks:
                task.cancel()
            # A task that crashed was already reported by _task_ended; stopping must not raise it again. One that
            # does not end within the grace is named and left behind: a stop never hangs.
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=_STAGE_GRACE)
                if pending:
                    log.error(
                        "stopping: %s did not stop within %.0f s",
                        ", ".join(t.get_name() for t in pending),
                        _STAGE_GRACE,
                    )
        await self.ads.stop()
        if self.injection is not None:
            await self.injection.stop()
        self.controller.close()
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
