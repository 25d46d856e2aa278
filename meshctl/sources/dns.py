"""DNS discovery as a source: the control plane resolves the hostnames of VirtualNodes with ``serviceDiscovery.dns``
and adds the answers to the model (``Model.dns``).

Why the control plane and not each Envoy: measured with Envoy 1.40, a DNS cluster of every address (STRICT) drops all
its hosts on an NXDOMAIN (0 hosts, 503 "no healthy upstream"), while App Mesh users expect the last endpoints to stay
and to see the failure on the VirtualNode; one resolution per hostname also replaces one per proxy. So ENDPOINTS
nodes are served over EDS from these answers; LOADBALANCER nodes stay Envoy's logical DNS (one host, resolved again
for new connections, kept on failure by Envoy), resolved here too only to show failures.

Each name is resolved again at its records' TTL (1 s .. 5 min); a failure keeps the last addresses and is retried
with backoff (1 s doubling to 30 s). Queries go over UDP to the given servers (``serve --dns-resolver``) or those of
/etc/resolv.conf, on the event loop without blocking it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from meshctl.model import DnsAnswer, IpPreference, Model
from meshctl.sources.base import ModelSink, Source

__all__ = ["DiscoveringSource", "DnsError", "DnsResolver", "dns_names", "system_resolvers"]

log = logging.getLogger(__name__)

MIN_TTL, MAX_TTL = 1.0, 300.0
FIRST_RETRY, LAST_RETRY = 1.0, 30.0
QUERY_TIMEOUT = 2.0


class DnsError(Exception):
    """A lookup that gave no usable answer: NXDOMAIN, SERVFAIL, a timeout, no address."""


def system_resolvers(path: Path = Path("/etc/resolv.conf")) -> tuple[str, ...]:
    """``nameserver`` lines of resolv.conf as address:53 (127.0.0.1:53 if there is none, as the C library does)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    servers = [
        f"[{p[1]}]:53" if ":" in p[1] else f"{p[1]}:53"
        for line in lines
        if len(p := line.split()) >= 2 and p[0] == "nameserver"
    ]
    return tuple(servers) or ("127.0.0.1:53",)


class _Answer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


class DnsResolver:
    def __init__(self, servers: Iterable[str]) -> None:
        self.servers = []
        for server in servers:
            host, _, port = server.rpartition(":")
            self.servers.append((host.strip("[]"), int(port)))

    async def _query(self, name: str, qtype: str) -> tuple[list[str], float]:
        question = DNSRecord.question(name, qtype)
        last: Exception = DnsError(f"{name}: no DNS server")
        for host, port in self.servers:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(_Answer, remote_addr=(host, port))
            try:
                transport.sendto(question.pack())
                reply = DNSRecord.parse(await asyncio.wait_for(protocol.reply, QUERY_TIMEOUT))
            except (TimeoutError, OSError) as exc:
                last = DnsError(f"{name}: no answer from {host}:{port} ({type(exc).__name__})")
                continue
            finally:
                transport.close()
            if reply.header.id != question.header.id:
                last = DnsError(f"{name}: mismatched answer from {host}:{port}")
                continue
            if reply.header.rcode != RCODE.NOERROR:
                raise DnsError(f"{name}: {RCODE[reply.header.rcode]}")
            wanted = getattr(QTYPE, qtype)
            records = [rr for rr in reply.rr if rr.rtype == wanted]
            ttl = min((rr.ttl for rr in records), default=MIN_TTL)
            return sorted(str(rr.rdata) for rr in records), float(ttl)
        raise last

    async def resolve(self, name: str, preference: IpPreference | None) -> tuple[tuple[str, ...], float]:
        """The addresses (sorted) and the seconds until they should be asked again, by the address families the
        preference allows, the preferred first and the other only if it has none (App Mesh's semantics)."""
        order = {
            None: ("AAAA", "A"),
            IpPreference.IPV6_PREFERRED: ("AAAA", "A"),
            IpPreference.IPV4_PREFERRED: ("A", "AAAA"),
            IpPreference.IPV4_ONLY: ("A",),
            IpPreference.IPV6_ONLY: ("AAAA",),
        }[preference]
        ttl = MAX_TTL
        for qtype in order:
            addresses, ttl = await self._query(name, qtype)
            if addresses:
                return tuple(addresses), ttl
        raise DnsError(f"{name}: no address")


