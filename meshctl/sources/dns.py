"""DNS lookups for DNS discovery: the control plane resolves the hostnames of VirtualNodes with
``serviceDiscovery.dns`` (sources/discovery.py adds the answers to the model, ``Model.dns``).

Why the control plane and not each Envoy: measured with Envoy 1.40, a DNS cluster of every address (STRICT) drops all
its hosts on an NXDOMAIN (0 hosts, 503 "no healthy upstream"), while App Mesh users expect the last endpoints to stay
and to see the failure on the VirtualNode; one resolution per hostname also replaces one per proxy. So ENDPOINTS
nodes are served over EDS from these answers; LOADBALANCER nodes stay Envoy's logical DNS (one host, resolved again
for new connections, kept on failure by Envoy), resolved here too only to show failures.

Each name is resolved again at its records' TTL (1 s .. 5 min). Queries go over UDP to the given servers
(``serve --dns-resolver``) or those of /etc/resolv.conf, on the event loop without blocking it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

from meshctl.model import IpPreference

__all__ = ["DnsError", "DnsResolver", "system_resolvers"]

MIN_TTL, MAX_TTL = 1.0, 300.0
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