def dns_names(model: Model) -> dict[str, IpPreference | None]:
    """The hostnames the model's DNS-discovered VirtualNodes name, with their address preference."""
    names: dict[str, IpPreference | None] = {}
    for vn in model.virtual_nodes.values():
        if vn.spec is not None and vn.spec.dns is not None:
            names.setdefault(vn.spec.dns.hostname, vn.spec.dns.ip_preference)
    return names


@dataclass
class _Watch:
    preference: IpPreference | None
    task: asyncio.Task[None]


class DiscoveringSource:
    """Wraps a source: each model it emits gets the current answers for the names its VirtualNodes use, and an
    answer that changes re-emits the latest model with it (a full build: ``Model.dns`` has no fast path)."""

    def __init__(self, inner: Source, resolver: DnsResolver) -> None:
        self.inner = inner
        self.resolver = resolver
        self.answers: dict[str, DnsAnswer] = {}
        self._watches: dict[str, _Watch] = {}
        self._latest: Model | None = None
        self._sink: ModelSink | None = None
        self._emitting = asyncio.Lock()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "dnsResolvers": [f"{h}:{p}" for h, p in self.resolver.servers]}

    def __getattr__(self, name: str) -> Any:  # the wrapped source's own API (e.g. the manifest directory)
        return getattr(self.inner, name)

    async def run(self, sink: ModelSink) -> None:
        self._sink = sink
        try:
            await self.inner.run(self._from_inner)
        finally:
            for watch in self._watches.values():
                watch.task.cancel()

    async def _from_inner(self, model: Model) -> None:
        self._latest = model
        self._watch(dns_names(model))
        await self._emit()

    def _watch(self, names: Mapping[str, IpPreference | None]) -> None:
        for name in list(self._watches):
            if name not in names or self._watches[name].preference != names[name]:
                self._watches.pop(name).task.cancel()
                self.answers.pop(name, None)
        for name, preference in names.items():
            if name not in self._watches:
                task = asyncio.create_task(self._keep_resolving(name, preference), name=f"dns {name}")
                self._watches[name] = _Watch(preference, task)

    async def _emit(self) -> None:
        model, sink = self._latest, self._sink
        if model is None or sink is None:
            return
        async with self._emitting:
            wanted = dns_names(model)
            answers = {n: a for n, a in self.answers.items() if n in wanted}
            if answers != model.dns:
                model = replace(model, dns=answers)  # (no fast path for Model.dns: a changed answer is a full build)
            await sink(model)

    async def _keep_resolving(self, name: str, preference: IpPreference | None) -> None:
        retry = FIRST_RETRY
        while True:
            previous = self.answers.get(name)
            try:
                addresses, ttl = await self.resolver.resolve(name, preference)
                answer, wait, retry = DnsAnswer(addresses=addresses), min(max(ttl, MIN_TTL), MAX_TTL), FIRST_RETRY
            except DnsError as exc:
                kept = previous.addresses if previous is not None else ()
                answer, wait = DnsAnswer(addresses=kept, error=str(exc)), retry
                retry = min(retry * 2, LAST_RETRY)
            except Exception as exc:  # a bug or a malformed reply: said, retried, never the end of the task
                log.warning("DNS discovery of %s failed: %s", name, exc)
                kept = previous.addresses if previous is not None else ()
                answer, wait = DnsAnswer(addresses=kept, error=f"{name}: {type(exc).__name__}"), retry
                retry = min(retry * 2, LAST_RETRY)
            if answer != previous:
                if answer.error and (previous is None or previous.error != answer.error):
                    log.warning("DNS discovery: %s; %s", answer.error, _kept(answer))
                self.answers[name] = answer
                await self._emit()
            await asyncio.sleep(wait * random.uniform(0.9, 1.0))  # jitter: names do not all ask at once


def _kept(answer: DnsAnswer) -> str:
    return f"serving the last addresses {', '.join(answer.addresses)}" if answer.addresses else "no address yet"
